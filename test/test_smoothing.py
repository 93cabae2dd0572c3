"""
3D smoothing of persistent tracks.

The stereo measurement covariance, the constant-velocity Kalman filter, and the pipeline's
smoothed PERSISTENT tracks.
"""

import math

import numpy as np
import pytest
from test_pipeline import _px, _rig, BASE, F   # the pipeline tests' rectified rig

from persistence_ros.baselines import MinHitsFilter
from persistence_ros.detections import Detection, DetectionFrame
from persistence_ros.offline_runner import run_pipeline, StereoFrame
from persistence_ros.settings import Settings
from persistence_ros.smoothing import ConstantVelocityKalman, SmoothingConfig, TrackSmoother
from persistence_ros.stereo import object_centres, Triangulator
from persistence_ros.stereo_track import TrackState

PERIOD_NS = 50_000_000  # 20 fps


def test_point_covariance_is_the_stereo_geometry():
    tri = Triangulator(_rig())
    points = np.array([[0.0, 0.0, 2.0], [0.5, -0.2, 5.0], [1.0, 0.3, 8.0]])
    cov = tri.point_covariance(points, 0.5)
    assert cov.shape == (3, 3, 3)
    np.testing.assert_allclose(cov, np.transpose(cov, (0, 2, 1)), atol=1e-15)
    assert np.all(np.linalg.eigvalsh(cov) > 0.0)
    # depth: sigma_Z = Z^2 sqrt(2) sigma / (f B), the Triangulator's own depth_sigma
    np.testing.assert_allclose(np.sqrt(cov[0, 2, 2]), tri.depth_sigma(np.array([2.0]))[0],
                               rtol=1e-9)
    assert np.sqrt(cov[0, 2, 2]) == pytest.approx(4.0 * math.sqrt(2) * 0.5 / (F * BASE))
    # lateral, in the left camera's frame: Z sigma / f on the optical axis
    assert np.sqrt(cov[0, 0, 0]) == pytest.approx(2.0 * 0.5 / F, rel=1e-6)
    assert np.sqrt(cov[0, 1, 1]) == pytest.approx(2.0 * 0.5 / F / math.sqrt(2), rel=1e-6)
    # the long axis of the ellipsoid lies along the viewing ray
    for point, c in zip(points, cov):
        w, v = np.linalg.eigh(c)
        ray = point / np.linalg.norm(point)
        assert abs(v[:, -1] @ ray) > 0.99
    # grows with Z^2: 8 m is (8/2)^4 = 256 times the depth variance at 2 m
    assert cov[2, 2, 2] / cov[0, 2, 2] > 200
    # per-camera, per-axis sigmas: a bad x in one view inflates the depth variance
    sigmas = np.full((1, 2, 2), 0.5)
    sigmas[0, 1, 0] = 5.0
    assert tri.point_covariance(points[:1], sigmas)[0, 2, 2] > 10 * cov[0, 2, 2]
    assert np.all(np.isnan(tri.point_covariance(np.full((1, 3), np.nan))))


def test_object_centres_of_boxes_cut_by_the_image_border():
    sizes = ((640, 480), (640, 480))
    # inside: the centres, sigma in quadrature with half the size difference of the views
    centres, sigmas = object_centres((100.0, 100.0, 20.0, 10.0), (90.0, 100.0, 20.0, 16.0),
                                     sizes, 0.5)
    np.testing.assert_allclose(centres, [[100.0, 100.0], [90.0, 100.0]])
    np.testing.assert_allclose(sigmas, [[0.5, math.hypot(0.5, 3.0)]] * 2)
    # the left box is cut by the right border (it shows 8 of 20 px): its inner edge (631)
    # plus half the right view's width gives the centre
    centres, sigmas = object_centres((635.0, 100.0, 8.0, 20.0), (620.0, 100.0, 20.0, 20.0),
                                     sizes, 0.5)
    np.testing.assert_allclose(centres, [[641.0, 100.0], [620.0, 100.0]])
    assert sigmas[0, 0] == pytest.approx(2.0) and sigmas[1, 0] == 0.5
    # both cut at the left border: each keeps its inner edge, the size from its height
    centres, sigmas = object_centres((3.0, 50.0, 6.0, 12.0), (1.0, 50.0, 2.0, 12.0), sizes,
                                     0.5)
    np.testing.assert_allclose(centres[:, 0], [0.0, -4.0])
    np.testing.assert_allclose(sigmas[:, 0], [3.0, 3.0])
    # larger than the image along y: the centre to half the box's larger side
    _, sigmas = object_centres((100.0, 240.0, 40.0, 480.0), (90.0, 240.0, 40.0, 480.0),
                               sizes, 0.5)
    np.testing.assert_allclose(sigmas[:, 1], [240.0, 240.0])


