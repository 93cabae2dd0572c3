"""The learned filter: shared geometry features, streaming through the pipeline, decisions."""

import os

import numpy as np
import pytest
import torch

from persistence_ros.calibration import CameraCalibration, StereoCalibration
from persistence_ros.features import GEOMETRY_FEATURES, RIG_FREE_FEATURES, side_geometry
from persistence_ros.filter_factory import build_filter
from persistence_ros.model.checkpoint import save_model
from persistence_ros.model.config import load_config
from persistence_ros.model.decision import EarlyDecision
from persistence_ros.model.model import PersistenceModel
from persistence_ros.model.persistence_filter import LearnedFilter, load_persistence_filter
from persistence_ros.offline_runner import read_stereo_bag, run_pipeline
from persistence_ros.overrides import replace_fields
from persistence_ros.settings import Settings
from persistence_ros.stereo_track import StereoTrackHistory, TrackState
from persistence_ros.tracking import TrackObservation

PERSISTENT = TrackState.PERSISTENT

COL = {name: i for i, name in enumerate(GEOMETRY_FEATURES)}


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _calibration(width, height, f=100.0, base=0.1, cx=None, cy=None, d=()):
    """Return a row-aligned rig: focal ``f``, principal point (cx, cy), distortion ``d``."""
    cx = (width - 1) / 2.0 if cx is None else cx
    cy = (height - 1) / 2.0 if cy is None else cy
    k = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
    d = np.array(list(d) + [0.0] * (5 - len(d)))
    left = CameraCalibration(width, height, k, d, P=np.hstack([k, np.zeros((3, 1))]))
    right = CameraCalibration(width, height, k, d,
                              P=np.hstack([k, np.array([[-f * base], [0.0], [0.0]])]))
    return StereoCalibration(left, right)


def _obs(stamp, cx, cy, matched=True, score=0.8):
    return TrackObservation((cx, cy, 10.0, 20.0), score if matched else 0.0, stamp,
                            f'd{stamp}' if matched else '', matched)


def test_side_geometry_against_hand_computed_rows():
    # left matched at 1, 2, 4 (3 coasts); right matched at 2, 3, 4
    left = [_obs(1, 100, 50), _obs(2, 110, 54), _obs(3, 120, 58, matched=False),
            _obs(4, 130, 62)]
    right = [_obs(2, 90, 55), _obs(3, 95, 57), _obs(4, 100, 62)]
    points = np.array([[np.nan] * 3, [0.0, -1.0, 2.0], [0.0, 0.5, 2.0], [0.0, -2.0, 2.0]])
    state = StereoTrackHistory(1, 7, 8, left, right, stamps_ns=[1, 2, 3, 4],
                               epipolar_residuals=np.array([np.nan, 1.5, np.nan, 80.0]),
                               points=points)
    plane = [0.0, -2.0, 0.0, 0.0]  # height = -y (normal is normalised)
    rows = side_geometry(state, 'left', _calibration(200, 100), plane)
    assert rows.stamps_ns == [1, 2, 4]
    g = rows.geometry
    assert g.shape == (3, len(GEOMETRY_FEATURES)) and g.dtype == np.float32
    np.testing.assert_allclose(g[:, COL['cx_norm']], [0.5, 0.55, 0.65])
    np.testing.assert_allclose(g[:, COL['h_norm']], [0.2, 0.2, 0.2])
    np.testing.assert_allclose(g[:, COL['score']], [0.8, 0.8, 0.8], rtol=1e-6)
    # velocity since the previous matched frame (frame 3 coasted)
    np.testing.assert_allclose(g[:, COL['vx_norm']], [0.0, 0.05, 0.1])
    np.testing.assert_allclose(g[:, COL['has_partner']], [0, 1, 1])
    np.testing.assert_allclose(g[:, COL['disparity_norm']], [0.0, 0.1, 0.15])
    # residual clipped at 50 px; heights from the plane, NaN points give 0
    np.testing.assert_allclose(g[:, COL['epipolar_px']], [0.0, 1.5, 50.0])
    np.testing.assert_allclose(g[:, COL['height_m']], [0.0, 1.0, 2.0])
    # the right side sees the same stereo cues with its own boxes
    right_rows = side_geometry(state, 'right', _calibration(200, 100), plane)
    assert right_rows.stamps_ns == [2, 3, 4]
    np.testing.assert_allclose(right_rows.geometry[:, COL['has_partner']], [1, 0, 1])
    np.testing.assert_allclose(right_rows.geometry[:, COL['disparity_norm']], [0.1, 0.0, 0.15])
    # online use: only rows after a stamp, velocity still from the earlier frame
    later = side_geometry(state, 'left', _calibration(200, 100), plane, after_ns=2)
    assert later.stamps_ns == [4]
    np.testing.assert_allclose(later.geometry[0], g[2])
    with pytest.raises(ValueError, match='side'):
        side_geometry(state, 'middle', _calibration(200, 100))


