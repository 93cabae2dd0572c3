"""Scoring against truth.json: hand-built cases with known answers, and one end-to-end run."""

import argparse
import importlib.util
import json
import logging
import os

import numpy as np
import pytest

from persistence_ros.calibration import calibration_from_camera_info
from persistence_ros.evaluation import command
from persistence_ros.evaluation.scoring import score_run, Truth
from persistence_ros.pipeline import PipelineTrack

STAMPS = [100, 200, 300]


def _truth():
    dets, gt = {}, {'left': {}, 'right': {}}
    for f in range(3):
        for cam, c in (('left', 'L'), ('right', 'R')):
            dx = 0 if cam == 'left' else -10
            rows = [('00', 'object', 'obj1', [100 + dx, 100, 20, 20]),
                    ('01', 'reflection', 'obj1', [100 + dx, 300, 20, 20]),
                    ('02', 'object', 'obj2', [200 + dx, 100, 20, 20])]
            if cam == 'left':
                rows.append(('03', 'glare', None, [50, 50, 4, 4]))
            for k, kind, obj, box in rows:
                dets[f'{c}{f:06d}-{k}'] = {'camera': cam, 'frame': f, 'stamp_ns': STAMPS[f],
                                           'kind': kind, 'object_id': obj, 'box': box}
            gt[cam][str(f)] = [{'object_id': 'obj1', 'box': [100 + dx, 100, 20, 20]},
                               {'object_id': 'obj2', 'box': [200 + dx, 100, 20, 20]}]
    objects = {oid: {'states': [{'frame': f, 'stamp_ns': STAMPS[f],
                                 'left_optical': [x + 0.1 * f, 0.0, 2.0]} for f in range(3)]}
               for oid, x in (('obj1', 0.0), ('obj2', 1.0))}
    return Truth({'scenario': 'hand', 'seed': 3,
                  'frames': [{'index': f, 'stamp_ns': s} for f, s in enumerate(STAMPS)],
                  'objects': objects, 'detections': dets, 'gt_boxes': gt})


def _track(tid, f, k_left, k_right, state, decision_frame, position=None):
    return PipelineTrack(
        id=tid, left_track_id=tid, right_track_id=tid + 10, state=state, probability=0.5,
        frames_observed=f + 1, decision_frame=decision_frame,
        position=None if position is None else np.asarray(position, dtype=np.float64),
        left_detection_id=f'L{f:06d}-{k_left}' if k_left else '',
        right_detection_id=f'R{f:06d}-{k_right}' if k_right else '')


def _run():
    run = []
    for f, stamp in enumerate(STAMPS):
        tracks = [
            # Real obj1, persistent from frame 1, 0.1 m off in depth.
            _track(1, f, '00', '00', 'persistent', 1, [0.1 * f, 0.0, 2.1]),
            # Floor reflection: tentative in frame 0, then (wrongly) persistent.
            _track(2, f, '01', '01', 'tentative' if f == 0 else 'persistent',
                   0 if f == 0 else 2, None if f == 0 else [0.1 * f, 1.0, 2.0]),
            # Glare (left only): correctly transient.
            _track(3, f, '03', '', 'transient', 3),
            # Real obj2 never decided: a missed real track.
            _track(4, f, '02', '02', 'tentative', 0),
        ]
        run.append((stamp, tracks))
    return run


def test_track_point_decision_scores_on_hand_built_truth():
    result = score_run(_run(), _truth(), 'hand', '0.0')
    tracks = result['tracks']
    assert (tracks['tp'], tracks['fp'], tracks['fn'], tracks['tn']) == (1, 1, 1, 1)
    assert tracks['precision'] == pytest.approx(0.5)
    assert tracks['recall'] == pytest.approx(0.5)
    assert tracks['f1'] == pytest.approx(0.5)
    points = result['points']
    assert points['published'] == 5
    assert points['spurious_fraction'] == pytest.approx(2 / 5)
    assert points['real_kept_fraction'] == pytest.approx(3 / 6)
    assert points['rmse_m'] == pytest.approx(0.1)
    decision = result['decision']
    assert decision['median_frames'] == pytest.approx(2.0)
    assert decision['p90_frames'] == pytest.approx(2.8)
    assert result['run'] == {'scenario': 'hand', 'seed': 3, 'filter': 'hand',
                             'package_version': '0.0', 'frames': 3}


