"""
Tests of stereo association and triangulation against independent truth.

Truth comes from OpenCV: 3D points are projected with ``cv2.projectPoints`` through the RAW
intrinsics, distortion and true extrinsics (never through P), and the rectification is
computed by ``cv2.stereoRectify`` as a ROS CameraInfo would carry it.
"""

from pathlib import Path

import cv2
import numpy as np
import pytest

from persistence_ros.calibration import CameraCalibration, StereoCalibration
from persistence_ros.detections import Detection, DetectionFrame
from persistence_ros.stereo import (AssociationConfig, sampson_distance, StereoAssociator,
                                    TriangulationConfig, Triangulator)
from persistence_ros.tracking import Tracker2D, TrackerConfig

WIDTH, HEIGHT = 640, 480
OPENCV_DATA = Path('/usr/share/doc/opencv-doc/examples/data')


class Rig:
    """A stereo rig with its true geometry and the calibration ROS would publish."""

    def __init__(self, k_left, d_left, k_right, d_right, rvec, tvec, calibration):
        self.k_left, self.d_left = k_left, d_left
        self.k_right, self.d_right = k_right, d_right
        self.rvec, self.tvec = rvec, tvec
        self.calibration = calibration

    def project(self, points):
        """Return raw left and right pixels of (N, 3) left-optical points (cv2.projectPoints)."""
        zero = np.zeros(3)
        left = cv2.projectPoints(points, zero, zero, self.k_left, self.d_left)[0].reshape(-1, 2)
        right = cv2.projectPoints(points, self.rvec, self.tvec, self.k_right,
                                  self.d_right)[0].reshape(-1, 2)
        return left, right


def unrectified_rig(tvec=(-0.12, 0.002, 0.003), flags=cv2.CALIB_ZERO_DISPARITY) -> Rig:
    """Return a realistic rig: distorted lenses, right camera rotated ~3 degrees, B = 0.12 m."""
    k_left = np.array([[700.0, 0.0, 322.0], [0.0, 698.0, 238.0], [0.0, 0.0, 1.0]])
    k_right = np.array([[705.0, 0.0, 316.0], [0.0, 703.0, 244.0], [0.0, 0.0, 1.0]])
    d_left = np.array([-0.28, 0.09, 0.001, -0.0008, 0.0])
    d_right = np.array([-0.26, 0.07, -0.0006, 0.001, 0.0])
    rvec = np.array([0.01, -0.05, 0.02])          # X_right = R @ X_left + T
    tvec = np.array(tvec)
    rotation = cv2.Rodrigues(rvec)[0]
    r1, r2, p1, p2 = cv2.stereoRectify(k_left, d_left, k_right, d_right, (WIDTH, HEIGHT),
                                       rotation, tvec, flags=flags, alpha=0)[:4]
    calibration = StereoCalibration(
        CameraCalibration(WIDTH, HEIGHT, k_left, d_left, r1, p1, frame_id='left'),
        CameraCalibration(WIDTH, HEIGHT, k_right, d_right, r2, p2, frame_id='right'))
    return Rig(k_left, d_left, k_right, d_right, rvec, tvec, calibration)


def vertical_rig() -> Rig:
    """Return the rig of ``unrectified_rig`` with the second camera 12 cm below the first."""
    return unrectified_rig(tvec=(0.002, -0.12, 0.003))


def cx_offset_rig() -> Rig:
    """
    Return ``unrectified_rig`` rectified without ``CALIB_ZERO_DISPARITY``.

    Rows stay aligned, but the principal points differ (cx_l - cx_r ~ 50 px), so points at
    infinity have a non-zero ``x_l - x_r``.
    """
    rig = unrectified_rig(flags=0)
    p_left, p_right = rig.calibration.left.P, rig.calibration.right.P
    assert p_left[0, 2] - p_right[0, 2] > 40.0
    return rig


