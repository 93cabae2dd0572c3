"""
sensor_msgs/Image and sensor_msgs/CompressedImage field semantics <-> numpy, without ROS types.

cv_bridge is not on PyPI (and the PyPI ``cv-bridge`` is ROS 1 code broken with numpy 2), so the
few encodings this package needs are handled here: rows may be padded (``step`` >= width *
pixel size) and multi-byte data may be big-endian.  Compressed images (JPEG, PNG; the
``format`` strings image_transport's ``compressed`` plugin writes, e.g. ``"jpeg"`` or
``"rgb8; jpeg compressed bgr8"``) are decoded with ``cv2.imdecode`` (:func:`decode_compressed`).
"""

from dataclasses import dataclass
import sys

import numpy as np

# encoding -> (numpy dtype, channels)
ENCODINGS = {
    'rgb8': (np.uint8, 3),
    'bgr8': (np.uint8, 3),
    'mono8': (np.uint8, 1),
    'mono16': (np.uint16, 1),
    '16UC1': (np.uint16, 1),
    '32FC1': (np.float32, 1),
}


# Why an image message is refused (``ImageEncodingError.reason``; counted as
# ``rejected.<reason>`` by the node): an encoding or compressed format this package cannot
# read or turn into RGB; a layout that contradicts itself (negative size, ``step`` shorter
# than a row, ``data`` not exactly ``step * height`` bytes as sensor_msgs/Image defines it);
# compressed data that does not decode (``CorruptImageError``).
IMAGE_REJECTIONS = ('unsupported_image', 'bad_image_layout', 'corrupt_image')


class ImageEncodingError(ValueError):
    """An image whose encoding or layout cannot be decoded; the message says why."""

    def __init__(self, message: str, reason: str = 'unsupported_image'):
        super().__init__(message)
        self.reason = reason


class CorruptImageError(ImageEncodingError):
    """Compressed image data that does not decode (damaged, truncated, not an image)."""

    def __init__(self, message: str):
        super().__init__(message, 'corrupt_image')


@dataclass
class ImageFields:
    """The data-carrying fields of a sensor_msgs/Image."""

    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int
    data: bytes


def _layout(encoding: str):
    try:
        dtype, channels = ENCODINGS[encoding]
    except KeyError:
        raise ImageEncodingError(
            f'unsupported image encoding {encoding!r}; supported: {", ".join(ENCODINGS)}'
        ) from None
    return np.dtype(dtype), channels


def decode_image(height: int, width: int, encoding: str, is_bigendian: bool, step: int,
                 data) -> np.ndarray:
    """Return the image as a (H, W) or (H, W, C) array in native byte order (a copy)."""
    dtype, channels = _layout(encoding)
    height, width, step = int(height), int(width), int(step)
    row_bytes = width * channels * dtype.itemsize
    if height < 0 or width < 0:
        raise ImageEncodingError(f'negative image size {width}x{height}', 'bad_image_layout')
    if step < row_bytes:
        raise ImageEncodingError(
            f'step {step} is smaller than width * pixel size = {row_bytes} bytes',
            'bad_image_layout')
    if not isinstance(data, (bytes, bytearray, memoryview, np.ndarray)):
        data = bytes(data)  # array.array or list from some message implementations
    buffer = np.frombuffer(data, dtype=np.uint8)
    # exactly step * height (sensor_msgs/Image): more is as malformed as less
    if buffer.size != step * height:
        raise ImageEncodingError(
            f'data has {buffer.size} bytes, {step * height} expected (step * height)',
            'bad_image_layout')
    rows = buffer.reshape(height, step)[:, :row_bytes]
    order = '>' if is_bigendian else '<'
    pixels = np.ascontiguousarray(rows).view(dtype.newbyteorder(order))
    pixels = pixels.reshape(height, width, channels) if channels > 1 \
        else pixels.reshape(height, width)
    return pixels.astype(dtype.newbyteorder('='), copy=True)