def test_kalman_halves_the_error_of_noisy_points_on_a_straight_line():
    rng = np.random.default_rng(3)
    tri = Triangulator(_rig())
    config = SmoothingConfig(acceleration_noise=0.05)
    start, velocity = np.array([-1.0, 0.2, 4.0]), np.array([0.8, 0.0, -0.5])
    raw, smoothed = [], []
    kalman = None
    for i in range(120):
        stamp = 1_000_000_000 + i * PERIOD_NS
        truth = start + velocity * i * PERIOD_NS * 1e-9
        cov = tri.point_covariance(truth[None], 0.5)[0]
        point = rng.multivariate_normal(truth, cov)
        if kalman is None:
            kalman = ConstantVelocityKalman(config, stamp, point, cov)
        else:
            kalman.predict(stamp)
            assert kalman.update(point, cov)
        if i >= 30:  # after the start-up
            raw.append(np.sum((point - truth) ** 2))
            smoothed.append(np.sum((kalman.x[:3] - truth) ** 2))
    assert math.sqrt(np.mean(smoothed)) < 0.5 * math.sqrt(np.mean(raw))
    np.testing.assert_allclose(kalman.x[3:], velocity, atol=0.15)
    state = kalman.state()
    np.testing.assert_allclose(state.position_covariance, state.position_covariance.T)
    assert np.all(np.linalg.eigvalsh(kalman.P) > 0.0)


def test_outliers_are_ignored_then_a_lasting_jump_restarts_the_filter():
    config = SmoothingConfig(max_outliers=3)
    smoother = TrackSmoother(config)
    cov = np.eye(3) * 1e-4
    for i in range(10):
        state = smoother.step(7, i * PERIOD_NS, np.array([1.0, 0.0, 3.0]), cov)
    # one wild point: not used
    state = smoother.step(7, 10 * PERIOD_NS, np.array([1.0, 0.0, 6.0]), cov)
    assert state.position[2] == pytest.approx(3.0, abs=0.01) and smoother.outliers == 1
    # the object really is there now: after max_outliers points in a row, restart
    for i in range(11, 13):
        state = smoother.step(7, i * PERIOD_NS, np.array([1.0, 0.0, 6.0]), cov)
    assert smoother.restarts == 1 and state.position[2] == pytest.approx(6.0)


def test_no_point_predicts_until_max_gap_then_the_estimate_is_dropped():
    smoother = TrackSmoother(SmoothingConfig(max_gap_s=0.3))
    cov = np.eye(3) * 1e-4
    for i in range(5):
        smoother.step(1, i * PERIOD_NS, np.array([0.1 * i, 0.0, 3.0]), cov)
    predicted = smoother.step(1, 6 * PERIOD_NS)   # 0.1 s without a point: a prediction
    assert predicted.position[0] == pytest.approx(0.6, abs=0.02)
    assert predicted.position_covariance[0, 0] > cov[0, 0]
    assert smoother.step(1, 12 * PERIOD_NS) is None   # 0.4 s > max_gap_s
    assert 1 not in smoother
    assert smoother.step(2, 0) is None   # no point yet: no estimate
    assert TrackSmoother(SmoothingConfig(enabled=False)).step(1, 0, np.zeros(3), cov) is None


@pytest.mark.parametrize('field, value', [('acceleration_noise', 0.0), ('gate', -1.0),
                                          ('max_gap_s', math.inf), ('max_outliers', 0)])
def test_bad_smoothing_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f'smoothing.{field}'):
        SmoothingConfig(**{field: value})


def _frames(n=30, noise_px=0.5, seed=0):
    rng = np.random.default_rng(seed)
    frames, truth = [], []
    for i in range(n):
        stamp = 1_000_000_000 + i * PERIOD_NS
        point = np.array([-0.5 + 0.04 * i, 0.1, 5.0 - 0.03 * i])
        truth.append(point)
        (lx, ly), (rx, ry) = _px(point, 'L'), _px(point, 'R')
        nl, nr = rng.normal(0.0, noise_px, 2), rng.normal(0.0, noise_px, 2)
        left = [Detection(lx + nl[0], ly + nl[1], 20.0, 20.0, 0.9, 'ball', f'L{i}')]
        right = [Detection(rx + nr[0], ry + nr[1], 20.0, 20.0, 0.9, 'ball', f'R{i}')]
        frames.append(StereoFrame(stamp, DetectionFrame(stamp, 'L', left),
                                  DetectionFrame(stamp, 'R', right)))
    return frames, np.array(truth)


def test_the_pipeline_smooths_persistent_tracks_only_and_starts_from_their_history():
    frames, truth = _frames()
    run = run_pipeline(_rig(), frames, MinHitsFilter(min_hits=6), Settings())
    raw_err, smooth_err = [], []
    first = None
    for (stamp, tracks), point in zip(run, truth):
        for t in tracks:
            if t.state != TrackState.PERSISTENT:
                assert not t.has_smoothed
                continue
            assert t.has_smoothed and t.smoothed_velocity.shape == (3,)
            assert t.smoothed_position_covariance.shape == (3, 3)
            if first is None:
                first = t
            raw_err.append(np.sum((t.position - point) ** 2))
            smooth_err.append(np.sum((t.smoothed_position - point) ** 2))
    # decided at frame 6: the filter already ran over the earlier frames of the track
    assert first is not None and first.frames_observed == 6
    assert not np.allclose(first.smoothed_position, first.position)
    assert first.smoothed_position_covariance[2, 2] < Triangulator(_rig()).point_covariance(
        first.position[None])[0, 2, 2]
    assert math.sqrt(np.mean(smooth_err)) < 0.7 * math.sqrt(np.mean(raw_err))
    off = Settings(smoothing=SmoothingConfig(enabled=False))
    run = run_pipeline(_rig(), frames, MinHitsFilter(min_hits=6), off)
    assert not any(t.has_smoothed for _, tracks in run for t in tracks)
