"""
Per-frame features of one side of a stereo track: what the model sees besides the crops.

One function, ``side_geometry``, computes them for the data-set builder (offline, over whole
tracks) and for the learned filter (online, over the frames not yet streamed), so training
and inference see the same numbers.  Rows are the frames in which that side's 2D track was
matched to a detection (oldest first); columns are ``GEOMETRY_FEATURES``.  A model reads the
columns its config names (``classifier.geometry_features``).

**Rig-independent columns** (``RIG_FREE_FEATURES``, the default model inputs): each one means
the same on every rig (resolution, focal length, baseline, frame rate, lens):

* ``bearing_x``, ``bearing_y``: the box centre as a direction, ``(x - cx) / fx`` and
  ``(y - cy) / fy`` in the rectified camera (the lens distortion removed);
* ``edge_margin``: distance of the box to the nearest image border in box sizes (negative
  when it sticks out), clipped to [-1, 3];
* ``log_size``: log of the angular box size ``sqrt(w h) / sqrt(fx fy)``;
  ``log_aspect``: ``log(w / h)``;
* ``score``: the detector score;
* ``age_s``: seconds since the 2D track was born; ``dt_s``: seconds since the previous matched
  frame of this side (0 on the first);
* ``v_rel_x``, ``v_rel_y``: box-centre motion since the previous matched frame in box sizes per
  second; ``v_ang_x``, ``v_ang_y``: the same as bearing change per second (rad/s);
  ``growth``: change of ``log_size`` per second;
* ``log_depth``: log of the triangulated depth in metres (0 without a valid point),
  ``has_depth``: 1 with one; ``log_metric_size``: log of the box size in metres at that depth
  (``log_size + log_depth``; 0 without depth);
* ``epipolar_rel``: the stereo pair's epipolar residual (row gap on a row-aligned rig, Sampson
  distance otherwise) in box heights, clipped to [0, 5];
* ``has_partner``: 1 when the other camera's track was matched in the same synchronized frame;
* ``height_m``: signed height of the triangulated point above the ground plane, clipped to
  +-``MAX_HEIGHT_M``; ``plane_known``: 1 when a plane was given and the point is valid, else 0
  (and ``height_m`` 0).  Whether the plane is known is an input, never a silent 0.

Times come from the stamps (integer nanoseconds), sizes from the calibration: nothing counts
frames or pixels.

**Legacy columns** (``LEGACY_FEATURES``, what the weights before issue 23 read): ``cx_norm``,
``cy_norm``, ``w_norm``, ``h_norm`` (image-size units), ``score``, ``vx_norm``, ``vy_norm``
(image units per frame), ``epipolar_px`` (pixels, clipped at ``MAX_EPIPOLAR_PX``),
``disparity_norm`` (image widths), ``height_m``, ``has_partner``.

**Appearance columns** (``APPEARANCE_FEATURES``): ``brightness``, ``saturation``,
``contrast`` of the crop in [0, 1] (``appearance.crop_statistics``; 0 without a crop; NaN when
not asked for).
"""

from dataclasses import dataclass
import math
from typing import List, Optional, Sequence

import numpy as np

from persistence_ros.appearance import crop_statistics
from persistence_ros.calibration import CameraCalibration, StereoCalibration
from persistence_ros.stereo import plane_heights
from persistence_ros.stereo_track import StereoTrackHistory
from persistence_ros.tracking import TrackObservation

LEGACY_FEATURES = ('cx_norm', 'cy_norm', 'w_norm', 'h_norm', 'score', 'vx_norm', 'vy_norm',
                   'epipolar_px', 'disparity_norm', 'height_m', 'has_partner')
APPEARANCE_FEATURES = ('brightness', 'saturation', 'contrast')
RIG_FREE_FEATURES = ('bearing_x', 'bearing_y', 'edge_margin', 'log_size', 'log_aspect', 'score',
                     'age_s', 'dt_s', 'v_rel_x', 'v_rel_y', 'v_ang_x', 'v_ang_y', 'growth',
                     'log_depth', 'has_depth', 'log_metric_size', 'epipolar_rel',
                     'has_partner', 'height_m', 'plane_known')
# every column, once, in the order the data set stores them
GEOMETRY_FEATURES = LEGACY_FEATURES + APPEARANCE_FEATURES + tuple(
    f for f in RIG_FREE_FEATURES if f not in LEGACY_FEATURES)