def parallel_rig(f=600.0, baseline=0.2) -> Rig:
    """Return an ideal rectified parallel rig (as a simulator publishes it)."""
    k = np.array([[f, 0.0, 319.5], [0.0, f, 239.5], [0.0, 0.0, 1.0]])
    p_left = np.hstack([k, np.zeros((3, 1))])
    p_right = p_left.copy()
    p_right[0, 3] = -f * baseline
    calibration = StereoCalibration(
        CameraCalibration(WIDTH, HEIGHT, k, np.zeros(5), np.eye(3), p_left),
        CameraCalibration(WIDTH, HEIGHT, k, np.zeros(5), np.eye(3), p_right))
    return Rig(k, np.zeros(5), k, np.zeros(5), np.zeros(3), np.array([-baseline, 0.0, 0.0]),
               calibration)


def general_rig() -> Rig:
    """
    Return a toed-in rig whose rectified views are parallel but not row-aligned.

    The right camera is turned ~3.4 degrees and sits 2 cm forward; R_right turns it back
    parallel to the left camera, and P_right = K [I | R_true.T @ T] then carries a forward
    offset (P_right[2, 3] != 0): epipolar lines are not image rows, so the Sampson distance
    and the cheirality checks are exercised.
    """
    k = np.array([[650.0, 0.0, 319.5], [0.0, 650.0, 239.5], [0.0, 0.0, 1.0]])
    d = np.array([-0.2, 0.05, 0.0, 0.0, 0.0])
    rvec = np.array([0.0, -0.06, 0.0])
    tvec = np.array([-0.15, 0.0, 0.02])
    rotation = cv2.Rodrigues(rvec)[0]
    p_left = np.hstack([k, np.zeros((3, 1))])
    p_right = k @ np.hstack([np.eye(3), (rotation.T @ tvec).reshape(3, 1)])
    calibration = StereoCalibration(
        CameraCalibration(WIDTH, HEIGHT, k, d, np.eye(3), p_left),
        CameraCalibration(WIDTH, HEIGHT, k, d, rotation.T, p_right))
    assert not calibration.is_rectified
    return Rig(k, d, k, d, rvec, tvec, calibration)


def visible_points(rig: Rig, rng, n: int, z_range=(1.0, 6.0)):
    """Return n random points in front of the rig that both cameras see, and their pixels."""
    chunks = []
    while sum(len(c) for c in chunks) < n:
        z = rng.uniform(*z_range, size=4 * n)
        xy = rng.uniform(-0.45, 0.45, size=(4 * n, 2)) * z[:, None] * np.array([1.0, 0.75])
        pts = np.column_stack([xy, z])
        left, right = rig.project(pts)
        inside = np.all((left > 20) & (left < [WIDTH - 20, HEIGHT - 20]), axis=1)
        inside &= np.all((right > 20) & (right < [WIDTH - 20, HEIGHT - 20]), axis=1)
        chunks.append(pts[inside])
    pts = np.concatenate(chunks)[:n]
    return (pts,) + rig.project(pts)


@pytest.mark.parametrize('make_rig', [unrectified_rig, parallel_rig, general_rig,
                                      vertical_rig, cx_offset_rig])
def test_noiseless_triangulation_recovers_truth(make_rig):
    rig = make_rig()
    rng = np.random.default_rng(1)
    truth, left, right = visible_points(rig, rng, 300)
    for refine in (True, False):
        result = Triangulator(rig.calibration, TriangulationConfig(refine=refine)).triangulate(
            left, right)
        assert result.valid.all(), set(result.reason)
        error = np.linalg.norm(result.points_optical - truth, axis=1)
        assert np.max(error / truth[:, 2]) < 2e-4
        assert np.max(result.reprojection_error_px) < 0.05
        assert np.max(result.epipolar_px) < 0.05
    # The rectified frame really is rotated by R_left (the optical conversion is not a no-op).
    np.testing.assert_allclose(result.points_rectified, truth @ rig.calibration.left.R.T,
                               atol=2e-3)