def encode_image(array: np.ndarray, encoding: str, step: int = 0,
                 is_bigendian: bool = sys.byteorder == 'big') -> ImageFields:
    """Return Image fields for an array; ``step`` > row size pads every row with zeros."""
    dtype, channels = _layout(encoding)
    array = np.asarray(array)
    expected_ndim = 3 if channels > 1 else 2
    if array.ndim == 3 and channels == 1 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        raise ImageEncodingError(
            f'{encoding} needs an array of shape (H, W{", %d" % channels if channels > 1 else ""})'
            f', got {array.shape}')
    if array.dtype != dtype:
        raise ImageEncodingError(f'{encoding} needs dtype {dtype}, got {array.dtype}')
    height, width = array.shape[:2]
    row_bytes = width * channels * dtype.itemsize
    step = row_bytes if step == 0 else int(step)
    if step < row_bytes:
        raise ImageEncodingError(f'step {step} is smaller than the row size {row_bytes}')
    ordered = array.astype(dtype.newbyteorder('>' if is_bigendian else '<'), copy=False)
    rows = np.zeros((height, step), dtype=np.uint8)
    rows[:, :row_bytes] = np.ascontiguousarray(ordered).view(np.uint8).reshape(height, row_bytes)
    return ImageFields(height=height, width=width, encoding=encoding,
                       is_bigendian=bool(is_bigendian), step=step, data=rows.tobytes())


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a decoded image to RGB uint8 (crops for the model are RGB)."""
    if encoding == 'rgb8':
        return array
    if encoding == 'bgr8':
        return array[:, :, ::-1].copy()
    if encoding == 'mono8':
        return np.repeat(array[:, :, None], 3, axis=2)
    if encoding in ('mono16', '16UC1'):
        return np.repeat((array >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    raise ImageEncodingError(f'cannot convert {encoding!r} to rgb8 for the model')


# Compressions of a CompressedImage ``format`` this package decodes, and their magic bytes.
COMPRESSIONS = {'jpeg': b'\xff\xd8\xff', 'png': b'\x89PNG\r\n\x1a\n'}
_JPEG_END = b'\xff\xd9'


def compression_of(image_format: str) -> str:
    """
    Return 'jpeg' or 'png' for a CompressedImage ``format``; raise ImageEncodingError if not.

    Accepts the plain names (``jpeg``, ``jpg``, ``png``) and image_transport's
    ``"<encoding>; <jpeg|png> compressed <encoding>"``; ``compressedDepth`` (a depth image
    with its own header) and other formats are not supported.
    """
    text = str(image_format).strip().lower()
    if 'compresseddepth' in text.replace(' ', ''):
        raise ImageEncodingError(f'unsupported compressed image format {image_format!r} '
                                 '(compressedDepth); supported: jpeg, png')
    tokens = text.replace(';', ' ').split()
    for token in tokens:
        if token in ('jpeg', 'jpg'):
            return 'jpeg'
        if token == 'png':
            return 'png'
    raise ImageEncodingError(f'unsupported compressed image format {image_format!r}; '
                             'supported: jpeg, png')


def decode_compressed(image_format: str, data) -> np.ndarray:
    """
    Return a CompressedImage as an RGB uint8 array (H, W, 3), decoded with ``cv2.imdecode``.

    Colour data decodes as OpenCV's BGR(A) and is returned as RGB; grey images are repeated
    into three channels (16-bit ones keep their high byte, as ``to_rgb8`` does for mono16).
    Raises ``ImageEncodingError`` for a format other than JPEG or PNG and
    ``CorruptImageError`` for data that is not a complete image of the named format (wrong
    magic bytes, a JPEG without its end marker, anything ``cv2.imdecode`` refuses).
    """
    import cv2
    compression = compression_of(image_format)
    if not isinstance(data, (bytes, bytearray, memoryview, np.ndarray)):
        data = bytes(data)
    buffer = np.frombuffer(data, dtype=np.uint8)
    if not buffer[:8].tobytes().startswith(COMPRESSIONS[compression]):
        raise CorruptImageError(f'{compression} image data does not start with the '
                                f'{compression} signature ({buffer.size} bytes)')
    if compression == 'jpeg' and not buffer[-64:].tobytes().rstrip(b'\x00').endswith(_JPEG_END):
        raise CorruptImageError(f'truncated jpeg image: no end-of-image marker '
                                f'({buffer.size} bytes)')
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise CorruptImageError(f'{compression} image data does not decode '
                                f'({buffer.size} bytes)')
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8 or not (image.ndim == 2 or image.shape[2] in (1, 3, 4)):
        raise ImageEncodingError(f'unsupported decoded image: shape {image.shape}, '
                                 f'{image.dtype}')
    if image.ndim == 2 or image.shape[2] == 1:
        return np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(image, code)
