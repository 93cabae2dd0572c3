"""
The learned filter's fail-safe: whether the rig, its frame rate or a track is in the training data.

A checkpoint's ``domain`` (``config.DomainConfig``, written by ``train`` from its data set)
holds the rig ranges of the training scenes and the range of every geometry column
(``data.RANGE_QUANTILES`` of the training rows).  ``DomainCheck`` compares:

* the rig (image width, vertical field of view, baseline) with the training ranges, when the
  calibration arrives;
* the frame rate, measured from the stamps, once ``FPS_FRAMES`` frames were seen;
* each feature row a track streams with the column ranges, widened by ``FEATURE_MARGIN``
  of their width on each side: a track is out of the domain once at least
  ``TRACK_FRACTION`` of its rows (and ``MIN_ROWS`` of them) are outside.

Plain numpy (no torch), so the rule can be read and tested on its own.  What the filter
does with the answer (the fallback rule) is ``persistence_filter.LearnedFilter``'s.
"""

from collections import deque
import math
from typing import Deque, Dict, List, Optional, Sequence

import numpy as np

from persistence_ros.model.config import DomainConfig

# relative: a rig this close to a range's end is inside.  The ranges are the extremes of the
# training scenes' random draws (about 100 rigs), not the bounds they were drawn in, and the
# inputs are rig-free: a 10 fps rig against a drawn minimum of 10.2 fps is not out of depth.
RIG_TOLERANCE = 0.1
FEATURE_MARGIN = 0.1      # of a column range's width, on each side
TRACK_FRACTION = 0.5      # of a track's rows outside: the track is out of the domain
MIN_ROWS = 3
FPS_FRAMES = 10


def _outside(value: float, bounds: Sequence[float], tolerance: float) -> bool:
    if len(bounds) != 2:
        return False
    low, high = bounds
    return value < low * (1.0 - tolerance) or value > high * (1.0 + tolerance)


def rig_of(calibration) -> Dict[str, float]:
    """Return the rig's ``image_width``, ``fovy_deg`` and ``baseline_m``."""
    left = calibration.left
    return {'image_width': float(left.width),
            'fovy_deg': float(math.degrees(2.0 * math.atan(0.5 * left.height / left.K[1, 1]))),
            'baseline_m': float(calibration.baseline_m)}


class DomainCheck:
    """Compare a rig, its frame rate and tracks' feature rows with a ``DomainConfig``."""

    def __init__(self, domain: DomainConfig, columns: Sequence[str]):
        self.domain = domain
        self.columns = list(columns)
        ranges = [domain.feature_ranges.get(name) for name in self.columns]
        known = [k for k, r in enumerate(ranges) if r]
        self._index = np.array(known, dtype=np.int64)
        low = np.array([ranges[k][0] for k in known], dtype=np.float64)
        high = np.array([ranges[k][1] for k in known], dtype=np.float64)
        width = np.maximum(high - low, 1e-6)
        self._low = low - FEATURE_MARGIN * width
        self._high = high + FEATURE_MARGIN * width
        self.rig_reasons: List[str] = []
        self._fps_reason: Optional[str] = None
        self._frames: Deque[int] = deque(maxlen=4 * FPS_FRAMES)
        self._rows: Dict[int, List[int]] = {}  # track id -> [rows outside, rows]

    @property
    def known(self) -> bool:
        """Return True when the checkpoint says what it was trained on."""
        d = self.domain
        return bool(d.image_width or d.fovy_deg or d.baseline_m or d.fps or d.feature_ranges)

    def set_rig(self, calibration) -> List[str]:
        """Check a rig; return (and keep) the reasons it is outside, empty when inside."""
        rig = rig_of(calibration)
        self.rig_reasons = [
            f'{name} {rig[name]:.4g} outside the training range '
            f'[{bounds[0]:.4g}, {bounds[1]:.4g}]'
            for name, bounds in (('image_width', self.domain.image_width),
                                 ('fovy_deg', self.domain.fovy_deg),
                                 ('baseline_m', self.domain.baseline_m))
            if _outside(rig[name], bounds, RIG_TOLERANCE)]
        return self.rig_reasons

    def add_frame(self, stamp_ns: int) -> Optional[str]:
        """Count a frame's stamp; return the frame-rate reason once it is known, else None."""
        if self._frames and stamp_ns <= self._frames[-1]:
            self._frames.clear()  # a new sequence
        self._frames.append(int(stamp_ns))
        if len(self._frames) >= FPS_FRAMES and len(self.domain.fps) == 2:
            dt = float(np.median(np.diff(np.asarray(self._frames, dtype=np.float64)))) / 1e9
            fps = 1.0 / dt if dt > 0 else math.inf
            low, high = self.domain.fps
            self._fps_reason = (f'frame rate {fps:.3g} Hz outside the training range '
                                f'[{low:.3g}, {high:.3g}]'
                                if _outside(fps, self.domain.fps, RIG_TOLERANCE) else None)
        return self._fps_reason

    @property
    def reasons(self) -> List[str]:
        """Return why the whole rig is out of the domain (empty: it is inside)."""
        return self.rig_reasons + ([self._fps_reason] if self._fps_reason else [])

    def add_rows(self, track_id: int, rows: np.ndarray) -> None:
        """Count a track's new feature rows (the model's columns) inside and outside."""
        counts = self._rows.setdefault(track_id, [0, 0])
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, len(self.columns))
        if len(self._index):
            values = rows[:, self._index]
            counts[0] += int(np.count_nonzero(
                np.any((values < self._low) | (values > self._high), axis=1)))
        counts[1] += len(rows)

    def track_outside(self, track_id: int) -> bool:
        """Return True when a track's features are mostly outside the training ranges."""
        outside, total = self._rows.get(track_id, (0, 0))
        return total >= MIN_ROWS and outside >= TRACK_FRACTION * total

    def outside_columns(self, rows: np.ndarray) -> List[str]:
        """Return the names of the columns whose values leave their range in ``rows``."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, len(self.columns))
        if not len(self._index):
            return []
        values = rows[:, self._index]
        bad = np.any((values < self._low) | (values > self._high), axis=0)
        return [self.columns[k] for k in self._index[bad]]

    def forget(self, live_ids) -> None:
        """Drop the counts of tracks that ended."""
        for track_id in [t for t in self._rows if t not in live_ids]:
            del self._rows[track_id]

    def reset(self) -> None:
        """Forget the tracks and the frame rate (a new sequence); the rig stays."""
        self._rows.clear()
        self._frames.clear()
        self._fps_reason = None