# what a model reads unless its config names other columns
DEFAULT_MODEL_FEATURES = RIG_FREE_FEATURES
SIDES = ('left', 'right')
MAX_EPIPOLAR_PX = 50.0
MAX_HEIGHT_M = 5.0
MAX_AGE_S = 10.0
MAX_DT_S = 2.0
MAX_REL_SPEED = 50.0      # box sizes per second
MAX_ANG_SPEED = 5.0       # rad/s
MAX_GROWTH = 10.0         # per second
MIN_DEPTH_M = 0.05
MAX_EPIPOLAR_REL = 5.0
MIN_BOX_PX = 4.0          # the smallest box height a residual is measured in
_COLUMN = {name: k for k, name in enumerate(GEOMETRY_FEATURES)}


@dataclass
class SideGeometry:
    """Matched frames of one side of a stereo track and their feature rows."""

    observations: List[TrackObservation]
    geometry: np.ndarray  # [len(observations), len(GEOMETRY_FEATURES)] float32

    @property
    def stamps_ns(self) -> List[int]:
        """Return the stamps of the rows."""
        return [o.stamp_ns for o in self.observations]


def _clip(value: float, low: float, high: float) -> float:
    return float(min(max(value, low), high)) if math.isfinite(value) else 0.0


def _bearings(camera: CameraCalibration, centres: np.ndarray) -> np.ndarray:
    """Return the directions ``[(x - cx) / fx, (y - cy) / fy]`` of raw pixels, undistorted."""
    rectified = camera.rectify_points(centres)
    p = camera.P
    return np.stack([(rectified[:, 0] - p[0, 2]) / p[0, 0],
                     (rectified[:, 1] - p[1, 2]) / p[1, 1]], axis=1)


