"""persistence_node: lifecycle, configuration errors, bad input, and a cross-process replay."""

from dataclasses import replace
import math
import os
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from sensor_msgs.msg import CameraInfo
from visualization_msgs.msg import Marker, MarkerArray

from persistence_ros.bag_io import get_typestore, read_messages
from persistence_ros.calibration import CAMERA_INFO_STABLE, CameraCalibration, \
    load_calibration_yaml, StereoCalibration
from persistence_ros.detections import Detection, DetectionFrame, stamp_to_ns
from persistence_ros.filter_factory import build_filter
from persistence_ros.msg import Track
from persistence_ros.offline_runner import read_stereo_bag
from persistence_ros.pipeline import StereoPipeline
from persistence_ros.ros import messages, parameters, persistence_node
from persistence_ros.ros.conversions import calibration_to_camera_info, detections_to_msg, \
    numpy_to_image
from persistence_ros.ros.persistence_node import PersistenceNode, RCLError, \
    spin_once_unless_shut_down
from persistence_ros.ros.replay import read_frames, replay
from persistence_ros.settings import Settings
from persistence_ros.stereo_track import TrackState

LEFT, RIGHT = 'stereo_left_optical', 'stereo_right_optical'
N_FRAMES = 20   # conftest.SCENE_FRAMES: the frames of the `scene` fixture


def make_node(context, **overrides):
    params = [Parameter(name, value=value) for name, value in overrides.items()]
    return PersistenceNode(context=context, parameter_overrides=params)


def test_default_parameters_are_the_core_default_settings():
    """The node's defaults (README table, config yaml) are the core's defaults, one tree."""
    settings = parameters.node_settings(parameters.DEFAULTS)
    core = Settings()
    for section in ('tracker', 'association', 'triangulation', 'pipeline', 'filter', 'model'):
        assert getattr(settings, section) == getattr(core, section), section


def test_lifecycle_transitions_create_and_release(context, calibration_files):
    node = make_node(context, **{'calibration.left_file': calibration_files[0],
                                 'calibration.right_file': calibration_files[1],
                                 'publish.debug_image': True})
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.pipeline is not None and node.calibration.baseline_m == pytest.approx(0.12)
        topics = {name for name, _ in node.get_topic_names_and_types()}
        names = {'/persistence_node/points', '/persistence_node/markers',
                 '/persistence_node/tracks', '/persistence_node/debug_image', '/diagnostics'}
        published = {p.topic_name for p in node.publishers}
        assert names <= published, published
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        subscribed = {s.topic_name for s in node.subscriptions}
        assert {'/left/detections', '/right/detections', '/left/image_raw',
                '/right/image_raw'} <= subscribed
        assert '/left/camera_info' not in subscribed   # calibration files given
        assert node._worker.is_alive()
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert not {s.topic_name for s in node.subscriptions} & subscribed
        assert node._worker is None
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert not names & {p.topic_name for p in node.publishers}
        assert node.pipeline is None and node.filter is None
        del topics
        # configure again works (parameters are re-read)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    finally:
        node._stop()
        node.destroy_node()


@pytest.mark.parametrize('overrides, expected', [
    ({'filter.name': 'learned', 'model.path': '/nonexistent.safetensors'}, 'does not exist'),
    ({'filter.name': 'ground_plane'}, 'filter.ground_plane'),
    ({'filter.name': 'bogus'}, 'filter.name: must be one of'),
    ({'sync.slop': -1.0}, 'sync.slop'),
    ({'sync.queue_size': 'ten'}, 'sync.queue_size'),
    ({'tracker.low_score': 0.9}, 'tracker.low_score (0.9) must be <= tracker.high_score'),
    ({'calibration.left_file': '/nonexistent.yaml'}, 'set both'),
    ({'model.path': '/nonexistent.safetensors'}, 'does not exist'),
])
def test_bad_configuration_fails_fast_with_a_message(context, capfd, overrides, expected):
    node = make_node(context, **overrides)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.pipeline is None and node.filter is None
        assert not [p.topic_name for p in node.publishers
                    if p.topic_name.startswith('/persistence_node/')]
    finally:
        node.destroy_node()
    err = capfd.readouterr().err
    assert expected in err, err
    assert 'configure FAILED' in err