@pytest.mark.parametrize('make_rig', [unrectified_rig, parallel_rig, vertical_rig])
def test_noisy_depth_error_follows_uncertainty_model(make_rig):
    rig = make_rig()
    rng = np.random.default_rng(2)
    sigma_px = 0.5
    truth, left, right = visible_points(rig, rng, 3000)
    left = left + rng.normal(0.0, sigma_px, left.shape)
    right = right + rng.normal(0.0, sigma_px, right.shape)
    triangulator = Triangulator(rig.calibration, TriangulationConfig(sigma_px=sigma_px))
    result = triangulator.triangulate(left, right)
    assert result.valid.mean() > 0.99
    ok = result.valid
    truth_rect = truth @ rig.calibration.left.R.T
    err_z = result.points_rectified[ok, 2] - truth_rect[ok, 2]
    normalised = err_z / result.depth_sigma_m[ok]
    assert np.mean(np.abs(normalised) < 3.0) >= 0.99
    # The model is not loose either: the spread matches it within 25 %.
    assert 0.75 < np.std(normalised) < 1.25
    assert abs(np.mean(normalised)) < 0.1
    # sigma_Z formula: Z^2 * sqrt(2) * sigma_px / (f * B).
    f = rig.calibration.left.P[0, 0]
    expected = 25.0 * np.sqrt(2.0) * sigma_px / (f * rig.calibration.baseline_m)
    assert triangulator.depth_sigma(np.array([5.0]))[0] == pytest.approx(expected)


def test_optimal_correction_is_not_worse_than_dlt():
    rig = unrectified_rig()
    rng = np.random.default_rng(3)
    truth, left, right = visible_points(rig, rng, 1000)
    left = left + rng.normal(0.0, 1.0, left.shape)
    right = right + rng.normal(0.0, 1.0, right.shape)
    errors = {}
    for refine in (True, False):
        result = Triangulator(rig.calibration, TriangulationConfig(
            refine=refine, sigma_px=1.0, max_epipolar_px=10.0)).triangulate(left, right)
        errors[refine] = np.median(np.linalg.norm(result.points_optical - truth, axis=1))
    assert errors[True] <= errors[False] * 1.02


@pytest.mark.parametrize('make_rig', [unrectified_rig, parallel_rig, general_rig])
def test_left_right_swap_is_rejected(make_rig):
    rig = make_rig()
    truth, left, right = visible_points(rig, np.random.default_rng(4), 200)
    result = Triangulator(rig.calibration).triangulate(right, left)
    assert not result.valid.any()
    assert set(result.reason) <= {'behind_camera', 'epipolar'}
    if make_rig is parallel_rig:
        # Same rows, so only cheirality can catch it.
        assert set(result.reason) == {'behind_camera'}


def test_rejection_reasons():
    rig = parallel_rig()
    points = np.array([[0.2, 0.1, -3.0],    # behind the camera
                       [0.1, 0.0, 300.0],   # far: depth uncertainty
                       [0.0, 0.1, 3.0],     # fine, but the right pixel is moved off its row
                       [0.1, 0.1, 2.0],     # fine
                       [0.1, 0.1, 2.0]])    # NaN input
    left, right = rig.project(points)
    right[2, 1] += 8.0
    left[4, 0] = np.nan
    result = Triangulator(rig.calibration, TriangulationConfig(max_depth_sigma_m=1.0)
                          ).triangulate(left, right)
    assert list(result.reason) == ['behind_camera', 'depth_uncertainty', 'epipolar', '',
                                   'invalid_input']
    assert list(result.valid) == [False, False, False, True, False]
    np.testing.assert_allclose(result.points_optical[3], points[3], atol=1e-9)
    # Reprojection gate: a right pixel moved along its row stays epipolar-consistent
    # for DLT, but a left/right pair moved off their rows by 2.5 px each is caught.
    left2, right2 = rig.project(points[3:4])
    left2[0, 1] += 2.5
    right2[0, 1] -= 2.5
    gated = Triangulator(rig.calibration, TriangulationConfig(
        max_epipolar_px=10.0, max_reprojection_error_px=1.0)).triangulate(left2, right2)
    assert list(gated.reason) == ['reprojection_error']


