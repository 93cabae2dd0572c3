"""A simulated bag's Detection2DArray deserializes with rclpy into the built message class."""

import os

import pytest

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
pytestmark = pytest.mark.ros


def test_detections_deserialize_with_rclpy(tmp_path):
    msg_module = pytest.importorskip(
        'persistence_ros.msg', reason='persistence_ros.msg exists only after the ament build')
    serialization = pytest.importorskip('rclpy.serialization')
    from rosbags.rosbag2 import Reader

    from persistence_ros.simulation.generate import generate_scene
    from persistence_ros.simulation.scenario import load_scenario

    scenario = load_scenario('noisy', seed=21, overrides={
        'duration_s': 0.5, 'fps': 10.0, 'rig': {'width': 96, 'height': 72}})
    truth = generate_scene(scenario, tmp_path / 'bag')
    seen = set()
    with Reader(tmp_path / 'bag') as reader:
        connections = [c for c in reader.connections if c.topic == '/stereo/left/detections']
        for _, stamp_ns, raw in reader.messages(connections=connections):
            msg = serialization.deserialize_message(bytes(raw), msg_module.Detection2DArray)
            assert msg.header.frame_id == 'stereo_left_optical'
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp_ns
            for det in msg.detections:
                assert truth['detections'][det.id]['box'][2] == pytest.approx(det.width,
                                                                              abs=1e-3)
                seen.add(det.id)
    assert seen == {k for k, d in truth['detections'].items() if d['camera'] == 'left'}