def test_track_errors_name_the_false_positive_and_the_missed_real_track():
    assert 'errors' not in score_run(_run(), _truth(), 'hand')['tracks']
    errors = score_run(_run(), _truth(), 'hand', errors=True)['tracks']['errors']
    assert errors == [
        {'id': 2, 'outcome': 'fp', 'left_track_id': 2, 'right_track_id': 12,
         'kinds': {'reflection': 6}, 'state': 'persistent', 'probability': 0.5,
         'frames_observed': 3, 'decision_frame': 2},
        {'id': 4, 'outcome': 'fn', 'left_track_id': 4, 'right_track_id': 14,
         'kinds': {'object': 6}, 'state': 'tentative', 'probability': 0.5,
         'frames_observed': 3, 'decision_frame': 0}]


def test_mot_counts_published_reflections_as_false_positives():
    mot = score_run(_run(), _truth(), 'hand')['mot']
    left = mot['per_camera']['left']
    # obj1 tracked in 3 frames, reflection published in 2 frames, obj2 never published.
    assert (left['tp'], left['fp'], left['fn']) == (3, 2, 3)
    assert mot['mota'] == pytest.approx(1.0 - (3 + 2) / 6)
    assert mot['per_camera']['right']['fp'] == 2
    assert 0.0 < mot['hota'] < 1.0 and 0.0 < mot['idf1'] < 1.0


def test_calibration_from_camera_info_fields():
    class Info:
        width, height, distortion_model = 320, 240, 'plumb_bob'
        k = [200.0, 0, 159.5, 0, 200.0, 119.5, 0, 0, 1]
        d = [0.0] * 5
        r = [1.0, 0, 0, 0, 1, 0, 0, 0, 1]
        p = [200.0, 0, 159.5, -24.0, 0, 200.0, 119.5, 0, 0, 0, 1, 0]

        class header:
            frame_id = 'stereo_right_optical'
    cal = calibration_from_camera_info(Info())
    assert cal.P[0, 3] == pytest.approx(-24.0) and cal.K[0, 2] == pytest.approx(159.5)
    assert cal.frame_id == 'stereo_right_optical' and cal.is_rectified


def _simulator_available():
    return importlib.util.find_spec('persistence_ros.simulation.generate') is not None