def test_row_gap_is_the_epipolar_cost_when_principal_points_differ():
    # Without CALIB_ZERO_DISPARITY the rectified rows are still shared, so the epipolar
    # residual is the plain row gap (the right point's distance to its epipolar line), as on a
    # rig rectified with it, not the Sampson distance (gap / sqrt(2)).
    residuals = {}
    for flags in (cv2.CALIB_ZERO_DISPARITY, 0):
        rig = unrectified_rig(flags=flags)
        truth, left, right = visible_points(rig, np.random.default_rng(9), 50)
        triangulator = Triangulator(rig.calibration, TriangulationConfig(
            points_are_rectified=True, max_depth_sigma_m=np.inf))
        left_rect, right_rect = (rig.calibration.left.rectify_points(left),
                                 rig.calibration.right.rectify_points(right))
        right_rect[:, 1] += 3.5                    # move the right points off their rows
        result = triangulator.triangulate(left_rect, right_rect)
        residuals[flags] = result.epipolar_px
        np.testing.assert_allclose(result.epipolar_px, 3.5, atol=0.01)
        assert set(result.reason) == {'epipolar'}  # over the 3 px gate
    np.testing.assert_allclose(residuals[0], residuals[cv2.CALIB_ZERO_DISPARITY], atol=0.01)


def test_sampson_distance_matches_opencv():
    rig = unrectified_rig()
    fundamental = rig.calibration.fundamental_matrix()
    rng = np.random.default_rng(5)
    left = rng.uniform(0, 640, (20, 2))
    right = rng.uniform(0, 480, (20, 2))
    ours = sampson_distance(fundamental, left, right)
    for k in range(20):
        theirs = cv2.sampsonDistance(np.append(left[k], 1.0).reshape(3, 1),
                                     np.append(right[k], 1.0).reshape(3, 1), fundamental)
        # OpenCV returns the squared distance with the roles of the points as F x1.
        assert ours[k] == pytest.approx(np.sqrt(theirs), rel=1e-6)


# --------------------------------------------------------------------------------------------
# Association
# --------------------------------------------------------------------------------------------

def _run_scene(rig, rng, n_objects=5, n_clutter=6, frames=20, swap=False, extra_right=None):
    """Track 3D objects plus per-camera clutter; return trackers' live tracks per frame."""
    trackers = [Tracker2D(TrackerConfig(min_hits=1, max_age=3)) for _ in range(2)]
    start = np.column_stack([rng.uniform(-0.8, 0.8, n_objects), rng.uniform(-0.5, 0.5, n_objects),
                             rng.uniform(2.5, 5.0, n_objects)])
    velocity = rng.normal(0.0, 0.03, (n_objects, 3))
    clutter = [(rng.uniform(60, 580, (n_clutter, 2)), rng.normal(0.0, 4.0, (n_clutter, 2)))
               for _ in range(2)]
    history = []
    for k in range(frames):
        points = start + k * velocity
        pixels = rig.project(points)
        stamp = (k + 1) * 50_000_000
        updates = []
        for cam in range(2):
            size = 0.25 * rig.k_left[0, 0] / points[:, 2]
            dets = [Detection(float(x), float(y), float(s), float(s), 0.9, '', f'obj{i}')
                    for i, ((x, y), s) in enumerate(zip(pixels[cam], size))]
            base, vel = clutter[cam]
            dets += [Detection(float(x), float(y), 14.0, 14.0, 0.8, '', f'clutter{cam}_{i}')
                     for i, (x, y) in enumerate(base + k * vel)]
            if cam == 1 and extra_right is not None:
                dets += extra_right(pixels[1], k)
            updates.append(trackers[cam].update(DetectionFrame(stamp, str(cam), dets)))
        tracks = (updates[1].tracks, updates[0].tracks) if swap else (updates[0].tracks,
                                                                      updates[1].tracks)
        history.append(tracks)
    return history


def _label(track):
    return track.last_detection.id


