"""
Conversions from the core's types to rclpy messages.

The other direction (``calibration_from_camera_info``, ``detection_frame_from_msg``,
``stamp_to_ns``) lives in the core (``calibration``, ``detections``): it reads fields by name,
so it serves rclpy messages and the dataclasses ``rosbags`` deserializes into alike.
"""

import importlib
from typing import Iterable

from builtin_interfaces.msg import Time
import numpy as np
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from persistence_ros.calibration import CameraCalibration
from persistence_ros.detections import Detection, DetectionFrame, NANOSECONDS
from persistence_ros.image_codec import decode_image, encode_image
from persistence_ros.msg import Detection2D, Detection2DArray


def message_class(msgtype: str):
    """Return the rclpy message class of ``pkg/msg/Name``."""
    package, _, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.msg'), name)


def ns_to_stamp(stamp_ns: int) -> Time:
    """Return integer nanoseconds as a builtin_interfaces/Time."""
    sec, nanosec = divmod(int(stamp_ns), NANOSECONDS)
    return Time(sec=sec, nanosec=nanosec)


def image_to_numpy(msg) -> np.ndarray:
    """Decode a sensor_msgs/Image (rgb8, bgr8, mono8, mono16, 16UC1, 32FC1; any step)."""
    return decode_image(msg.height, msg.width, msg.encoding, bool(msg.is_bigendian), msg.step,
                        msg.data)


def numpy_to_image(array: np.ndarray, encoding: str, stamp_ns: int = 0, frame_id: str = '',
                   step: int = 0) -> Image:
    """Encode an array as a sensor_msgs/Image (``step`` > row size pads the rows)."""
    fields = encode_image(array, encoding, step=step)
    return Image(header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id),
                 height=fields.height, width=fields.width, encoding=fields.encoding,
                 is_bigendian=int(fields.is_bigendian), step=fields.step, data=fields.data)


def calibration_to_camera_info(calibration: CameraCalibration, stamp_ns: int = 0,
                               frame_id: str = '') -> CameraInfo:
    """Return a sensor_msgs/CameraInfo carrying the calibration."""
    return CameraInfo(
        header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id or calibration.frame_id),
        width=calibration.width, height=calibration.height,
        distortion_model=calibration.distortion_model,
        d=[float(v) for v in calibration.D], k=calibration.K.reshape(-1).tolist(),
        r=calibration.R.reshape(-1).tolist(), p=calibration.P.reshape(-1).tolist())


def detections_to_msg(frame: DetectionFrame) -> Detection2DArray:
    """Convert a DetectionFrame to a Detection2DArray."""
    return Detection2DArray(
        header=Header(stamp=ns_to_stamp(frame.stamp_ns), frame_id=frame.frame_id),
        detections=_detection_msgs(frame.detections))


def _detection_msgs(detections: Iterable[Detection]):
    return [Detection2D(id=d.id, center_x=float(d.center_x), center_y=float(d.center_y),
                        width=float(d.width), height=float(d.height), score=float(d.score),
                        class_id=d.class_id) for d in detections]