def _frame(stamp_ns, boxes, frame_id, score=0.9):
    return detections_to_msg(DetectionFrame(stamp_ns, frame_id, [
        Detection(*box, score=score, id=f'{frame_id[7]}{stamp_ns}-{k}')
        for k, box in enumerate(boxes)]))


def test_bad_inputs_are_rejected_and_counted_not_fatal(context, calibration_files):
    node = make_node(context, **{'calibration.left_file': calibration_files[0],
                                 'calibration.right_file': calibration_files[1],
                                 'log.throttle_s': 0.0})
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        box = (80.0, 60.0, 10.0, 10.0)
        ok = node.process(_frame(1_000, [box], LEFT), _frame(1_000, [(70.0, 60.0, 10, 10)],
                                                             RIGHT))
        assert ok is not None and ok.accepted
        # NaN box: dropped and counted, the frame goes on.
        nan = node.process(_frame(2_000, [(math.nan, 1.0, 1.0, 1.0), box], LEFT),
                           _frame(2_000, [(70.0, 60.0, 10, 10)], RIGHT))
        assert nan is not None and node.rejected['non_finite'] == 1
        # stamp going backwards, frame ids swapped/equal, unsupported encoding.
        assert node.process(_frame(1_500, [box], LEFT), _frame(1_500, [], RIGHT)) is None
        assert node.rejected['stamp_not_increasing'] == 1
        assert node.process(_frame(3_000, [box], LEFT), _frame(3_000, [], LEFT)) is None
        assert node.rejected['frame_id_mismatch'] == 1
        image = numpy_to_image(np.zeros((120, 160), np.float32), '32FC1', 3_000, LEFT)
        rgb = numpy_to_image(np.zeros((120, 160, 3), np.uint8), 'rgb8', 3_000, RIGHT)
        assert node.process(_frame(3_000, [box], LEFT), _frame(3_000, [], RIGHT),
                            image, rgb) is None
        assert node.rejected['unsupported_image'] == 1
        wrong = numpy_to_image(np.zeros((120, 160, 3), np.uint8), 'rgb8', 3_000, 'other')
        assert node.process(_frame(3_000, [box], LEFT), _frame(3_000, [], RIGHT),
                            wrong, rgb) is None
        assert node.rejected['frame_id_mismatch'] == 2
        # images of another size than the calibration's (120 x 160): the frame is refused
        small = [numpy_to_image(np.zeros((60, 80, 3), np.uint8), 'rgb8', 3_000, side)
                 for side in (LEFT, RIGHT)]
        assert node.process(_frame(3_000, [box], LEFT), _frame(3_000, [], RIGHT),
                            *small) is None
        assert node.rejected['image_size_mismatch'] == 1
        # a box 1e5 px wide cannot be on the image: dropped and counted (it once made the
        # crop step allocate tens of GB), the frame goes on
        huge = node.process(_frame(3_500, [(80.0, 60.0, 1e5, 10.0), box], LEFT),
                            _frame(3_500, [], RIGHT))
        assert huge is not None and node.rejected['box_too_large'] == 1
        # uncalibrated camera_info
        node._on_camera_info('left', CameraInfo())
        assert node.rejected['uncalibrated_camera_info'] == 1
        # A good frame still works afterwards; diagnostics report every reason.
        assert node.process(_frame(4_000, [box], LEFT), _frame(4_000, [], RIGHT),
                            waits=(0.002, 0.003)) is not None
        values = node.diagnostic_values()
        for reason in ('non_finite', 'stamp_not_increasing', 'frame_id_mismatch',
                       'unsupported_image', 'uncalibrated_camera_info', 'image_size_mismatch',
                       'box_too_large'):
            assert int(values[f'rejected.{reason}']) >= 1
        assert values['frames.processed'] == 4 and values['latency_ms.p99'] > 0
        # time per stage of the 4 processed frames (refused ones are not timed)
        assert node.timer.frames == 4 and node.pipeline.timer.frames == 4
        assert values['stage_ms.sync_wait.max'] == pytest.approx(2.0)
        assert values['stage_ms.queue_wait.max'] == pytest.approx(3.0)
        for stage in ('conversion', 'pipeline', 'messages', 'publishing', 'tracking',
                      'association', 'total'):
            assert values[f'stage_ms.{stage}.max'] > 0.0, stage
        last = node.timer.last()  # the last frame's waits count in its total
        assert sum(last.values()) >= last['pipeline'] + 5.0
    finally:
        node.destroy_node()


