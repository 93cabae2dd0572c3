"""sensor_msgs/Image semantics: every supported encoding, padded rows, both byte orders."""

import numpy as np
import pytest

from persistence_ros.image_codec import (decode_image, encode_image, ENCODINGS,
                                         ImageEncodingError, to_rgb8)


def sample(encoding: str, height: int = 5, width: int = 7) -> np.ndarray:
    dtype, channels = ENCODINGS[encoding]
    rng = np.random.default_rng(3)
    shape = (height, width, channels) if channels > 1 else (height, width)
    if np.dtype(dtype).kind == 'f':
        return rng.normal(size=shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
@pytest.mark.parametrize('padding', [0, 3, 64])
@pytest.mark.parametrize('bigendian', [False, True])
def test_round_trip(encoding, padding, bigendian):
    array = sample(encoding)
    row_bytes = array.shape[1] * array.itemsize * (array.shape[2] if array.ndim == 3 else 1)
    fields = encode_image(array, encoding, step=row_bytes + padding, is_bigendian=bigendian)
    assert fields.step == row_bytes + padding
    assert len(fields.data) == fields.step * fields.height
    decoded = decode_image(fields.height, fields.width, fields.encoding, fields.is_bigendian,
                           fields.step, fields.data)
    assert decoded.dtype == array.dtype and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, array)


def test_padding_bytes_are_ignored_and_layout_is_row_major():
    # Built by hand, independently of encode_image: 2x2 mono16 big-endian, 2 bytes of padding.
    data = bytes([0x01, 0x02, 0x03, 0x04, 0xEE, 0xEE,
                  0x05, 0x06, 0x07, 0x08, 0xEE, 0xEE])
    decoded = decode_image(2, 2, 'mono16', True, 6, data)
    np.testing.assert_array_equal(decoded, [[0x0102, 0x0304], [0x0506, 0x0708]])
    little = decode_image(2, 2, '16UC1', False, 6, data)
    np.testing.assert_array_equal(little, [[0x0201, 0x0403], [0x0605, 0x0807]])


def test_rgb_and_bgr_channel_order():
    data = bytes([10, 20, 30, 40, 50, 60])  # one row of two pixels
    rgb = decode_image(1, 2, 'rgb8', False, 6, data)
    assert rgb[0, 0].tolist() == [10, 20, 30]
    bgr = decode_image(1, 2, 'bgr8', False, 6, data)
    assert to_rgb8(bgr, 'bgr8')[0, 1].tolist() == [60, 50, 40]


def test_float_image_keeps_values():
    array = np.array([[0.5, -1.25], [np.inf, 3.0e-8]], dtype=np.float32)
    fields = encode_image(array, '32FC1', is_bigendian=True)
    np.testing.assert_array_equal(decode_image(2, 2, '32FC1', True, fields.step, fields.data),
                                  array)


@pytest.mark.parametrize('encoding', ['yuv422', 'rgba8', '8UC3', 'bayer_rggb8'])
def test_unsupported_encoding_is_a_clear_error(encoding):
    with pytest.raises(ImageEncodingError, match='unsupported image encoding'):
        decode_image(1, 1, encoding, False, 4, bytes(4))


def test_short_data_and_small_step_are_rejected():
    with pytest.raises(ImageEncodingError, match='expected'):
        decode_image(2, 2, 'rgb8', False, 6, bytes(11))
    with pytest.raises(ImageEncodingError, match='smaller than'):
        decode_image(2, 2, 'rgb8', False, 5, bytes(12))
    with pytest.raises(ImageEncodingError, match='shape'):
        encode_image(np.zeros((2, 2), np.uint8), 'rgb8')
    with pytest.raises(ImageEncodingError, match='dtype'):
        encode_image(np.zeros((2, 2), np.float64), 'mono8')
