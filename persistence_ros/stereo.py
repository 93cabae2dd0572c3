"""
Stereo association of left/right 2D tracks over time, and triangulation.

Association (``StereoAssociator``) works on whole track histories, not single frames: for
every left/right candidate pair it averages the epipolar cost over the most recent frames the
two tracks were both matched in (the same synchronized frame: equal stamps, or the right
stamp the caller says belongs to a left one, ``right_to_frame``), gates on
that mean, on the number of common frames and on the sign of the disparity, then solves a
Hungarian assignment (``scipy.optimize.linear_sum_assignment``). Pairs keep a stable stereo id
while both tracks live and stay consistent.

Triangulation (``Triangulator``) uses ``cv2.triangulatePoints`` (DLT) on the rectified
projection matrices, optionally after ``cv2.correctMatches`` (the optimal Hartley-Sturm
correction), and reports per point the 3D position in the LEFT OPTICAL frame
(``X_optical = R_left.T @ X_rectified``), the reprojection error, the depth uncertainty
``sigma_Z = Z^2 * sqrt(2) * sigma_px / (f * B)`` (B the distance between the optical centres,
f the focal length along the baseline: fx for a horizontal rig, fy for a vertical one) and a
validity flag with a rejection reason.

The epipolar cost is the row difference ``|y_l - y_r|`` on a row-aligned rig (both P share
their second and third rows; ``StereoCalibration.is_rectified``) and the Sampson distance
otherwise (a vertical rig, a rig with a forward offset).

Pixel inputs are raw image pixels (as the detector saw them) unless ``points_are_rectified``
is set; they are mapped to rectified pixels of P with ``CameraCalibration.rectify_points``.
"""

from dataclasses import dataclass
import itertools
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from persistence_ros.calibration import StereoCalibration
from persistence_ros.overrides import require
from persistence_ros.tracking import Track2D

# Rejection reasons of ``TriangulationResult.reason`` ('' for valid points), in the order the
# checks are applied (the first failing check names the point).
REASONS = ('invalid_input', 'epipolar', 'behind_camera', 'reprojection_error',
           'depth_uncertainty')

_FORBIDDEN = 1e9


