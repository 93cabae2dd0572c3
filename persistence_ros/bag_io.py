"""
rosbag2 (MCAP) reading and writing through ``rosbags``, with this package's messages registered.

The package's own message definitions (``msg/*.msg``) are looked up, in this order:

1. ``<parent of the persistence_ros package>/msg`` (the source tree: ``<repo>/msg``);
2. ``share/persistence_ros/msg`` of the ``persistence_ros`` ament package, found through
   ``ament_index_python`` (no rclpy import) when that module is importable;
3. ``<sys.prefix>/share/persistence_ros/msg`` (an install into the virtualenv prefix).

If none exists, :func:`msg_dir` raises ``FileNotFoundError`` naming the places it looked.
No copy of the definitions is shipped: the ``.msg`` files stay the single source of truth.

``vision_msgs`` (not in rosbags' typestores) is registered too, from the installed
``share/vision_msgs/msg`` (ament index, then ``<sys.prefix>/share``) or, in the source tree,
the stand-in's definitions (``stand_in/vision_msgs/msg``: the same fields).
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

from persistence_ros.detections import DETECTION_TYPES, stamp_to_ns
from persistence_ros.image_codec import decode_compressed, decode_image, to_rgb8

PACKAGE = 'persistence_ros'
TYPESTORE_DISTRO = Stores.ROS2_KILTED

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
DETECTION_2D = 'persistence_ros/msg/Detection2D'
DETECTION_2D_ARRAY = DETECTION_TYPES['persistence_ros']
VISION_DETECTION_2D_ARRAY = DETECTION_TYPES['vision_msgs']


class BagReadError(ValueError):
    """A bag that cannot be read (damaged, not a rosbag2, or a message type unknown here)."""


def _share_msg_dir(package: str) -> List[Path]:
    """Return the installed ``share/<package>/msg`` candidates (ament index, sys.prefix)."""
    candidates: List[Path] = []
    try:  # ament_index_python is plain Python (no rclpy); absent outside a ROS install.
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory(package)) / 'msg')
    except Exception:  # noqa: B902 - not installed / package not in the index
        pass
    candidates.append(Path(sys.prefix) / 'share' / package / 'msg')
    return candidates


def _first_msg_dir(candidates: Iterable[Path]) -> Optional[Path]:
    return next((c for c in candidates if c.is_dir() and any(c.glob('*.msg'))), None)


def msg_dir() -> Path:
    """Return the directory holding this package's ``*.msg`` files (see the module docstring)."""
    candidates = [Path(__file__).resolve().parent.parent / 'msg'] + _share_msg_dir(PACKAGE)
    found = _first_msg_dir(candidates)
    if found is None:
        raise FileNotFoundError(
            'persistence_ros message definitions (*.msg) not found; looked in: '
            + ', '.join(str(c) for c in candidates))
    return found


def vision_msgs_dir() -> Optional[Path]:
    """Return the ``vision_msgs`` definitions to register (module docstring), None if none."""
    stand_in = Path(__file__).resolve().parent.parent / 'stand_in' / 'vision_msgs' / 'msg'
    return _first_msg_dir(_share_msg_dir('vision_msgs') + [stand_in])


def _register(types: dict, folder: Path, package: str) -> None:
    for path in sorted(folder.glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(), f'{package}/msg/{path.stem}'))


