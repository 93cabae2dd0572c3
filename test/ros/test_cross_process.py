"""Messages published by one process arrive intact in another (real rclpy, real DDS)."""

import os
from pathlib import Path
import subprocess
import sys
import time

from cross_process_publisher import (expected_detections, expected_image, IMAGE_STEP,
                                     STAMP_NS)
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray as VisionDetection2DArray

from persistence_ros.detections import (detection_frame_from_msg,
                                        detection_frame_from_vision_msg, stamp_to_ns)
from persistence_ros.image_codec import decode_compressed
from persistence_ros.msg import Detection2DArray
from persistence_ros.ros.conversions import image_to_numpy


@pytest.fixture
def publisher_process():
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    script = Path(__file__).with_name('cross_process_publisher.py')
    process = subprocess.Popen([sys.executable, str(script), '60'], env=dict(os.environ),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield process
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def test_detections_and_image_round_trip_across_processes(publisher_process):
    context = rclpy.Context()
    rclpy.init(context=context)
    received = {}
    try:
        node = Node('cross_process_subscriber', context=context)
        node.create_subscription(Detection2DArray, 'test/detections',
                                 lambda msg: received.setdefault('detections', msg), 10)
        node.create_subscription(Image, 'test/image',
                                 lambda msg: received.setdefault('image', msg), 10)
        node.create_subscription(VisionDetection2DArray, 'test/vision_detections',
                                 lambda msg: received.setdefault('vision', msg), 10)
        node.create_subscription(CompressedImage, 'test/image/compressed',
                                 lambda msg: received.setdefault('compressed', msg), 10)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 30.0
        while len(received) < 4 and time.monotonic() < deadline:
            assert publisher_process.poll() is None, publisher_process.stdout.read()
            executor.spin_once(timeout_sec=0.1)
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    assert set(received) == {'detections', 'image', 'vision', 'compressed'}, \
        f'received only {sorted(received)}'

    detections = received['detections']
    assert stamp_to_ns(detections.header.stamp) == STAMP_NS
    expected = expected_detections()
    frame = detection_frame_from_msg(detections)
    assert frame.frame_id == expected.frame_id
    assert [d.id for d in frame.detections] == [d.id for d in expected.detections]
    assert [d.class_id for d in frame.detections] == [d.class_id for d in expected.detections]
    for got, want in zip(frame.detections, expected.detections):
        for name in ('center_x', 'center_y', 'width', 'height', 'score'):
            assert getattr(got, name) == np.float32(getattr(want, name)), name

    image = received['image']
    assert (image.height, image.width, image.encoding, image.step) == (480, 640, 'rgb8',
                                                                       IMAGE_STEP)
    assert stamp_to_ns(image.header.stamp) == STAMP_NS
    assert image.header.frame_id == 'stereo_left_optical'
    np.testing.assert_array_equal(image_to_numpy(image), expected_image())

    # vision_msgs (the stand-in here, the real package on a robot): the same detections
    vision = detection_frame_from_vision_msg(received['vision'])
    assert (vision.stamp_ns, vision.frame_id) == (STAMP_NS, expected.frame_id)
    assert [(d.id, d.class_id) for d in vision.detections] == [
        (d.id, d.class_id) for d in expected.detections]
    for got, want in zip(vision.detections, frame.detections):  # values exact in float32
        for name in ('center_x', 'center_y', 'width', 'height', 'score'):
            assert getattr(got, name) == getattr(want, name), name
    compressed = received['compressed']
    assert stamp_to_ns(compressed.header.stamp) == STAMP_NS
    np.testing.assert_array_equal(decode_compressed(compressed.format, compressed.data),
                                  expected_image())