def _check_positive(config, names: Sequence[str], allow_inf: bool = False) -> None:
    for name in names:
        value = getattr(config, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0.0
        ok = ok and (allow_inf or math.isfinite(value)) and not math.isnan(value)
        if not ok:
            raise ValueError(f'{name} must be a number > 0, got {value!r}')


def _check_fraction(config, name: str) -> None:
    value = getattr(config, name)
    require(isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0.0 <= value <= 1.0, name, 'a number in [0, 1]', value)


def box_gates(gate_px: float, fraction: float, box_heights) -> np.ndarray:
    """
    Return the pixel gate of each box: ``max(gate_px, fraction * height)``.

    A gate of ``gate_px`` pixels holds for small boxes; for larger ones it is ``fraction`` of
    the box height, as a detector's box centre jitters in proportion to the box (NaN
    heights: ``gate_px``).
    """
    heights = np.nan_to_num(np.asarray(box_heights, dtype=np.float64), nan=0.0)
    return np.maximum(gate_px, fraction * heights)


def plane_heights(points: np.ndarray, plane: Sequence[float]) -> np.ndarray:
    """
    Return the signed heights ``n.X + d`` of points above a plane ``[a, b, c, d]``.

    The normal is normalised first; rows of ``points`` with NaN give NaN.
    """
    plane = np.asarray(plane, dtype=np.float64).reshape(4)
    norm = np.linalg.norm(plane[:3])
    if not norm > 0.0:
        raise ValueError('plane normal must be non-zero')
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return (pts @ plane[:3] + plane[3]) / norm


def sampson_distance(fundamental: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """
    Return the Sampson distance in pixels of matches (x_right^T F x_left = 0), vectorised.

    ``left`` and ``right`` are arrays (..., 2) of pixel coordinates; the result has shape
    (...). Written with numpy because ``cv2.sampsonDistance`` takes one point pair per call.
    """
    xl = np.concatenate([left, np.ones(left.shape[:-1] + (1,))], axis=-1)
    xr = np.concatenate([right, np.ones(right.shape[:-1] + (1,))], axis=-1)
    f_xl = xl @ fundamental.T          # F x_l  (epipolar lines in the right image)
    ft_xr = xr @ fundamental           # F^T x_r (epipolar lines in the left image)
    algebraic = np.sum(xr * f_xl, axis=-1)
    denom = f_xl[..., 0] ** 2 + f_xl[..., 1] ** 2 + ft_xr[..., 0] ** 2 + ft_xr[..., 1] ** 2
    return np.abs(algebraic) / np.sqrt(np.maximum(denom, 1e-300))


def _disparity_model(calibration: StereoCalibration) -> Optional[Tuple[float, float]]:
    """
    Return (sign, offset) with sign * (x_l - x_r - offset) > 0 iff a point is in front.

    For a row-aligned rig whose P share fx and skew, ``x_l - x_r = offset + D / w`` with
    ``offset = cx_l - cx_r`` (non-zero without ``CALIB_ZERO_DISPARITY``), w the depth (the
    same in both cameras) and ``D = Tx_l - Tx_r - Tz * offset``. None for other rigs: their
    association checks cheirality by triangulating.
    """
    p_left, p_right = calibration.left.P, calibration.right.P
    if not (calibration.is_rectified and np.allclose(p_left[0, :2], p_right[0, :2])):
        return None
    offset = p_left[0, 2] - p_right[0, 2]
    tx = p_left[0, 3] - p_right[0, 3] - p_left[2, 3] * offset
    return (1.0 if tx >= 0.0 else -1.0), offset


def _depths(projection: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Return the depth of (N, 3) points in the camera of ``projection`` (Hartley-Zisserman)."""
    m = projection[:, :3]
    w = points @ projection[2, :3] + projection[2, 3]
    return np.sign(np.linalg.det(m)) * w / np.linalg.norm(m[2])


def _project(projection: np.ndarray, points: np.ndarray) -> np.ndarray:
    homogeneous = points @ projection[:, :3].T + projection[:, 3]
    with np.errstate(divide='ignore', invalid='ignore'):
        return homogeneous[:, :2] / homogeneous[:, 2:3]


def _clipped(box: Sequence[float], axis: int, size: int, margin_px: float) -> int:
    """Return 0 (inside), -1 / +1 (cut by the low / high border) or 2 (both) along an axis."""
    low = box[axis] - 0.5 * box[2 + axis] <= margin_px
    high = box[axis] + 0.5 * box[2 + axis] >= size - 1 - margin_px
    return 2 if low and high else -1 if low else 1 if high else 0


def object_centres(left_box: Sequence[float], right_box: Sequence[float],
                   image_sizes: Tuple[Tuple[int, int], Tuple[int, int]], sigma_px: float,
                   margin_px: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """
    Return the object's centre in both images and the pixel deviations of those centres.

    From one object's boxes (cx, cy, w, h) in the left and right image, ``image_sizes`` the
    (width, height) of each.  Returns ``centres`` (2, 2): [left, right] x [x, y] and
    ``sigmas`` (2, 2) alike.  A box inside the image marks its object's centre to
    ``sigma_px``, in quadrature with half the difference of the two boxes' sizes (boxes that
    differ in size, one view occluded or merged with a reflection, do not mark the same
    point).  A box cut by the image border along an axis shows only part of its object: its
    inner edge is kept and the centre put half the object's size beyond it, the size taken
    from the other view where that box is whole along the axis (deviation a tenth of it),
    else from the box's other side (objects about as wide as tall; deviation a quarter of
    it).  A box cut on both sides of an axis gives its centre to half its larger side.
    """
    boxes = [np.asarray(left_box, dtype=np.float64), np.asarray(right_box, dtype=np.float64)]
    centres = np.array([b[:2] for b in boxes])
    sigmas = np.full((2, 2), float(sigma_px))
    for axis in (0, 1):
        clips = [_clipped(b, axis, image_sizes[v][axis], margin_px)
                 for v, b in enumerate(boxes)]
        if not any(clips):
            mismatch = 0.5 * abs(boxes[0][2 + axis] - boxes[1][2 + axis])
            sigmas[:, axis] = math.hypot(sigma_px, mismatch)
            continue
        for view, (box, clip) in enumerate(zip(boxes, clips)):
            own = box[2 + axis]
            if clip == 0:
                continue
            if clip == 2:
                sigmas[view, axis] = max(sigma_px, 0.5 * max(box[2], box[3]))
                continue
            other = boxes[1 - view]
            if clips[1 - view] == 0:
                size, sigma = max(own, other[2 + axis]), 0.1 * other[2 + axis]
            else:
                size = max(own, box[3 - axis])
                sigma = 0.25 * size
            edge = box[axis] - clip * 0.5 * own     # the edge inside the image
            centres[view, axis] = edge + clip * 0.5 * size
            sigmas[view, axis] = max(sigma_px, sigma)
    return centres, sigmas


# --------------------------------------------------------------------------------------------
# Triangulation
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TriangulationConfig:
    """
    Parameters of ``Triangulator``; validated in ``__post_init__``.

    Attributes
    ----------
    sigma_px:
        Pixel noise (standard deviation) of a point in each image, for ``sigma_Z``.
    max_epipolar_px:
        Gate before triangulating: row difference (row-aligned rig) or Sampson distance.
    max_reprojection_error_px:
        Gate on the reprojection error (max of both views) after triangulating.
    max_depth_sigma_m:
        Gate on the depth standard deviation (``inf`` disables it).
    gate_box_fraction:
        The two pixel gates grow to this fraction of a point's box height for larger boxes
        (a detector's box centre jitters in proportion to the box; 0 keeps them in pixels).
    refine:
        Apply ``cv2.correctMatches`` (optimal Hartley-Sturm) before the DLT.
    points_are_rectified:
        Inputs are already rectified pixels of P (skip ``rectify_points``).

    """

    sigma_px: float = 0.5
    max_epipolar_px: float = 3.0
    max_reprojection_error_px: float = 3.0
    max_depth_sigma_m: float = 1.0
    gate_box_fraction: float = 0.05
    refine: bool = True
    points_are_rectified: bool = False

    def __post_init__(self):
        """Validate the fields; raise ValueError saying what to fix."""
        _check_positive(self, ('sigma_px', 'max_epipolar_px', 'max_reprojection_error_px'))
        _check_positive(self, ('max_depth_sigma_m',), allow_inf=True)
        _check_fraction(self, 'gate_box_fraction')


@dataclass
class TriangulationResult:
    """
    Per-point triangulation output (arrays over N points).

    ``points_optical`` (N, 3) metres in the left optical frame; ``points_rectified`` (N, 3) in
    the rectified left frame; ``depth_m`` (N,) depth in the rectified left camera;
    ``reprojection_error_px`` (N,) the larger of both views (measured vs reprojected rectified
    pixels); ``depth_sigma_m`` (N,); ``epipolar_px`` (N,) the epipolar cost; ``valid`` (N,)
    bool; ``reason`` (N,) str, '' when valid else one of ``REASONS``. Rejected points keep
    their (possibly meaningless) numbers; NaN where they could not be computed.
    """

    points_optical: np.ndarray
    points_rectified: np.ndarray
    depth_m: np.ndarray
    reprojection_error_px: np.ndarray
    depth_sigma_m: np.ndarray
    epipolar_px: np.ndarray
    valid: np.ndarray
    reason: np.ndarray

    def __len__(self) -> int:
        """Return the number of points."""
        return int(self.valid.shape[0])


class Triangulator:
    """Triangulate matched left/right pixels of a calibrated stereo rig."""

    def __init__(self, calibration: StereoCalibration,
                 config: Optional[TriangulationConfig] = None):
        self.calibration = calibration
        self.config = config if config is not None else TriangulationConfig()
        self._fundamental = calibration.fundamental_matrix()
        self._row_aligned = bool(calibration.is_rectified)
        # Focal length along the baseline direction (fx for a horizontal rig, fy for a vertical
        # one): the disparity of a point at depth Z is f * B / Z along that direction. Only the
        # image-plane part of the direction counts (f * B = |K_2x2 @ baseline_xy|).
        baseline = calibration.baseline_vector
        self._baseline = float(np.linalg.norm(baseline))
        direction = baseline / self._baseline if self._baseline > 0.0 else np.zeros(3)
        k = calibration.left.P
        self._focal = math.hypot(k[0, 0] * direction[0] + k[0, 1] * direction[1],
                                 k[1, 1] * direction[1])
        if self._focal == 0.0:  # baseline along the optical axis: no stereo disparity
            self._focal = float(k[0, 0])

    def rectify(self, left_px: np.ndarray,
                right_px: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Return the rectified pixels of P for raw (N, 2) left and right pixels."""
        left = np.asarray(left_px, dtype=np.float64).reshape(-1, 2)
        right = np.asarray(right_px, dtype=np.float64).reshape(-1, 2)
        if self.config.points_are_rectified:
            return left.copy(), right.copy()
        return (self.calibration.left.rectify_points(left),
                self.calibration.right.rectify_points(right))

    def epipolar_cost(self, left_rect: np.ndarray, right_rect: np.ndarray) -> np.ndarray:
        """Return |y_l - y_r| (row-aligned rig) or the Sampson distance, in pixels."""
        if self._row_aligned:
            return np.abs(left_rect[..., 1] - right_rect[..., 1])
        return sampson_distance(self._fundamental, left_rect, right_rect)

    def depth_sigma(self, depth: np.ndarray) -> np.ndarray:
        """
        Return sigma_Z = Z^2 * sqrt(2) * sigma_px / (f * B) for depths Z (metres).

        B is the baseline and f the focal length along it (fx horizontal, fy vertical rig).
        """
        return np.square(depth) * math.sqrt(2.0) * self.config.sigma_px / (
            self._focal * self._baseline)

    def point_covariance(self, points_optical: np.ndarray, pixel_sigma=None) -> np.ndarray:
        """
        Return the (N, 3, 3) covariances of triangulated points in the left optical frame.

        First-order propagation of independent pixel noise through both projections: the
        inverse of the Fisher information ``sum_cameras J^T W J``, J the 2x3 Jacobian of a
        camera's projection at the point and ``W = diag(1 / sigma_x^2, 1 / sigma_y^2)``.
        ``pixel_sigma``: the pixel standard deviations, a number or an array that broadcasts
        to (N, 2, 2) (point, camera left/right, axis x/y); default the config's ``sigma_px``
        everywhere (``object_centres`` gives them per box).  For a rectified horizontal rig
        and one sigma the depth variance is ``(Z^2 * sqrt(2) * sigma / (f * B))^2``
        (``depth_sigma``) and the lateral ones about ``(Z * sigma / f)^2 / 2``: the ellipsoid
        lies along the viewing ray.  Any rig (vertical, forward offset) works alike.  Rows of
        NaN points give NaN.
        """
        sigma = self.config.sigma_px if pixel_sigma is None else pixel_sigma
        rotation = self.calibration.left.R
        rect = np.asarray(points_optical, dtype=np.float64).reshape(-1, 3) @ rotation.T
        weights = 1.0 / np.square(np.broadcast_to(np.asarray(sigma, dtype=np.float64),
                                                  (rect.shape[0], 2, 2)))
        information = np.zeros((rect.shape[0], 3, 3))
        for camera, projection in enumerate((self.calibration.left.P,
                                             self.calibration.right.P)):
            h = rect @ projection[:, :3].T + projection[:, 3]            # (N, 3)
            with np.errstate(divide='ignore', invalid='ignore'):
                pixels = h[:, :2] / h[:, 2:3]
                jacobian = (projection[None, :2, :3] - pixels[:, :, None]
                            * projection[None, 2:3, :3]) / h[:, 2, None, None]
            information += np.einsum('nki,nk,nkj->nij', jacobian, weights[:, camera],
                                     jacobian)
        covariance = np.full_like(information, np.nan)
        finite = np.all(np.isfinite(information), axis=(1, 2))
        finite &= np.abs(np.linalg.det(np.where(finite[:, None, None], information, 1.0))) > 0.0
        covariance[finite] = np.linalg.inv(information[finite])
        # rectified -> optical: Sigma_opt = R^T Sigma_rect R
        return np.einsum('ji,njk,kl->nil', rotation, covariance, rotation)

    def in_front(self, left_rect: np.ndarray, right_rect: np.ndarray) -> np.ndarray:
        """Return, per rectified point pair (N, 2), whether its DLT point is in front of both."""
        p_left, p_right = self.calibration.left.P, self.calibration.right.P
        homogeneous = cv2.triangulatePoints(p_left, p_right, left_rect.T.copy(),
                                            right_rect.T.copy())
        with np.errstate(divide='ignore', invalid='ignore'):
            points = (homogeneous[:3] / homogeneous[3]).T
            return (_depths(p_left, points) > 0.0) & (_depths(p_right, points) > 0.0)

    def triangulate(self, left_px: np.ndarray, right_px: np.ndarray,
                    box_heights: Optional[np.ndarray] = None) -> TriangulationResult:
        """
        Triangulate N matched points given as (N, 2) pixel arrays of the left/right images.

        ``box_heights`` (N,), optional: the height in pixels of the box each point is the
        centre of; the pixel gates grow with it (``gate_box_fraction``, ``box_gates``).
        """
        cfg = self.config
        left, right = self.rectify(left_px, right_px)
        if left.shape != right.shape:
            raise ValueError(f'left and right must have the same shape, got {left.shape} '
                             f'and {right.shape}')
        n = left.shape[0]
        reason = np.full(n, '', dtype=object)
        finite = np.all(np.isfinite(left), axis=1) & np.all(np.isfinite(right), axis=1)
        reason[~finite] = 'invalid_input'
        nan3 = np.full((n, 3), np.nan)
        if not np.any(finite):
            nan = np.full(n, np.nan)
            return TriangulationResult(nan3, nan3.copy(), nan, nan.copy(), nan.copy(),
                                       nan.copy(), np.zeros(n, dtype=bool), reason)
        lf, rf = left[finite], right[finite]
        epipolar = np.full(n, np.nan)
        epipolar[finite] = self.epipolar_cost(lf, rf)

        p_left, p_right = self.calibration.left.P, self.calibration.right.P
        if cfg.refine:
            lc, rc = cv2.correctMatches(self._fundamental, lf.reshape(1, -1, 2),
                                        rf.reshape(1, -1, 2))
            lc, rc = lc.reshape(-1, 2), rc.reshape(-1, 2)
            bad = ~(np.all(np.isfinite(lc), axis=1) & np.all(np.isfinite(rc), axis=1))
            lc[bad], rc[bad] = lf[bad], rf[bad]
        else:
            lc, rc = lf, rf
        homogeneous = cv2.triangulatePoints(p_left, p_right, lc.T.copy(), rc.T.copy())
        scale = homogeneous[3]
        with np.errstate(divide='ignore', invalid='ignore'):
            points = (homogeneous[:3] / scale).T
        at_infinity = ~np.all(np.isfinite(points), axis=1) | (np.abs(scale) < 1e-12)
        points[at_infinity] = np.nan

        rect = nan3.copy()
        rect[finite] = points
        depth_left = np.full(n, np.nan)
        depth_right = np.full(n, np.nan)
        depth_left[finite] = _depths(p_left, points)
        depth_right[finite] = _depths(p_right, points)
        reproj = np.full(n, np.nan)
        reproj[finite] = np.maximum(np.linalg.norm(_project(p_left, points) - lf, axis=1),
                                    np.linalg.norm(_project(p_right, points) - rf, axis=1))
        sigma = self.depth_sigma(depth_left)
        infinite = np.zeros(n, dtype=bool)
        infinite[finite] = at_infinity

        def mark(mask: np.ndarray, name: str) -> None:
            reason[(reason == '') & mask] = name

        heights = np.zeros(n) if box_heights is None else np.reshape(box_heights, n)
        epipolar_gate = box_gates(cfg.max_epipolar_px, cfg.gate_box_fraction, heights)
        reprojection_gate = box_gates(cfg.max_reprojection_error_px, cfg.gate_box_fraction,
                                      heights)
        with np.errstate(invalid='ignore'):
            mark(~(epipolar <= epipolar_gate), 'epipolar')
            mark(~infinite & ((depth_left <= 0.0) | (depth_right <= 0.0)), 'behind_camera')
            mark(~infinite & ~(reproj <= reprojection_gate), 'reprojection_error')
            mark(infinite | ~(sigma <= cfg.max_depth_sigma_m), 'depth_uncertainty')
        optical = rect @ self.calibration.left.R  # row-wise R_left.T @ X_rect
        return TriangulationResult(points_optical=optical, points_rectified=rect,
                                   depth_m=depth_left, reprojection_error_px=reproj,
                                   depth_sigma_m=sigma, epipolar_px=epipolar,
                                   valid=reason == '', reason=reason)


# --------------------------------------------------------------------------------------------
# Association over time
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AssociationConfig:
    """
    Parameters of ``StereoAssociator``; validated in ``__post_init__``.

    Attributes
    ----------
    max_epipolar_px:
        Gate on the mean epipolar cost (row difference or Sampson distance, pixels) over the
        common frames, for new pairs.
    keep_factor:
        An existing pair is kept while its mean cost stays <= ``keep_factor *
        max_epipolar_px`` (hysteresis, so that ids do not flicker).
    min_common_frames:
        Frames in which both tracks were matched, needed to form a pair.
    cost_window:
        Only the most recent ``cost_window`` common frames enter the mean (so that a pair
        that becomes inconsistent is noticed).
    gate_box_fraction:
        Each frame's cost is measured against its own gate ``max(max_epipolar_px, fraction x
        the pair's mean box height)`` (``box_gates``) and scaled to ``max_epipolar_px``: large
        boxes, whose centres jitter more, still pair (0: gates in pixels only).
    min_disparity_px:
        Row-aligned rig with equal fx: the mean disparity ``x_l - x_r - (cx_l - cx_r)`` (sign
        flipped if the right camera is the left one) must exceed it (a left/right swap has a
        negative disparity). Other rigs: most common frames must triangulate in front of both
        cameras.
    points_are_rectified:
        Track boxes are in rectified images already (skip ``rectify_points``).

    """

    max_epipolar_px: float = 3.0
    keep_factor: float = 1.5
    min_common_frames: int = 3
    cost_window: int = 30
    gate_box_fraction: float = 0.05
    min_disparity_px: float = 0.0
    points_are_rectified: bool = False

    def __post_init__(self):
        """Validate the fields; raise ValueError saying what to fix."""
        _check_positive(self, ('max_epipolar_px',))
        _check_fraction(self, 'gate_box_fraction')
        if not (isinstance(self.keep_factor, (int, float)) and self.keep_factor >= 1.0):
            raise ValueError(f'keep_factor must be a number >= 1, got {self.keep_factor!r}')
        for name in ('min_common_frames', 'cost_window'):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
        if not (isinstance(self.min_disparity_px, (int, float))
                and math.isfinite(self.min_disparity_px)):
            raise ValueError(
                f'min_disparity_px must be a finite number, got {self.min_disparity_px!r}')


@dataclass
class StereoPair:
    """
    A left/right pair of 2D tracks of one object.

    ``id`` is the stereo-track id (integers from 1, never reused); ``cost_px`` the mean
    epipolar cost and ``common_frames`` the number of common frames it was computed on;
    ``disparity_px`` the mean disparity ``x_l - x_r - (cx_l - cx_r)`` (NaN for a rig that is
    not row-aligned or whose cameras differ in fx); ``updates``
    how many associator updates the pair has lived through (1 when new).
    """

    id: int
    left: Track2D
    right: Track2D
    cost_px: float
    common_frames: int
    disparity_px: float
    updates: int = 1

    @property
    def left_id(self) -> int:
        """Return the left 2D track id."""
        return self.left.id

    @property
    def right_id(self) -> int:
        """Return the right 2D track id."""
        return self.right.id

    @property
    def matched_now(self) -> bool:
        """Return True if both tracks were matched to a detection in their latest update."""
        return bool(self.left.matched and self.right.matched)

    def current_boxes(self) -> Tuple[Sequence[float], Sequence[float]]:
        """Return the left and right boxes (cx, cy, w, h; raw pixels) of the latest updates."""
        return self.left.history[-1].box, self.right.history[-1].box


_EMPTY_STAMPS = np.zeros(0, dtype=np.int64)
_EMPTY_CENTRES = np.zeros((0, 3), dtype=np.float64)  # rectified x, y; box height


class StereoAssociator:
    """
    Pair left and right 2D tracks over time.

    ``update(left_tracks, right_tracks)`` returns the current pairs; one 2D track belongs to
    at most one pair. ``ended`` holds the pairs that ended at the latest update (a track died
    or the pairing became inconsistent); their ids are never given out again.  At most
    ``max_pairs`` pairs live at once: new pairs beyond it are not formed (the cheapest are
    kept) and ``refused`` counts them at the latest update.
    """

    def __init__(self, calibration: StereoCalibration,
                 config: Optional[AssociationConfig] = None, max_pairs: Optional[int] = None):
        if max_pairs is not None and (not isinstance(max_pairs, int) or max_pairs < 1):
            raise ValueError(f'max_pairs must be an integer >= 1, got {max_pairs!r}')
        self.max_pairs = max_pairs
        self.refused = 0
        self.config = config if config is not None else AssociationConfig()
        self.calibration = calibration
        # Works on points rectified once per update (see _rectified).
        self._triangulator = Triangulator(calibration,
                                          TriangulationConfig(points_are_rectified=True))
        self._disparity = _disparity_model(calibration)
        self._ids = itertools.count(1)
        self._pairs: Dict[Tuple[int, int], StereoPair] = {}
        self.ended: List[StereoPair] = []
        # left (True) / right (False) track id -> (stamps, centres: rectified x, y and box
        # height, last stamp seen)
        self._centres: Dict[bool, Dict[int, tuple]] = {True: {}, False: {}}

    @property
    def pairs(self) -> List[StereoPair]:
        """Return the current pairs."""
        return list(self._pairs.values())

    def _rectified(self, tracks: Sequence[Track2D], left: bool):
        """
        Return (stamps, centres) of each track's matched observations.

        The centres are (k, 3): rectified x, y and the box height.  Kept per track between
        updates (``_centres``): a frame adds a track's new matched observations (rectified
        once, all tracks' in one call) and drops those that left its history, so the cost
        per frame does not grow with the history.
        """
        camera = self.calibration.left if left else self.calibration.right
        rectify = not (self.config.points_are_rectified or camera.is_rectified)
        cache = self._centres[left]
        kept, added = [], []
        for track in tracks:
            history = track.history
            entry = cache.get(track.id)
            if entry is None:
                stamps, centres, last = _EMPTY_STAMPS, _EMPTY_CENTRES, None
            else:
                stamps, centres, last = entry
                if len(stamps) and stamps[0] < history[0].stamp_ns:  # left the history
                    cut = int(np.searchsorted(stamps, history[0].stamp_ns))
                    stamps, centres = stamps[cut:], centres[cut:]
            new = []
            for obs in reversed(history):  # stamps increase: the new ones are the tail
                if last is not None and obs.stamp_ns <= last:
                    break
                if obs.matched:
                    new.append(obs)
            new.reverse()
            kept.append((stamps, centres, history[-1].stamp_ns if history else last))
            added.append(new)
        sizes = [len(new) for new in added]
        boxes = np.array([o.box for new in added for o in new],
                         dtype=np.float64).reshape(-1, 4)
        raw = boxes[:, :2]
        # one call for every track's new points (each point is undistorted on its own)
        points = np.column_stack([camera.rectify_points(raw) if rectify and len(raw) else raw,
                                  boxes[:, 3]])
        parts = np.split(points, np.cumsum(sizes)[:-1]) if tracks else []
        out, fresh = [], {}
        for track, (stamps, centres, last), new, part in zip(tracks, kept, added, parts):
            if new:
                stamps = np.concatenate([stamps, np.fromiter(
                    (o.stamp_ns for o in new), dtype=np.int64, count=len(new))])
                centres = np.concatenate([centres, part])
            fresh[track.id] = (stamps, centres, last)
            out.append((stamps, centres))
        self._centres[left] = fresh  # tracks that ended are forgotten
        return out

    def _grid(self, left_data, right_data, right_to_frame: Optional[Mapping[int, int]] = None):
        """
        Return left/right grids (n, S, 3) of centres: rectified x, y and box height.

        NaN where a track has no observation.

        Frames are the left stamps; a right observation joins the frame whose left stamp
        ``right_to_frame`` gives for its stamp (its own stamp when not listed).
        """
        left_stamps = np.concatenate([s for s, _ in left_data] + [_EMPTY_STAMPS])
        stamps = np.unique(left_stamps)
        shape = (len(stamps), 3)
        grid_l = np.full((len(left_data),) + shape, np.nan)
        grid_r = np.full((len(right_data),) + shape, np.nan)
        if len(stamps) == 0:
            return grid_l, grid_r
        rows = np.repeat(np.arange(len(left_data)), [len(s) for s, _ in left_data])
        grid_l[rows, np.searchsorted(stamps, left_stamps)] = np.concatenate(
            [c for _, c in left_data] + [_EMPTY_CENTRES])
        right_stamps = np.concatenate([s for s, _ in right_data] + [_EMPTY_STAMPS])
        if not len(right_stamps):
            return grid_l, grid_r
        if right_to_frame:  # a right stamp -> its frame's left stamp (itself if unlisted)
            keys = np.fromiter(right_to_frame.keys(), dtype=np.int64, count=len(right_to_frame))
            values = np.fromiter(right_to_frame.values(), dtype=np.int64,
                                 count=len(right_to_frame))
            order = np.argsort(keys, kind='stable')
            keys, values = keys[order], values[order]
            at = np.clip(np.searchsorted(keys, right_stamps), 0, len(keys) - 1)
            right_stamps = np.where(keys[at] == right_stamps, values[at], right_stamps)
        rows = np.repeat(np.arange(len(right_data)), [len(s) for s, _ in right_data])
        k = np.clip(np.searchsorted(stamps, right_stamps), 0, len(stamps) - 1)
        ok = stamps[k] == right_stamps
        grid_r[rows[ok], k[ok]] = np.concatenate(
            [c for _, c in right_data] + [_EMPTY_CENTRES])[ok]
        return grid_l, grid_r

    def _pair_costs(self, gl: np.ndarray, gr: np.ndarray):
        """
        Return (mean cost, common frame count, mean disparity, in-front fraction) of pairs.

        A frame's cost is its epipolar cost scaled to its box size's gate
        (``gate_box_fraction``).  ``gl`` and ``gr`` are grids ``(..., S, 3)`` that broadcast
        against each other (one left and one right track per pair); every result has their
        broadcast shape without the last two axes.  Each pair's numbers depend on its own two
        rows only.
        """
        common = np.isfinite(gl[..., 0]) & np.isfinite(gr[..., 0])
        # Keep only the most recent cost_window common frames of each pair.
        recent = np.cumsum(common[..., ::-1], axis=-1)[..., ::-1] <= self.config.cost_window
        use = common & recent
        count = use.sum(axis=-1)
        gl_b, gr_b = np.broadcast_arrays(gl, gr)
        heights = 0.5 * (gl_b[..., 2] + gr_b[..., 2])
        gl_b, gr_b = gl_b[..., :2], gr_b[..., :2]
        with np.errstate(invalid='ignore'):
            cost = self._triangulator.epipolar_cost(gl_b, gr_b)
            if self.config.gate_box_fraction > 0.0:
                gate = self.config.max_epipolar_px
                cost = cost * (gate / box_gates(gate, self.config.gate_box_fraction, heights))
        cost = np.where(use, cost, 0.0).sum(axis=-1) / np.maximum(count, 1)
        if self._disparity is not None:
            sign, offset = self._disparity
            disparity = sign * ((gl_b[..., 0] - gr_b[..., 0]) - offset)
            disparity = np.where(use, disparity, 0.0).sum(axis=-1) / np.maximum(count, 1)
            front = np.ones_like(cost)
        else:
            disparity = np.full_like(cost, np.nan)
            front = np.zeros_like(cost)
            candidates = (count >= self.config.min_common_frames) & (
                cost <= self.config.keep_factor * self.config.max_epipolar_px)
            if np.any(candidates):
                # One vectorised triangulation over the common frames of all candidates.
                mask = use & candidates[..., None]
                in_front = np.zeros(mask.shape)
                in_front[mask] = self._triangulator.in_front(gl_b[mask], gr_b[mask])
                front = in_front.sum(axis=-1) / np.maximum(count, 1)
        return cost, count, disparity, front

    def _costs(self, left_tracks, right_tracks, right_to_frame=None):
        """Return (mean cost, common frame count, mean disparity, in-front fraction) matrices."""
        grid_l, grid_r = self._grid(self._rectified(left_tracks, True),
                                    self._rectified(right_tracks, False), right_to_frame)
        return self._pair_costs(grid_l[:, None], grid_r[None, :])

    def _acceptable(self, cost, count, disparity, front, gate):
        ok = (count >= self.config.min_common_frames) & (cost <= gate)
        if self._disparity is not None:
            return ok & (disparity > self.config.min_disparity_px)
        return ok & (front > 0.5)

    def update(self, left_tracks: Sequence[Track2D], right_tracks: Sequence[Track2D],
               right_to_frame: Optional[Mapping[int, int]] = None) -> List[StereoPair]:
        """
        Update the pairing with the current live tracks of both cameras; return the pairs.

        ``right_to_frame`` maps a right stamp to the left stamp of the synchronized frame it
        was processed in (the pipeline's frame pairs); without it, stamps must be equal.
        """
        left_tracks, right_tracks = list(left_tracks), list(right_tracks)
        self.ended = []
        self.refused = 0
        if not left_tracks or not right_tracks:
            self.ended = list(self._pairs.values())
            self._pairs = {}
            return []
        grid_l, grid_r = self._grid(self._rectified(left_tracks, True),
                                    self._rectified(right_tracks, False), right_to_frame)
        loose_gate = self.config.keep_factor * self.config.max_epipolar_px
        left_index = {t.id: i for i, t in enumerate(left_tracks)}
        right_index = {t.id: j for j, t in enumerate(right_tracks)}

        def make(pair_id: int, i: int, j: int, numbers, k, updates: int) -> StereoPair:
            cost, count, disparity, _ = numbers
            return StereoPair(pair_id, left_tracks[i], right_tracks[j], float(cost[k]),
                              int(count[k]), float(disparity[k]), updates)

        # Only the pairs a decision needs are costed (each pair's numbers are its own): the
        # existing pairs whose tracks live (kept while loosely consistent), then every free
        # left track against every free right track (new pairs, strictly consistent).
        existing = [(key, pair, left_index.get(key[0]), right_index.get(key[1]))
                    for key, pair in self._pairs.items()]
        alive = [(key, pair, i, j) for key, pair, i, j in existing
                 if i is not None and j is not None]
        numbers = self._pair_costs(grid_l[[i for _, _, i, _ in alive]],
                                   grid_r[[j for _, _, _, j in alive]]) if alive else None
        loose = (self._acceptable(*numbers, loose_gate) if alive
                 else np.zeros(0, dtype=bool))
        kept: Dict[Tuple[int, int], StereoPair] = {}
        used_l, used_r = set(), set()
        for k, (key, pair, i, j) in enumerate(alive):
            if not loose[k]:
                continue
            kept[key] = make(pair.id, i, j, numbers, k, pair.updates + 1)
            used_l.add(i)
            used_r.add(j)
        self.ended = [pair for key, pair in self._pairs.items() if key not in kept]

        free_l = [i for i in range(len(left_tracks)) if i not in used_l]
        free_r = [j for j in range(len(right_tracks)) if j not in used_r]
        if free_l and free_r:
            sub = self._pair_costs(grid_l[free_l][:, None], grid_r[free_r][None, :])
            sub_ok = self._acceptable(*sub, self.config.max_epipolar_px)
            if np.any(sub_ok):
                sub_cost = np.where(sub_ok, sub[0], _FORBIDDEN)
                rows, cols = linear_sum_assignment(sub_cost)
                new = [(r, c) for r, c in zip(rows, cols) if sub_ok[r, c]]
                room = len(new) if self.max_pairs is None else max(
                    0, self.max_pairs - len(kept))
                if len(new) > room:
                    self.refused = len(new) - room
                    best = set(sorted(new, key=lambda rc: sub_cost[rc])[:room])
                    new = [rc for rc in new if rc in best]
                for r, c in new:
                    i, j = free_l[r], free_r[c]
                    key = (left_tracks[i].id, right_tracks[j].id)
                    kept[key] = make(next(self._ids), i, j, sub, (r, c), 1)
        self._pairs = kept
        return list(kept.values())
