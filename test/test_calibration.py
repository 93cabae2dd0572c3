"""Calibration: camera_calibration_parsers YAML, validation, rectification against OpenCV."""

import cv2
import numpy as np
import pytest

from persistence_ros.calibration import (CalibrationError, CameraCalibration,
                                         load_calibration_yaml, save_calibration_yaml,
                                         StereoCalibration)

# The format camera_calibration writes (left camera of a narrow stereo pair).
LEFT_YAML = """\
image_width: 640
image_height: 480
camera_name: narrow_stereo/left
camera_matrix:
  rows: 3
  cols: 3
  data: [430.15433, 0, 311.71339, 0, 430.60920, 221.06824, 0, 0, 1]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.363528858080088, 0.16117037733986861, -8.1109585007538829e-05,
         -0.00044776712298447841, 0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [0.99806605, 0.00189132, 0.06213359, -0.00246645, 0.99996772, 0.00918261,
         -0.06211347, -0.00931793, 0.99802559]
projection_matrix:
  rows: 3
  cols: 4
  data: [295.53402, 0, 285.55760, 0, 0, 295.53402, 223.29617, 0, 0, 0, 1, 0]
"""


def test_yaml_load_values_and_round_trip(tmp_path):
    path = tmp_path / 'left.yaml'
    path.write_text(LEFT_YAML)
    calibration = load_calibration_yaml(path, frame_id='left_optical')
    assert (calibration.width, calibration.height) == (640, 480)
    assert calibration.camera_name == 'narrow_stereo/left'
    assert calibration.K[0, 2] == pytest.approx(311.71339)
    assert calibration.D.shape == (5,) and calibration.D[0] == pytest.approx(-0.363528858)
    assert calibration.P[1, 2] == pytest.approx(223.29617)
    assert not calibration.is_rectified
    copy_path = tmp_path / 'copy.yaml'
    save_calibration_yaml(calibration, copy_path)
    again = load_calibration_yaml(copy_path)
    for name in ('K', 'D', 'R', 'P'):
        np.testing.assert_array_equal(getattr(again, name), getattr(calibration, name))
    assert again.distortion_model == 'plumb_bob'


@pytest.mark.parametrize('mutation, message', [
    (lambda d: d['camera_matrix'].update(data=[0.0] * 9), 'uncalibrated'),
    (lambda d: d.update(image_width=0), 'image size'),
    (lambda d: d['projection_matrix'].update(data=[1.0] * 11), 'P must have 12'),
    (lambda d: d.update(distortion_model='fancy_model'), 'not supported'),
    (lambda d: d.pop('camera_matrix'), 'lacks camera_matrix'),
    (lambda d: d['rectification_matrix'].update(data=[2.0, 0, 0, 0, 1, 0, 0, 0, 1]),
     'not a rotation'),
])
def test_bad_calibrations_are_rejected_with_a_reason(mutation, message):
    import yaml
    data = yaml.safe_load(LEFT_YAML)
    mutation(data)
    with pytest.raises(CalibrationError, match=message):
        CameraCalibration.from_dict(data)


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / 'evil.yaml'
    path.write_text('!!python/object/apply:os.system ["echo unsafe"]\n')
    with pytest.raises(CalibrationError, match='not valid YAML'):
        load_calibration_yaml(path)


def opencv_rig():
    """Return an unrectified stereo rig and its rectification computed by OpenCV."""
    size = (640, 480)
    k_left = np.array([[520.0, 0, 322.0], [0, 518.0, 236.0], [0, 0, 1]])
    k_right = np.array([[515.0, 0, 318.0], [0, 516.0, 241.0], [0, 0, 1]])
    d_left = np.array([-0.21, 0.05, 0.001, -0.0005, 0.0])
    d_right = np.array([-0.19, 0.04, -0.0008, 0.0007, 0.0])
    rotation, _ = cv2.Rodrigues(np.array([0.01, -0.04, 0.005]))
    translation = np.array([-0.12, 0.002, 0.001])  # right camera 12 cm to the right
    r1, r2, p1, p2, *_ = cv2.stereoRectify(k_left, d_left, k_right, d_right, size, rotation,
                                           translation, alpha=0)
    left = CameraCalibration(size[0], size[1], k_left, d_left, r1, p1)
    right = CameraCalibration(size[0], size[1], k_right, d_right, r2, p2)
    raw = (k_left, d_left, k_right, d_right, rotation, translation)
    return StereoCalibration(left, right), raw


