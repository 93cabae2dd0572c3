"""
Camera and stereo calibration: K, D, R, P and image size, as ROS CameraInfo carries them.

The YAML format is the one ``camera_calibration`` writes and ``camera_calibration_parsers``
reads (``image_width``, ``camera_matrix: {rows, cols, data}``, ...). ``P`` follows the
CameraInfo convention: it projects points given in the *rectified* camera frame, so a point
triangulated with ``P_left``/``P_right`` is rotated into the left optical frame with
``R_left.T``.

``CameraInfoMonitor`` is what a node does with the camera_info topics: the first usable
pair, then only confirmed recalibrations (one change, then stable) that agree with the
images; a camera_info that keeps changing or disagrees with the images is refused by reason
(``CAMERA_INFO_REJECTIONS``) while the last good calibration stays in use.
"""

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
import yaml

DISTORTION_MODELS = ('plumb_bob', 'rational_polynomial', 'equidistant')

# Termination of the iterative undistortion. cv2.undistortPoints stops after 5 fixed-point
# iterations, which leaves pixels of strongly distorted lenses several pixels off (k1 = -0.35:
# 2.6 to 10 px inside the image); iterate until the reprojection error is negligible instead.
UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10)


class CalibrationError(ValueError):
    """A calibration that cannot be used; the message says what is wrong."""