@lru_cache(maxsize=1)
def get_typestore() -> Typestore:
    """Return a ROS 2 Kilted typestore with ``persistence_ros/msg/*`` and vision_msgs."""
    store = _rosbags_typestore(TYPESTORE_DISTRO)
    types: dict = {}
    _register(types, msg_dir(), PACKAGE)
    vision = vision_msgs_dir()
    if vision is not None:
        _register(types, vision, 'vision_msgs')
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
    Return an ``[H, W, 3]`` uint8 RGB array of a ``sensor_msgs/msg/Image`` or CompressedImage.

    Decoded as the node decodes images (``image_codec``: rgb8, bgr8, mono8, mono16, 16UC1;
    any ``step``, either byte order; JPEG and PNG compressed images with ``cv2.imdecode``); an
    encoding it cannot read raises ``ImageEncodingError`` (``CorruptImageError`` for damaged
    compressed data).
    """
    if hasattr(msg, 'format'):  # sensor_msgs/CompressedImage
        return decode_compressed(msg.format, msg.data)
    array = decode_image(msg.height, msg.width, msg.encoding, bool(msg.is_bigendian), msg.step,
                         msg.data)
    return to_rgb8(array, msg.encoding)


def compressed_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str,
                         compression: str = 'jpeg', quality: int = 95):
    """
    Return a ``sensor_msgs/msg/CompressedImage`` of an ``[H, W, 3]`` uint8 RGB array.

    ``compression`` 'jpeg' (``quality`` 0-100) or 'png'; the ``format`` is written as
    image_transport's compressed plugin writes it (``"rgb8; jpeg compressed bgr8"``).
    """
    import cv2
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if compression == 'jpeg' else []
    ok, data = cv2.imencode('.jpg' if compression == 'jpeg' else '.png', bgr, params)
    if not ok:
        raise ValueError(f'cv2.imencode failed for {compression}')
    return get_typestore().types[COMPRESSED_IMAGE](
        header=header(stamp_ns, frame_id), format=f'rgb8; {compression} compressed bgr8',
        data=data.reshape(-1))


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


def vision_detection_array_msg(detections: Iterable[dict], stamp_ns: int, frame_id: str):
    """
    Return a ``vision_msgs/msg/Detection2DArray`` of the same dicts as ``detection_array_msg``.

    One hypothesis per detection (``class_id``, ``score``); ``hypotheses`` (optional) gives
    a list of ``(class_id, score)`` instead; ``theta`` (optional) rotates the box.
    """
    types = get_typestore().types
    vm = 'vision_msgs/msg/'
    geometry = 'geometry_msgs/msg/'

    def pose_with_covariance():
        point = types[geometry + 'Point'](x=0.0, y=0.0, z=0.0)
        rotation = types[geometry + 'Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0)
        return types[geometry + 'PoseWithCovariance'](
            pose=types[geometry + 'Pose'](position=point, orientation=rotation),
            covariance=np.zeros(36))

    items = []
    for d in detections:
        pairs = (d['hypotheses'] if 'hypotheses' in d
                 else [(str(d.get('class_id', '')), float(d['score']))])
        results = [types[vm + 'ObjectHypothesisWithPose'](
            hypothesis=types[vm + 'ObjectHypothesis'](class_id=str(c), score=float(p)),
            pose=pose_with_covariance()) for c, p in pairs]
        cx, cy, w, h = (float(v) for v in d['box'])
        centre = types[vm + 'Pose2D'](position=types[vm + 'Point2D'](x=cx, y=cy),
                                      theta=float(d.get('theta', 0.0)))
        bbox = types[vm + 'BoundingBox2D'](center=centre, size_x=w, size_y=h)
        items.append(types[vm + 'Detection2D'](
            header=header(stamp_ns, frame_id), results=results, bbox=bbox, id=str(d['id'])))
    return types[VISION_DETECTION_2D_ARRAY](header=header(stamp_ns, frame_id), detections=items)


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

    @property
    def connections(self) -> Dict[str, object]:
        """Return ``{topic: rosbags connection}`` of the topics written so far."""
        return dict(self._connections)

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


def convert_inputs(src, dst, detections: str = 'persistence_ros', images: str = 'raw',
                   quality: int = 95) -> Dict[str, str]:
    """
    Copy a simulator-style bag with its inputs in other message types; return its topics.

    ``detections``: 'persistence_ros' (unchanged) or 'vision_msgs' (each Detection2DArray as a
    ``vision_msgs/msg/Detection2DArray``: one hypothesis per box); ``images``: 'raw'
    (unchanged), 'jpeg' (``quality``) or 'png': each ``<side>/image_raw`` Image becomes a
    CompressedImage on ``<side>/image_raw/compressed``, as image_transport names it.  Other
    messages are copied as they are.  Stamps and log times are kept.
    """
    if detections not in DETECTION_TYPES or images not in ('raw', 'jpeg', 'png'):
        raise ValueError(f'detections must be one of {list(DETECTION_TYPES)} and images one '
                         f'of raw, jpeg, png; got {detections!r}, {images!r}')
    with BagWriter(dst) as out:
        for topic, log_ns, msg in read_messages(src):
            msgtype = msg.__msgtype__
            if msgtype in (DETECTION_2D_ARRAY, IMAGE):
                stamp_ns, frame_id = stamp_to_ns(msg.header.stamp), msg.header.frame_id
            if msgtype == DETECTION_2D_ARRAY and detections == 'vision_msgs':
                dets = [{'id': d.id, 'box': [d.center_x, d.center_y, d.width, d.height],
                         'score': d.score, 'class_id': d.class_id} for d in msg.detections]
                msg = vision_detection_array_msg(dets, stamp_ns, frame_id)
            elif msgtype == IMAGE and images != 'raw':
                topic = f'{topic}/compressed'
                msg = compressed_image_msg(image_to_rgb(msg), stamp_ns, frame_id, images,
                                           quality)
            out.write(topic, log_ns, msg)
        return {t: c.msgtype for t, c in out.connections.items()}


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