@pytest.mark.parametrize('make_rig', [unrectified_rig, general_rig, vertical_rig])
def test_association_pairs_objects_and_ignores_clutter(make_rig):
    rig = make_rig()
    rng = np.random.default_rng(6)
    associator = StereoAssociator(rig.calibration)
    ids_by_object = {}
    for k, (left, right) in enumerate(_run_scene(rig, rng)):
        pairs = associator.update(left, right)
        lefts = [p.left_id for p in pairs]
        rights = [p.right_id for p in pairs]
        assert len(set(lefts)) == len(lefts) and len(set(rights)) == len(rights)
        for pair in pairs:
            assert _label(pair.left) == _label(pair.right), f'wrong pair at frame {k}'
            assert _label(pair.left).startswith('obj')
            if k >= 10:
                # Stable id once formed.
                assert ids_by_object.setdefault(_label(pair.left), pair.id) == pair.id
    assert sorted(_label(p.left) for p in pairs) == [f'obj{i}' for i in range(5)]
    assert sorted(p.id for p in pairs) == sorted(set(p.id for p in pairs))
    assert all(p.common_frames >= 3 and p.cost_px < 3.0 for p in pairs)


@pytest.mark.parametrize('make_rig', [parallel_rig, general_rig, vertical_rig])
def test_association_rejects_swapped_cameras(make_rig):
    rig = make_rig()
    associator = StereoAssociator(rig.calibration)
    for left, right in _run_scene(rig, np.random.default_rng(7), swap=True):
        pairs = associator.update(left, right)
    assert pairs == []


def test_disparity_accounts_for_the_principal_point_offset():
    # Static objects seen by a rig rectified without CALIB_ZERO_DISPARITY: the pair's
    # disparity is x_l - x_r - (cx_l - cx_r) = f * B / Z (truth: the points' depths in the
    # rectified left frame, the baseline given to cv2.stereoRectify), and a swap is caught.
    rig = cx_offset_rig()
    points = np.array([[-0.5, 0.1, 2.5], [0.2, -0.2, 4.0], [0.6, 0.3, 12.0]])
    left_px, right_px = rig.project(points)
    for swap in (False, True):
        trackers = [Tracker2D(TrackerConfig(min_hits=1)) for _ in range(2)]
        associator = StereoAssociator(rig.calibration)
        for k in range(6):
            ups = [trackers[c].update(DetectionFrame(
                (k + 1) * 10, str(c), [Detection(float(x), float(y), 20.0, 20.0, 0.9, '', f'o{i}')
                                       for i, (x, y) in enumerate(px)]))
                for c, px in enumerate((left_px, right_px))]
            tracks = (ups[1].tracks, ups[0].tracks) if swap else (ups[0].tracks, ups[1].tracks)
            pairs = associator.update(*tracks)
        if swap:
            assert pairs == []
            continue
        assert sorted((_label(p.left), _label(p.right)) for p in pairs) == [
            ('o0', 'o0'), ('o1', 'o1'), ('o2', 'o2')]
        depth = (points @ rig.calibration.left.R.T)[:, 2]
        expected = rig.calibration.left.P[0, 0] * np.linalg.norm(rig.tvec) / depth
        for pair in pairs:
            index = int(_label(pair.left)[1:])
            assert pair.disparity_px == pytest.approx(expected[index], abs=0.01)


def test_one_track_never_pairs_twice():
    rig = parallel_rig()

    def duplicate(right_pixels, k):
        # A second right track on the same rows (e.g. a reflection), 30 px to the left.
        x, y = right_pixels[0]
        return [Detection(float(x) - 40.0, float(y), 20.0, 20.0, 0.9, '', 'dup')]

    associator = StereoAssociator(rig.calibration)
    for left, right in _run_scene(rig, np.random.default_rng(8), n_objects=1, n_clutter=0,
                                  extra_right=duplicate):
        pairs = associator.update(left, right)
        assert len(pairs) <= 1
    assert len(pairs) == 1 and _label(pairs[0].left) == 'obj0'


