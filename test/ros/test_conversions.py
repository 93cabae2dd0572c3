"""Message conversions with rclpy's real message classes."""

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from persistence_ros.calibration import (calibration_from_camera_info, CalibrationError,
                                         CameraCalibration)
from persistence_ros.detections import (Detection, detection_frame_from_msg, DetectionFrame,
                                        stamp_to_ns)
from persistence_ros.image_codec import ENCODINGS
from persistence_ros.ros.conversions import (calibration_to_camera_info, detections_to_msg,
                                             image_to_numpy, ns_to_stamp, numpy_to_image)


@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
def test_image_round_trip_with_padded_rows(encoding):
    dtype, channels = ENCODINGS[encoding]
    shape = (4, 6, channels) if channels > 1 else (4, 6)
    array = (np.arange(np.prod(shape)) * 37 % 251).astype(dtype).reshape(shape)
    row_bytes = 6 * channels * np.dtype(dtype).itemsize
    msg = numpy_to_image(array, encoding, stamp_ns=1_500_000_001, frame_id='cam',
                         step=row_bytes + 8)
    assert msg.step == row_bytes + 8 and len(msg.data) == msg.step * msg.height
    assert msg.header.stamp.sec == 1 and msg.header.stamp.nanosec == 500_000_001
    np.testing.assert_array_equal(image_to_numpy(msg), array)


def test_big_endian_image_message_decodes():
    msg = numpy_to_image(np.zeros((1, 2), np.uint16), 'mono16')
    msg.is_bigendian = 1
    msg.data = bytes([0x12, 0x34, 0xAB, 0xCD])
    np.testing.assert_array_equal(image_to_numpy(msg), [[0x1234, 0xABCD]])


def test_stamp_conversion_is_exact():
    for stamp_ns in (0, 1, 999_999_999, 1_700_000_000_123_456_789):
        assert stamp_to_ns(ns_to_stamp(stamp_ns)) == stamp_ns


def test_camera_info_round_trip():
    calibration = CameraCalibration(
        640, 480, [[500.0, 0, 319.5], [0, 501.0, 239.5], [0, 0, 1]],
        [-0.2, 0.05, 0.001, 0.0, 0.0], np.eye(3),
        [[480.0, 0, 320, -57.6], [0, 480.0, 240, 0], [0, 0, 1, 0]])
    msg = calibration_to_camera_info(calibration, stamp_ns=5, frame_id='stereo_right_optical')
    assert list(msg.p)[3] == pytest.approx(-57.6)
    back = calibration_from_camera_info(msg)
    assert back.frame_id == 'stereo_right_optical'
    for name in ('K', 'D', 'R', 'P'):
        np.testing.assert_allclose(getattr(back, name), getattr(calibration, name))


def test_uncalibrated_and_sizeless_camera_info_are_rejected():
    msg = CameraInfo(width=640, height=480)
    with pytest.raises(CalibrationError, match='uncalibrated'):
        calibration_from_camera_info(msg)
    msg.k = [500.0, 0, 320, 0, 500, 240, 0, 0, 1]
    msg.width = 0
    with pytest.raises(CalibrationError, match='image size'):
        calibration_from_camera_info(msg)
    # binning or a region of interest: the images are not the size K describes
    msg.width, msg.r = 640, [1.0, 0, 0, 0, 1, 0, 0, 0, 1]
    msg.p = [500.0, 0, 320, 0, 0, 500, 240, 0, 0, 0, 1, 0]
    assert calibration_from_camera_info(msg).width == 640
    msg.roi.width, msg.roi.height = 640, 480   # the whole image: fine
    assert calibration_from_camera_info(msg).height == 480
    msg.binning_x = 2
    with pytest.raises(CalibrationError, match='binning'):
        calibration_from_camera_info(msg)
    msg.binning_x, msg.roi.width = 1, 320
    with pytest.raises(CalibrationError, match='region of interest'):
        calibration_from_camera_info(msg)


def test_detections_round_trip():
    frame = DetectionFrame(stamp_ns=42_000_000_007, frame_id='stereo_left_optical', detections=[
        Detection(10.5, 20.25, 4.0, 8.0, 0.75, 'sphere', 'L000001-00'),
        Detection(300.0, 200.0, 30.0, 31.0, 0.125, '', ''),
    ])
    back = detection_frame_from_msg(detections_to_msg(frame))
    assert back == frame
