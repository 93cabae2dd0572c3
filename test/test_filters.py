"""Baseline persistence filters on hand-built stereo track states."""

import numpy as np
import pytest

from persistence_ros.baselines import (
    GroundPlaneFilter, MinHitsFilter, NoFilter, ScoreFilter, StereoConsistencyFilter)
from persistence_ros.filter_factory import build_filter
from persistence_ros.gbdt import FEATURE_NAMES, GbdtFilter, track_features
from persistence_ros.overrides import replace_fields
from persistence_ros.settings import FILTER_NAMES, Settings
from persistence_ros.stereo import plane_heights
from persistence_ros.stereo_track import FilterDecision, StereoTrackHistory, TrackState
from persistence_ros.tracking import TrackObservation

PERSISTENT, TENTATIVE, TRANSIENT = (TrackState.PERSISTENT, TrackState.TENTATIVE,
                                    TrackState.TRANSIENT)

# Floor plane in a left optical frame whose camera looks horizontally from 1 m height:
# y points down, so 'up' is -y and the floor is y = 1 (n = (0, -1, 0), d = 1).
FLOOR = [0.0, -1.0, 0.0, 1.0]


def _track(tid=1, frames=5, score=0.9, residual=0.3, height=0.4, crop_value=None,
           jitter=0.0, seed=0):
    rng = np.random.default_rng(seed)
    stamps = [int(1e9 + i * 66_666_667) for i in range(frames)]
    left, right = [], []
    for i, s in enumerate(stamps):
        crop = None
        if crop_value is not None:
            crop = np.full((16, 16, 3), crop_value, dtype=np.uint8)
        cx = 100.0 + 3.0 * i + jitter * rng.standard_normal()
        left.append(TrackObservation((cx, 200.0, 20.0, 20.0), score, s, f'L{i}', True, crop))
        right.append(TrackObservation((cx - 30.0, 200.0, 20.0, 20.0), score, s, f'R{i}', True,
                                      crop))
    # A point at 'height' metres above the floor, 3 m ahead.
    points = np.tile([0.0, 1.0 - height, 3.0], (frames, 1))
    return StereoTrackHistory(id=tid, left_track_id=tid, right_track_id=tid + 100,
                              left=left, right=right, stamps_ns=stamps,
                              epipolar_residuals=np.full(frames, residual), points=points,
                              frames_observed=frames)


def test_plane_heights_signed_and_normalised():
    h = plane_heights(np.array([[0.0, 0.5, 2.0], [0.0, 1.5, 2.0]]), [0.0, -2.0, 0.0, 2.0])
    np.testing.assert_allclose(h, [0.5, -0.5])


def test_ground_plane_rejects_mirrored_point_and_keeps_real_one():
    filt = GroundPlaneFilter(FLOOR, margin_m=0.05, decide_after=3)
    real = _track(1, height=0.4)
    mirror = _track(2, height=-0.4)  # floor reflection: mirrored below the floor
    out = filt.update([real, mirror])
    assert out[1].state == PERSISTENT and out[1].probability > 0.9
    assert out[2].state == TRANSIENT and out[2].probability < 0.1


def test_ground_plane_waits_for_enough_frames_and_latches():
    filt = GroundPlaneFilter(FLOOR, decide_after=3)
    assert filt.update([_track(1, frames=2, height=-0.4)])[1].state == TENTATIVE
    assert filt.update([_track(1, frames=3, height=-0.4)])[1].state == TRANSIENT
    # Latched: later evidence does not flip the decision.
    assert filt.update([_track(1, frames=4, height=0.4)])[1].state == TRANSIENT
    filt.update([])  # track gone: state pruned
    assert filt.update([_track(1, frames=4, height=0.4)])[1].state == PERSISTENT


def test_min_hits_rejects_short_track():
    filt = MinHitsFilter(min_hits=3)
    out = filt.update([_track(1, frames=2), _track(2, frames=3)])
    assert out[1].state == TENTATIVE
    assert out[2].state == PERSISTENT


def test_score_filter_threshold():
    filt = ScoreFilter(decide_after=3, threshold=0.6)
    out = filt.update([_track(1, score=0.9), _track(2, score=0.3)])
    assert out[1].state == PERSISTENT and out[1].probability == pytest.approx(0.9)
    assert out[2].state == TRANSIENT and out[2].probability == pytest.approx(0.3)


def test_stereo_filter_on_epipolar_residual():
    filt = StereoConsistencyFilter(decide_after=3, max_residual_px=2.0)
    out = filt.update([_track(1, residual=0.5), _track(2, residual=8.0)])
    assert out[1].state == PERSISTENT
    assert out[2].state == TRANSIENT
    assert filt.update([_track(3, residual=2.0)])[3].probability == pytest.approx(0.5)


