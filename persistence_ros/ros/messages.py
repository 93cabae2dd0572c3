"""
Builders of the node's output messages from ``PipelineFrameResult``s.

* :func:`points_cloud`: ``sensor_msgs/PointCloud2`` of the current points of PERSISTENT tracks,
  fields x, y, z, probability (float32) and track_id (uint32), little endian, dense.
  Built with a numpy structured array: sensor_msgs_py (point_cloud2) is not on PyPI.
* :func:`track_array`: ``persistence_ros/TrackArray`` with every live stereo track.
* :class:`MarkerBuilder`: ``visualization_msgs/MarkerArray``; namespaces:
  ``trajectory`` (LINE_STRIP of the track's recent positions, coloured by decision),
  ``attention`` (SPHERE_LIST at the positions of the frames the model looked at, coloured by
  attention weight; only for filters that report attention), ``label`` (TEXT_VIEW_FACING
  ``'#id p=0.93 d=5'``: id, probability, frames to decision). The marker id of a track is
  its stereo track id (mod 2^31) in every namespace, so markers are stable; a track that ends
  gets DELETE for each of its markers.
* :func:`debug_image`: the left image with every 2D box coloured by its stereo track's state.
* :func:`diagnostics`: ``diagnostic_msgs/DiagnosticArray`` of the node's counters.
"""

from collections import deque
from typing import Deque, Dict, Iterable, List, Mapping, Tuple

from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Vector3
import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from persistence_ros.msg import Track, TrackArray
from persistence_ros.ros.conversions import ns_to_stamp
from persistence_ros.stereo_track import TrackState

POINT_DTYPE = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('probability', '<f4'),
                        ('track_id', '<u4')])
POINT_FIELDS = [
    PointField(name='x', offset=0, datatype=PointField.FLOAT32, count=1),
    PointField(name='y', offset=4, datatype=PointField.FLOAT32, count=1),
    PointField(name='z', offset=8, datatype=PointField.FLOAT32, count=1),
    PointField(name='probability', offset=12, datatype=PointField.FLOAT32, count=1),
    PointField(name='track_id', offset=16, datatype=PointField.UINT32, count=1),
]

# RGBA per decision state.
STATE_COLOURS = {
    TrackState.TENTATIVE: (1.0, 0.85, 0.0, 1.0),
    TrackState.PERSISTENT: (0.1, 0.9, 0.2, 1.0),
    TrackState.TRANSIENT: (0.95, 0.15, 0.1, 1.0),
}
# The same as BGR 0..255 for OpenCV drawing.
STATE_BGR = {name: tuple(int(255 * c) for c in rgba[2::-1])
             for name, rgba in STATE_COLOURS.items()}
MARKER_NAMESPACES = ('trajectory', 'attention', 'label')


def header(stamp_ns: int, frame_id: str) -> Header:
    """Return a std_msgs/Header."""
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def persistent_points(result) -> np.ndarray:
    """Return the structured array of the result's PERSISTENT tracks with a finite position."""
    rows = [(t.position, t.probability, t.id) for t in result.tracks
            if t.state == TrackState.PERSISTENT and t.position is not None
            and np.all(np.isfinite(t.position))]
    cloud = np.zeros(len(rows), dtype=POINT_DTYPE)
    for k, (position, probability, track_id) in enumerate(rows):
        cloud[k] = (position[0], position[1], position[2], probability,
                    int(track_id) & 0xFFFFFFFF)  # uint32 field: ids wrap after 2^32
    return cloud


def points_cloud(result, frame_id: str) -> PointCloud2:
    """Return the PointCloud2 of the current points of PERSISTENT tracks (no NaN)."""
    cloud = persistent_points(result)
    return PointCloud2(
        header=header(result.stamp_ns, frame_id), height=1, width=len(cloud),
        fields=list(POINT_FIELDS), is_bigendian=False, point_step=POINT_DTYPE.itemsize,
        row_step=POINT_DTYPE.itemsize * len(cloud), data=cloud.tobytes(), is_dense=True)