def test_rig_free_columns_against_hand_computed_values():
    # left camera f = 100 px, principal point (99.5, 49.5); stamps 100 ms apart (10 fps)
    ms = 1_000_000
    left = [TrackObservation((99.5, 49.5, 10.0, 20.0), 0.8, 1000 * ms, 'a', True),
            TrackObservation((109.5, 49.5, 10.0, 20.0), 0.8, 1100 * ms, 'b', True)]
    right = [TrackObservation((89.5, 49.5, 10.0, 20.0), 0.8, 1100 * ms, 'c', True)]
    points = np.array([[np.nan] * 3, [0.1, 0.0, 2.0]])
    state = StereoTrackHistory(1, 1, 2, left, right, stamps_ns=[1000 * ms, 1100 * ms],
                               epipolar_residuals=np.array([np.nan, 1.0]), points=points,
                               left_start_ns=900 * ms)
    plane = [0.0, -1.0, 0.0, 0.5]     # height = 0.5 - y
    g = side_geometry(state, 'left', _calibration(200, 100), plane).geometry
    size = np.sqrt(200.0)
    np.testing.assert_allclose(g[:, COL['bearing_x']], [0.0, 0.1], atol=1e-7)
    np.testing.assert_allclose(g[:, COL['bearing_y']], [0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(g[:, COL['log_size']], np.log(size / 100.0), rtol=1e-6)
    np.testing.assert_allclose(g[:, COL['log_aspect']], np.log(0.5), rtol=1e-6)
    # born at 0.9 s: ages from the birth, not from the first kept observation
    np.testing.assert_allclose(g[:, COL['age_s']], [0.1, 0.2], rtol=1e-6)
    np.testing.assert_allclose(g[:, COL['dt_s']], [0.0, 0.1], rtol=1e-6)
    np.testing.assert_allclose(g[:, COL['v_rel_x']], [0.0, 10.0 / size / 0.1], rtol=1e-5)
    np.testing.assert_allclose(g[:, COL['v_ang_x']], [0.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(g[:, COL['growth']], [0.0, 0.0], atol=1e-6)
    # box [94.5, 104.5] x [39.5, 59.5] in a 200 x 100 image: 39.5 px of margin... left edge
    np.testing.assert_allclose(g[0, COL['edge_margin']], min(95.0, 40.0, 95.0, 40.0) / 20.0)
    # depth only where the stereo point is valid; metric size = angular size x depth
    np.testing.assert_allclose(g[:, COL['has_depth']], [0.0, 1.0])
    np.testing.assert_allclose(g[:, COL['log_depth']], [0.0, np.log(2.0)], rtol=1e-6)
    np.testing.assert_allclose(g[1, COL['log_metric_size']], np.log(size / 100.0 * 2.0),
                               rtol=1e-6)
    np.testing.assert_allclose(g[:, COL['epipolar_rel']], [0.0, 1.0 / 20.0], rtol=1e-6)
    np.testing.assert_allclose(g[:, COL['has_partner']], [0.0, 1.0])
    np.testing.assert_allclose(g[:, COL['height_m']], [0.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(g[:, COL['plane_known']], [0.0, 1.0])
    # no plane: the height is 0 and says so
    g = side_geometry(state, 'left', _calibration(200, 100)).geometry
    np.testing.assert_allclose(g[:, [COL['height_m'], COL['plane_known']]], 0.0)


def _projected_history(calibration, fps, duration_s=1.0, with_points=True):
    """Return a stereo history of a 0.2 m sphere moving in 3D, seen by ``calibration``."""
    import cv2
    stamps = [2_000_000_000 + int(round(k * 1e9 / fps))
              for k in range(int(round(duration_s * fps)) + 1)]
    left, right, points = [], [], []
    base = -calibration.right.P[0, 3] / calibration.right.P[0, 0]
    for stamp in stamps:
        t = (stamp - stamps[0]) / 1e9
        centre = np.array([-0.3 + 0.4 * t, 0.2 - 0.1 * t, 3.0 + 0.5 * t])
        for camera, obs, shift in ((calibration.left, left, 0.0),
                                   (calibration.right, right, -base)):
            px, _ = cv2.projectPoints(centre[None] + [shift, 0.0, 0.0], np.zeros(3), np.zeros(3),
                                      camera.K, camera.D)
            size = 0.2 * camera.K[0, 0] / centre[2]
            obs.append(TrackObservation((*px.reshape(2), size, size), 0.9, stamp, '', True))
        points.append(centre if with_points else [np.nan] * 3)
    return StereoTrackHistory(1, 1, 2, left, right, stamps_ns=stamps,
                              epipolar_residuals=np.zeros(len(stamps)), points=np.array(points),
                              left_start_ns=stamps[0], right_start_ns=stamps[0])


def test_rig_free_columns_mean_the_same_on_two_rigs():
    # the same object and motion seen by a 320x240 15 fps rig with a 12 cm baseline and by a
    # 1280x720 60 fps rig with a 40 cm baseline, another principal point and lens distortion
    small = _calibration(320, 240, f=280.0, base=0.12)
    large = _calibration(1280, 720, f=900.0, base=0.4, cx=650.0, cy=355.0,
                         d=(-0.08, 0.02, 0.0, 0.0, 0.0))
    rows = {}
    for name, calibration, fps in (('small', small, 15.0), ('large', large, 60.0)):
        history = _projected_history(calibration, fps)
        geometry = side_geometry(history, 'left', calibration, appearance=False)
        rows[name] = dict(zip(geometry.stamps_ns, geometry.geometry))
    common = sorted(set(rows['small']) & set(rows['large']))[1:]  # after the first frame
    assert len(common) >= 10
    same = ['bearing_x', 'bearing_y', 'log_size', 'log_aspect', 'age_s', 'log_depth',
            'has_depth', 'log_metric_size', 'score', 'has_partner', 'plane_known']
    for name in same:
        a = [rows['small'][s][COL[name]] for s in common]
        b = [rows['large'][s][COL[name]] for s in common]
        np.testing.assert_allclose(a, b, atol=2e-3, err_msg=name)
    # motions are per second: averaged over 4 frames at 60 fps they match 1 frame at 15 fps
    for name in ('v_ang_x', 'v_ang_y', 'v_rel_x', 'growth'):
        a = np.array([rows['small'][s][COL[name]] for s in common])
        b = np.array([rows['large'][s][COL[name]] for s in common])
        np.testing.assert_allclose(a, b, atol=0.05 * np.abs(a).max() + 1e-3, err_msg=name)
    # and the frame-based legacy columns do not: that is why the model moved off them
    assert abs(rows['small'][common[3]][COL['vx_norm']]
               - rows['large'][common[3]][COL['vx_norm']]) > 0.003
    assert set(RIG_FREE_FEATURES) <= set(COL)


def test_side_geometry_appearance_columns_of_known_crops():
    # pure red: HSV value 1, saturation 1, one grey level; grey 50 %: no saturation;
    # a half black / half white crop: value 0.5, grey std 0.5 (255 * 0.5 / 255)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    grey = np.full((8, 8, 3), 128, np.uint8)
    halves = np.zeros((8, 8, 3), np.uint8)
    halves[:, 4:] = 255
    obs = [TrackObservation((50.0, 50.0, 8.0, 8.0), 0.9, k + 1, f'd{k}', True, crop)
           for k, crop in enumerate((red, grey, halves, None))]
    state = StereoTrackHistory(1, 1, 2, obs, [], stamps_ns=[1, 2, 3, 4],
                               epipolar_residuals=np.full(4, np.nan),
                               points=np.full((4, 3), np.nan))
    g = side_geometry(state, 'left', _calibration(100, 100)).geometry
    cols = [COL['brightness'], COL['saturation'], COL['contrast']]
    np.testing.assert_allclose(g[:, cols], [[1.0, 1.0, 0.0], [128 / 255, 0.0, 0.0],
                                            [0.5, 0.0, 127.5 / 255], [0.0, 0.0, 0.0]], atol=1e-6)
    # without the crop statistics (a model that does not read them): NaN, the rest unchanged
    bare = side_geometry(state, 'left', _calibration(100, 100), appearance=False).geometry
    assert np.isnan(bare[:, cols]).all()
    others = [i for i in range(len(GEOMETRY_FEATURES)) if i not in cols]
    np.testing.assert_array_equal(bare[:, others], g[:, others])


def _tiny_model(seed=0, window=8, features=None):
    torch.manual_seed(seed)
    config = load_config('cpu')
    config.classifier.window = window
    if features is not None:
        config.classifier.geometry_features = list(features)
    model = PersistenceModel(config).eval()
    g = len(config.classifier.geometry_features)
    model.set_geometry_normalization(np.zeros(g), np.ones(g))
    return model


@pytest.fixture(scope='module')
def floor_scene(tmp_path_factory):
    os.environ.setdefault('MUJOCO_GL', 'egl')
    from persistence_ros.simulation.generate import generate_scene
    from persistence_ros.simulation.scenario import load_scenario
    scene = tmp_path_factory.mktemp('learned') / 'reflective_floor-s0003'
    truth = generate_scene(load_scenario('reflective_floor', seed=3,
                                         overrides={'duration_s': 1.0}), scene)
    calibration, frames = read_stereo_bag(scene, with_images=True)
    return scene, truth, calibration, frames


# all columns; or a subset in another order, as weights trained before columns were added
@pytest.mark.parametrize('features', [GEOMETRY_FEATURES, GEOMETRY_FEATURES[10::-1]])
def test_learned_filter_streams_exactly_what_the_model_sees_in_a_clip(floor_scene, features):
    _, truth, calibration, frames = floor_scene
    model = _tiny_model(window=8, features=features)
    filt = LearnedFilter(model, plane=truth['rig']['ground_plane_left_optical'],
                         decision=EarlyDecision(hi=0.999, lo=0.001, min_frames=10 ** 6))
    # the crop statistics are computed only for a model that reads them
    assert filt.appearance == ('saturation' in features)
    states = []
    run = run_pipeline(calibration, frames, filt, on_states=lambda s: states.append(list(s)))
    tracks = [t for _, ts in run for t in ts]
    assert tracks, 'the scene must give stereo tracks'
    assert filt.stats.frames_encoded > 0 and filt.stats.frames_without_crop == 0
    assert filt.stats.frames_skipped_decided == 0
    for t in tracks:
        assert 0.0 <= t.probability <= 1.0
        if t.attention:
            assert abs(sum(t.attention) - 1.0) < 1e-5
            assert len(t.frame_stamps_ns) == len(t.attention) <= 8
            assert t.frame_stamps_ns == sorted(t.frame_stamps_ns)
    # The streamed probability of the last frame equals one full-clip forward pass over the
    # same track's rows (crops from the pipeline, geometry from side_geometry).
    last = {st.id: st for st in states[-1]}
    checked = 0
    for tid, st in last.items():
        probs = []
        for side in ('left', 'right'):
            rows = side_geometry(st, side, calibration, truth['rig']['ground_plane_left_optical'])
            if not rows.observations or len(rows.observations) != _matched(st, side):
                break  # the history was cut by the tracker window: not a whole clip
            crops = torch.from_numpy(np.stack([o.crop for o in rows.observations])
                                     ).permute(0, 3, 1, 2)[None]
            geometry = rows.geometry[:, [COL[f] for f in features]]
            with torch.no_grad():
                out = model(crops, torch.from_numpy(geometry)[None])
            probs.append(float(out['prob'][0, -1]))
        else:
            streamed = [t for t in run[-1][1] if t.id == tid][0].probability
            assert streamed == pytest.approx(np.mean(probs), abs=1e-4)
            checked += 1
    assert checked > 0


def test_learned_filter_rejects_a_model_reading_unknown_columns():
    model = _tiny_model(features=[*GEOMETRY_FEATURES[:3], 'depth_of_field'])
    with pytest.raises(ValueError, match="columns \\['depth_of_field'\\]"):
        LearnedFilter(model, plane=[0.0, -1.0, 0.0, 1.0])


def test_learned_filter_publishes_the_attention_rollout_of_the_clip(floor_scene):
    _, truth, calibration, frames = floor_scene
    plane = truth['rig']['ground_plane_left_optical']
    model = _tiny_model(window=4)
    filt = LearnedFilter(model, plane=plane, attention='rollout',
                         decision=EarlyDecision(hi=0.999, lo=0.001, min_frames=10 ** 6))
    span = 2 * (4 - 1) + 1  # two layers of a 4-frame window
    states = []
    run = run_pipeline(calibration, frames, filt, on_states=lambda s: states.append(list(s)))
    last = {t.id: t for t in run[-1][1]}
    checked = 0
    for st in states[-1]:
        rows = side_geometry(st, 'left', calibration, plane)
        n = len(rows.observations)
        if n <= 4 or n != _matched(st, 'left'):
            continue  # want clips longer than the window, and whole
        crops = torch.from_numpy(np.stack([o.crop for o in rows.observations])
                                 ).permute(0, 3, 1, 2)[None]
        with torch.no_grad():
            rollout = model(crops, torch.from_numpy(rows.geometry[:, filt.columns[0]])[None],
                            rollout=True)['rollout'][0, -1].numpy()
        published = last[st.id]
        assert len(published.attention) == min(n, span) > 4  # further back than the window
        np.testing.assert_allclose(published.attention, rollout[-min(n, span):], atol=1e-5)
        assert published.frame_stamps_ns == rows.stamps_ns[-min(n, span):]
        checked += 1
    assert checked > 0
    with pytest.raises(ValueError, match='attention must be one of'):
        LearnedFilter(model, plane=plane, attention='heads')


def test_ensemble_probability_is_the_mean_of_its_members(floor_scene):
    # two different models (other weights, other geometry columns in another order)
    _, truth, calibration, frames = floor_scene
    plane = truth['rig']['ground_plane_left_optical']
    never = EarlyDecision(hi=0.999, lo=0.001, min_frames=10 ** 6)
    first = _tiny_model(seed=0)
    second = _tiny_model(seed=1, features=GEOMETRY_FEATURES[10::-1])

    def tracks(model):
        run = run_pipeline(calibration, frames, LearnedFilter(model, plane=plane,
                                                              decision=never))
        return {(k, t.id): t for k, (_, ts) in enumerate(run) for t in ts}

    alone, other, both = tracks(first), tracks(second), tracks([first, second])
    assert alone.keys() == other.keys() == both.keys() and alone
    for key, track in both.items():
        assert track.probability == pytest.approx(
            (alone[key].probability + other[key].probability) / 2, abs=1e-6)
        assert track.attention == alone[key].attention  # the first member's
        assert track.frame_stamps_ns == alone[key].frame_stamps_ns
    assert any(abs(alone[k].probability - other[k].probability) > 1e-3 for k in alone)
    with pytest.raises(ValueError, match='no model'):
        LearnedFilter([], plane=plane)


def _matched(state, side):
    return sum(o.matched for o in (state.left if side == 'left' else state.right))


def test_early_decision_latches_and_saves_model_time(floor_scene):
    _, truth, calibration, frames = floor_scene
    plane = truth['rig']['ground_plane_left_optical']
    eager = LearnedFilter(_tiny_model(), plane=plane,
                          decision=EarlyDecision(hi=0.0 + 1e-6, lo=0.0, min_frames=3))
    run = run_pipeline(calibration, frames, eager)
    seen = {}
    for _, tracks in run:
        for t in tracks:
            if t.frames_observed >= 3:
                assert t.state == PERSISTENT  # every p >= 1e-6: decided at min_frames
                seen.setdefault(t.id, t.probability)
                assert t.probability == seen[t.id]  # latched with the decision's p
    assert seen
    assert eager.stats.frames_skipped_decided > 0
    patient = LearnedFilter(_tiny_model(), plane=plane,
                            decision=EarlyDecision(min_frames=10 ** 6))
    run_pipeline(calibration, frames, patient)
    assert eager.stats.frames_encoded < patient.stats.frames_encoded
    # ended tracks leave no state behind
    streamer = patient._streamers[0]
    assert not streamer.tracks or {k[0] for k in streamer.tracks} <= {t.id for t in run[-1][1]}


def test_a_late_pairs_backlog_in_chunks_gives_the_same_p_and_waits_to_decide(floor_scene):
    _, truth, calibration, frames = floor_scene
    plane = truth['rig']['ground_plane_left_optical']
    never = EarlyDecision(hi=0.999, lo=0.001, min_frames=10 ** 6)

    def tracks(catch_up, decision):
        filt = LearnedFilter(_tiny_model(), plane=plane, decision=decision,
                             catch_up_frames=catch_up)
        catching_up, update = {}, filt.update

        def update_and_record(states):   # the tracks still behind after each frame
            out = update(states)
            if states:
                catching_up[int(states[0].stamps_ns[-1])] = set(filt._catching_up)
            return out

        filt.update = update_and_record
        run = run_pipeline(calibration, frames, filt)
        return filt, [({t.id: t for t in ts}, catching_up.get(stamp, set()))
                      for stamp, ts in run]

    whole_filter, whole = tracks(0, never)
    chunked_filter, chunked = tracks(3, never)
    assert whole_filter.stats.backlogs_deferred == 0
    assert chunked_filter.stats.backlogs_deferred > 0
    # every frame is streamed once either way
    assert chunked_filter.stats.frames_encoded == whole_filter.stats.frames_encoded
    differed, caught_up = set(), set()
    for (a, _), (b, late) in zip(whole, chunked):
        assert a.keys() == b.keys()
        for tid, track in b.items():
            same = track.probability == pytest.approx(a[tid].probability, abs=1e-5)
            if tid in late:
                assert tid not in caught_up  # once caught up, it stays caught up
                differed.add(tid)
            else:
                assert same, tid   # caught up: the p of the whole clip
                caught_up.add(tid)
    assert differed and differed <= caught_up  # some pairs came late, all caught up
    # while a side is behind the track stays undecided, then decides on the whole history
    eager = EarlyDecision(hi=1e-6, lo=0.0, min_frames=3)
    _, decided = tracks(3, eager)
    held = 0
    for frame, late in decided:
        for tid, track in frame.items():
            if tid in late:
                assert track.state == TrackState.TENTATIVE
                held += track.frames_observed >= 3
            elif track.frames_observed >= 3:
                assert track.state == PERSISTENT
    assert held > 0
    with pytest.raises(ValueError, match='catch_up_frames'):
        LearnedFilter(_tiny_model(), plane=plane, catch_up_frames=-1)


def test_load_persistence_filter(tmp_path):
    with pytest.raises(FileNotFoundError, match='no weights at'):
        load_persistence_filter(str(tmp_path / 'missing.safetensors'))
    model = _tiny_model()
    path = tmp_path / 'm.safetensors'
    save_model(model, path)
    filt = build_filter(replace_fields(Settings(), {
        'filter.ground_plane': [0, -1, 0, 1.5], 'model.path': str(path), 'model.device': 'cpu',
        'model.decision.min_frames': 7}))
    assert isinstance(filt, LearnedFilter) and filt.uses_images
    assert filt.decision.min_frames == 7 and filt.plane == [0, -1, 0, 1.5]
    assert filt.device == 'cpu'
    # without a rule, the checkpoint's
    assert load_persistence_filter(str(path), device='cpu').decision == model.config.decision
    with pytest.raises(RuntimeError, match='no calibration'):
        filt.update([])
    # model.ensemble_paths: more members after model.path's (or the shipped) weights
    other = tmp_path / 'other.safetensors'
    save_model(_tiny_model(seed=1), other)
    pair = build_filter(replace_fields(Settings(), {
        'model.path': str(path), 'model.ensemble_paths': [str(other)], 'model.device': 'cpu'}))
    assert len(pair.models) == 2
    assert torch.equal(pair.models[0].classifier.head.weight, model.classifier.head.weight)
    shipped = build_filter(replace_fields(Settings(), {
        'model.ensemble_paths': [str(other)], 'model.device': 'cpu'}))
    assert len(shipped.models) == 2
    assert torch.equal(shipped.models[0].classifier.head.weight,
                       load_persistence_filter(device='cpu').model.classifier.head.weight)
    from persistence_ros.ros.parameters import DEFAULTS, validate
    assert validate(dict(DEFAULTS, **{'model.ensemble_paths': [str(tmp_path / 'no')]})) == [
        f"model.ensemble_paths: file {str(tmp_path / 'no')!r} does not exist"]


def _stereo_frames(right_offset_ns=0, frames=10, t0=10 ** 9):
    """Return (calibration, StereoFrames): one object at 4 m over a textured image."""
    from persistence_ros.calibration import CameraCalibration, StereoCalibration
    from persistence_ros.detections import Detection, DetectionFrame
    from persistence_ros.offline_runner import StereoFrame
    k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    calibration = StereoCalibration(*(
        CameraCalibration(640, 480, k, [], P=k[:3] + [tx] + k[3:6] + [0.0] + k[6:] + [0.0])
        for tx in (0.0, -50.0)))
    rng = np.random.default_rng(1)
    image = np.repeat(np.repeat(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), 40, 0),
                      40, 1)
    out = []
    for i in range(frames):
        stamp, x = t0 + i * 33_000_000, 300.0 + 3.0 * i
        out.append(StereoFrame(
            stamp, DetectionFrame(stamp, 'L', [Detection(x, 250.0, 30.0, 30.0, 0.9)]),
            DetectionFrame(stamp + right_offset_ns, 'R',
                           [Detection(x - 12.5, 250.0, 30.0, 30.0, 0.9)] if i != 5 else []),
            image, image))
    return calibration, out


def test_learned_filter_gives_the_same_output_with_right_stamps_a_few_ms_late():
    model = _tiny_model(window=4)
    outputs = []
    for offset in (0, 5_000_000):
        filt = LearnedFilter(model, plane=[0.0, -1.0, 0.0, 1.0],
                             decision=EarlyDecision(hi=0.999, lo=0.001, min_frames=10 ** 6))
        calibration, frames = _stereo_frames(offset)
        run = run_pipeline(calibration, frames, filt)
        outputs.append([[(t.id, t.state, t.probability, t.frames_observed, t.frame_stamps_ns,
                          t.attention) for t in tracks] for _, tracks in run])
        assert filt.stats.frames_encoded == 19  # 10 left + 9 right frames, each once
    assert outputs[0][-1] and outputs[1] == outputs[0]


def test_learned_filter_is_reset_by_a_new_pipeline_around_it():
    from persistence_ros.pipeline import StereoPipeline
    model = _tiny_model(window=4)

    def learned():
        return LearnedFilter(model, plane=[0.0, -1.0, 0.0, 1.0],
                             decision=EarlyDecision(hi=1e-6, lo=0.0, min_frames=4))

    def first_pair(pipeline, t0):
        for f in _stereo_frames(t0=t0)[1]:
            result = pipeline.process(f.left, f.right, f.left_image, f.right_image)
            if result.tracks:
                return [(t.id, t.state, t.probability, t.frames_observed)
                        for t in result.tracks]

    calibration = _stereo_frames()[0]
    filt = learned()
    run = run_pipeline(calibration, _stereo_frames()[1], filt)
    assert [(t.id, t.state) for t in run[-1][1]] == [(1, PERSISTENT)]
    # the node rebuilds the pipeline around the same filter when camera_info changes: the
    # new stereo track 1 is another object and must not inherit the old one's decision
    reused = first_pair(StereoPipeline(calibration, None, filt), 5 * 10 ** 9)
    fresh = first_pair(StereoPipeline(calibration, None, learned()), 5 * 10 ** 9)
    assert reused == fresh and fresh[0][:2] == (1, TrackState.TENTATIVE) and fresh[0][3] == 3


def test_the_pipeline_times_its_stages_and_the_learned_filter_charges_its_own():
    from persistence_ros.pipeline import PIPELINE_STAGES, StereoPipeline
    from persistence_ros.timing import StageTimer
    calibration, frames = _stereo_frames()
    filt = LearnedFilter(_tiny_model(window=4), plane=[0.0, -1.0, 0.0, 1.0],
                         decision=EarlyDecision(hi=0.999, lo=0.001, min_frames=10 ** 6))
    timer = StageTimer(PIPELINE_STAGES, window=50, cpu=True)
    pipeline = StereoPipeline(calibration, None, filt, timer=timer)
    assert filt.timer is timer
    for f in frames:
        pipeline.process(f.left, f.right, f.left_image, f.right_image)
    refused = pipeline.process(frames[0].left, frames[0].right)  # an old stamp
    assert not refused.accepted
    assert timer.frames == len(frames)  # one row per accepted frame
    wall = timer.samples_ms()
    column = {name: wall[:, k] for k, name in enumerate(PIPELINE_STAGES)}
    # the model streams from the third frame (the pair forms there) on
    assert np.all(column['model'][2:] > 0.0) and np.all(column['features'][2:] > 0.0)
    assert np.all(column['tracking'] > 0.0) and np.all(column['crops'] > 0.0)
    assert set(timer.summary()) == set(PIPELINE_STAGES) | {'total'}