def test_processing_queue_drops_oldest_and_counts(context, calibration_files):
    node = make_node(context, **{'calibration.left_file': calibration_files[0],
                                 'calibration.right_file': calibration_files[1],
                                 'processing.queue_size': 2})
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        # Not active: no worker, so the queue fills.
        for k in range(5):
            node._on_synchronized(_frame(k, [], LEFT), _frame(k, [], RIGHT))
        assert node.queue_drops == 3 and node.rejected['processing_queue_full'] == 3
        assert [stamp_to_ns(m[0].header.stamp) for _, _, m in node._frames] == [3, 4]
    finally:
        node.destroy_node()


def _wait_for(condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_a_bag_played_in_a_loop_is_synchronized_again(context, calibration_files,
                                                      subscription_callbacks):
    # The right camera sends an unmatched message between frames, so the right queue holds
    # the end of the first pass; both synchronizers drop the smallest stamp when a queue is
    # full, which after the loop is every new message: nothing was emitted any more.
    node = make_node(context, **{'calibration.left_file': calibration_files[0],
                                 'calibration.right_file': calibration_files[1],
                                 'use_images': False, 'sync.queue_size': 5,
                                 'filter.name': 'min_hits', 'processing.queue_size': 64})
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        # the real subscriptions' callbacks, called in a fixed order (DDS would interleave)
        left, right = subscription_callbacks(node)
        box = (80.0, 60.0, 10.0, 10.0)

        def play():
            before = node.frames_synchronized
            for k in range(20):
                stamp = 1_000_000_000 + k * 100_000_000
                left(_frame(stamp, [box], LEFT))
                right(_frame(stamp, [(70.0, 60.0, 10.0, 10.0)], RIGHT))
                right(_frame(stamp + 50_000_000, [], RIGHT))  # unmatched
            return node.frames_synchronized - before

        assert play() == 20
        assert play() == 20   # 0 before
        assert node.time_jumps == 1 and node.diagnostic_values()['sync.time_jumps'] == 1
        assert _wait_for(lambda: node.frames_processed == 40), node.frames_processed
        # the second pass was a new sequence, not stale stamps: one reset, nothing refused
        # but the right camera's extra messages, which found no partner (counted)
        assert node.resets == {'time_jump': 1, 'sequence_restart': 1}
        assert set(node.rejected) == {'sync_unmatched'}
    finally:
        node._stop()
        node.destroy_node()


def test_new_camera_info_restarts_tracks_decisions_and_markers(context, calibration_files):
    left_cal, right_cal = (load_calibration_yaml(path) for path in calibration_files)
    node = make_node(context, **{'use_images': False, 'filter.name': 'score',
                                 'filter.threshold': 0.7, 'tracker.min_hits': 1})
    listener = rclpy.create_node('marker_listener', context=context)
    received = []
    listener.create_subscription(MarkerArray, '/persistence_node/markers', received.append,
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        node._on_camera_info('left', calibration_to_camera_info(left_cal, 0, LEFT))
        node._on_camera_info('right', calibration_to_camera_info(right_cal, 0, RIGHT))
        first = node.pipeline
        assert first is not None

        def frame(k, score):
            stamp = 1_000_000_000 + k * 66_000_000
            return node.process(_frame(stamp, [(80.0, 60.0, 10.0, 10.0)], LEFT, score),
                                _frame(stamp, [(70.0, 60.0, 10.0, 10.0)], RIGHT, score))

        states = [t.state for k in range(6) for t in frame(k, 0.5).tracks]
        assert states[-1] == TrackState.TRANSIENT, states
        # the same camera_info again changes nothing; another right D or P, once confirmed
        # by CAMERA_INFO_STABLE equal messages (a real recalibration), restarts everything
        node._on_camera_info('right', calibration_to_camera_info(right_cal, 0, RIGHT))
        assert node.pipeline is first
        distorted = replace(right_cal, D=np.array([0.01, 0.0, 0.0, 0.0, 0.0]))
        for _ in range(CAMERA_INFO_STABLE - 1):
            node._on_camera_info('right', calibration_to_camera_info(distorted, 0, RIGHT))
            assert node.pipeline is first
        node._on_camera_info('right', calibration_to_camera_info(distorted, 0, RIGHT))
        assert node.pipeline is not first   # only P and K used to be compared
        first = node.pipeline
        moved = replace(right_cal, P=right_cal.P + np.array(
            [[0.0, 0.0, 0.0, -1.0], [0.0] * 4, [0.0] * 4]))
        for _ in range(CAMERA_INFO_STABLE):
            node._on_camera_info('right', calibration_to_camera_info(moved, 0, RIGHT))
        assert node.pipeline is not first
        assert node.resets['recalibration'] == 2 and not node.rejected
        after = [t for k in range(6, 12) for t in frame(k, 0.9).tracks]
        assert after and {t.id for t in after} == {1}   # ids restart with the pipeline ...
        assert after[-1].state == TrackState.PERSISTENT, after   # ... not the old id 1's decision
        assert _wait_for(lambda: executor.spin_once(timeout_sec=0.05) or any(
            m.action == Marker.DELETEALL for msg in received for m in msg.markers))
    finally:
        executor.shutdown()
        listener.destroy_node()
        node.destroy_node()


def test_reactivation_watches_camera_info_and_never_runs_two_workers(
        context, calibration_files, monkeypatch):
    left_cal, right_cal = (load_calibration_yaml(path) for path in calibration_files)
    node = make_node(context, **{'use_images': False})
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        node._on_camera_info('left', calibration_to_camera_info(left_cal, 0, LEFT))
        node._on_camera_info('right', calibration_to_camera_info(right_cal, 0, RIGHT))
        assert node.pipeline is not None
        # a frame still running when deactivate gives up waiting for the worker ...
        monkeypatch.setattr(persistence_node, 'WORKER_JOIN_TIMEOUT_S', 0.2)
        node._pipeline_lock.acquire()
        try:
            node._on_synchronized(_frame(5, [], LEFT), _frame(5, [], RIGHT))
            assert _wait_for(lambda: not node._frames)   # the worker took it and waits
            assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            assert node._worker is not None and node._worker.is_alive()
            # ... keeps activate from starting a second worker beside it
            assert node.trigger_activate() == TransitionCallbackReturn.FAILURE
        finally:
            node._pipeline_lock.release()
        assert _wait_for(lambda: not node._worker.is_alive())
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        # calibrated from camera_info, it still listens for changes after re-activation
        subscribed = {s.topic_name for s in node.subscriptions}
        assert {'/left/camera_info', '/right/camera_info'} <= subscribed
    finally:
        node._stop()
        node.destroy_node()


def test_an_override_set_right_after_start_no_longer_fails_configure(context, capfd):
    node = make_node(context, **{'sync.slop': -1.0})
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert 'sync.slop: invalid value -1.0' in capfd.readouterr().err
        assert node.set_parameters([Parameter('sync.slop', value=0.05)])[0].successful
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.settings.sync.slop == 0.05
    finally:
        node.destroy_node()


def test_spin_stops_quietly_when_a_signal_shut_the_context_down(context):
    # The node's loop checks rclpy.ok() and then spins; a SIGTERM in between shut the context
    # down first, spin_once raised RCLError and a replay saw the node exit 1.
    node = make_node(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        assert spin_once_unless_shut_down(executor, 0.01)
        context.shutdown()
        with pytest.raises(RCLError, match='context is not valid'):
            executor.spin_once(timeout_sec=0.01)  # the error the loop used to die of
        assert not spin_once_unless_shut_down(executor, 0.01)
    finally:
        executor.shutdown()
        node.destroy_node()


def test_learned_filter_takes_the_decision_parameters():
    values = dict(parameters.DEFAULTS, **{'model.decision.hi': 0.95, 'model.decision.lo': 0.2,
                                          'model.decision.min_frames': 7,
                                          'model.decision.recheck': True, 'model.device': 'cpu'})
    decision = build_filter(parameters.node_settings(values)).decision
    assert (decision.hi, decision.lo, decision.min_frames, decision.recheck) == (0.95, 0.2, 7,
                                                                                 True)


def _core_results(bag, truth):
    """Run the core pipeline in-process on the bag, with the node's default parameters."""
    settings = parameters.node_settings(dict(parameters.DEFAULTS, **{'model.device': 'cpu'}))
    cal = StereoCalibration(CameraCalibration.from_dict(truth['rig']['left'], LEFT),
                            CameraCalibration.from_dict(truth['rig']['right'], RIGHT))
    pipeline = StereoPipeline(cal, settings, build_filter(settings))
    _, frames = read_stereo_bag(bag, with_images=True)  # the default (learned) filter sees crops
    return {f.stamp_ns: pipeline.process(f.left, f.right, f.left_image, f.right_image)
            for f in frames}


def test_cross_process_replay_outputs(scene, tmp_path):
    bag, truth = scene
    out = tmp_path / 'out'
    log = open(tmp_path / 'node.log', 'w+')
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    summary = replay(bag, out, mode='fast', frame_timeout=10.0, node_log=log,
                     extra_node_args=['-p', 'publish.debug_image:=true'])
    log.seek(0)
    node_log = log.read()
    assert summary['node_exit_code'] in (0, -15), node_log
    if summary['node_exit_code'] == 0:  # stopped through its handler: it deleted its segments
        assert summary['shared_memory_left'] == [], node_log
    assert summary['timeouts'] == 0, node_log
    recorded = {}
    for topic, stamp, msg in read_messages(out):
        recorded.setdefault(topic.rsplit('/', 1)[-1], []).append((stamp, msg))
    assert len(recorded['tracks']) == N_FRAMES, node_log
    assert len(recorded['points']) == N_FRAMES and len(recorded['debug_image']) == N_FRAMES
    assert recorded['diagnostics'], node_log
    frame_stamps = [f['stamp_ns'] for f in truth['frames']]
    # the summary: every frame answered, and the node's own last numbers (a /clock tick past
    # the bag makes it publish them), which stay out of the recording: it ends with the bag
    assert summary['answered'] == N_FRAMES and summary['frames_per_s'] > 0
    assert int(summary['node']['frames.processed']) == N_FRAMES, summary['node']
    assert float(summary['node']['stage_ms.pipeline.max']) > 0
    assert max(stamp for msgs in recorded.values() for stamp, _ in msgs) <= frame_stamps[-1]
    # the cameras: once (one calibration), latched, stamped with the first frame
    ((_, cameras),) = recorded['cameras']
    assert {(m.ns, m.id, m.header.frame_id) for m in cameras.markers} == {
        (messages.CAMERA_NAMESPACE, k, LEFT) for k in range(4)}
    assert stamp_to_ns(cameras.markers[0].header.stamp) == frame_stamps[0]
    tracks_by_stamp = {}
    for stamp, msg in recorded['tracks']:
        assert msg.header.frame_id == LEFT
        tracks_by_stamp[stamp_to_ns(msg.header.stamp)] = msg
    assert sorted(tracks_by_stamp) == frame_stamps   # every frame, stamped with its input

    n_points = 0
    for _, msg in recorded['points']:
        stamp = stamp_to_ns(msg.header.stamp)
        assert msg.header.frame_id == LEFT and msg.is_dense and msg.height == 1
        assert msg.point_step == 20 and msg.row_step == 20 * msg.width
        assert len(msg.data) == msg.row_step
        assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [
            (f.name, f.offset, f.datatype) for f in messages.POINT_FIELDS]
        cloud = np.frombuffer(bytes(msg.data), messages.POINT_DTYPE)
        assert np.isfinite(cloud['x']).all() and np.isfinite(cloud['z']).all()
        # persistent tracks at their smoothed positions (smoothed: every persistent track
        # with a point so far)
        persistent = {t.id: t for t in tracks_by_stamp[stamp].tracks
                      if t.state == Track.PERSISTENT and t.has_smoothed}
        assert sorted(cloud['track_id'].tolist()) == sorted(persistent)   # only persistent
        for row in cloud:
            p = persistent[int(row['track_id'])].smoothed_position
            np.testing.assert_allclose([row['x'], row['y'], row['z']], [p.x, p.y, p.z],
                                       rtol=1e-6)
        n_points += len(cloud)
    assert n_points > 0

    added = set()
    assert all(msg.markers for _, msg in recorded['markers'])   # no empty (stampless) arrays
    for _, msg in recorded['markers']:
        for m in msg.markers:
            assert m.header.frame_id == LEFT and m.ns in messages.MARKER_NAMESPACES
            if m.action == Marker.ADD:
                added.add((m.ns, m.id))
            elif m.action == Marker.DELETE:
                assert (m.ns, m.id) in added
    assert added

    # The node computes what the core pipeline computes on the same bag: nothing was lost.
    core = _core_results(bag, truth)
    for stamp, res in core.items():
        node_tracks = {t.id: t for t in tracks_by_stamp[stamp].tracks}
        assert sorted(node_tracks) == sorted(t.id for t in res.tracks)
        for t in res.tracks:
            assert node_tracks[t.id].state == int(t.state)
            assert node_tracks[t.id].has_position == t.has_position
            assert node_tracks[t.id].has_smoothed == t.has_smoothed
            if t.has_smoothed:
                got = node_tracks[t.id]
                np.testing.assert_allclose([got.smoothed_position.x, got.smoothed_position.y,
                                            got.smoothed_position.z], t.smoothed_position)
                np.testing.assert_allclose(np.reshape(got.smoothed_position_covariance,
                                                      (3, 3)), t.smoothed_position_covariance)


def test_timed_replay_keeps_bag_timing(scene, calibration_files, tmp_path):
    bag, truth = scene
    stamps = [f['stamp_ns'] for f in truth['frames']]
    # with calibration files the node does not subscribe to camera_info (the replay used to
    # wait for that subscription and give up)
    summary = replay(bag, tmp_path / 'out', mode='timed', frame_timeout=10.0,
                     node_log=open(tmp_path / 'node.log', 'w'),
                     extra_node_args=['-p', 'filter.name:=stereo',
                                      '-p', f'calibration.left_file:={calibration_files[0]}',
                                      '-p', f'calibration.right_file:={calibration_files[1]}'])
    assert summary['node_exit_code'] in (0, -15), (tmp_path / 'node.log').read_text()
    # played at the bag's pace (not as fast as possible), and every frame came back
    assert summary['wall_s'] >= 0.9 * (stamps[-1] - stamps[0]) / 1e9
    recorded = [m for t, _, m in read_messages(tmp_path / 'out') if t.endswith('/tracks')]
    assert sorted(stamp_to_ns(m.header.stamp) for m in recorded) == stamps


def test_replay_groups_a_recorded_bag_by_header_stamp(scene, tmp_path):
    # ros2 bag record logs arrival times: later than the stamps, different per topic. The
    # frames must come out as from the simulator's bag, which logs each frame at its stamp.
    bag, truth = scene
    recorded = tmp_path / 'recorded'
    with Reader(bag) as reader, Writer(recorded, version=9,
                                       storage_plugin=StoragePlugin.MCAP) as writer:
        out = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=get_typestore())
               for c in reader.connections}
        delay = {c.id: 30_000_000 + 3_000_000 * k for k, c in enumerate(reader.connections)}
        for connection, timestamp, raw in reader.messages():
            writer.write(out[connection.id], timestamp + delay[connection.id], raw)
    types, frames = read_frames(bag, '/stereo')
    assert [stamp for stamp, _ in frames] == [f['stamp_ns'] for f in truth['frames']]
    assert read_frames(recorded, '/stereo') == (types, frames)


def _bag_with_bad_detections(scene, out):
    """Copy the scene's bag with invalid and off-image boxes added to some frames."""
    from persistence_ros import bag_io
    types = get_typestore().types
    bad = [(math.nan, 60.0, 10.0, 10.0, 0.9), (80.0, 60.0, 0.0, 10.0, 0.9),
           (80.0, 60.0, 10.0, 10.0, 1.5), (80.0, 60.0, 1e5, 10.0, 0.9),
           (-500.0, 60.0, 10.0, 10.0, 0.9)]

    def change(topic, msg):
        if not topic.endswith('detections'):
            return msg
        k = (stamp_to_ns(msg.header.stamp) // 1_000_000) % 7
        extra = [types[bag_io.DETECTION_2D](id=f'bad{k}-{i}', center_x=x, center_y=y, width=w,
                                            height=h, score=s, class_id='')
                 for i, (x, y, w, h, s) in enumerate(bad[:k])]
        return types[bag_io.DETECTION_2D_ARRAY](header=msg.header,
                                                detections=list(msg.detections) + extra)

    with bag_io.BagWriter(out) as bag:
        for topic, stamp_ns, msg in read_messages(scene):
            bag.write(topic, stamp_ns, change(topic, msg))
    return out


def test_the_node_and_the_offline_runner_count_the_same_rejections(context, scene,
                                                                   calibration_files, tmp_path):
    """One set of input rules: the same bag gives the same counters by reason both ways."""
    from collections import Counter

    from rclpy.serialization import deserialize_message

    from persistence_ros.offline_runner import run_pipeline
    from persistence_ros.ros.replay import message_class
    bag = _bag_with_bad_detections(scene[0], tmp_path / 'bad')
    settings = parameters.node_settings(dict(parameters.DEFAULTS, **{'filter.name': 'none'}))
    offline = Counter()
    calibration, frames = read_stereo_bag(bag, with_images=True)
    run_pipeline(calibration, frames, build_filter(settings), settings, rejected=offline)
    assert set(offline) == {'non_finite', 'non_positive_size', 'score_out_of_range',
                            'box_too_large', 'box_outside_image'}, offline

    node = make_node(context, **{'calibration.left_file': calibration_files[0],
                                 'calibration.right_file': calibration_files[1],
                                 'filter.name': 'none', 'log.throttle_s': 60.0})
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        types, played = read_frames(bag, '/stereo')
        for _, msgs in played:
            by_topic = {topic.split('/', 2)[2]: deserialize_message(raw,
                                                                    message_class(types[topic]))
                        for topic, raw in msgs}
            assert node.process(by_topic['left/detections'], by_topic['right/detections'],
                                by_topic['left/image_raw'], by_topic['right/image_raw'])
        values = node.diagnostic_values()
        assert {k[len('rejected.'):]: v for k, v in values.items()
                if k.startswith('rejected.')} == dict(offline)
        assert values['frames.processed'] == N_FRAMES
    finally:
        node.destroy_node()


def test_diagnostics_warn_for_the_last_period_and_error_on_a_stall(context, calibration_files):
    """Each silent-loss case leaves a WARN naming it in the next period; a stall is ERROR."""
    from diagnostic_msgs.msg import DiagnosticStatus
    left_cal, right_cal = (load_calibration_yaml(path) for path in calibration_files)
    node = make_node(context, **{'use_images': False, 'filter.name': 'none',
                                 'pipeline.max_detections': 3, 'processing.queue_size': 1,
                                 'diagnostics.stall_timeout_s': 0.5, 'log.throttle_s': 60.0})

    def status():
        return node.diagnostic_status(node.diagnostic_values())
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert status() == (DiagnosticStatus.WARN, 'waiting for calibration')
        infos = {'left': calibration_to_camera_info(left_cal, 0, LEFT),
                 'right': calibration_to_camera_info(right_cal, 0, RIGHT)}
        for side, msg in infos.items():
            node._on_camera_info(side, msg)
        assert status() == (DiagnosticStatus.OK, 'ok')
        # detections beyond the bound
        boxes = [(20.0 + 25 * k, 60.0, 10.0, 10.0) for k in range(5)]
        assert node.process(_frame(1_000, boxes, LEFT), _frame(1_000, [], RIGHT))
        assert status() == (DiagnosticStatus.WARN, 'too_many_detections x2')
        assert status() == (DiagnosticStatus.OK, 'ok')   # a quiet period is OK again
        # frames dropped by the worker queue (not active: no worker)
        for k in range(3):
            node._on_synchronized(_frame(2_000 + k, [], LEFT), _frame(2_000 + k, [], RIGHT))
        level, message = status()
        assert level == DiagnosticStatus.WARN and '2 frame(s) dropped' in message
        node._frames.clear()
        # a camera_info that keeps changing: refused, the pipeline is not rebuilt
        pipeline = node.pipeline
        for k in range(4):
            node._on_camera_info('left', calibration_to_camera_info(
                replace(left_cal, P=left_cal.P + [[0, 0, k + 1.0, 0], [0] * 4, [0] * 4]), 0,
                LEFT))
        node._on_camera_info('left', infos['left'])   # and back: that change was not real
        assert node.pipeline is pipeline
        assert status() == (DiagnosticStatus.WARN, 'camera_info_unstable x4')
        # a real recalibration (one change, then stable): taken, and said
        moved = replace(right_cal, P=right_cal.P + [[0, 0, 0, -1.0], [0] * 4, [0] * 4])
        for _ in range(CAMERA_INFO_STABLE):
            node._on_camera_info('right', calibration_to_camera_info(moved, 0, RIGHT))
        assert node.pipeline is not pipeline
        assert status() == (DiagnosticStatus.WARN, 'reset: recalibration x1')
        values = node.diagnostic_values()
        assert values['resets.recalibration'] == 1
        assert values['rejected.too_many_detections'] == 2
        # inputs arrive, nothing is processed for longer than stall_timeout_s: ERROR
        node._on_receive(0)
        node._last_processed -= 1.0
        level, message = status()
        assert level == DiagnosticStatus.ERROR and 'no frame processed' in message
    finally:
        node.destroy_node()


def test_a_lone_bad_stamp_is_refused_without_emptying_the_queues(context, calibration_files,
                                                                 subscription_callbacks):
    """Stamp 0 on one topic, a set a day ahead: counted and WARNed, nothing else lost."""
    from diagnostic_msgs.msg import DiagnosticStatus
    node = make_node(context, **{'calibration.left_file': calibration_files[0],
                                 'calibration.right_file': calibration_files[1],
                                 'use_images': False, 'filter.name': 'none',
                                 'processing.queue_size': 64, 'log.throttle_s': 60.0})
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        left, right = subscription_callbacks(node)
        now = node.get_clock().now().nanoseconds
        box = [(80.0, 60.0, 10.0, 10.0)]
        for k in range(5):
            left(_frame(now + k * 50_000_000, box, LEFT))
        right(_frame(0, box, RIGHT))                       # a lone absurd stamp
        right(_frame(now + 86_400 * 10 ** 9, box, RIGHT))   # a day ahead of the clock
        left(_frame(now + 86_400 * 10 ** 9, box, LEFT))
        for k in range(5):   # the waiting left messages were not dropped: all five match
            right(_frame(now + k * 50_000_000, box, RIGHT))
        assert node.frames_synchronized == 5
        assert _wait_for(lambda: node.frames_processed == 5)
        assert node.rejected == {'stamp_jumped_back': 1, 'stamp_in_future': 2}
        assert not node.resets and node.time_jumps == 0
        level, message = node.diagnostic_status(node.diagnostic_values())
        assert level == DiagnosticStatus.WARN and 'stamp_in_future x2' in message
    finally:
        node._stop()
        node.destroy_node()