def cloud_to_array(msg) -> np.ndarray:
    """Return a PointCloud2 of this layout as a structured array (checks the layout)."""
    names = [f.name for f in msg.fields]
    if names != list(POINT_DTYPE.names) or msg.point_step != POINT_DTYPE.itemsize:
        raise ValueError(f'unexpected PointCloud2 layout: fields {names}, '
                         f'point_step {msg.point_step}')
    return np.frombuffer(bytes(msg.data), dtype=POINT_DTYPE, count=msg.width * msg.height)


def track_msg(track) -> Track:
    """Return a Track message of a ``PipelineTrack``."""
    msg = Track(id=int(track.id), left_track_id=int(track.left_track_id),
                right_track_id=int(track.right_track_id), state=int(track.state),
                probability=float(track.probability),
                frames_observed=int(track.frames_observed),
                decision_frame=int(track.decision_frame),
                frame_stamps=[ns_to_stamp(s) for s in track.frame_stamps_ns],
                attention=[float(a) for a in track.attention],
                has_position=bool(track.has_position),
                left_detection_id=track.left_detection_id,
                right_detection_id=track.right_detection_id)
    if track.has_position:
        x, y, z = (float(v) for v in track.position)
        msg.position = Point(x=x, y=y, z=z)
    return msg


def track_array(result, frame_id: str) -> TrackArray:
    """Return the TrackArray of every live stereo track of a result."""
    return TrackArray(header=header(result.stamp_ns, frame_id),
                      tracks=[track_msg(t) for t in result.tracks])


def marker_id(track_id: int) -> int:
    """Return the (int32) marker id of a stereo track id."""
    return int(track_id) % (2 ** 31)


def _colour(rgba) -> ColorRGBA:
    r, g, b, a = (float(c) for c in rgba)
    return ColorRGBA(r=r, g=g, b=b, a=a)


def _point(p) -> Point:
    return Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))


