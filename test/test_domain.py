"""The learned filter's fail-safe: rigs, frame rates and tracks outside the training data."""

import dataclasses
import warnings

import numpy as np
import pytest

from persistence_ros.baselines import ScoreFilter
from persistence_ros.calibration import CameraCalibration, StereoCalibration
from persistence_ros.detections import Detection, DetectionFrame
from persistence_ros.features import GEOMETRY_FEATURES
from persistence_ros.model.config import DomainConfig, load_config
from persistence_ros.model.domain import DomainCheck, FPS_FRAMES, rig_of
from persistence_ros.model.model import PersistenceModel
from persistence_ros.model.persistence_filter import LearnedFilter
from persistence_ros.offline_runner import run_pipeline, StereoFrame
from persistence_ros.stereo_track import TrackState

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _rig(width, height, f, base):
    k = np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    left = CameraCalibration(width, height, k, np.zeros(5), P=np.hstack([k, np.zeros((3, 1))]))
    right = CameraCalibration(width, height, k, np.zeros(5),
                              P=np.hstack([k, np.array([[-f * base], [0.0], [0.0]])]))
    return StereoCalibration(left, right)


DOMAIN = DomainConfig(image_width=[320.0, 1280.0], fovy_deg=[40.0, 100.0],
                      baseline_m=[0.05, 0.5], fps=[10.0, 60.0],
                      feature_ranges={'score': [0.2, 1.0], 'log_depth': [0.0, 2.5]})


def test_rig_inside_and_far_outside():
    check = DomainCheck(DOMAIN, ['score', 'log_depth'])
    assert check.known
    inside = _rig(640, 480, 500.0, 0.12)
    assert 40 < rig_of(inside)['fovy_deg'] < 100
    assert check.set_rig(inside) == [] and check.reasons == []
    # a 4K rig with a 1.5 m baseline and a 20 degree lens: three reasons, each named
    far = _rig(3840, 2160, 6000.0, 1.5)
    reasons = check.set_rig(far)
    assert len(reasons) == 3 and reasons[0].startswith('image_width 3840 outside')
    assert any(r.startswith('baseline_m 1.5 outside') for r in reasons)
    assert DomainCheck(DomainConfig(), ['score']).set_rig(far) == []  # unknown: not checked
    assert not DomainCheck(DomainConfig(), ['score']).known


def test_frame_rate_is_measured_from_the_stamps():
    check = DomainCheck(DOMAIN, ['score'])
    for k in range(FPS_FRAMES - 1):
        assert check.add_frame(k * 5_000_000) is None   # 200 Hz, not yet enough frames
    assert check.add_frame((FPS_FRAMES - 1) * 5_000_000).startswith('frame rate 200 Hz')
    check.reset()
    for k in range(FPS_FRAMES):
        reason = check.add_frame(k * 33_333_333)
    assert reason is None and check.reasons == []


def test_a_track_is_outside_when_most_of_its_rows_are():
    check = DomainCheck(DOMAIN, ['score', 'log_depth'])
    check.add_rows(1, [[0.9, 1.0], [0.5, 2.0]])
    check.add_rows(2, [[0.9, 1.0], [0.5, 6.0], [0.9, 9.0]])   # 9 m... e^9: far beyond 2.5
    check.add_rows(3, [[0.9, 9.0]])                           # one row: too few to say
    assert not check.track_outside(1) and check.track_outside(2)
    assert not check.track_outside(3)
    assert check.outside_columns([[0.9, 9.0], [0.05, 1.0]]) == ['score', 'log_depth']
    check.forget({1})
    assert not check.track_outside(2)


def _model(domain):
    config = load_config('cpu')
    config.classifier.window = 4
    model = PersistenceModel(config).eval()
    model.config = dataclasses.replace(config, domain=domain)
    return model