def side_geometry(state: StereoTrackHistory, side: str, calibration: StereoCalibration,
                  plane: Optional[Sequence[float]] = None,
                  after_ns: Optional[int] = None, appearance: bool = True) -> SideGeometry:
    """
    Return the feature rows of ``side`` ('left' or 'right') of a stereo track.

    ``calibration``: the rig (image sizes, intrinsics, distortion, rectification);
    ``plane``: the ground plane ``[a, b, c, d]`` in the left optical frame
    (``stereo.plane_heights``), None when unknown; rows at or before ``after_ns`` are left
    out (their motion still uses them).  ``appearance=False`` leaves the
    ``APPEARANCE_FEATURES`` columns NaN (the crop statistics cost ~0.13 ms per row on 2 CPU
    cores; skip them when the model does not read them).
    """
    if side not in SIDES:
        raise ValueError(f'side must be left or right, got {side!r}')
    camera = calibration.left if side == 'left' else calibration.right
    width, height = float(camera.width), float(camera.height)
    focal_x, focal_y = float(camera.K[0, 0]), float(camera.K[1, 1])
    own, other = (state.left, state.right) if side == 'left' else (state.right, state.left)
    matched = [o for o in own if o.matched]
    first_new = 0 if after_ns is None else next(
        (i for i, o in enumerate(matched) if o.stamp_ns > after_ns), len(matched))
    if first_new == len(matched):
        return SideGeometry([], np.zeros((0, len(GEOMETRY_FEATURES)), np.float32))
    # the new rows and the one before them (motion)
    start = max(first_new - 1, 0)
    window = matched[start:]
    boxes = np.array([o.box for o in window], dtype=np.float64).reshape(-1, 4)
    bearings = _bearings(camera, boxes[:, :2])
    born = state.left_start_ns if side == 'left' else state.right_start_ns
    if born is None:
        born = matched[0].stamp_ns

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
               else np.full(len(points), np.nan))
    residuals = np.asarray(state.epipolar_residuals, dtype=np.float64).reshape(-1)

    rows = np.zeros((len(window) - (first_new - start), len(GEOMETRY_FEATURES)), np.float32)
    observations: List[TrackObservation] = []
    for j in range(first_new - start, len(window)):
        obs = window[j]
        cx, cy, w, h = boxes[j]
        size = math.sqrt(max(w * h, 1e-12))
        log_size = math.log(size / math.sqrt(focal_x * focal_y))
        row = rows[len(observations)]
        if j > 0:
            px, py, pw, ph = boxes[j - 1]
            dt = (obs.stamp_ns - window[j - 1].stamp_ns) / 1e9
            mean_size = 0.5 * (size + math.sqrt(max(pw * ph, 1e-12)))
            vx_rel = (cx - px) / mean_size / dt if dt > 0 else 0.0
            vy_rel = (cy - py) / mean_size / dt if dt > 0 else 0.0
            v_ang = (bearings[j] - bearings[j - 1]) / dt if dt > 0 else np.zeros(2)
            growth = (math.log(size) - 0.5 * math.log(max(pw * ph, 1e-12))) / dt if dt > 0 \
                else 0.0
            legacy_v = ((cx - px) / width, (cy - py) / height)
        else:
            dt, vx_rel, vy_rel, v_ang, growth, legacy_v = 0.0, 0.0, 0.0, np.zeros(2), 0.0, (
                0.0, 0.0)
        epipolar = depth = height_m = math.nan
        has_partner = disparity = 0.0
        mate = partner.get(partner_stamp.get(int(obs.stamp_ns), obs.stamp_ns))
        if mate is not None:
            has_partner = 1.0
            left_x, right_x = (cx, mate.box[0]) if side == 'left' else (mate.box[0], cx)
            disparity = (left_x - float(right_x)) / width
            k = stereo_index.get(int(obs.stamp_ns))
            if k is not None and k < len(residuals):
                epipolar = residuals[k]
                if k < len(points) and np.all(np.isfinite(points[k])) and points[k][2] > 0:
                    depth = float(points[k][2])
                if k < len(heights):
                    height_m = heights[k]
        has_depth = math.isfinite(depth)
        log_depth = math.log(max(depth, MIN_DEPTH_M)) if has_depth else 0.0
        plane_known = plane is not None and math.isfinite(height_m)
        edge = min(cx - 0.5 * w + 0.5, cy - 0.5 * h + 0.5, width - 0.5 - (cx + 0.5 * w),
                   height - 0.5 - (cy + 0.5 * h)) / max(w, h, 1e-6)
        values = {
            'cx_norm': cx / width, 'cy_norm': cy / height, 'w_norm': w / width,
            'h_norm': h / height, 'score': float(obs.score), 'vx_norm': legacy_v[0],
            'vy_norm': legacy_v[1],
            'epipolar_px': _clip(epipolar, -MAX_EPIPOLAR_PX, MAX_EPIPOLAR_PX),
            'disparity_norm': disparity,
            'height_m': _clip(height_m, -MAX_HEIGHT_M, MAX_HEIGHT_M) if plane_known else 0.0,
            'has_partner': has_partner,
            'bearing_x': bearings[j, 0], 'bearing_y': bearings[j, 1],
            'edge_margin': _clip(edge, -1.0, 3.0), 'log_size': log_size,
            'log_aspect': math.log(max(w, 1e-6) / max(h, 1e-6)),
            'age_s': _clip((obs.stamp_ns - born) / 1e9, 0.0, MAX_AGE_S),
            'dt_s': _clip(dt, 0.0, MAX_DT_S),
            'v_rel_x': _clip(vx_rel, -MAX_REL_SPEED, MAX_REL_SPEED),
            'v_rel_y': _clip(vy_rel, -MAX_REL_SPEED, MAX_REL_SPEED),
            'v_ang_x': _clip(float(v_ang[0]), -MAX_ANG_SPEED, MAX_ANG_SPEED),
            'v_ang_y': _clip(float(v_ang[1]), -MAX_ANG_SPEED, MAX_ANG_SPEED),
            'growth': _clip(growth, -MAX_GROWTH, MAX_GROWTH),
            'log_depth': log_depth, 'has_depth': float(has_depth),
            'log_metric_size': log_size + log_depth if has_depth else 0.0,
            'epipolar_rel': _clip(abs(epipolar) / max(h, MIN_BOX_PX), 0.0, MAX_EPIPOLAR_REL),
            'plane_known': float(plane_known),
        }
        for name, value in values.items():
            row[_COLUMN[name]] = value
        if appearance:
            stats = (0.0, 0.0, 0.0) if obs.crop is None else tuple(
                _clip(v, -1.0, 1.0) for v in crop_statistics(obs.crop))
        else:
            stats = (math.nan,) * 3
        for name, value in zip(APPEARANCE_FEATURES, stats):
            row[_COLUMN[name]] = value
        observations.append(obs)
    return SideGeometry(observations, rows)
