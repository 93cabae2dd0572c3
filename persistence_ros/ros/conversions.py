"""
Conversions between ROS messages and the core's types.

Works with rclpy message classes and with the dataclasses ``rosbags`` deserializes into: the
functions read fields by name and only construct rclpy messages in the ``*_to_msg`` direction.
"""

from typing import Iterable

from builtin_interfaces.msg import Time
import numpy as np
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from persistence_ros.calibration import CalibrationError, CameraCalibration
from persistence_ros.detections import Detection, DetectionFrame
from persistence_ros.image_codec import decode_image, encode_image
from persistence_ros.msg import Detection2D, Detection2DArray

NANOSECONDS = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """Return a builtin_interfaces/Time as integer nanoseconds."""
    return int(stamp.sec) * NANOSECONDS + int(stamp.nanosec)


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


def camera_info_to_calibration(msg) -> CameraCalibration:
    """
    Build a CameraCalibration from a sensor_msgs/CameraInfo.

    Raises CalibrationError for an uncalibrated info (K[0] == 0) or inconsistent sizes.
    """
    k = np.asarray(msg.k, dtype=np.float64)
    if k.size != 9 or k[0] == 0.0:
        raise CalibrationError(
            f'camera_info of frame {msg.header.frame_id!r} is uncalibrated (K[0] == 0): '
            'calibrate the camera or set the calibration_file parameter')
    if msg.width == 0 or msg.height == 0:
        raise CalibrationError(
            f'camera_info of frame {msg.header.frame_id!r} has no image size '
            f'({msg.width}x{msg.height})')
    return CameraCalibration(width=msg.width, height=msg.height, K=k, D=list(msg.d),
                             R=list(msg.r), P=list(msg.p),
                             distortion_model=msg.distortion_model or 'plumb_bob',
                             frame_id=msg.header.frame_id)


def calibration_to_camera_info(calibration: CameraCalibration, stamp_ns: int = 0,
                               frame_id: str = '') -> CameraInfo:
    """Return a sensor_msgs/CameraInfo carrying the calibration."""
    return CameraInfo(
        header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id or calibration.frame_id),
        width=calibration.width, height=calibration.height,
        distortion_model=calibration.distortion_model,
        d=[float(v) for v in calibration.D], k=calibration.K.reshape(-1).tolist(),
        r=calibration.R.reshape(-1).tolist(), p=calibration.P.reshape(-1).tolist())


def detections_from_msg(msg) -> DetectionFrame:
    """Convert a Detection2DArray to a DetectionFrame (invalid boxes are kept; see is_valid)."""
    return DetectionFrame(
        stamp_ns=stamp_to_ns(msg.header.stamp), frame_id=msg.header.frame_id,
        detections=[Detection(center_x=float(d.center_x), center_y=float(d.center_y),
                              width=float(d.width), height=float(d.height),
                              score=float(d.score), class_id=d.class_id, id=d.id)
                    for d in msg.detections])


def detections_to_msg(frame: DetectionFrame) -> Detection2DArray:
    """Convert a DetectionFrame to a Detection2DArray."""
    return Detection2DArray(
        header=Header(stamp=ns_to_stamp(frame.stamp_ns), frame_id=frame.frame_id),
        detections=_detection_msgs(frame.detections))


def _detection_msgs(detections: Iterable[Detection]):
    return [Detection2D(id=d.id, center_x=float(d.center_x), center_y=float(d.center_y),
                        width=float(d.width), height=float(d.height), score=float(d.score),
                        class_id=d.class_id) for d in detections]