@pytest.mark.skipif(not _simulator_available(), reason='simulator not available')
def test_end_to_end_reflective_floor(tmp_path, capsys):
    os.environ.setdefault('MUJOCO_GL', 'egl')
    from persistence_ros.simulation.generate import generate_scene
    from persistence_ros.simulation.scenario import load_scenario
    scene = tmp_path / 'scene'
    generate_scene(load_scenario('reflective_floor', seed=1, overrides={'duration_s': 2.0}),
                   scene)
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    metrics = {}
    # the ground_plane filter needs the floor: without --plane-from-truth (the node's
    # default, no plane) it is refused with a message saying what to set
    args = parser.parse_args(['--bag', str(scene), '--filter', 'ground_plane'])
    assert command.main(args) == 2
    assert 'filter.ground_plane' in capsys.readouterr().err
    for name in ('none', 'ground_plane'):
        out = tmp_path / f'{name}.json'
        args = parser.parse_args(['--bag', str(scene), '--filter', name, '--json', str(out),
                                  '--errors', '--plane-from-truth'])
        assert command.main(args) == 0
        metrics[name] = json.loads(out.read_text())
        assert metrics[name]['run']['plane'] == 'truth'
    for m in metrics.values():
        for section, keys in (('tracks', ('precision', 'recall', 'f1', 'count')),
                              ('points', ('published', 'spurious_fraction',
                                          'real_kept_fraction', 'rmse_m')),
                              ('decision', ('median_frames', 'p90_frames')),
                              ('mot', ('hota', 'mota', 'idf1', 'per_camera')),
                              ('run', ('scenario', 'seed', 'filter', 'package_version'))):
            assert all(k in m[section] for k in keys), (section, m[section])
        assert set(m['mot']['per_camera']) == {'left', 'right'}
    assert metrics['none']['run']['filter'] == 'none'
    for m in metrics.values():  # --errors lists exactly the false positives and negatives
        outcomes = [e['outcome'] for e in m['tracks']['errors']]
        counted = (outcomes.count('fp'), outcomes.count('fn'))
        assert counted == (m['tracks']['fp'], m['tracks']['fn'])
    assert metrics['none']['tracks']['fp'] > 0  # nothing filtered: every reflection is an FP
    assert metrics['none']['tracks']['count'] > 0
    assert metrics['none']['tracks']['precision'] < metrics['ground_plane']['tracks']['precision']
    assert (metrics['ground_plane']['points']['spurious_fraction']
            < metrics['none']['points']['spurious_fraction'])
    # A missing checkpoint is a clear error (exit 2), not a crash.
    missing = tmp_path / 'missing.safetensors'
    args = parser.parse_args(['--bag', str(scene), '--filter', 'learned', '--model', str(missing)])
    assert command.main(args) == 2
    assert f'no weights at {missing}' in capsys.readouterr().err
    # --set reaches the core config: a bad value is a clear error, a good one runs.
    args = parser.parse_args(['--bag', str(scene), '--filter', 'none',
                              '--set', 'tracker.appearance_gate=1.5'])
    assert command.main(args) == 2
    assert 'appearance_gate must be a number in [0, 1]' in capsys.readouterr().err
    out = tmp_path / 'gate_off.json'
    args = parser.parse_args(['--bag', str(scene), '--filter', 'none', '--json', str(out),
                              '--set', 'tracker.appearance_gate=1.0'])
    assert command.main(args) == 0
    assert json.loads(out.read_text())['tracks']['count'] > 0
    # --decision reaches the learned filter's early-decision rule.
    decided = {}
    for frames in (2, 8):
        out = tmp_path / f'learned_{frames}.json'
        args = parser.parse_args(['--bag', str(scene), '--filter', 'learned', '--json',
                                  str(out), '--decision', f'min_frames={frames}'])
        assert command.main(args) == 0
        decided[frames] = json.loads(out.read_text())
    assert decided[8]['decision']['median_frames'] >= 8 > decided[2]['decision']['median_frames']
    assert decided[2]['decision']['median_frames'] >= 2
    # the model's work: deciding later encodes more frames and skips fewer
    early, late = decided[2]['compute'], decided[8]['compute']
    assert late['frames_encoded'] > early['frames_encoded'] > 0
    assert early['frames_skipped_decided'] > late['frames_skipped_decided']
    assert (early['frames_encoded'] + early['frames_skipped_decided']
            == late['frames_encoded'] + late['frames_skipped_decided'])
    from persistence_ros.overrides import replace_fields
    from persistence_ros.settings import Settings
    results = command.compare([scene], ['none', 'learned'],
                              replace_fields(Settings(), {'model.decision.min_frames': 2}))
    assert [r['compute'] for r in results if 'compute' in r] == [early]
    assert all(r['run']['fail_safe'] for r in results)  # the node's behaviour by default
    assert command.compute_summary(results)[0].startswith(
        f"learned: the model encoded {early['frames_encoded']} frames and skipped "
        f"{early['frames_skipped_decided']} ")
    args = parser.parse_args(['--bag', str(scene), '--filter', 'learned',
                              '--decision', 'threshold=0.3'])
    assert command.main(args) == 2
    assert "unknown field 'model.decision.threshold'" in capsys.readouterr().err
    for filters in (['--filter', 'gbdt'], ['--compare', '--filters', 'none,stereo']):
        args = parser.parse_args(['--bag', str(scene), *filters, '--decision', 'min_frames=2'])
        assert command.main(args) == 2
        assert 'no learned filter runs here' in capsys.readouterr().err
        args = parser.parse_args(['--bag', str(scene), *filters, '--no-fail-safe'])
        assert command.main(args) == 2
        assert '--no-fail-safe switches off' in capsys.readouterr().err


def _rig():
    from persistence_ros.calibration import CameraCalibration, StereoCalibration
    f, base = 400.0, 0.2
    k = np.array([[f, 0.0, 319.5], [0.0, f, 239.5], [0.0, 0.0, 1.0]])
    p_right = np.hstack([k, [[-f * base], [0.0], [0.0]]])
    left = CameraCalibration(640, 480, k, np.zeros(5), P=np.hstack([k, np.zeros((3, 1))]))
    right = CameraCalibration(640, 480, k, np.zeros(5), P=p_right)
    return StereoCalibration(left, right), k, base