def test_rectified_points_share_rows_and_satisfy_the_fundamental_matrix():
    stereo, (k_left, d_left, k_right, d_right, rotation, translation) = opencv_rig()
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-1, 1, 200), rng.uniform(-0.7, 0.7, 200),
                              rng.uniform(2, 8, 200)])
    # Raw pixels come from OpenCV's projection with the raw intrinsics and true extrinsics,
    # independent of the R and P matrices under test.
    left_px, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), k_left, d_left)
    right_px, _ = cv2.projectPoints(points, cv2.Rodrigues(rotation)[0], translation, k_right,
                                    d_right)
    left_rect = stereo.left.rectify_points(left_px.reshape(-1, 2))
    right_rect = stereo.right.rectify_points(right_px.reshape(-1, 2))
    assert stereo.is_rectified and not stereo.left.is_rectified
    assert np.max(np.abs(left_rect[:, 1] - right_rect[:, 1])) < 0.05
    assert np.all(left_rect[:, 0] > right_rect[:, 0])  # positive disparity
    fundamental = stereo.fundamental_matrix()
    homogeneous = np.column_stack
    residual = np.einsum('ni,ij,nj->n', homogeneous([right_rect, np.ones(200)]),
                         fundamental, homogeneous([left_rect, np.ones(200)]))
    line_norm = np.linalg.norm((fundamental @ homogeneous([left_rect, np.ones(200)]).T)[:2],
                               axis=0)
    assert np.max(np.abs(residual) / line_norm) < 0.05  # pixel distance to the epipolar line
    assert stereo.baseline_m == pytest.approx(np.linalg.norm(translation), rel=1e-6)


def _pixels_in(image_size, pixels):
    width, height = image_size
    return np.all((pixels >= 0.0) & (pixels <= [width - 1.0, height - 1.0]), axis=1)


def test_strong_distortion_is_undone_exactly():
    # cv2.undistortPoints stops after 5 iterations: with k1 = -0.35 pixels inside the image
    # came back up to 10 px off. Truth: normalised points distorted by cv2.projectPoints.
    size = (1280, 720)
    k = np.array([[500.0, 0.0, 640.0], [0.0, 500.0, 360.0], [0.0, 0.0, 1.0]])
    d = np.array([-0.35, 0.12, 0.0, 0.0, -0.02])
    rotation, _ = cv2.Rodrigues(np.array([0.01, -0.02, 0.005]))
    p = np.array([[450.0, 0.0, 630.0, 0.0], [0.0, 450.0, 350.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    camera = CameraCalibration(size[0], size[1], k, d, rotation, p)
    # Radii up to 1.25 (the lens model is monotonic there; its image radius peaks near 1.55).
    radius = np.linspace(0.0, 1.25, 26)
    angle = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
    directions = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    xy = (radius[:, None, None] * directions[None]).reshape(-1, 2)
    rays = np.column_stack([xy, np.ones(len(xy))])
    raw, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), k, d)
    raw = raw.reshape(-1, 2)
    inside = _pixels_in(size, raw)
    assert inside.sum() > 400 and np.max(np.hypot(*xy[inside].T)) > 1.2
    rectified_rays = rays[inside] @ rotation.T
    truth = cv2.projectPoints(rectified_rays, np.zeros(3), np.zeros(3), p[:, :3], None)[0]
    error = np.linalg.norm(camera.rectify_points(raw[inside]) - truth.reshape(-1, 2), axis=1)
    assert np.max(error) < 1e-6


def test_equidistant_camera_without_coefficients_is_rectified():
    # D = [] is an accepted equidistant calibration (r = f * theta, all coefficients zero);
    # cv2.fisheye.undistortPoints wants exactly 4 coefficients.
    k = np.array([[300.0, 0.0, 320.0], [0.0, 300.0, 240.0], [0.0, 0.0, 1.0]])
    rotation, _ = cv2.Rodrigues(np.array([0.0, 0.05, 0.0]))
    camera = CameraCalibration(640, 480, k, [], rotation, distortion_model='equidistant')
    rays = np.array([[0.1, 0.2, 1.0], [-0.4, 0.3, 1.0], [0.5, -0.5, 1.0]])
    raw = cv2.fisheye.projectPoints(rays.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), k,
                                    np.zeros(4))[0].reshape(-1, 2)
    truth = cv2.projectPoints(rays @ rotation.T, np.zeros(3), np.zeros(3), k, None)[0]
    np.testing.assert_allclose(camera.rectify_points(raw), truth.reshape(-1, 2), atol=1e-6)


