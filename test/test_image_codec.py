"""
sensor_msgs/Image and CompressedImage semantics.

Image: every supported encoding, padded rows, both byte orders.  CompressedImage: JPEG and
PNG decoded, corrupt data and other formats refused.
"""

import numpy as np
import pytest

from persistence_ros.image_codec import (compression_of, CorruptImageError, decode_compressed,
                                         decode_image, encode_image, ENCODINGS,
                                         IMAGE_REJECTIONS, ImageEncodingError, to_rgb8)


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


def _smooth_rgb(height: int = 48, width: int = 64) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([4 * rows, 3 * cols, 2 * (rows + cols)], axis=2).astype(np.uint8)


def _encoded(image: np.ndarray, extension: str, *params) -> bytes:
    import cv2
    ok, data = cv2.imencode(extension, image, list(params))
    assert ok
    return data.tobytes()


@pytest.mark.parametrize('image_format', ['png', 'rgb8; png compressed bgr8', 'PNG'])
def test_compressed_png_decodes_exactly_to_rgb(image_format):
    rgb = _smooth_rgb()
    data = _encoded(rgb[:, :, ::-1].copy(), '.png')   # OpenCV encodes BGR
    np.testing.assert_array_equal(decode_compressed(image_format, data), rgb)
    assert compression_of(image_format) == 'png'


@pytest.mark.parametrize('image_format', ['jpeg', 'jpg', 'bgr8; jpeg compressed bgr8'])
def test_compressed_jpeg_decodes_within_jpeg_loss(image_format):
    import cv2
    rgb = _smooth_rgb()
    data = _encoded(rgb[:, :, ::-1].copy(), '.jpg', cv2.IMWRITE_JPEG_QUALITY, 95)
    decoded = decode_compressed(image_format, np.frombuffer(data, np.uint8))
    assert decoded.shape == rgb.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - rgb).mean() < 2.0


def test_grey_and_16_bit_png_become_rgb():
    grey = _smooth_rgb()[:, :, 0]
    np.testing.assert_array_equal(decode_compressed('mono8; png compressed mono8',
                                                    _encoded(grey, '.png')),
                                  np.repeat(grey[:, :, None], 3, axis=2))
    deep = grey.astype(np.uint16) * 257
    np.testing.assert_array_equal(decode_compressed('png', _encoded(deep, '.png')),
                                  np.repeat(grey[:, :, None], 3, axis=2))


def test_corrupt_compressed_data_is_a_corrupt_image_error():
    import cv2
    jpeg = _encoded(_smooth_rgb(), '.jpg', cv2.IMWRITE_JPEG_QUALITY, 90)
    png = _encoded(_smooth_rgb(), '.png')
    cases = [('jpeg', jpeg[: len(jpeg) // 2]),                 # truncated
             ('jpeg', bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8))),
             ('jpeg', b''),
             ('png', png[:-40]),                                # truncated
             ('png', jpeg),                                     # not what it says it is
             ('jpeg', jpeg[:200] + bytes(len(jpeg) - 202) + b'\xff\xd9')]  # garbled body
    for image_format, data in cases:
        with pytest.raises(CorruptImageError):
            decode_compressed(image_format, data)


@pytest.mark.parametrize('image_format', ['tiff', '16UC1; compressedDepth png', 'webp', ''])
def test_unsupported_compressed_format_is_named(image_format):
    with pytest.raises(ImageEncodingError, match='supported: jpeg, png') as info:
        decode_compressed(image_format, _encoded(_smooth_rgb(), '.png'))
    assert not isinstance(info.value, CorruptImageError)
    assert info.value.reason == 'unsupported_image'
    assert CorruptImageError('x').reason == 'corrupt_image'
    assert {'unsupported_image', 'corrupt_image'} <= set(IMAGE_REJECTIONS)
