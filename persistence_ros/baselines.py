"""
The hand-written persistence filters (baselines) that the learned filter must beat.

* ``none``: every track is persistent at once.
* ``min_hits``: persistent after ``min_hits`` observed frames (never transient).
* ``score``: mean detector score of the track's matched boxes (both cameras).
* ``stereo``: mean epipolar residual (pixels) of the left/right boxes.
* ``ground_plane``: median signed height of the triangulated points above a plane;
  a track below ``n.X + d < -margin`` is transient (floor reflections).

All of them are ``LatchingFilter``s: a probability per track, decided once enough frames
were observed, then latched.  The gradient-boosting baseline is in ``gbdt``, the learned
model in ``model.persistence_filter``; ``filter_factory`` builds any filter by name.
"""

import abc
import math
from typing import Dict, Optional, Sequence

import numpy as np

from persistence_ros.stereo import plane_heights
from persistence_ros.stereo_track import (
    FilterDecision, PersistenceFilter, StereoTrackHistory, TrackState)


class LatchingFilter(PersistenceFilter):
    """
    Base of the baselines: score a track, decide once enough frames were seen, latch.

    Subclasses implement ``probability(track)``, returning a probability that the track is
    real, or None when there is not enough evidence yet.  The track is decided at the first
    frame with ``frames_observed >= decide_after`` and a probability:
    persistent when ``probability >= threshold``, else transient.
    """

    def __init__(self, decide_after: int = 3, threshold: float = 0.5):
        if decide_after < 1:
            raise ValueError(f'decide_after must be >= 1, got {decide_after}')
        self.decide_after = int(decide_after)
        self.threshold = float(threshold)
        self._latched: Dict[int, FilterDecision] = {}

    @abc.abstractmethod
    def probability(self, track: StereoTrackHistory) -> Optional[float]:
        """Return the probability that the track is real, or None if undecidable yet."""

    def update(self, tracks: Sequence[StereoTrackHistory]) -> Dict[int, FilterDecision]:
        """Return the (latched) decision of every live track."""
        out: Dict[int, FilterDecision] = {}
        for track in tracks:
            latched = self._latched.get(track.id)
            if latched is not None:
                out[track.id] = latched
                continue
            p = self.probability(track)
            if p is None or not math.isfinite(p):
                out[track.id] = FilterDecision(probability=0.5, state=TrackState.TENTATIVE)
                continue
            p = float(min(max(p, 0.0), 1.0))
            if track.frames_observed >= self.decide_after:
                state = TrackState.PERSISTENT if p >= self.threshold else TrackState.TRANSIENT
                decision = FilterDecision(probability=p, state=state)
                self._latched[track.id] = decision
            else:
                decision = FilterDecision(probability=p, state=TrackState.TENTATIVE)
            out[track.id] = decision
        live = {t.id for t in tracks}
        for tid in [k for k in self._latched if k not in live]:
            del self._latched[tid]
        return out

    def reset(self) -> None:
        """Forget all latched decisions."""
        self._latched.clear()


class NoFilter(LatchingFilter):
    """Accept everything: every track is persistent at its first frame."""

    name = 'none'

    def __init__(self):
        super().__init__(decide_after=1, threshold=0.5)

    def probability(self, track: StereoTrackHistory) -> Optional[float]:
        """Return 1."""
        return 1.0


class MinHitsFilter(LatchingFilter):
    """Duration baseline: persistent once observed in ``min_hits`` frames; never transient."""

    name = 'min_hits'

    def __init__(self, min_hits: int = 5):
        super().__init__(decide_after=min_hits, threshold=1.0)
        self.min_hits = int(min_hits)

    def probability(self, track: StereoTrackHistory) -> Optional[float]:
        """Return ``frames_observed / min_hits`` capped at 1."""
        return min(1.0, track.frames_observed / self.min_hits)


def _matched_scores(track: StereoTrackHistory) -> np.ndarray:
    return np.array([o.score for o in list(track.left) + list(track.right) if o.matched],
                    dtype=np.float64)


class ScoreFilter(LatchingFilter):
    """Detector-score baseline: mean score of the matched boxes of both cameras."""

    name = 'score'

    def __init__(self, decide_after: int = 3, threshold: float = 0.6):
        super().__init__(decide_after, threshold)

    def probability(self, track: StereoTrackHistory) -> Optional[float]:
        """Return the mean detector score, None without matched boxes."""
        scores = _matched_scores(track)
        return float(scores.mean()) if scores.size else None


class StereoConsistencyFilter(LatchingFilter):
    """
    Stereo baseline: mean epipolar residual below ``max_residual_px`` means real.

    The probability is ``1 / (1 + (r / max_residual_px)^2)`` (0.5 at the threshold).
    """

    name = 'stereo'

    def __init__(self, decide_after: int = 3, max_residual_px: float = 2.0):
        super().__init__(decide_after, threshold=0.5)
        self.max_residual_px = float(max_residual_px)

    def probability(self, track: StereoTrackHistory) -> Optional[float]:
        """Return the residual-based probability, None without residuals."""
        r = np.asarray(track.epipolar_residuals, dtype=np.float64)
        r = r[np.isfinite(r)]
        if r.size == 0:
            return None
        return 1.0 / (1.0 + (float(r.mean()) / self.max_residual_px) ** 2)


class GroundPlaneFilter(LatchingFilter):
    """
    Ground-plane baseline: points triangulated below the floor are reflections.

    ``plane`` is ``[a, b, c, d]`` in the left optical frame with the normal pointing up
    (truth ``rig.ground_plane_left_optical``).  The median height ``h`` of the valid points
    decides: transient when ``h < -margin_m``.  Probability ``sigmoid((h + margin) / scale)``.
    A track whose points are mostly invalid (behind a camera, no stereo) is transient.
    """

    name = 'ground_plane'

    def __init__(self, plane: Sequence[float], margin_m: float = 0.05,
                 decide_after: int = 3, scale_m: float = 0.02):
        super().__init__(decide_after, threshold=0.5)
        self.plane = np.asarray(plane, dtype=np.float64).reshape(4)
        plane_heights(np.zeros((0, 3)), self.plane)  # validates the normal
        self.margin_m = float(margin_m)
        self.scale_m = float(scale_m)

    def probability(self, track: StereoTrackHistory) -> Optional[float]:
        """Return the height-based probability, None without points."""
        heights = plane_heights(track.points, self.plane)
        if heights.size == 0:
            return None
        valid = heights[np.isfinite(heights)]
        if valid.size * 2 < heights.size or valid.size == 0:
            return 0.0
        h = float(np.median(valid))
        z = (h + self.margin_m) / self.scale_m
        return 1.0 / (1.0 + math.exp(-min(max(z, -60.0), 60.0)))