def test_none_accepts_everything_and_reset():
    filt = NoFilter()
    out = filt.update([_track(1, frames=1, score=0.01, residual=50.0, height=-1.0)])
    assert out[1].state == PERSISTENT
    filt.reset()
    assert filt.update([]) == {}


def test_decision_validates_state():
    with pytest.raises(ValueError):
        FilterDecision(probability=0.5, state='maybe')


def test_track_features_shape_and_crop_stats():
    f = track_features(_track(crop_value=200), plane=FLOOR)
    assert f.shape == (len(FEATURE_NAMES),)
    named = dict(zip(FEATURE_NAMES, f))
    assert named['brightness_mean'] == pytest.approx(200 / 255)
    assert named['saturation_mean'] == pytest.approx(0.0)
    assert named['height_median'] == pytest.approx(0.4)
    assert named['epipolar_mean'] == pytest.approx(0.3)
    assert np.isnan(track_features(_track())[FEATURE_NAMES.index('brightness_mean')])


def test_gbdt_separates_synthetic_tracks_and_round_trips(tmp_path):
    tracks, labels = [], []
    for i in range(60):
        real = i % 2 == 0
        # Real objects: bright crops above the floor, smooth motion; transients: dim crops,
        # below the floor, jittery.
        tracks.append(_track(i, frames=6, crop_value=200 if real else 60,
                             height=0.3 if real else -0.3, jitter=0.0 if real else 4.0,
                             seed=i))
        labels.append(int(real))
    filt = GbdtFilter(plane=FLOOR, decide_after=5, max_iter=30)
    x = np.stack([filt.features(t) for t in tracks])
    filt.fit(x[:40], labels[:40])
    test_tracks = [_track(1000 + i, frames=6, crop_value=200 if i % 2 == 0 else 60,
                          height=0.3 if i % 2 == 0 else -0.3, jitter=0.0 if i % 2 == 0 else 4.0,
                          seed=500 + i) for i in range(10)]
    out = filt.update(test_tracks)
    for i, t in enumerate(test_tracks):
        assert out[t.id].state == (PERSISTENT if i % 2 == 0 else TRANSIENT)
    path = str(tmp_path / 'gbdt.npz')
    filt.save(path)
    loaded = build_filter(replace_fields(Settings(), {'filter.name': 'gbdt',
                                                      'filter.gbdt_path': path}))
    np.testing.assert_allclose(loaded.predict_proba(x), filt.predict_proba(x))
    assert loaded.decide_after == 5


def _settings(**values):
    return replace_fields(Settings(), {f'filter.{k}': v for k, v in values.items()})


def test_build_filter_errors_say_what_to_set():
    with pytest.raises(ValueError, match='filter.ground_plane'):
        build_filter(_settings(name='ground_plane'))
    with pytest.raises(ValueError, match='filter.gbdt_path'):
        build_filter(_settings(name='gbdt'))
    with pytest.raises(ValueError, match='filter.name'):
        _settings(name='bogus')
    assert build_filter(_settings(name='ground_plane', ground_plane=FLOOR)).name == 'ground_plane'


def test_build_filter_builds_every_named_filter_with_its_settings(tmp_path):
    path = str(tmp_path / 'gbdt.npz')
    tracks = [_track(i, frames=6, crop_value=200 if i % 2 else 60) for i in range(20)]
    fitted = GbdtFilter(plane=FLOOR, max_iter=5)
    fitted.fit(np.stack([fitted.features(t) for t in tracks]), [i % 2 for i in range(20)])
    fitted.save(path)
    for name in FILTER_NAMES:
        filt = build_filter(_settings(name=name, ground_plane=FLOOR, gbdt_path=path,
                                      decide_after=4, min_hits=7, threshold=0.7,
                                      max_residual_px=1.5))
        assert filt.name == name
    assert build_filter(_settings(name='min_hits', min_hits=7)).min_hits == 7
    score = build_filter(_settings(name='score', decide_after=4, threshold=0.7))
    assert (score.decide_after, score.threshold) == (4, 0.7)
    assert build_filter(_settings(name='stereo', max_residual_px=1.5)).max_residual_px == 1.5
    learned = build_filter(replace_fields(Settings(), {'model.decision.min_frames': 5,
                                                       'model.device': 'cpu'}))
    assert learned.decision.min_frames == 5 and learned.plane is None


def test_track_state_values_are_the_track_msg_constants():
    from pathlib import Path
    import re
    msg = (Path(__file__).resolve().parents[1] / 'msg' / 'Track.msg').read_text()
    constants = {name: int(value) for name, value in
                 re.findall(r'^uint8 (\w+)=(\d+)', msg, flags=re.MULTILINE)}
    assert constants == {state.name: state.value for state in TrackState}
    assert TrackState.parse('Persistent') is TrackState.PERSISTENT
    assert TrackState.parse(2) is TrackState.TRANSIENT and TrackState.TENTATIVE.label == \
        'tentative'
    with pytest.raises(ValueError):
        TrackState.parse('maybe')