def test_pipeline_publishes_only_persistent_points_at_true_position():
    import cv2
    from persistence_ros.detections import Detection, DetectionFrame
    from persistence_ros.baselines import GroundPlaneFilter
    from persistence_ros.pipeline import StereoPipeline
    calibration, k, base = _rig()
    # Camera 1 m above the floor looking horizontally: floor is y = 1 (y down), normal -y.
    pipeline = StereoPipeline(calibration, None, GroundPlaneFilter([0.0, -1.0, 0.0, 1.0]))
    image = np.full((480, 640, 3), 90, dtype=np.uint8)
    results, truth_points = [], []
    for i in range(8):
        real = np.array([0.1 + 0.05 * i, 0.3, 4.0])
        mirror = real * [1.0, -1.0, 1.0] + [0.0, 2.0, 0.0]  # reflected in y = 1
        truth_points.append(real)
        frames = []
        for cam, tvec in (('L', np.zeros(3)), ('R', np.array([-base, 0.0, 0.0]))):
            px, _ = cv2.projectPoints(np.stack([real, mirror]), np.zeros(3), tvec, k, None)
            dets = [Detection(float(x), float(y), 20.0, 20.0, 0.9, '', f'{cam}{i:06d}-{j:02d}')
                    for j, (x, y) in enumerate(px.reshape(-1, 2))]
            frames.append(DetectionFrame(1_000_000 + i * 66_666_667, cam, dets))
        results.append(pipeline.process(frames[0], frames[1], image, image))
    last = results[-1]
    by_det = {t.left_detection_id[-2:]: t for t in last.tracks}
    assert set(by_det) == {'00', '01'}
    real_track, mirror_track = by_det['00'], by_det['01']
    assert real_track.state.label == 'persistent' and mirror_track.state.label == 'transient'
    assert mirror_track.position is None and real_track.position is not None
    np.testing.assert_allclose(real_track.position, truth_points[-1], atol=1e-3)
    assert real_track.decision_frame >= 3 and real_track.frames_observed == 8
    assert int(real_track.state) == 1 and int(mirror_track.state) == 2
    # Crops are stored only for the filters that read them (ground_plane reads none).
    assert pipeline.left_tracker.tracks[0].history[-1].crop is None
    # A frame without detections ends nothing yet (tracks coast), later ones end the pairs.
    for i in range(8, 40):
        empty = DetectionFrame(1_000_000 + i * 66_666_667, 'L', [])
        res = pipeline.process(empty, DetectionFrame(empty.stamp_ns, 'R', []))
        if res.ended:
            assert set(res.ended) == {real_track.id, mirror_track.id}
            break
    else:
        pytest.fail('stereo tracks never ended')
    assert not pipeline._records


@pytest.fixture(scope='module')
def small_scene(tmp_path_factory):
    """Return a small rendered reflective_floor scene (rgb8 images, 12 frames)."""
    os.environ.setdefault('MUJOCO_GL', 'egl')
    from persistence_ros.simulation.generate import generate_scene
    from persistence_ros.simulation.scenario import load_scenario
    scene = tmp_path_factory.mktemp('eval') / 'reflective_floor-s0002'
    generate_scene(load_scenario('reflective_floor', seed=2, overrides={
        'duration_s': 1.2, 'fps': 10.0, 'rig': {'width': 160, 'height': 120}}), scene)
    return scene


def _copy_bag(scene, out, change):
    """Copy a scene's bag message by message through ``change(topic, msg)``."""
    import shutil

    from persistence_ros import bag_io
    with bag_io.BagWriter(out) as bag:
        for topic, stamp_ns, msg in bag_io.read_messages(scene):
            bag.write(topic, stamp_ns, change(topic, msg))
    shutil.copy(scene / 'truth.json', out / 'truth.json')
    return out


def _evaluate(*argv):
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.main(parser.parse_args([str(a) for a in argv]))


@pytest.mark.skipif(not _simulator_available(), reason='simulator not available')
def test_gbdt_is_not_fitted_on_evaluation_seeds_nor_on_the_scored_bag(tmp_path, capsys,
                                                                      small_scene):
    import shutil
    held_out = _copy_bag(small_scene, tmp_path / 'held_out', lambda topic, msg: msg)
    truth = json.loads((held_out / 'truth.json').read_text())
    truth['seed'] = 1004
    (held_out / 'truth.json').write_text(json.dumps(truth))
    for train in (held_out, small_scene):
        assert _evaluate('--compare', '--bag', small_scene, '--train-bag', train, '--filters',
                         'gbdt', '--save-gbdt', tmp_path / 'gbdt.npz') == 2
        assert not (tmp_path / 'gbdt.npz').exists()
    assert _evaluate('--bag', small_scene, '--filter', 'gbdt', '--train-bag', tmp_path,
                     '--save-gbdt', tmp_path / 'gbdt.npz') == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f'persistence-ros evaluate: error: --train-bag {held_out}: seed 1004 is '
                      'an evaluation seed (1000-1009) and must not be used for training scenes')
    assert err[1].startswith(f'persistence-ros evaluate: error: --train-bag {small_scene} is '
                             f'the scene scored as --bag {small_scene}')
    assert err[2].startswith(f'persistence-ros evaluate: error: --train-bag {held_out}: seed')
    # a copy of the scored scene (same scenario and seed) is the scored scene too
    copy = tmp_path / 'copy' / 'scene'
    shutil.copytree(small_scene, copy)
    assert _evaluate('--compare', '--bag', small_scene, '--train-bag', copy.parent,
                     '--filters', 'gbdt', '--save-gbdt', tmp_path / 'gbdt.npz') == 2
    assert 'is the scene scored as --bag' in capsys.readouterr().err