class MarkerBuilder:
    """
    Stateful MarkerArray builder: remembers each track's recent positions and its markers.

    ``history``: trajectory points kept per track.  Call :meth:`update` once per frame.
    """

    def __init__(self, history: int = 30, line_width: float = 0.01, sphere_size: float = 0.04,
                 text_size: float = 0.06):
        self.history = int(history)
        self.line_width = float(line_width)
        self.sphere_size = float(sphere_size)
        self.text_size = float(text_size)
        self._positions: Dict[int, Deque[Tuple[int, np.ndarray]]] = {}
        self._published: Dict[int, set] = {}

    def reset(self) -> None:
        """Forget every track (markers already shown are not deleted; see delete_all)."""
        self._positions.clear()
        self._published.clear()

    def delete_all(self, stamp_ns: int, frame_id: str) -> MarkerArray:
        """Return a MarkerArray deleting every marker of this builder (DELETEALL)."""
        self.reset()
        return MarkerArray(markers=[Marker(header=header(stamp_ns, frame_id),
                                           action=Marker.DELETEALL)])

    def _marker(self, hdr: Header, ns: str, track_id: int, kind: int) -> Marker:
        self._published.setdefault(track_id, set()).add(ns)
        return Marker(header=hdr, ns=ns, id=marker_id(track_id), type=kind, action=Marker.ADD,
                      lifetime=Duration(sec=0, nanosec=0), frame_locked=False)

    def _delete(self, hdr: Header, track_id: int, namespaces: Iterable[str]) -> List[Marker]:
        return [Marker(header=hdr, ns=ns, id=marker_id(track_id), action=Marker.DELETE)
                for ns in sorted(namespaces)]

    def update(self, result, frame_id: str) -> MarkerArray:
        """Return the markers of one frame: ADD for live tracks, DELETE for ended ones."""
        hdr = header(result.stamp_ns, frame_id)
        markers: List[Marker] = []
        for track_id in result.ended:
            markers.extend(self._delete(hdr, track_id, self._published.pop(track_id, ())))
            self._positions.pop(track_id, None)
        for track in result.tracks:
            if track.position is not None and np.all(np.isfinite(track.position)):
                self._positions.setdefault(track.id, deque(maxlen=self.history)).append(
                    (int(result.stamp_ns), np.asarray(track.position, dtype=np.float64)))
            positions = self._positions.get(track.id)
            if not positions:
                continue
            markers.extend(self._track_markers(hdr, track, positions))
        return MarkerArray(markers=markers)

    def _track_markers(self, hdr: Header, track, positions) -> List[Marker]:
        out = []
        colour = STATE_COLOURS[track.state]
        if len(positions) >= 2:
            line = self._marker(hdr, 'trajectory', track.id, Marker.LINE_STRIP)
            line.scale = Vector3(x=self.line_width, y=0.0, z=0.0)
            line.color = _colour(colour)
            line.points = [_point(p) for _, p in positions]
            line.pose.orientation.w = 1.0
            out.append(line)
        by_stamp = dict(positions)
        if track.attention:
            pts = [(by_stamp[s], a) for s, a in zip(track.frame_stamps_ns, track.attention)
                   if s in by_stamp]
            if pts:
                top = max(a for _, a in pts) or 1.0
                spheres = self._marker(hdr, 'attention', track.id, Marker.SPHERE_LIST)
                spheres.scale = Vector3(x=self.sphere_size, y=self.sphere_size,
                                        z=self.sphere_size)
                spheres.color = _colour(colour)
                spheres.points = [_point(p) for p, _ in pts]
                # Colour by attention weight: white (low) -> magenta (high), alpha with weight.
                spheres.colors = [_colour((1.0, 1.0 - a / top, 1.0, 0.25 + 0.75 * a / top))
                                  for _, a in pts]
                spheres.pose.orientation.w = 1.0
                out.append(spheres)
        label = self._marker(hdr, 'label', track.id, Marker.TEXT_VIEW_FACING)
        last = positions[-1][1]
        label.pose.position = Point(x=float(last[0]), y=float(last[1]) - 0.08,
                                    z=float(last[2]))
        label.pose.orientation.w = 1.0
        label.scale = Vector3(x=0.0, y=0.0, z=self.text_size)
        label.color = _colour(colour)
        label.text = f'#{track.id} p={track.probability:.2f} d={track.decision_frame}'
        out.append(label)
        return out


def debug_image(rgb: np.ndarray, result, left_boxes: Mapping[int, Tuple[float, ...]],
                thickness: int = 2) -> np.ndarray:
    """
    Return a copy of the left RGB image with the stereo tracks' left boxes drawn.

    ``left_boxes``: left 2D track id -> (cx, cy, w, h) at this frame.  Colours: yellow
    tentative, green persistent, red transient; label ``#id p``.
    """
    import cv2
    canvas = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    for track in result.tracks:
        box = left_boxes.get(track.left_track_id)
        if box is None or not np.all(np.isfinite(box)):
            continue
        cx, cy, w, h = box
        p0 = (int(round(cx - w / 2)), int(round(cy - h / 2)))
        p1 = (int(round(cx + w / 2)), int(round(cy + h / 2)))
        colour = STATE_BGR[track.state]
        cv2.rectangle(canvas, p0, p1, colour, thickness)
        cv2.putText(canvas, f'#{track.id} {track.probability:.2f}', (p0[0], max(10, p0[1] - 3)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)


def diagnostics(stamp, name: str, hardware_id: str, values: Mapping[str, object],
                level: bytes = DiagnosticStatus.OK, message: str = 'ok') -> DiagnosticArray:
    """Return a DiagnosticArray with one status of ``values`` (key -> value as text)."""
    status = DiagnosticStatus(
        level=level, name=name, message=message, hardware_id=hardware_id,
        values=[KeyValue(key=str(k), value=_text(v)) for k, v in values.items()])
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])


def _text(value) -> str:
    if isinstance(value, float):
        return f'{value:.6g}'
    return str(value)
