"""
Per-frame geometry features of one side of a stereo track: the model's geometric input.

One function, ``side_geometry``, computes them for the data-set builder (offline, over whole
tracks) and for the learned filter (online, over the frames not yet streamed), so training
and inference see the same numbers.  Rows are the frames in which that side's 2D track was
matched to a detection (oldest first); columns are ``GEOMETRY_FEATURES``:

* ``cx_norm``, ``cy_norm``, ``w_norm``, ``h_norm``: the box in image-size units;
* ``score``: the detector score;
* ``vx_norm``, ``vy_norm``: box-centre motion since the previous matched frame (image units);
* ``epipolar_px``: the stereo pair's epipolar residual at that stamp (row gap on a rectified
  rig, Sampson distance otherwise; clipped at ``MAX_EPIPOLAR_PX``);
* ``disparity_norm``: left minus right box-centre x, in image widths;
* ``height_m``: signed height of the triangulated point above the ground plane (0 without a
  plane or a valid point; clipped to +-``MAX_HEIGHT_M``);
* ``has_partner``: 1 when the other camera's track was matched in the same synchronized
  frame (same stamp, or the stamp ``StereoTrackHistory.right_stamps_ns`` pairs with it);
* ``brightness``, ``saturation``, ``contrast``: the crop's mean HSV value, mean HSV
  saturation and grey-level standard deviation in [0, 1] (``appearance.crop_statistics``, the
  gbdt baseline's strongest cues, given to the model per frame; 0 without a crop).

A model reads the columns its config names (``classifier.geometry_features``), so weights
trained on fewer columns keep working when columns are added here.
"""

from dataclasses import dataclass
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from persistence_ros.appearance import crop_statistics
from persistence_ros.stereo import plane_heights
from persistence_ros.stereo_track import StereoTrackHistory
from persistence_ros.tracking import TrackObservation

# what a model reads unless its config names other columns (the cpu/gpu configs: these)
DEFAULT_MODEL_FEATURES = ('cx_norm', 'cy_norm', 'w_norm', 'h_norm', 'score', 'vx_norm',
                          'vy_norm', 'epipolar_px', 'disparity_norm', 'height_m', 'has_partner')
APPEARANCE_FEATURES = ('brightness', 'saturation', 'contrast')
GEOMETRY_FEATURES = DEFAULT_MODEL_FEATURES + APPEARANCE_FEATURES
SIDES = ('left', 'right')
MAX_EPIPOLAR_PX = 50.0
MAX_HEIGHT_M = 5.0


@dataclass
class SideGeometry:
    """Matched frames of one side of a stereo track and their geometry rows."""

    observations: List[TrackObservation]
    geometry: np.ndarray  # [len(observations), len(GEOMETRY_FEATURES)] float32

    @property
    def stamps_ns(self) -> List[int]:
        """Return the stamps of the rows."""
        return [o.stamp_ns for o in self.observations]


def _finite_or_zero(value: float, bound: float) -> float:
    return float(np.clip(value, -bound, bound)) if math.isfinite(value) else 0.0


def side_geometry(state: StereoTrackHistory, side: str, image_size: Tuple[int, int],
                  plane: Optional[Sequence[float]] = None,
                  after_ns: Optional[int] = None, appearance: bool = True) -> SideGeometry:
    """
    Return the geometry rows of ``side`` ('left' or 'right') of a stereo track.

    ``image_size`` is (width, height) in pixels; ``plane`` the ground plane ``[a, b, c, d]``
    in the left optical frame (``stereo.plane_heights``); rows at or before ``after_ns``
    are left out (their velocity still uses them). ``appearance=False`` leaves the
    ``APPEARANCE_FEATURES`` columns NaN (the crop statistics cost ~0.13 ms per row on 2 CPU
    cores; skip them when the model does not read them).
    """
    if side not in SIDES:
        raise ValueError(f'side must be left or right, got {side!r}')
    width, height = (float(v) for v in image_size)
    own, other = (state.left, state.right) if side == 'left' else (state.right, state.left)
    partner = {o.stamp_ns: o for o in other if o.matched}
    # a frame is a left stamp and the right stamp synchronized with it (empty: equal)
    frames = [int(s) for s in state.stamps_ns]
    right_frames = ([int(s) for s in state.right_stamps_ns]
                    if len(state.right_stamps_ns) else frames)
    if len(right_frames) != len(frames):
        raise ValueError(f'right_stamps_ns has {len(right_frames)} stamps, stamps_ns '
                         f'{len(frames)}')
    own_frames, other_frames = ((frames, right_frames) if side == 'left'
                                else (right_frames, frames))
    stereo_index = {s: k for k, s in enumerate(own_frames)}
    partner_stamp = dict(zip(own_frames, other_frames))
    points = np.asarray(state.points, dtype=np.float64).reshape(-1, 3)
    heights = (plane_heights(points, plane) if plane is not None and len(points)
               else np.zeros(len(points)))
    residuals = np.asarray(state.epipolar_residuals, dtype=np.float64).reshape(-1)
    observations: List[TrackObservation] = []
    rows: List[List[float]] = []
    previous = None
    for obs in own:
        if not obs.matched:
            continue
        cx, cy, w, h = (float(v) for v in obs.box)
        vx, vy = (0.0, 0.0) if previous is None else ((cx - previous[0]) / width,
                                                      (cy - previous[1]) / height)
        previous = (cx, cy)
        if after_ns is not None and obs.stamp_ns <= after_ns:
            continue
        epipolar = disparity = height_m = has_partner = 0.0
        mate = partner.get(partner_stamp.get(int(obs.stamp_ns), obs.stamp_ns))
        if mate is not None:
            has_partner = 1.0
            left_x, right_x = (cx, mate.box[0]) if side == 'left' else (mate.box[0], cx)
            disparity = (left_x - float(right_x)) / width
            k = stereo_index.get(int(obs.stamp_ns))
            if k is not None and k < len(residuals):
                epipolar = _finite_or_zero(residuals[k], MAX_EPIPOLAR_PX)
                if k < len(heights):
                    height_m = _finite_or_zero(heights[k], MAX_HEIGHT_M)
        stats = (math.nan,) * 3
        if appearance:
            stats = (0.0, 0.0, 0.0) if obs.crop is None else tuple(
                _finite_or_zero(v, 1.0) for v in crop_statistics(obs.crop))
        observations.append(obs)
        rows.append([cx / width, cy / height, w / width, h / height, float(obs.score),
                     vx, vy, epipolar, disparity, height_m, has_partner, *stats])
    geometry = np.asarray(rows, dtype=np.float32).reshape(-1, len(GEOMETRY_FEATURES))
    return SideGeometry(observations, geometry)
