"""
persistence_node with a robot's inputs, on one time base.

vision_msgs detections and compressed images in a cross-process replay, bad inputs counted
by name, /diagnostics stamped on the inputs' clock and a missing /clock reported.
"""

import math
import os
import time

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header
from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis,
                             ObjectHypothesisWithPose, Point2D, Pose2D)

from persistence_ros import bag_io
from persistence_ros.detections import DETECTION_TYPES, stamp_to_ns
from persistence_ros.evaluation.runner import read_track_bag
from persistence_ros.filter_factory import build_filter
from persistence_ros.offline_runner import read_stereo_bag, run_pipeline
from persistence_ros.ros import parameters
from persistence_ros.ros.conversions import ns_to_stamp
from persistence_ros.ros.persistence_node import PersistenceNode
from persistence_ros.ros.replay import input_parameters, replay

LEFT, RIGHT = 'stereo_left_optical', 'stereo_right_optical'
N_FRAMES = 20


def make_node(context, **overrides):
    params = [Parameter(name, value=value) for name, value in overrides.items()]
    return PersistenceNode(context=context, parameter_overrides=params)


def _span(bag):
    """Return (first, last) header stamp of the bag's messages."""
    stamps = [stamp_to_ns(msg.header.stamp) for _, _, msg in bag_io.read_messages(bag)]
    return min(stamps), max(stamps)


def test_replay_of_vision_msgs_and_png_images_on_the_bags_clock(scene, tmp_path):
    bag, _ = scene
    robot = tmp_path / 'robot_bag'
    topics = bag_io.convert_inputs(bag, robot, detections='vision_msgs', images='png')
    assert input_parameters(topics, '/stereo') == ['-p', 'detections.type:=vision_msgs',
                                                   '-p', 'images.transport:=compressed']
    out = tmp_path / 'out'
    log = open(tmp_path / 'node.log', 'w+')
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    summary = replay(robot, out, mode='fast', frame_timeout=10.0, node_log=log,
                     extra_node_args=['-p', 'diagnostics.period:=0.2'])
    log.seek(0)
    node_log = log.read()
    assert summary['node_exit_code'] in (0, -15), node_log
    assert summary['timeouts'] == 0, node_log
    assert 'vision_msgs/msg/Detection2DArray' not in node_log   # no type mismatch warning

    # the node computed what the core pipeline computes on the original (raw) bag
    settings = parameters.node_settings(dict(parameters.DEFAULTS, **{'model.device': 'cpu'}))
    calibration, frames = read_stereo_bag(bag, with_images=True)
    core = dict(run_pipeline(calibration, frames, build_filter(settings), settings))
    recorded = {}
    for topic, _, msg in bag_io.read_messages(out, ['/stereo/persistence_node/tracks']):
        recorded[stamp_to_ns(msg.header.stamp)] = msg
    assert sorted(recorded) == sorted(core)
    n_persistent = 0
    for stamp, tracks in core.items():
        got = {t.id: t for t in recorded[stamp].tracks}
        assert sorted(got) == [t.id for t in tracks]
        for t in tracks:
            assert got[t.id].state == int(t.state)
            assert got[t.id].left_detection_id == t.left_detection_id
            assert got[t.id].has_smoothed == t.has_smoothed
            n_persistent += t.has_smoothed
    assert n_persistent > 0
    # the evaluator reads the node's smoothed state back (evaluate --tracks)
    node_run = dict(read_track_bag(out))
    for stamp, tracks in core.items():
        got = {t.id: t for t in node_run[stamp]}
        for t in tracks:
            assert got[t.id].has_smoothed == t.has_smoothed
            if t.has_smoothed:
                np.testing.assert_allclose(got[t.id].smoothed_position, t.smoothed_position)
                np.testing.assert_allclose(got[t.id].smoothed_velocity_covariance,
                                           t.smoothed_velocity_covariance)

    # one time base: every message of the recording, by log time and by header stamp, lies
    # within the input bag's time span (a wall-clock or epoch-0 stamp would be decades off)
    first, last = _span(robot)
    store = bag_io.get_typestore()
    counts = {}
    with Reader(out) as reader:
        assert first <= reader.start_time and reader.end_time <= last + 1
        for connection, log_ns, raw in reader.messages():
            counts[connection.topic] = counts.get(connection.topic, 0) + 1
            msg = store.deserialize_cdr(raw, connection.msgtype)
            if hasattr(msg, 'header'):
                headers = [msg.header]
            else:   # a MarkerArray: one header per marker
                headers = [m.header for m in msg.markers]
            for header in headers:
                assert first <= stamp_to_ns(header.stamp) <= last, connection.topic
            assert first <= log_ns <= last, connection.topic
    assert counts.get('/diagnostics', 0) >= 1, counts
    assert counts['/stereo/persistence_node/points'] == N_FRAMES