@pytest.mark.skipif(not _simulator_available(), reason='simulator not available')
def test_bgr8_and_padded_images_give_the_same_result_as_rgb8(tmp_path, small_scene):
    from persistence_ros import bag_io
    from persistence_ros.baselines import NoFilter
    from persistence_ros.evaluation.runner import evaluate_bag
    from persistence_ros.offline_runner import needs_images, read_stereo_bag
    from persistence_ros.image_codec import encode_image
    types = bag_io.get_typestore().types
    assert needs_images(NoFilter())  # the trackers' colour gate reads the images

    def reencode(encoding, step, swap=False):
        def change(topic, msg):
            if not topic.endswith('image_raw'):
                return msg
            rgb = bag_io.image_to_rgb(msg)
            swapped = rgb[:, :, ::-1].copy()
            fields = encode_image(swapped if encoding == 'bgr8' or swap else rgb, encoding,
                                  step=step)
            return types[bag_io.IMAGE](
                header=msg.header, height=fields.height, width=fields.width,
                encoding=encoding, is_bigendian=0, step=fields.step,
                data=np.frombuffer(fields.data, np.uint8))
        return change

    from persistence_ros.overrides import replace_fields
    from persistence_ros.settings import Settings
    settings = replace_fields(Settings(), {'filter.name': 'none'})
    _, original = read_stereo_bag(small_scene, with_images=True)
    expected = evaluate_bag(small_scene, settings=settings)
    assert expected['tracks']['count'] > 0
    for encoding, step in (('bgr8', 0), ('rgb8', 3 * 160 + 8)):
        bag = _copy_bag(small_scene, tmp_path / f'{encoding}_{step}', reencode(encoding, step))
        assert bag_io.bag_topics(bag) == bag_io.bag_topics(small_scene)
        _, frames = read_stereo_bag(bag, with_images=True)
        assert len(frames) == len(original) == 12
        for a, b in zip(frames, original):
            assert np.array_equal(a.left_image, b.left_image)
            assert np.array_equal(a.right_image, b.right_image)
        assert evaluate_bag(bag, settings=settings) == expected
    # the colours matter here: BGR bytes read as rgb8 give another result
    swapped = _copy_bag(small_scene, tmp_path / 'swapped', reencode('rgb8', 0, swap=True))
    assert evaluate_bag(swapped, settings=settings) != expected


def test_json_into_a_missing_folder_fails_before_the_run(tmp_path, capsys):
    # checked first: here before the --bag that does not exist either
    assert _evaluate('--bag', tmp_path / 'no_bag', '--json', tmp_path / 'missing' / 'o.json') == 2
    assert capsys.readouterr().err == (
        f'persistence-ros evaluate: error: --json {tmp_path / "missing" / "o.json"}: the folder '
        f'{tmp_path / "missing"} does not exist\n')