def _matrix(value, shape, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.size != int(np.prod(shape)):
        raise CalibrationError(f'{name} must have {int(np.prod(shape))} values, got {array.size}')
    array = array.reshape(shape)
    if not np.all(np.isfinite(array)):
        raise CalibrationError(f'{name} contains NaN or infinity')
    return array


@dataclass(frozen=True)
class CameraCalibration:
    """Intrinsics, distortion, rectification and projection of one camera."""

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    P: np.ndarray = None
    distortion_model: str = 'plumb_bob'
    camera_name: str = ''
    frame_id: str = ''

    def __post_init__(self):
        """Validate and normalise the arrays; raise CalibrationError on bad values."""
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise CalibrationError(
                f'image size must be positive, got {self.width}x{self.height}')
        object.__setattr__(self, 'width', int(self.width))
        object.__setattr__(self, 'height', int(self.height))
        K = _matrix(self.K, (3, 3), 'K')
        if K[0, 0] <= 0.0 or K[1, 1] <= 0.0:
            raise CalibrationError(
                'K has a non-positive focal length (K[0] == 0 means the camera is '
                'uncalibrated): calibrate it or give a calibration file')
        object.__setattr__(self, 'K', K)
        object.__setattr__(self, 'D', np.asarray(self.D, dtype=np.float64).reshape(-1))
        if not np.all(np.isfinite(self.D)):
            raise CalibrationError('D contains NaN or infinity')
        if self.distortion_model not in DISTORTION_MODELS:
            raise CalibrationError(
                f'distortion_model {self.distortion_model!r} is not supported; '
                f'use one of {", ".join(DISTORTION_MODELS)}')
        if self.distortion_model == 'equidistant' and self.D.size not in (0, 4):
            raise CalibrationError(
                f'equidistant distortion needs 4 coefficients, got {self.D.size}')
        R = _matrix(self.R, (3, 3), 'R')
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0.0:
            raise CalibrationError('R is not a rotation matrix')
        object.__setattr__(self, 'R', R)
        P = np.hstack([K, np.zeros((3, 1))]) if self.P is None else _matrix(self.P, (3, 4), 'P')
        if P[0, 0] <= 0.0 or P[1, 1] <= 0.0:
            raise CalibrationError('P has a non-positive focal length')
        if P[1, 0] != 0.0 or P[2, 0] != 0.0 or P[2, 1] != 0.0 or P[2, 2] != 1.0:
            raise CalibrationError(
                'P[:, :3] must be an intrinsic matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]] '
                '(ROS CameraInfo convention: P projects points of the rectified camera frame); '
                'a P = K [R | t] in world coordinates is not a CameraInfo projection')
        object.__setattr__(self, 'P', P)

    @cached_property
    def is_rectified(self) -> bool:
        """
        Return True if raw pixels are already rectified pixels of P (no D, R = I, K = P).

        Computed once: the calibration is frozen, and the trackers ask for every track every
        frame (``np.allclose`` cost more than the pixels' rectification).
        """
        return (not np.any(self.D) and np.allclose(self.R, np.eye(3))
                and np.allclose(self.K, self.P[:, :3]))

    def rectify_points(self, pixels: np.ndarray) -> np.ndarray:
        """Map raw pixel coordinates (N, 2) to rectified pixel coordinates of P."""
        points = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        if self.is_rectified or points.shape[0] == 0:
            return points.copy()
        src = points.reshape(-1, 1, 2)
        if self.distortion_model == 'equidistant':
            coefficients = self.D if self.D.size else np.zeros(4)  # fisheye needs exactly 4
            out = cv2.fisheye.undistortPoints(src, self.K, coefficients, R=self.R,
                                              P=self.P[:, :3], criteria=UNDISTORT_CRITERIA)
        else:
            out = cv2.undistortPointsIter(src, self.K, self.D, self.R, self.P[:, :3],
                                          UNDISTORT_CRITERIA)
        return out.reshape(-1, 2)

    def to_dict(self) -> dict:
        """Return the camera_calibration_parsers YAML structure."""
        def block(array: np.ndarray, rows: int, cols: int) -> dict:
            return {'rows': rows, 'cols': cols, 'data': [float(v) for v in array.reshape(-1)]}
        return {
            'image_width': self.width,
            'image_height': self.height,
            'camera_name': self.camera_name,
            'camera_matrix': block(self.K, 3, 3),
            'distortion_model': self.distortion_model,
            'distortion_coefficients': block(self.D, 1, int(self.D.size)),
            'rectification_matrix': block(self.R, 3, 3),
            'projection_matrix': block(self.P, 3, 4),
        }

    @classmethod
    def from_dict(cls, data: dict, frame_id: str = '') -> 'CameraCalibration':
        """Build from the camera_calibration_parsers YAML structure."""
        if not isinstance(data, dict):
            raise CalibrationError('a calibration must be a mapping')
        required = ('image_width', 'image_height', 'camera_matrix', 'distortion_coefficients',
                    'projection_matrix')
        missing = [key for key in required if key not in data]
        if missing:
            raise CalibrationError(f'calibration lacks {", ".join(missing)}')

        def data_of(key: str):
            entry = data[key]
            if not isinstance(entry, dict) or 'data' not in entry:
                raise CalibrationError(f'{key} must be a mapping with rows, cols and data')
            return entry['data']
        rectification = data_of('rectification_matrix') if 'rectification_matrix' in data \
            else np.eye(3)
        return cls(width=data['image_width'], height=data['image_height'],
                   K=data_of('camera_matrix'), D=data_of('distortion_coefficients'),
                   R=rectification, P=data_of('projection_matrix'),
                   distortion_model=data.get('distortion_model', 'plumb_bob'),
                   camera_name=str(data.get('camera_name', '')), frame_id=frame_id)


def _centre(projection: np.ndarray) -> np.ndarray:
    """Return the optical centre of ``P = K [I | t]`` (K upper triangular): ``-K^-1 P[:, 3]``."""
    (fx, skew, cx, px), (_, fy, cy, py), (_, _, _, pz) = projection
    tz = pz
    ty = (py - cy * tz) / fy
    tx = (px - skew * ty - cx * tz) / fx
    return -np.array([tx, ty, tz])


@dataclass(frozen=True)
class StereoCalibration:
    """A calibrated stereo pair; both projection matrices share the rectified left frame."""

    left: CameraCalibration
    right: CameraCalibration

    def __post_init__(self):
        """Check that the pair is consistent (P matrices of one rectified rig)."""
        if self.right.P[0, 3] == 0.0 and self.right.P[1, 3] == 0.0:
            raise CalibrationError(
                'right P has no baseline term (P[0,3] == P[1,3] == 0): give the right '
                'camera the stereo projection matrix (Tx = -fx * baseline, or '
                'Ty = -fy * baseline for a vertical rig)')

    @property
    def baseline_vector(self) -> np.ndarray:
        """
        Return the right optical centre minus the left one, in the rectified left frame (m).

        ``(B, 0, 0)`` for a horizontal rig (``Tx = -fx * B``), ``(0, B, 0)`` for a vertical one
        (``Ty = -fy * B``, as ``cv2.stereoRectify`` writes it).
        """
        return _centre(self.right.P) - _centre(self.left.P)

    @property
    def baseline_m(self) -> float:
        """Return the baseline in metres: the distance between the two optical centres."""
        return float(np.linalg.norm(self.baseline_vector))

    @property
    def is_rectified(self) -> bool:
        """
        Return True if rectified pixels of both cameras share rows (horizontal epipolars).

        That holds for every point iff both P have the same second and third rows (fy, cy, Ty
        and Tz): ``cv2.stereoRectify`` of a horizontal rig, with or without
        ``CALIB_ZERO_DISPARITY`` (without it cx differs, which shifts the disparity but not the
        rows). A vertical rig shares columns instead and is not row-aligned.
        """
        return (np.allclose(self.left.P[1], self.right.P[1])
                and np.allclose(self.left.P[2], self.right.P[2]))

    def fundamental_matrix(self) -> np.ndarray:
        """Return F with x_right^T F x_left = 0 for rectified pixel coordinates."""
        p_left, p_right = self.left.P, self.right.P
        centre = np.linalg.svd(p_left)[2][-1]  # camera centre of the left view (null vector)
        epipole = p_right @ centre
        skew = np.array([[0.0, -epipole[2], epipole[1]],
                         [epipole[2], 0.0, -epipole[0]],
                         [-epipole[1], epipole[0], 0.0]])
        fundamental = skew @ p_right @ np.linalg.pinv(p_left)
        return fundamental / np.linalg.norm(fundamental)


def load_calibration_yaml(path: Union[str, Path], frame_id: str = '') -> CameraCalibration:
    """Load a camera_calibration_parsers YAML file (yaml.safe_load)."""
    path = Path(path)
    try:
        with path.open('r', encoding='utf-8') as stream:
            data = yaml.safe_load(stream)
    except OSError as error:
        raise CalibrationError(f'cannot read calibration file {path}: {error}') from error
    except yaml.YAMLError as error:
        raise CalibrationError(f'calibration file {path} is not valid YAML: {error}') from error
    try:
        return CameraCalibration.from_dict(data, frame_id=frame_id)
    except CalibrationError as error:
        raise CalibrationError(f'{path}: {error}') from error


def save_calibration_yaml(calibration: CameraCalibration, path: Union[str, Path]) -> None:
    """Write a calibration in the camera_calibration_parsers YAML format."""
    with Path(path).open('w', encoding='utf-8') as stream:
        yaml.safe_dump(calibration.to_dict(), stream, sort_keys=False)


def calibration_from_camera_info(msg) -> CameraCalibration:
    """
    Build a CameraCalibration from a ``sensor_msgs/CameraInfo`` (rclpy or rosbags message).

    Raises CalibrationError for an uncalibrated info (K[0] == 0), a missing image size, or
    binning / a region of interest (the images would not be the size K and P describe; not
    supported, rather than silently wrong).
    """
    k = np.asarray(msg.k, dtype=np.float64)
    if k.size != 9 or k[0] == 0.0:
        raise CalibrationError(
            f'camera_info of frame {msg.header.frame_id!r} is uncalibrated (K[0] == 0): '
            'calibrate the camera or set the calibration_file parameter')
    if msg.width == 0 or msg.height == 0:
        raise CalibrationError(
            f'camera_info of frame {msg.header.frame_id!r} has no image size '
            f'({msg.width}x{msg.height})')
    binning = (int(getattr(msg, 'binning_x', 0)), int(getattr(msg, 'binning_y', 0)))
    roi = getattr(msg, 'roi', None)
    cropped = roi is not None and (int(roi.width), int(roi.height)) not in (
        (0, 0), (int(msg.width), int(msg.height)))
    if max(binning) > 1 or cropped:
        raise CalibrationError(
            f'camera_info of frame {msg.header.frame_id!r} has binning {binning} or a region '
            'of interest: not supported; publish full-resolution images or set the '
            'calibration_file parameter with the calibration of the images sent')
    return CameraCalibration(width=int(msg.width), height=int(msg.height), K=k, D=list(msg.d),
                             R=list(msg.r), P=list(msg.p),
                             distortion_model=str(msg.distortion_model) or 'plumb_bob',
                             frame_id=str(msg.header.frame_id))


# Why a camera_info is not used (``CalibrationUpdate.reason``; ``rejected.<reason>`` in the
# node's /diagnostics): uncalibrated (K[0] == 0), unusable (bad numbers, binning, a stereo
# pair without baseline, ...), a change not confirmed by the next messages (it kept changing),
# an image size other than the images' own.
CAMERA_INFO_REJECTIONS = ('uncalibrated_camera_info', 'bad_camera_info',
                          'camera_info_unstable', 'camera_info_size_mismatch')
# Identical camera_info messages in a row before a changed calibration is taken (at 30 Hz,
# 0.17 s); the same number of equal image sizes in a row make a side's image size known.
CAMERA_INFO_STABLE = 5


def same_calibration(a: CameraCalibration, b: CameraCalibration) -> bool:
    """Return True if two calibrations are equal (sizes, model; arrays to 1e-9 relative)."""
    return ((a.width, a.height, a.distortion_model) == (b.width, b.height, b.distortion_model)
            and all(np.shape(getattr(a, n)) == np.shape(getattr(b, n))
                    and np.allclose(getattr(a, n), getattr(b, n), rtol=1e-9, atol=1e-12)
                    for n in ('K', 'D', 'R', 'P')))


@dataclass
class CalibrationUpdate:
    """
    The outcome of one camera_info (``CameraInfoMonitor.offer``).

    ``calibration``: a stereo calibration to use from now on (the first one, or a confirmed
    recalibration: ``recalibrated``), else None; ``reason`` (one of
    ``CAMERA_INFO_REJECTIONS``) and ``detail`` when the message was not used.
    """

    calibration: Optional[StereoCalibration] = None
    recalibrated: bool = False
    reason: str = ''
    detail: str = ''


class CameraInfoMonitor:
    """
    The calibration a node takes from ``left/camera_info`` + ``right/camera_info``.

    The first usable pair is taken at once.  After that, a camera_info equal to the current
    calibration changes nothing; a different one is a candidate, taken only once
    ``stable`` identical messages arrived in a row (a real recalibration: one change, then
    stable), and only together with the other side's candidate when it has one (one rebuild
    for a rig recalibrated on both sides).  A candidate replaced by yet another calibration,
    or by the current one again, is refused as ``camera_info_unstable`` (a camera_info that
    changes on nearly every message never replaces the last good one), and a camera_info
    whose size differs from the
    images' known size (``observe_image``) as ``camera_info_size_mismatch``.  The last good
    calibration stays in use throughout; nothing is rebuilt for a refused message.
    """

    def __init__(self, stable: int = CAMERA_INFO_STABLE):
        if stable < 1:
            raise ValueError(f'stable must be >= 1, got {stable}')
        self.stable = int(stable)
        self.current: Optional[StereoCalibration] = None
        self._first: dict = {}
        self._candidate: dict = {}   # side -> [calibration, count]
        self._sizes: dict = {}       # side -> recent image sizes
        self.recalibrations = 0

    def observe_image(self, side: str, width: int, height: int) -> None:
        """Note the size of an image of ``side``; known once ``stable`` in a row agree."""
        sizes = self._sizes.setdefault(side, [])
        sizes.append((int(width), int(height)))
        del sizes[:-self.stable]

    def image_size(self, side: str) -> Optional[tuple]:
        """Return the (width, height) the last ``stable`` images of ``side`` agree on."""
        sizes = self._sizes.get(side, [])
        if len(sizes) < self.stable or len(set(sizes)) != 1:
            return None
        return sizes[-1]

    def offer(self, side: str, msg) -> CalibrationUpdate:
        """Take one ``sensor_msgs/CameraInfo`` of ``side`` ('left' or 'right')."""
        k = np.asarray(msg.k, dtype=np.float64)
        reason = 'uncalibrated_camera_info' if k.size != 9 or k[0] == 0.0 else 'bad_camera_info'
        try:
            calibration = calibration_from_camera_info(msg)
        except CalibrationError as error:
            return CalibrationUpdate(reason=reason, detail=f'{side}: {error}')
        size = self.image_size(side)
        if size is not None and size != (calibration.width, calibration.height):
            self._candidate.pop(side, None)
            return CalibrationUpdate(
                reason='camera_info_size_mismatch',
                detail=f'{side} camera_info is {calibration.width}x{calibration.height}, its '
                       f'images are {size[0]}x{size[1]}: kept the last good calibration')
        if self.current is None:
            self._first[side] = calibration
            if len(self._first) < 2:
                return CalibrationUpdate()
            return self._take(self._first['left'], self._first['right'], False)
        if same_calibration(getattr(self.current, side), calibration):
            if self._candidate.pop(side, None) is not None:
                return CalibrationUpdate(
                    reason='camera_info_unstable',
                    detail=f'{side} camera_info changed and changed back before '
                           f'{self.stable} equal messages confirmed it: ignored the change')
            return CalibrationUpdate()
        candidate = self._candidate.get(side)
        if candidate is not None and same_calibration(candidate[0], calibration):
            candidate[1] += 1
        else:
            self._candidate[side] = [calibration, 1]
            if candidate is not None:
                return CalibrationUpdate(
                    reason='camera_info_unstable',
                    detail=f'{side} camera_info changed again before {self.stable} equal '
                           'messages confirmed the last change: kept the last good '
                           'calibration')
        if any(count < self.stable for _, count in self._candidate.values()):
            return CalibrationUpdate()
        new = {s: self._candidate[s][0] if s in self._candidate else getattr(self.current, s)
               for s in ('left', 'right')}
        self._candidate.clear()
        return self._take(new['left'], new['right'], True)

    def _take(self, left: CameraCalibration, right: CameraCalibration,
              recalibrated: bool) -> CalibrationUpdate:
        try:
            stereo = StereoCalibration(left, right)
        except CalibrationError as error:
            self._first.clear()
            return CalibrationUpdate(reason='bad_camera_info', detail=str(error))
        self.current = stereo
        self.recalibrations += int(recalibrated)
        return CalibrationUpdate(calibration=stereo, recalibrated=recalibrated)