def _frames(rig, n=12, fps=15.0):
    image = np.full((rig.left.height, rig.left.width, 3), 90, np.uint8)
    f, base = rig.left.K[0, 0], rig.baseline_m
    out = []
    for i in range(n):
        stamp = 1_000_000_000 + int(i * 1e9 / fps)
        x = rig.left.K[0, 2] + 2.0 * i
        shift = f * base / 4.0
        out.append(StereoFrame(
            stamp, DetectionFrame(stamp, 'L', [Detection(x, rig.left.K[1, 2], 30, 30, 0.55)]),
            DetectionFrame(stamp, 'R', [Detection(x - shift, rig.left.K[1, 2], 30, 30, 0.55)]),
            image, image))
    return out


def test_a_rig_far_outside_hands_every_track_to_the_fallback_rule():
    far = _rig(2560, 1440, 1500.0, 1.5)
    model = _model(DOMAIN)
    with pytest.warns(UserWarning, match='image_width 2560 outside'):
        filt = LearnedFilter(model, calibration=far)
    run = run_pipeline(far, _frames(far), filt)
    states = [t.state for t in run[-1][1]]
    # the default fallback keeps the track: published, never lost to a model out of its depth
    assert states == [TrackState.PERSISTENT]
    diag = filt.diagnostics()
    assert diag['domain'] == 'outside' and 'baseline_m 1.5' in diag['domain.reasons']
    assert diag['domain.fallback'] == 'none' and diag['domain.tracks_decided_by_fallback'] == 1
    # another fallback rule decides with its own thresholds (score 0.55 < 0.6: transient)
    strict = LearnedFilter(model, calibration=far, fallback=ScoreFilter(threshold=0.6))
    run = run_pipeline(far, _frames(far), strict)
    assert [t.state for t in run[-1][1]] == [TrackState.TRANSIENT]


def test_without_the_fail_safe_the_model_decides_a_rig_far_outside():
    # the evaluator's --no-fail-safe: a measurement of the model itself on a foreign rig
    far = _rig(2560, 1440, 1500.0, 1.5)
    with pytest.warns(UserWarning, match='outside'):
        filt = LearnedFilter(_model(DOMAIN), calibration=far)
    filt.disable_fail_safe()
    run_pipeline(far, _frames(far), filt)
    diag = filt.diagnostics()
    assert diag['domain'] == 'unknown' and diag['domain.reasons'] == ''
    assert diag['domain.tracks_decided_by_fallback'] == 0 and filt.stats.frames_encoded > 0


def test_inside_the_domain_the_model_decides():
    rig = _rig(640, 480, 500.0, 0.12)
    model = _model(dataclasses.replace(DOMAIN, feature_ranges={}))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        filt = LearnedFilter(model, calibration=rig)
    run_pipeline(rig, _frames(rig), filt)
    diag = filt.diagnostics()
    assert diag['domain'] == 'inside' and diag['domain.tracks_decided_by_fallback'] == 0
    assert filt.stats.frames_encoded > 0


def test_a_frame_rate_outside_the_domain_falls_back_too():
    rig = _rig(640, 480, 500.0, 0.12)
    filt = LearnedFilter(_model(dataclasses.replace(DOMAIN, feature_ranges={})),
                         calibration=rig)
    with pytest.warns(UserWarning, match='frame rate 200 Hz'):
        run = run_pipeline(rig, _frames(rig, n=16, fps=200.0), filt)
    assert filt.diagnostics()['domain'] == 'outside'
    assert [t.state for t in run[-1][1]] == [TrackState.PERSISTENT]


def test_features_every_column_is_known_to_the_check():
    check = DomainCheck(DomainConfig(feature_ranges={n: [0.0, 1.0] for n in GEOMETRY_FEATURES}),
                        list(GEOMETRY_FEATURES))
    assert len(check.outside_columns(np.full((1, len(GEOMETRY_FEATURES)), 5.0))) == len(
        GEOMETRY_FEATURES)