def test_pair_ends_when_it_becomes_inconsistent_and_ids_are_not_reused():
    rig = parallel_rig()
    trackers = [Tracker2D(TrackerConfig(min_hits=1)) for _ in range(2)]
    associator = StereoAssociator(rig.calibration, AssociationConfig(cost_window=5))
    seen_ids = []
    ended = []
    for k in range(30):
        drift = 0.0 if k < 15 else 3.0 * (k - 14)   # the right track leaves the row
        frames = [[Detection(300.0 + k, 200.0, 30.0, 30.0, 0.9, '', 'a')],
                  [Detection(270.0 + k, 200.0 + drift, 30.0, 30.0, 0.9, '', 'a')]]
        ups = [trackers[c].update(DetectionFrame((k + 1) * 10, str(c), frames[c]))
               for c in range(2)]
        pairs = associator.update(ups[0].tracks, ups[1].tracks)
        seen_ids += [p.id for p in pairs]
        ended += [p.id for p in associator.ended]
        if 5 <= k < 15:
            assert [p.id for p in pairs] == [1]
    assert pairs == []
    assert ended == [1]
    assert set(seen_ids) == {1}
    assert [t.id for t in ups[0].tracks] == [1] and [t.id for t in ups[1].tracks] == [1]


def test_association_config_validation():
    with pytest.raises(ValueError, match='min_common_frames must be an integer >= 1, got 0'):
        AssociationConfig(min_common_frames=0)
    with pytest.raises(ValueError, match='max_epipolar_px must be a number > 0'):
        AssociationConfig(max_epipolar_px=-1.0)
    with pytest.raises(ValueError, match='sigma_px must be a number > 0'):
        TriangulationConfig(sigma_px=0.0)


# --------------------------------------------------------------------------------------------
# Real data: OpenCV's stereo chessboard pairs (Debian package opencv-doc)
# --------------------------------------------------------------------------------------------

