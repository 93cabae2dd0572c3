"""
rosbag2 (MCAP) reading and writing through ``rosbags``, with this package's messages registered.

The package's own message definitions (``msg/*.msg``) are looked up, in this order:

1. ``<parent of the persistence_ros package>/msg`` (the source tree: ``<repo>/msg``);
2. ``share/persistence_ros/msg`` of the ``persistence_ros`` ament package, found through
   ``ament_index_python`` (no rclpy import) when that module is importable;
3. ``<sys.prefix>/share/persistence_ros/msg`` (an install into the virtualenv prefix).

If none exists, :func:`msg_dir` raises ``FileNotFoundError`` naming the places it looked.
No copy of the definitions is shipped: the ``.msg`` files stay the single source of truth.
"""

import contextlib
from functools import lru_cache
from pathlib import Path
import sys
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer
from rosbags.typesys import get_types_from_msg, Stores
from rosbags.typesys import get_typestore as _rosbags_typestore
from rosbags.typesys.store import Typestore

from persistence_ros.image_codec import decode_image, to_rgb8

PACKAGE = 'persistence_ros'
TYPESTORE_DISTRO = Stores.ROS2_KILTED

IMAGE = 'sensor_msgs/msg/Image'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
DETECTION_2D = 'persistence_ros/msg/Detection2D'
DETECTION_2D_ARRAY = 'persistence_ros/msg/Detection2DArray'


class BagReadError(ValueError):
    """A bag that cannot be read (damaged, not a rosbag2, or a message type unknown here)."""


def msg_dir() -> Path:
    """Return the directory holding this package's ``*.msg`` files (see the module docstring)."""
    candidates: List[Path] = [Path(__file__).resolve().parent.parent / 'msg']
    try:  # ament_index_python is plain Python (no rclpy); absent outside a ROS install.
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory(PACKAGE)) / 'msg')
    except Exception:  # noqa: B902 - not installed / package not in the index
        pass
    candidates.append(Path(sys.prefix) / 'share' / PACKAGE / 'msg')
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob('*.msg')):
            return candidate
    raise FileNotFoundError(
        'persistence_ros message definitions (*.msg) not found; looked in: '
        + ', '.join(str(c) for c in candidates))


@lru_cache(maxsize=1)
def get_typestore() -> Typestore:
    """Return a ROS 2 Kilted typestore with ``persistence_ros/msg/*`` registered."""
    store = _rosbags_typestore(TYPESTORE_DISTRO)
    types = {}
    for path in sorted(msg_dir().glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(), f'{PACKAGE}/msg/{path.stem}'))
    store.register(types)
    return store