def _vision(stamp_ns, frame_id, boxes):
    """Return a vision_msgs Detection2DArray; a box is (cx, cy, w, h, [(class, score)...])."""
    detections = []
    for k, (cx, cy, w, h, hypotheses) in enumerate(boxes):
        detections.append(Detection2D(
            id=f'{frame_id[7]}{stamp_ns}-{k}',
            results=[ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=c, score=s))
                     for c, s in hypotheses],
            bbox=BoundingBox2D(center=Pose2D(position=Point2D(x=cx, y=cy)), size_x=w,
                               size_y=h)))
    return Detection2DArray(header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id),
                            detections=detections)


def _jpeg(stamp_ns, frame_id, data=None, image_format='jpeg'):
    import cv2
    if data is None:
        ok, encoded = cv2.imencode('.jpg', np.full((120, 160, 3), 90, np.uint8))
        data = encoded.tobytes()
    return CompressedImage(header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id),
                           format=image_format, data=data)


def test_bad_robot_inputs_are_rejected_by_name_and_counted(context, calibration_files):
    node = make_node(context, **{'calibration.left_file': calibration_files[0],
                                 'calibration.right_file': calibration_files[1],
                                 'detections.type': 'vision_msgs',
                                 'images.transport': 'compressed',
                                 'detections.classes': ['ball'], 'filter.name': 'none',
                                 'log.throttle_s': 0.0})
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        subscribed = {s.topic_name: s.msg_type for s in node.subscriptions}
        assert subscribed['/left/detections'] is Detection2DArray
        assert subscribed['/left/image_raw/compressed'] is CompressedImage
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        ball = [('ball', 0.9)]

        def frame(stamp, left_boxes, left_image=None, right_image=None):
            return node.process(_vision(stamp, LEFT, left_boxes),
                                _vision(stamp, RIGHT, [(70.0, 60.0, 10.0, 10.0, ball)]),
                                left_image or _jpeg(stamp, LEFT),
                                right_image or _jpeg(stamp, RIGHT))

        ok = frame(1_000, [(80.0, 60.0, 10.0, 10.0, ball),
                           (30.0, 30.0, 8.0, 8.0, [('glare', 0.3), ('ball', 0.2)]),
                           (90.0, 50.0, math.nan, 10.0, ball),
                           (40.0, 40.0, 8.0, 8.0, [])])
        assert ok is not None and ok.accepted
        assert node.rejected['class_filtered'] == 1      # best class glare: not tracked
        assert node.rejected['non_finite'] == 1          # NaN size_x
        assert node.rejected['no_hypothesis'] == 1       # no results at all
        jpeg = _jpeg(2_000, RIGHT).data
        assert frame(2_000, [], right_image=_jpeg(2_000, RIGHT, jpeg[: len(jpeg) // 2])) is None
        assert frame(2_000, [], left_image=_jpeg(2_000, LEFT, b'\x00' * 64)) is None
        assert node.rejected['corrupt_image'] == 2
        assert frame(2_000, [], left_image=_jpeg(2_000, LEFT, jpeg, 'tiff')) is None
        assert frame(2_000, [], left_image=_jpeg(2_000, LEFT, jpeg,
                                                 '16UC1; compressedDepth png')) is None
        assert node.rejected['unsupported_image'] == 2
        assert frame(3_000, [(80.0, 60.0, 10.0, 10.0, ball)]) is not None   # still works
        values = node.diagnostic_values()
        for reason in ('class_filtered', 'non_finite', 'no_hypothesis', 'corrupt_image',
                       'unsupported_image'):
            assert int(values[f'rejected.{reason}']) >= 1, reason
        assert values['frames.processed'] == 2
    finally:
        node._stop()
        node.destroy_node()


def test_an_empty_class_list_in_a_parameters_file_means_every_class(context, tmp_path):
    # rcl reads `classes: []` as "not set": the node keeps its default (every class)
    path = tmp_path / 'params.yaml'
    path.write_text('/**:\n  ros__parameters:\n    detections: {classes: []}\n')
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=['node', '--ros-args', '--params-file', str(path)])
    try:
        node = PersistenceNode(context=ctx)
        assert node.get_parameter('detections.classes').value == []
        assert parameters.read_parameters(node)['detections.classes'] == []
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)
    node = make_node(context, **{'detections.classes': ['person', 'car']})
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.settings.detections.classes == ['person', 'car']
        assert node.pipeline is None   # (no calibration yet)
    finally:
        node.destroy_node()


def _persistence(stamp_ns, frame_id, box):
    from persistence_ros.detections import Detection, DetectionFrame
    from persistence_ros.ros.conversions import detections_to_msg
    return detections_to_msg(DetectionFrame(stamp_ns, frame_id, [
        Detection(*box, score=0.9, id=f'{frame_id[7]}{stamp_ns}')]))


def _spin_until(executor, condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return condition()


def test_diagnostics_are_stamped_on_the_inputs_clock_and_a_missing_clock_is_reported(
        context, calibration_files, capfd, subscription_callbacks):
    node = make_node(context, **{'calibration.left_file': calibration_files[0],
                                 'calibration.right_file': calibration_files[1],
                                 'use_images': False, 'filter.name': 'none',
                                 'use_sim_time': True, 'log.throttle_s': 0.0})
    listener = rclpy.create_node('diagnostics_listener', context=context)
    received = []
    listener.create_subscription(DiagnosticArray, '/diagnostics', received.append,
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    clock = listener.create_publisher(Clock, '/clock', 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener)
    executor.add_node(node)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        time.sleep(0.5)   # discovery
        # use_sim_time, no /clock, no input: no time on the inputs' clock, nothing published
        # (and nothing wrong yet: a replay starts the node before its first /clock)
        node._publish_diagnostics()
        assert not _spin_until(executor, lambda: received, 1.0)
        assert '/clock' not in capfd.readouterr().err
        # inputs stamped around 1000 s (e.g. a bag played without --clock)
        left, right = subscription_callbacks(node)
        for k in range(3):
            stamp = 1_000_000_000_000 + k * 50_000_000
            left(_persistence(stamp, LEFT, (80.0, 60.0, 10.0, 10.0)))
            right(_persistence(stamp, RIGHT, (70.0, 60.0, 10.0, 10.0)))
        node._publish_diagnostics()
        assert _spin_until(executor, lambda: received)
        msg = received[-1]
        assert stamp_to_ns(msg.header.stamp) == stamp   # the newest input, not 1970
        status = msg.status[0]
        values = {kv.key: kv.value for kv in status.values}
        assert values['clock.source'] == 'input' and values['clock.missing'] == '1'
        assert status.level == DiagnosticStatus.WARN and '/clock' in status.message
        assert 'use_sim_time is true but inputs arrive without a /clock' in \
            capfd.readouterr().err
        # a /clock arrives: diagnostics follow it
        clock.publish(Clock(clock=Time(sec=1000, nanosec=500_000_000)))
        assert _spin_until(executor,
                           lambda: node.get_clock().now().nanoseconds == 1_000_500_000_000)
        node._publish_diagnostics()
        assert _spin_until(executor, lambda: len(received) >= 2)
        assert stamp_to_ns(received[-1].header.stamp) == 1_000_500_000_000
        values = {kv.key: kv.value for kv in received[-1].status[0].values}
        assert values['clock.source'] == 'sim' and values['clock.missing'] == '1'
        # the diagnostics timer runs on a steady clock: it fires although /clock stands still
        before = len(received)
        assert _spin_until(executor, lambda: len(received) > before, 5.0)
    finally:
        executor.shutdown()
        node._stop()
        listener.destroy_node()
        node.destroy_node()


def test_without_sim_time_diagnostics_use_the_system_clock(context):
    node = make_node(context)
    try:
        stamp, source = node._time.stamp_ns()
        assert source == 'system' and abs(stamp - time.time_ns()) < 5e9
        assert DETECTION_TYPES[node.settings.detections.type].startswith('persistence_ros/')
    finally:
        node.destroy_node()