def _chessboard_corners(path: Path, pattern=(9, 6)):
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        return None, None
    found, corners = cv2.findChessboardCorners(image, pattern, flags=cv2.CALIB_CB_ADAPTIVE_THRESH
                                               | cv2.CALIB_CB_NORMALIZE_IMAGE)
    if not found:
        return None, image.shape
    corners = cv2.cornerSubPix(image, corners, (11, 11), (-1, -1),
                               (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    return corners.reshape(-1, 2).astype(np.float64), image.shape


def test_real_chessboard_pairs_reproduce_square_spacing():
    lefts = sorted(OPENCV_DATA.glob('left[0-9][0-9].jpg'))
    if not lefts:
        pytest.skip(f'no stereo chessboards under {OPENCV_DATA}: '
                    'apt-get install opencv-doc to run this test')
    pattern = (9, 6)
    board = np.zeros((pattern[0] * pattern[1], 3), np.float32)
    board[:, :2] = np.mgrid[0:pattern[0], 0:pattern[1]].T.reshape(-1, 2)  # squareSize 1.0
    pairs = []
    for left_path in lefts:
        right_path = left_path.with_name(left_path.name.replace('left', 'right'))
        cl, shape = _chessboard_corners(left_path, pattern)
        cr, _ = _chessboard_corners(right_path, pattern)
        if cl is not None and cr is not None:
            pairs.append((cl, cr))
    assert len(pairs) >= 10
    height, width = shape
    # Calibrate on all but three pairs, test on the held-out three.
    train, held_out = pairs[:-3], pairs[-3:]
    obj = [board] * len(train)
    img_l = [p[0].astype(np.float32) for p in train]
    img_r = [p[1].astype(np.float32) for p in train]
    _, k1, d1, _, _ = cv2.calibrateCamera(obj, img_l, (width, height), None, None)
    _, k2, d2, _, _ = cv2.calibrateCamera(obj, img_r, (width, height), None, None)
    rms, k1, d1, k2, d2, rotation, translation = cv2.stereoCalibrate(
        obj, img_l, img_r, k1, d1, k2, d2, (width, height), flags=cv2.CALIB_FIX_INTRINSIC)[:7]
    assert rms < 1.0
    r1, r2, p1, p2 = cv2.stereoRectify(k1, d1, k2, d2, (width, height), rotation, translation,
                                       alpha=0)[:4]
    calibration = StereoCalibration(
        CameraCalibration(width, height, k1, d1.ravel(), r1, p1),
        CameraCalibration(width, height, k2, d2.ravel(), r2, p2))
    assert calibration.is_rectified
    triangulator = Triangulator(calibration, TriangulationConfig(max_depth_sigma_m=np.inf))
    spacings = []
    for cl, cr in held_out:
        result = triangulator.triangulate(cl, cr)
        assert result.valid.all(), set(result.reason)
        grid = result.points_optical.reshape(pattern[1], pattern[0], 3)
        spacings.append(np.linalg.norm(np.diff(grid, axis=1), axis=2).ravel())
        spacings.append(np.linalg.norm(np.diff(grid, axis=0), axis=2).ravel())
    spacings = np.concatenate(spacings)
    # The board squares are 1.0 unit (the OpenCV sample's squareSize).
    assert np.median(spacings) == pytest.approx(1.0, rel=0.02)
    assert np.percentile(np.abs(spacings - 1.0), 95) < 0.05


def _full_matrix_update(associator, left, right):
    """Return the pairs of the association rule on the full cost matrices (the old way)."""
    from scipy.optimize import linear_sum_assignment
    cost, count, disparity, front = associator._costs(left, right)
    config = associator.config
    strict = associator._acceptable(cost, count, disparity, front, config.max_epipolar_px)
    loose = associator._acceptable(cost, count, disparity, front,
                                   config.keep_factor * config.max_epipolar_px)
    li, ri = {t.id: i for i, t in enumerate(left)}, {t.id: j for j, t in enumerate(right)}
    kept, used_l, used_r = [], set(), set()
    for (lid, rid) in associator._pairs:
        i, j = li.get(lid), ri.get(rid)
        if i is not None and j is not None and loose[i, j]:
            kept.append((lid, rid, float(cost[i, j]), int(count[i, j]), float(disparity[i, j])))
            used_l.add(i)
            used_r.add(j)
    free_l = [i for i in range(len(left)) if i not in used_l]
    free_r = [j for j in range(len(right)) if j not in used_r]
    if free_l and free_r and np.any(strict[np.ix_(free_l, free_r)]):
        ok = strict[np.ix_(free_l, free_r)]
        rows, cols = linear_sum_assignment(np.where(ok, cost[np.ix_(free_l, free_r)], 1e9))
        for r, c in zip(rows, cols):
            if ok[r, c]:
                i, j = free_l[r], free_r[c]
                kept.append((left[i].id, right[j].id, float(cost[i, j]), int(count[i, j]),
                             float(disparity[i, j])))
    return kept


@pytest.mark.parametrize('make_rig', [parallel_rig, unrectified_rig, general_rig, vertical_rig])
def test_association_costs_only_the_pairs_it_decides_on(make_rig):
    # The associator costs the existing pairs and the free tracks' pairs only; the pairs,
    # their numbers (bit for bit) and the ended pairs are those of the full matrices.
    rig = make_rig()
    associator = StereoAssociator(rig.calibration)
    formed = 0
    for left, right in _run_scene(rig, np.random.default_rng(9), n_objects=6, n_clutter=8,
                                  frames=24):
        expected = _full_matrix_update(associator, left, right)
        before = dict(associator._pairs)
        pairs = associator.update(left, right)
        got = [(p.left_id, p.right_id, p.cost_px, p.common_frames, p.disparity_px)
               for p in pairs]
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert a[:2] == b[:2] and a[3] == b[3]
            assert a[2] == b[2] and (a[4] == b[4] or (np.isnan(a[4]) and np.isnan(b[4])))
        kept = {(p.left_id, p.right_id) for p in pairs}
        assert [p.id for p in associator.ended] == [p.id for key, p in before.items()
                                                    if key not in kept]
        formed = max(formed, len(pairs))
    assert formed >= 5


@pytest.mark.parametrize('make_rig', [parallel_rig, unrectified_rig])
def test_matched_centres_kept_between_updates_equal_those_of_the_whole_history(make_rig):
    # The associator keeps each track's rectified centres and only adds the new matched
    # observations and drops the ones that left the (short) history.
    rig = make_rig()
    rng = np.random.default_rng(4)
    trackers = [Tracker2D(TrackerConfig(min_hits=1, max_age=4), window=6) for _ in range(2)]
    kept = StereoAssociator(rig.calibration)
    points = np.column_stack([rng.uniform(-0.5, 0.5, 4), rng.uniform(-0.3, 0.3, 4),
                              rng.uniform(2.0, 4.0, 4)])
    checked = 0
    for k in range(30):
        pixels = rig.project(points + k * 0.01)
        updates = []
        for cam in range(2):
            visible = rng.random(4) > 0.3  # missed detections: unmatched observations
            dets = [Detection(float(x), float(y), 20.0, 20.0, 0.9, '', f'o{i}')
                    for i, (x, y) in enumerate(pixels[cam]) if visible[i]]
            updates.append(trackers[cam].update(DetectionFrame((k + 1) * 10, str(cam), dets)))
        for cam, left in ((0, True), (1, False)):
            tracks = updates[cam].tracks
            got = kept._rectified(tracks, left)
            want = StereoAssociator(rig.calibration)._rectified(tracks, left)
            for (s1, c1), (s2, c2), track in zip(got, want, tracks):
                assert np.array_equal(s1, s2) and np.array_equal(c1, c2)
                assert len(s1) == sum(o.matched for o in track.history)
                checked += len(s1)
            assert set(kept._centres[left]) == {t.id for t in tracks}
    assert checked > 100


def _near_objects(rig, rng, jitter_fraction, frames=12):
    """Two near objects (boxes about 250 px high) whose box centres jitter by a fraction of it."""
    trackers = [Tracker2D(TrackerConfig(min_hits=1, max_age=3)) for _ in range(2)]
    points = np.array([[-0.35, 0.0, 1.2], [0.35, 0.05, 1.3]])
    pixels = rig.project(points)
    size = 0.5 * rig.k_left[0, 0] / points[:, 2]
    history = []
    for k in range(frames):
        updates = []
        for cam in range(2):
            centres = pixels[cam] + rng.normal(0.0, jitter_fraction, (2, 2)) * size[:, None]
            dets = [Detection(float(x), float(y), float(s), float(s), 0.9, '', f'obj{i}')
                    for i, ((x, y), s) in enumerate(zip(centres, size))]
            updates.append(trackers[cam].update(
                DetectionFrame((k + 1) * 50_000_000, str(cam), dets)))
        history.append((updates[0].tracks, updates[1].tracks))
    return history, size


def test_large_boxes_pair_with_a_gate_relative_to_their_size():
    # A detector's centre jitter grows with the box: 2% of a 250 px box is 5 px of row noise
    # per camera, beyond the 3 px gate; gates that grow to 5% of the box height pair them.
    rig = parallel_rig()
    results = {}
    for fraction in (0.0, 0.05):
        associator = StereoAssociator(rig.calibration,
                                      AssociationConfig(gate_box_fraction=fraction))
        history, size = _near_objects(rig, np.random.default_rng(3), 0.02)
        for left, right in history:
            pairs = associator.update(left, right)
        results[fraction] = sorted((_label(p.left), _label(p.right)) for p in pairs)
    assert np.all(size > 200.0)
    assert results[0.0] == []
    assert results[0.05] == [('obj0', 'obj0'), ('obj1', 'obj1')]


def test_triangulation_gates_grow_with_the_box_height():
    rig = parallel_rig()
    point = np.array([[0.1, 0.0, 1.5]])
    left, right = rig.project(point)
    right[0, 1] += 8.0   # 8 px off the row: 3% of a 260 px box
    triangulator = Triangulator(rig.calibration)
    assert list(triangulator.triangulate(left, right).reason) == ['epipolar']
    assert list(triangulator.triangulate(left, right, [40.0]).reason) == ['epipolar']
    assert list(triangulator.triangulate(left, right, [260.0]).reason) == ['']
    strict = Triangulator(rig.calibration, TriangulationConfig(gate_box_fraction=0.0))
    assert list(strict.triangulate(left, right, [260.0]).reason) == ['epipolar']
    with pytest.raises(ValueError, match='gate_box_fraction'):
        AssociationConfig(gate_box_fraction=1.5)
