"""
Real stereo photographs ("plates") with their calibration and per-pixel background depth.

Every plate is a real photo pair that an installed package ships (no download):

- ``motorcycle``: scikit-image's ``data.stereo_motorcycle()`` (Middlebury 2014, quarter size,
  741x500, rectified, ground-truth disparity; f 994.978 px, baseline 193.001 mm, principal
  point (311.193, 254.877), doffs 31.086 px, from the function's documentation).
- ``aloe``: Debian ``opencv-doc``'s ``aloeL.jpg``/``aloeR.jpg``/``aloeGT.png`` (Middlebury 2006
  Aloe, 1282x1110, rectified, ground-truth disparity, 0 = unknown). The pair ships without
  its calibration: f 3740 px, baseline 160 mm and doffs 270 px are Middlebury's published
  2006 full-size values (not verified here), principal point assumed at the image centre.
  The compositor only needs the rig to be self-consistent, which it is by construction.
- ``chess03``, ``chess06``, ``chess12``: ``opencv-doc``'s chessboard pairs (640x480 grey,
  NOT rectified, strong barrel distortion). The rig is calibrated here from all 13 pairs
  (``cv2.stereoCalibrate``, RMS about 0.45 px; square size assumed 25 mm, it is not given), and
  ``cv2.stereoRectify`` gives the CameraInfo R and P. These scenes have no ground truth depth:
  the background depth is ``cv2.StereoSGBM`` on the rectified pair (an estimate).

Depth maps hold, per raw pixel of each camera, the depth Z of the photographed surface in
that camera's optical frame (along the pixel's ray scaled to z = 1); unknown pixels take the
farther of their row neighbours (occluded background), so nothing is "unknown" downstream.
"""

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

from persistence_ros.calibration import CameraCalibration, StereoCalibration, UNDISTORT_CRITERIA

OPENCV_DATA = Path('/usr/share/doc/opencv-doc/examples/data')
CHESS_PAIRS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)
CHESS_PATTERN = (9, 6)
CHESS_SQUARE_M = 0.025
PLATES = ('motorcycle', 'aloe', 'chess03', 'chess06', 'chess12')
SUPERSAMPLE = 2  # rays per pixel side: 2x2 samples, offsets -0.25 and +0.25 px


class PlateError(RuntimeError):
    """A plate cannot be loaded (its package or file is missing)."""