def stamp(stamp_ns: int):
    """Return a ``builtin_interfaces/msg/Time`` for integer nanoseconds."""
    time_cls = get_typestore().types['builtin_interfaces/msg/Time']
    return time_cls(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def header(stamp_ns: int, frame_id: str):
    """Return a ``std_msgs/msg/Header``."""
    return get_typestore().types['std_msgs/msg/Header'](stamp=stamp(stamp_ns), frame_id=frame_id)


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str):
    """Return a ``sensor_msgs/msg/Image`` (rgb8) for an ``[H, W, 3]`` uint8 array."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    return get_typestore().types[IMAGE](
        header=header(stamp_ns, frame_id), height=height, width=width, encoding='rgb8',
        is_bigendian=0, step=3 * width, data=rgb.reshape(-1))


def image_to_rgb(msg) -> np.ndarray:
    """
    Return an ``[H, W, 3]`` uint8 RGB array of a ``sensor_msgs/msg/Image``.

    Decoded as the node decodes images (``image_codec``: rgb8, bgr8, mono8, mono16, 16UC1;
    any ``step``, either byte order); another encoding raises ``ImageEncodingError``.
    """
    array = decode_image(msg.height, msg.width, msg.encoding, bool(msg.is_bigendian), msg.step,
                         msg.data)
    return to_rgb8(array, msg.encoding)


def camera_info_msg(calibration, stamp_ns: int, frame_id: str):
    """Return a ``sensor_msgs/msg/CameraInfo`` from a ``CameraCalibration``."""
    types = get_typestore().types
    roi = types['sensor_msgs/msg/RegionOfInterest'](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return types[CAMERA_INFO](
        header=header(stamp_ns, frame_id), height=int(calibration.height),
        width=int(calibration.width), distortion_model=calibration.distortion_model,
        d=np.asarray(calibration.D, dtype=np.float64).reshape(-1),
        k=np.asarray(calibration.K, dtype=np.float64).reshape(9),
        r=np.asarray(calibration.R, dtype=np.float64).reshape(9),
        p=np.asarray(calibration.P, dtype=np.float64).reshape(12),
        binning_x=0, binning_y=0, roi=roi)


def detection_array_msg(detections: Iterable[dict], stamp_ns: int, frame_id: str):
    """
    Return a ``persistence_ros/msg/Detection2DArray``.

    Each detection is a dict with ``id``, ``box`` ([cx, cy, w, h] pixels), ``score`` and
    optionally ``class_id``.
    """
    types = get_typestore().types
    items = [types[DETECTION_2D](
        id=str(d['id']), center_x=float(d['box'][0]), center_y=float(d['box'][1]),
        width=float(d['box'][2]), height=float(d['box'][3]), score=float(d['score']),
        class_id=str(d.get('class_id', ''))) for d in detections]
    return types[DETECTION_2D_ARRAY](header=header(stamp_ns, frame_id), detections=items)


def as_recorded(msg, msgtype: str):
    """
    Return ``msg`` as a bag would give it back: serialized to CDR and deserialized.

    Fields lose what their message type cannot hold (float32 boxes and scores); lets an
    in-memory consumer see exactly what a reader of the written bag sees.
    """
    store = get_typestore()
    return store.deserialize_cdr(store.serialize_cdr(msg, msgtype), msgtype)


class BagWriter:
    """
    Write typed messages to a new rosbag2 directory (MCAP storage, metadata version 9).

    Use as a context manager; topics are added on first write of a topic with its type.
    """

    def __init__(self, bag_dir):
        self.path = Path(bag_dir)
        self._store = get_typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._connections: Dict[str, object] = {}

    def __enter__(self) -> 'BagWriter':
        self._writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Register ``topic`` with ``msgtype`` (e.g. ``sensor_msgs/msg/Image``)."""
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self._store)

    def write(self, topic: str, stamp_ns: int, msg) -> None:
        """Serialize ``msg`` to CDR and write it on ``topic`` at ``stamp_ns``."""
        self.add_topic(topic, msg.__msgtype__)
        data = self._store.serialize_cdr(msg, msg.__msgtype__)
        self._writer.write(self._connections[topic], int(stamp_ns), data)


def read_messages(bag_dir, topics: Optional[Iterable[str]] = None
                  ) -> Iterator[Tuple[str, int, object]]:
    """
    Yield ``(topic, stamp_ns, msg)`` of a rosbag2 in log-time order, messages deserialized.

    ``topics`` restricts the topics read (all when None). Works for MCAP and sqlite3 bags.
    A damaged bag, or a topic read whose type the typestore does not know, raises
    ``BagReadError`` (a ``ValueError``) naming the bag.
    """
    store = get_typestore()
    wanted = None if topics is None else set(topics)
    with _reader(bag_dir) as reader:
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        unknown = sorted({f'{c.topic} ({c.msgtype})' for c in connections
                          if c.msgtype not in store.types})
        if unknown:
            raise BagReadError(f'{bag_dir}: message type unknown here on {", ".join(unknown)}')
        if not connections:
            return
        for connection, timestamp, raw in reader.messages(connections=connections):
            yield connection.topic, int(timestamp), store.deserialize_cdr(raw, connection.msgtype)


def bag_topics(bag_dir) -> Dict[str, str]:
    """Return ``{topic: msgtype}`` of a rosbag2 (``BagReadError`` if it cannot be read)."""
    with _reader(bag_dir) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


@contextlib.contextmanager
def _reader(bag_dir) -> Iterator[Reader]:
    """Open a rosbag2 for reading; rosbags' ReaderError (also while reading) as BagReadError."""
    try:
        with Reader(Path(bag_dir)) as reader:
            yield reader
    except ReaderError as error:
        raise BagReadError(f'{bag_dir}: cannot read the bag: {error}') from None