def _rectified_rig(translation, flags):
    """Return opencv_rig's cameras rectified by cv2.stereoRectify for another translation."""
    stereo, (k_left, d_left, k_right, d_right, rotation, _) = opencv_rig()
    r1, r2, p1, p2, *_ = cv2.stereoRectify(k_left, d_left, k_right, d_right, (640, 480),
                                           rotation, translation, flags=flags, alpha=0)
    left = CameraCalibration(640, 480, k_left, d_left, r1, p1)
    right = CameraCalibration(640, 480, k_right, d_right, r2, p2)
    raw = (k_left, d_left, k_right, d_right, rotation, translation)
    return StereoCalibration(left, right), raw


def _rectified_views(stereo, raw, points):
    """Return rectified left and right pixels of points projected by cv2.projectPoints."""
    k_left, d_left, k_right, d_right, rotation, translation = raw
    left_px, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), k_left, d_left)
    right_px, _ = cv2.projectPoints(points, cv2.Rodrigues(rotation)[0], translation, k_right,
                                    d_right)
    return (stereo.left.rectify_points(left_px.reshape(-1, 2)),
            stereo.right.rectify_points(right_px.reshape(-1, 2)))


def _points(n=100):
    rng = np.random.default_rng(1)
    return np.column_stack([rng.uniform(-0.8, 0.8, n), rng.uniform(-0.6, 0.6, n),
                            rng.uniform(2, 8, n)])


def test_vertical_rig_baseline_and_shared_columns():
    # cv2.stereoRectify of a vertically displaced rig puts the baseline in P_right[1, 3]
    # (Ty = -fy * B) and aligns columns, not rows.
    translation = np.array([0.002, -0.12, 0.001])
    stereo, raw = _rectified_rig(translation, cv2.CALIB_ZERO_DISPARITY)
    assert stereo.right.P[0, 3] == 0.0
    assert stereo.baseline_m == pytest.approx(np.linalg.norm(translation), rel=1e-9)
    centre = -raw[4].T @ translation              # right optical centre, left optical frame
    np.testing.assert_allclose(stereo.baseline_vector, stereo.left.R @ centre, atol=1e-12)
    left_rect, right_rect = _rectified_views(stereo, raw, _points())
    assert np.max(np.abs(left_rect[:, 0] - right_rect[:, 0])) < 1e-4
    assert np.min(np.abs(left_rect[:, 1] - right_rect[:, 1])) > 5.0
    assert not stereo.is_rectified                # no shared rows: not row-aligned


def test_rig_rectified_without_zero_disparity_is_row_aligned():
    # Without CALIB_ZERO_DISPARITY the principal points differ in x, rows stay shared and the
    # disparity is offset by cx_l - cx_r: x_l - x_r - (cx_l - cx_r) = f * B / Z.
    translation = np.array([-0.12, 0.002, 0.001])
    stereo, raw = _rectified_rig(translation, 0)
    p_left, p_right = stereo.left.P, stereo.right.P
    assert abs(p_left[0, 2] - p_right[0, 2]) > 10.0
    assert stereo.is_rectified
    points = _points()
    left_rect, right_rect = _rectified_views(stereo, raw, points)
    assert np.max(np.abs(left_rect[:, 1] - right_rect[:, 1])) < 1e-4
    depth = (points @ stereo.left.R.T)[:, 2]
    disparity = left_rect[:, 0] - right_rect[:, 0] - (p_left[0, 2] - p_right[0, 2])
    np.testing.assert_allclose(disparity, p_left[0, 0] * np.linalg.norm(translation) / depth,
                               rtol=1e-6)
    assert stereo.baseline_m == pytest.approx(np.linalg.norm(translation), rel=1e-9)


def test_a_right_camera_without_baseline_is_rejected():
    k = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    camera = CameraCalibration(640, 480, k, np.zeros(5))
    with pytest.raises(CalibrationError, match='baseline'):
        StereoCalibration(camera, camera)


def test_a_world_projection_matrix_is_not_a_camera_info_projection():
    k = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    rotation, _ = cv2.Rodrigues(np.array([0.0, 0.3, 0.0]))
    world_projection = k @ np.hstack([rotation, np.zeros((3, 1))])
    with pytest.raises(CalibrationError, match='intrinsic matrix'):
        CameraCalibration(640, 480, k, np.zeros(5), P=world_projection)