@pytest.mark.skipif(not _simulator_available(), reason='simulator not available')
def test_truncated_mcap_is_a_one_line_error(tmp_path, capsys, small_scene):
    import shutil
    truncated = tmp_path / 'truncated'
    shutil.copytree(small_scene, truncated)
    mcap = next(truncated.glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[:mcap.stat().st_size // 2])
    assert _evaluate('--bag', truncated, '--filter', 'none') == 2
    assert capsys.readouterr().err == (f'persistence-ros evaluate: error: {truncated}: cannot '
                                       'read the bag: File end magic is invalid.\n')


@pytest.mark.skipif(not _simulator_available(), reason='simulator not available')
def test_detections_of_an_unknown_type_are_a_one_line_error(tmp_path, capsys, small_scene):
    import shutil

    from rosbags.typesys import get_types_from_msg

    from persistence_ros import bag_io
    store = bag_io.get_typestore()
    other = type(store)()  # a detector's own message, unknown to this package's typestore
    other.register(get_types_from_msg('std_msgs/Header header\nfloat64[] boxes',
                                      'my_detector/msg/Boxes'))
    other.register({name: store.fielddefs[name] for name in (
        'std_msgs/msg/Header', 'builtin_interfaces/msg/Time')})
    unknown = tmp_path / 'unknown'
    with bag_io.BagWriter(unknown) as bag:
        bag._store = other
        for topic, stamp_ns, msg in bag_io.read_messages(small_scene,
                                                         ['/stereo/left/detections']):
            boxes = other.types['my_detector/msg/Boxes'](header=msg.header,
                                                         boxes=np.zeros(4))
            bag.write(topic, stamp_ns, boxes)
    shutil.copy(small_scene / 'truth.json', unknown / 'truth.json')
    assert _evaluate('--bag', unknown, '--filter', 'none') == 2
    assert capsys.readouterr().err == (
        f'persistence-ros evaluate: error: {unknown}: wrong message type: /stereo/left/detections'
        ' is my_detector/msg/Boxes, expected persistence_ros/msg/Detection2DArray or'
        ' vision_msgs/msg/Detection2DArray\n')
    with pytest.raises(bag_io.BagReadError, match='message type unknown here on '
                       '/stereo/left/detections'):
        list(bag_io.read_messages(unknown))


@pytest.mark.skipif(not _simulator_available(), reason='simulator not available')
def test_detections_without_an_image_of_their_stamp_warn_once(tmp_path, small_scene):
    import warnings

    from persistence_ros import bag_io
    from persistence_ros.detections import stamp_to_ns
    from persistence_ros.offline_runner import read_stereo_bag
    types = bag_io.get_typestore().types

    def later(topic, msg):  # a detector stamping its output 1 ms after the image
        if not topic.endswith('detections'):
            return msg
        stamp = bag_io.header(stamp_to_ns(msg.header.stamp) + 1_000_000, msg.header.frame_id)
        return types[bag_io.DETECTION_2D_ARRAY](header=stamp, detections=msg.detections)

    with warnings.catch_warnings():
        warnings.simplefilter('error')
        read_stereo_bag(small_scene, with_images=True)
    shifted = _copy_bag(small_scene, tmp_path / 'shifted', later)
    with pytest.warns(UserWarning) as caught:
        _, frames = read_stereo_bag(shifted, with_images=True)
    assert [str(w.message) for w in caught] == [
        f'{shifted}: 12 of 12 detection frames have no left or right image with the same '
        'header stamp and run without images (frames are joined on equal stamps: the '
        'detections must carry the stamp of their image)']
    assert len(frames) == 12 and all(f.left_image is None for f in frames)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        read_stereo_bag(shifted, with_images=False)  # images not asked for: nothing to say


def test_fail_safe_summary_counts_scenes_outside_and_fallback_decisions():
    from persistence_ros.evaluation.command import fail_safe_summary

    def result(domain, decided, reasons=''):
        return {'run': {'filter': 'learned'},
                'filter_diagnostics': {'domain': domain, 'domain.reasons': reasons,
                                       'domain.fallback': 'none',
                                       'domain.tracks_decided_by_fallback': decided}}
    lines = fail_safe_summary([result('inside', 1), {'run': {'filter': 'none'}},
                               result('outside', 5, 'frame rate 200 Hz outside')])
    assert lines == ["learned: 1 of 2 scenes outside the model's domain, 6 tracks decided by "
                     'the fallback rule (none); frame rate 200 Hz outside']


def test_plane_from_truth_gives_the_truth_floor_and_warns_where_there_is_none(caplog):
    from persistence_ros.evaluation.runner import scene_settings
    from persistence_ros.settings import Settings
    with_plane = _truth()
    with_plane.data['rig'] = {'ground_plane_left_optical': [0.0, -1.0, 0.0, 1.2]}
    assert scene_settings(None, with_plane, True).filter.ground_plane == [0.0, -1.0, 0.0, 1.2]
    unset = list(Settings().filter.ground_plane)   # all zeros: no plane
    assert list(scene_settings(None, with_plane, False).filter.ground_plane) == unset
    with caplog.at_level(logging.WARNING):
        plain = scene_settings(None, _truth(), True)
    assert list(plain.filter.ground_plane) == unset
    assert 'hand-s3 has no ground plane' in caplog.text
