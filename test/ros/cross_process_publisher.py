"""Publisher half of the cross-process test: publishes known messages until stopped."""

import sys
import time

import cv2
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import (BoundingBox2D, Detection2D, ObjectHypothesis,
                             ObjectHypothesisWithPose, Point2D, Pose2D)
from vision_msgs.msg import Detection2DArray as VisionDetection2DArray

from persistence_ros.detections import Detection, DetectionFrame
from persistence_ros.msg import Detection2DArray
from persistence_ros.ros.conversions import detections_to_msg, ns_to_stamp, numpy_to_image

STAMP_NS = 1_700_000_123_456_789_012


def expected_detections() -> DetectionFrame:
    """Return the detections the publisher sends (values exercise float32 and unicode ids)."""
    return DetectionFrame(stamp_ns=STAMP_NS, frame_id='stereo_left_optical', detections=[
        Detection(100.5, 200.25, 12.0, 14.5, 0.875, 'sphere', 'L000007-00'),
        Detection(0.0, 479.0, 1.0, 2.0, 0.0, 'glare', 'L000007-01'),
        Detection(639.75, 0.5, 640.0, 480.0, 1.0, '', 'id-\u00e9\u4e2d'),
    ])


def expected_image() -> np.ndarray:
    """Return a 480x640 rgb8 image (921,600 bytes: more than Fast DDS's default shm segment)."""
    rows, cols = np.mgrid[0:480, 0:640]
    return np.stack([rows % 256, cols % 256, (rows + cols) % 256], axis=2).astype(np.uint8)


IMAGE_STEP = 640 * 3 + 32  # padded rows


def vision_detections_msg() -> VisionDetection2DArray:
    """Return the expected detections as vision_msgs (two hypotheses for the first box)."""
    frame = expected_detections()
    items = []
    for k, d in enumerate(frame.detections):
        results = [ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=d.class_id,
                                                                        score=d.score))]
        if k == 0:  # a weaker second class: the best one is taken
            results.insert(0, ObjectHypothesisWithPose(
                hypothesis=ObjectHypothesis(class_id='other', score=d.score / 2)))
        items.append(Detection2D(
            results=results, id=d.id,
            bbox=BoundingBox2D(center=Pose2D(position=Point2D(x=d.center_x, y=d.center_y)),
                               size_x=d.width, size_y=d.height)))
    return VisionDetection2DArray(
        header=Header(stamp=ns_to_stamp(frame.stamp_ns), frame_id=frame.frame_id),
        detections=items)


def compressed_image_msg() -> CompressedImage:
    """Return the expected image as a PNG CompressedImage (lossless)."""
    ok, data = cv2.imencode('.png', expected_image()[:, :, ::-1].copy())
    assert ok
    return CompressedImage(header=Header(stamp=ns_to_stamp(STAMP_NS),
                                         frame_id='stereo_left_optical'),
                           format='rgb8; png compressed bgr8', data=data.tobytes())


def main() -> int:
    rclpy.init()
    node = Node('cross_process_publisher')
    detections_pub = node.create_publisher(Detection2DArray, 'test/detections', 10)
    image_pub = node.create_publisher(Image, 'test/image', 10)
    vision_pub = node.create_publisher(VisionDetection2DArray, 'test/vision_detections', 10)
    compressed_pub = node.create_publisher(CompressedImage, 'test/image/compressed', 10)
    detections_msg = detections_to_msg(expected_detections())
    image_msg = numpy_to_image(expected_image(), 'rgb8', stamp_ns=STAMP_NS,
                               frame_id='stereo_left_optical', step=IMAGE_STEP)
    vision_msg = vision_detections_msg()
    compressed_msg = compressed_image_msg()

    def publish():
        detections_pub.publish(detections_msg)
        image_pub.publish(image_msg)
        vision_pub.publish(vision_msg)
        compressed_pub.publish(compressed_msg)

    node.create_timer(0.1, publish)
    deadline = time.monotonic() + float(sys.argv[1] if len(sys.argv) > 1 else 60.0)
    try:
        while rclpy.ok() and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