@dataclass
class View:
    """
    One camera of a plate: raw image, calibration, depth map and pose.

    ``cam_T_left``: 4x4 transform from the left camera's (raw) optical frame into this
    camera's optical frame. Rays are in this camera's optical frame with z = 1, so a ray
    parameter ``t`` is the depth Z.
    """

    name: str
    image: np.ndarray          # [H, W, 3] uint8 RGB
    depth: np.ndarray          # [H, W] float32 metres
    calibration: CameraCalibration
    cam_T_left: np.ndarray

    @property
    def width(self) -> int:
        """Return the image width in pixels."""
        return self.calibration.width

    @property
    def height(self) -> int:
        """Return the image height in pixels."""
        return self.calibration.height

    @property
    def distorted(self) -> bool:
        """Return True if the raw image has lens distortion (D is not zero)."""
        return bool(np.any(self.calibration.D))

    def to_camera(self, points_left: np.ndarray) -> np.ndarray:
        """Return points ``[N, 3]`` of the left optical frame in this camera's frame."""
        points = np.atleast_2d(np.asarray(points_left, dtype=np.float64))
        return points @ self.cam_T_left[:3, :3].T + self.cam_T_left[:3, 3]

    def rotate(self, vectors_left: np.ndarray) -> np.ndarray:
        """Return directions ``[N, 3]`` of the left optical frame in this camera's frame."""
        return np.atleast_2d(vectors_left) @ self.cam_T_left[:3, :3].T

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Return raw pixels ``[N, 2]`` of points in this camera's frame (z > 0)."""
        points = np.atleast_2d(np.asarray(points_cam, dtype=np.float64))
        if not self.distorted:
            k = self.calibration.K
            return np.stack([k[0, 0] * points[:, 0] / points[:, 2] + k[0, 2],
                             k[1, 1] * points[:, 1] / points[:, 2] + k[1, 2]], axis=1)
        pixels, _ = cv2.projectPoints(points.reshape(-1, 1, 3), np.zeros(3), np.zeros(3),
                                      self.calibration.K, self.calibration.D)
        return pixels.reshape(-1, 2)

    def rays(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """
        Return the sample rays of the pixel block ``[y0, y1) x [x0, x1)``.

        Shape ``[(y1-y0)*S, (x1-x0)*S, 3]`` with ``S = SUPERSAMPLE`` samples per pixel side.
        """
        if self.distorted:
            grid = _ray_grid(id(self), self)
            return grid[y0 * SUPERSAMPLE:y1 * SUPERSAMPLE, x0 * SUPERSAMPLE:x1 * SUPERSAMPLE]
        k = self.calibration.K
        us = _sample_coords(x0, x1)
        vs = _sample_coords(y0, y1)
        out = np.empty((len(vs), len(us), 3), np.float64)
        out[..., 0] = ((us - k[0, 2]) / k[0, 0])[None, :]
        out[..., 1] = ((vs - k[1, 2]) / k[1, 1])[:, None]
        out[..., 2] = 1.0
        return out

    def centre_rays(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Return the rays of the pixel centres of a block, ``[(y1-y0)*(x1-x0), 3]``."""
        if self.distorted:
            block = self.rays(x0, y0, x1, y1)
            h, w = y1 - y0, x1 - x0
            mean = block.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE, 3).mean(axis=(1, 3))
            return (mean / mean[..., 2:3]).reshape(-1, 3)
        k = self.calibration.K
        us, vs = np.meshgrid((np.arange(x0, x1) - k[0, 2]) / k[0, 0],
                             (np.arange(y0, y1) - k[1, 2]) / k[1, 1])
        return np.stack([us, vs, np.ones_like(us)], axis=-1).reshape(-1, 3)


def _sample_coords(lo: int, hi: int) -> np.ndarray:
    """Return the supersample coordinates of pixels ``lo .. hi-1`` (centres at integers)."""
    offsets = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    return (np.arange(lo, hi)[:, None] + offsets[None, :]).reshape(-1)


_RAY_GRIDS: Dict[int, Tuple[View, np.ndarray]] = {}


def _ray_grid(key: int, view: View) -> np.ndarray:
    """Return (cached per view) the undistorted rays of every supersample of a distorted view."""
    cached = _RAY_GRIDS.get(key)
    if cached is not None and cached[0] is view:
        return cached[1]
    us = _sample_coords(0, view.width)
    vs = _sample_coords(0, view.height)
    grid_u, grid_v = np.meshgrid(us, vs)
    pts = np.stack([grid_u, grid_v], axis=-1).reshape(-1, 1, 2)
    norm = cv2.undistortPointsIter(pts, view.calibration.K, view.calibration.D, None, None,
                                   UNDISTORT_CRITERIA).reshape(len(vs), len(us), 2)
    grid = np.concatenate([norm, np.ones(norm.shape[:2] + (1,))], axis=-1)
    _RAY_GRIDS.clear()  # one distorted rig at a time is plenty (a scene uses one)
    _RAY_GRIDS[key] = (view, grid)
    return grid


@dataclass
class Plate:
    """A real stereo pair: both views and a note on where its depth comes from."""

    name: str
    left: View
    right: View
    depth_source: str   # 'ground truth' | 'SGBM estimate'

    @property
    def stereo(self) -> StereoCalibration:
        """Return the stereo calibration (CameraInfo of both cameras)."""
        return StereoCalibration(self.left.calibration, self.right.calibration)

    @property
    def baseline_m(self) -> float:
        """Return the distance between the optical centres in metres."""
        return float(np.linalg.norm(np.linalg.inv(self.right.cam_T_left)[:3, 3]))

    def views(self) -> Dict[str, View]:
        """Return ``{'left': ..., 'right': ...}``."""
        return {'left': self.left, 'right': self.right}


def fill_unknown(disparity: np.ndarray) -> np.ndarray:
    """
    Fill non-finite or non-positive disparities with the farther of their row neighbours.

    Unknown pixels of a ground-truth map are mostly occluded background, so the smaller
    (farther) of the nearest known values to the left and right is the safe guess; rows with
    nothing known take the map's 5th percentile.
    """
    d = np.asarray(disparity, dtype=np.float32).copy()
    valid = np.isfinite(d) & (d > 0)
    if valid.all():
        return d
    fallback = float(np.percentile(d[valid], 5)) if valid.any() else 1.0
    height, width = d.shape
    cols = np.arange(width)[None, :].repeat(height, axis=0)
    left_idx = np.maximum.accumulate(np.where(valid, cols, -1), axis=1)
    right_idx = np.minimum.accumulate(np.where(valid, cols, width)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(height)[:, None].repeat(width, axis=1)
    left_val = np.where(left_idx >= 0, d[rows, np.clip(left_idx, 0, width - 1)], np.inf)
    right_val = np.where(right_idx < width, d[rows, np.clip(right_idx, 0, width - 1)], np.inf)
    filled = np.minimum(left_val, right_val)
    filled[~np.isfinite(filled)] = fallback
    d[~valid] = filled[~valid]
    return d


def right_disparity(disparity_left: np.ndarray) -> np.ndarray:
    """
    Return the right view's disparity map from the left one (``x_R = x_L - d``).

    Forward warping with a z-buffer (the nearest surface, largest disparity, wins); holes
    (surfaces the left camera does not see) are filled by ``fill_unknown``.
    """
    d = np.asarray(disparity_left, dtype=np.float32)
    height, width = d.shape
    out = np.full((height, width), -np.inf, np.float32)
    rows, cols = np.nonzero(np.isfinite(d) & (d > 0))
    x_right = np.rint(cols - d[rows, cols]).astype(np.int64)
    keep = (x_right >= 0) & (x_right < width)
    np.maximum.at(out, (rows[keep], x_right[keep]), d[rows[keep], cols[keep]])
    out[~np.isfinite(out)] = np.nan
    return fill_unknown(out)


def _rectified_plate(name: str, left: np.ndarray, right: np.ndarray, disparity: np.ndarray,
                     focal: float, cx: float, cy: float, doffs: float, baseline: float,
                     source: str) -> Plate:
    """Return a plate of a rectified pair: P_right = [K_right | -f B], cx_right = cx + doffs."""
    height, width = disparity.shape
    disp_left = fill_unknown(disparity)
    disp_right = right_disparity(disparity)
    views = {}
    cams = (('left', left, disp_left, cx), ('right', right, disp_right, cx + doffs))
    for cam, image, disp, c in cams:
        k = np.array([[focal, 0.0, c], [0.0, focal, cy], [0.0, 0.0, 1.0]])
        p = np.hstack([k, [[-focal * baseline if cam == 'right' else 0.0], [0.0], [0.0]]])
        calib = CameraCalibration(width=width, height=height, K=k, D=np.zeros(5), R=np.eye(3),
                                  P=p, camera_name=f'{name}_{cam}', frame_id=f'stereo_{cam}')
        pose = np.eye(4)
        if cam == 'right':
            pose[0, 3] = -baseline
        depth = (focal * baseline / (disp + doffs)).astype(np.float32)
        views[cam] = View(cam, np.ascontiguousarray(image), depth, calib, pose)
    return Plate(name, views['left'], views['right'], source)


def _motorcycle() -> Plate:
    try:
        from skimage import data
    except ImportError as error:  # pragma: no cover - scikit-image is a requirement
        raise PlateError(f'plate motorcycle needs scikit-image: {error}') from None
    left, right, disparity = data.stereo_motorcycle()
    return _rectified_plate('motorcycle', left, right, disparity, focal=994.978, cx=311.193,
                            cy=254.877, doffs=31.086, baseline=0.193001,
                            source='ground truth (Middlebury 2014)')


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise PlateError(f'cannot read {path} (install Debian opencv-doc: '
                         'scripts/install-system-deps.sh)')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _aloe() -> Plate:
    left = _read_rgb(OPENCV_DATA / 'aloeL.jpg')
    right = _read_rgb(OPENCV_DATA / 'aloeR.jpg')
    gt = cv2.imread(str(OPENCV_DATA / 'aloeGT.png'), cv2.IMREAD_UNCHANGED)
    if gt is None:
        raise PlateError(f'cannot read {OPENCV_DATA / "aloeGT.png"}')
    disparity = np.where(gt > 0, gt.astype(np.float32), np.nan)
    height, width = disparity.shape
    return _rectified_plate('aloe', left, right, disparity, focal=3740.0,
                            cx=0.5 * (width - 1), cy=0.5 * (height - 1), doffs=270.0,
                            baseline=0.160, source='ground truth (Middlebury 2006)')


@lru_cache(maxsize=1)
def chessboard_rig() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                              np.ndarray, float]:
    """
    Calibrate the opencv-doc chessboard stereo rig from its 13 pairs.

    Returns ``(K1, D1, K2, D2, R, T, rms)``: ``R, T`` map left optical points into the right
    optical frame (metres, square size ``CHESS_SQUARE_M``).
    """
    board = np.zeros((CHESS_PATTERN[0] * CHESS_PATTERN[1], 3), np.float32)
    board[:, :2] = np.mgrid[0:CHESS_PATTERN[0], 0:CHESS_PATTERN[1]].T.reshape(-1, 2)
    board *= CHESS_SQUARE_M
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.01)
    objects, left_pts, right_pts = [], [], []
    size = None
    for index in CHESS_PAIRS:
        images = []
        for cam in ('left', 'right'):
            path = OPENCV_DATA / f'{cam}{index:02d}.jpg'
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise PlateError(f'cannot read {path} (install Debian opencv-doc)')
            images.append(image)
        size = images[0].shape[::-1]
        found = [cv2.findChessboardCorners(im, CHESS_PATTERN) for im in images]
        if not all(ok for ok, _ in found):
            continue
        corners = [cv2.cornerSubPix(im, c, (11, 11), (-1, -1), criteria)
                   for im, (_, c) in zip(images, found)]
        objects.append(board)
        left_pts.append(corners[0])
        right_pts.append(corners[1])
    if len(objects) < 6:
        raise PlateError(f'chessboard calibration found only {len(objects)} usable pairs')
    _, k1, d1, _, _ = cv2.calibrateCamera(objects, left_pts, size, None, None)
    _, k2, d2, _, _ = cv2.calibrateCamera(objects, right_pts, size, None, None)
    rms, k1, d1, k2, d2, rot, trans, _, _ = cv2.stereoCalibrate(
        objects, left_pts, right_pts, k1, d1, k2, d2, size, flags=cv2.CALIB_FIX_INTRINSIC)
    return k1, d1.ravel(), k2, d2.ravel(), rot, trans.ravel(), float(rms)


def _chessboard(index: int) -> Plate:
    k1, d1, k2, d2, rot, trans, _ = chessboard_rig()
    grey = [cv2.imread(str(OPENCV_DATA / f'{cam}{index:02d}.jpg'), cv2.IMREAD_GRAYSCALE)
            for cam in ('left', 'right')]
    height, width = grey[0].shape
    size = (width, height)
    r1, r2, p1, p2, _, _, _ = cv2.stereoRectify(k1, d1, k2, d2, size, rot, trans, alpha=0)
    rect = []
    for image, k, d, r, p in ((grey[0], k1, d1, r1, p1), (grey[1], k2, d2, r2, p2)):
        map_x, map_y = cv2.initUndistortRectifyMap(k, d, r, p[:, :3], size, cv2.CV_32FC1)
        rect.append(cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR))
    sgbm = cv2.StereoSGBM_create(minDisparity=0, numDisparities=96, blockSize=7,
                                 P1=8 * 49, P2=32 * 49, uniquenessRatio=10,
                                 speckleWindowSize=100, speckleRange=2, disp12MaxDiff=1,
                                 mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    raw = sgbm.compute(rect[0], rect[1]).astype(np.float32) / 16.0
    disp_rect = {'left': fill_unknown(np.where(raw > 0.5, raw, np.nan))}
    disp_rect['right'] = right_disparity(disp_rect['left'])
    focal_b = -p2[0, 3]  # f * B of the rectified pair
    views = {}
    for cam, image, k, d, r, p in (('left', grey[0], k1, d1, r1, p1),
                                   ('right', grey[1], k2, d2, r2, p2)):
        calib = CameraCalibration(width=width, height=height, K=k, D=d, R=r, P=p,
                                  camera_name=f'chess{index:02d}_{cam}',
                                  frame_id=f'stereo_{cam}')
        pose = np.eye(4)
        if cam == 'right':
            pose[:3, :3], pose[:3, 3] = rot, trans
        depth_rect = focal_b / disp_rect[cam]
        views[cam] = View(cam, np.repeat(image[..., None], 3, axis=2), np.zeros(1), calib, pose)
        views[cam].depth = _raw_depth(views[cam], depth_rect)
    return Plate(f'chess{index:02d}', views['left'], views['right'], 'SGBM estimate')


def _raw_depth(view: View, depth_rect: np.ndarray) -> np.ndarray:
    """Return the raw-pixel depth map of a view from its rectified depth map."""
    height, width = view.height, view.width
    grid_u, grid_v = np.meshgrid(np.arange(width, dtype=np.float64),
                                 np.arange(height, dtype=np.float64))
    pixels = np.stack([grid_u, grid_v], axis=-1).reshape(-1, 2)
    rect = view.calibration.rectify_points(pixels).reshape(height, width, 2).astype(np.float32)
    z_rect = cv2.remap(depth_rect.astype(np.float32), rect[..., 0], rect[..., 1],
                       cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    p = view.calibration.P
    ray_rect = np.stack([(rect[..., 0] - p[0, 2]) / p[0, 0], (rect[..., 1] - p[1, 2]) / p[1, 1],
                         np.ones((height, width), np.float32)], axis=-1)
    points_raw = (ray_rect * z_rect[..., None]) @ view.calibration.R  # R^T X_rect, row form
    return np.maximum(points_raw[..., 2], 1e-3).astype(np.float32)


@lru_cache(maxsize=4)
def load_plate(name: str) -> Plate:
    """Return the plate ``name`` (one of ``PLATES``), loaded once per process."""
    if name == 'motorcycle':
        return _motorcycle()
    if name == 'aloe':
        return _aloe()
    if name.startswith('chess') and name in PLATES:
        return _chessboard(int(name[5:]))
    raise PlateError(f'unknown plate {name!r}; plates: {list(PLATES)}')


def crop_transform(x0: float, y0: float, scale_x: float, scale_y: float) -> np.ndarray:
    """
    Return the 3x3 pixel map of cropping at ``(x0, y0)`` then resizing by the scales.

    With pixel centres at integers (OpenCV's ``resize``): ``u' = sx * (u - x0 + 0.5) - 0.5``.
    """
    return np.array([[scale_x, 0.0, scale_x * (0.5 - x0) - 0.5],
                     [0.0, scale_y, scale_y * (0.5 - y0) - 0.5], [0.0, 0.0, 1.0]])


def crop_plate(plate: Plate, x0: int, y0: int, width: int, height: int, out_width: int,
               out_height: int) -> Plate:
    """
    Return a new rig: both views cropped to the same window and resized to the output size.

    K and P of both cameras are mapped by the same pixel transform (``crop_transform``), so
    the rig stays rectified; an integer window rarely has the output's exact aspect, so fx and
    fy may differ by a fraction of a percent (as real pixels do). Distortion, rectification
    rotation and the baseline are unchanged.
    """
    scale_x, scale_y = out_width / width, out_height / height
    if abs(scale_x - scale_y) > 0.02 * max(scale_x, scale_y):
        raise ValueError(f'crop {width}x{height} and output {out_width}x{out_height} differ in '
                         'aspect by more than 2 %')
    transform = crop_transform(x0, y0, scale_x, scale_y)
    interpolation = cv2.INTER_AREA if scale_x < 1.0 else cv2.INTER_LINEAR
    views = []
    for view in (plate.left, plate.right):
        c = view.calibration
        calib = replace(c, width=out_width, height=out_height, K=transform @ c.K,
                        P=transform @ c.P)
        image = cv2.resize(view.image[y0:y0 + height, x0:x0 + width], (out_width, out_height),
                           interpolation=interpolation)
        depth = cv2.resize(view.depth[y0:y0 + height, x0:x0 + width], (out_width, out_height),
                           interpolation=cv2.INTER_NEAREST)
        views.append(View(view.name, image, depth, calib, view.cam_T_left.copy()))
    return Plate(plate.name, views[0], views[1], plate.depth_source)


def plate_crop_window(plate: Plate, aspect: float, fraction: float, rng: np.random.Generator
                      ) -> Tuple[int, int, int, int]:
    """Return a random window ``(x0, y0, w, h)`` of ``aspect`` (w/h) covering ``fraction``."""
    width, height = plate.left.width, plate.left.height
    full_w = min(width, int(height * aspect))
    w = max(16, int(round(full_w * fraction)))
    h = max(16, int(round(w / aspect)))
    x0 = int(rng.integers(0, width - w + 1))
    y0 = int(rng.integers(0, height - h + 1))
    return x0, y0, w, h


def depth_percentiles(plate: Plate, q: List[float]) -> np.ndarray:
    """Return percentiles of the left view's background depth (metres)."""
    return np.percentile(plate.left.depth, q)


def texture_images() -> List[Tuple[str, np.ndarray]]:
    """Return real photographs (name, RGB) for object textures: scikit-image and opencv-doc."""
    out: List[Tuple[str, np.ndarray]] = []
    try:
        from skimage import data
        for name in ('astronaut', 'coffee', 'chelsea', 'rocket', 'brick', 'grass', 'gravel',
                     'colorwheel'):
            loader = getattr(data, name, None)
            if loader is None:
                continue
            image = np.asarray(loader())
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=2)
            out.append((name, np.ascontiguousarray(image[..., :3]).astype(np.uint8)))
    except ImportError:  # pragma: no cover - scikit-image is a requirement
        pass
    for name in ('fruits.jpg', 'baboon.jpg', 'building.jpg', 'lena.jpg', 'board.jpg',
                 'starry_night.jpg', 'home.jpg'):
        path = OPENCV_DATA / name
        if path.is_file():
            out.append((name.split('.')[0], _read_rgb(path)))
    if not out:
        raise PlateError('no texture photographs found (scikit-image or opencv-doc)')
    return out
