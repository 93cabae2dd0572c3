"""
Builders of the node's output messages from ``PipelineFrameResult``s.

* :func:`points_cloud`: ``sensor_msgs/PointCloud2`` of the current points of PERSISTENT tracks
  (their smoothed position where they have one, else the raw one: :func:`display_position`),
  fields x, y, z, probability (float32) and track_id (uint32), little endian, dense.
  Built with a numpy structured array: sensor_msgs_py (point_cloud2) is not on PyPI.
* :func:`track_array`: ``persistence_ros/TrackArray`` with every live stereo track.
* :class:`MarkerBuilder`: ``visualization_msgs/MarkerArray``; namespaces:
  ``trajectory`` (LINE_STRIP of the track's recent positions, smoothed where the track has a
  smoothed position: :func:`display_position`; in the track's own colour:
  :func:`track_colour`, a hash of its id into ``TRACK_PALETTE``, so a track keeps its colour
  whatever its state), ``attention`` (SPHERE_LIST at the positions of the frames the model
  looked at, coloured by attention weight; only for filters that report attention),
  ``label`` (TEXT_VIEW_FACING ``'#id persistent 0.93'``: id, state and probability, in the
  state's colour; its height grows with the distance from the
  camera, ``LABEL_HEIGHT_PER_M``, so it reads the same near and far). With
  ``faint_transient`` TRANSIENT tracks are drawn at ``TRANSIENT_ALPHA``. The marker id of a
  track is its stereo track id (mod 2^31) in every namespace, so markers are stable; a track
  that ends gets DELETE for each of its markers.
* :func:`camera_markers`: ``visualization_msgs/MarkerArray`` of both cameras (namespace
  ``cameras``): frustum and boresight (LINE_LIST) and name, from the calibration, in the
  left optical frame.
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

# Track colours (RGB): distinct from the state colours below, from white (the points in the
# shipped Foxglove layout) and from CAMERA_COLOUR, so that each can be told apart in a picture.
TRACK_PALETTE = (
    (0.12, 0.47, 0.71),   # blue
    (1.0, 0.5, 0.05),     # orange
    (0.58, 0.4, 0.74),    # purple
    (0.55, 0.34, 0.29),   # brown
    (0.89, 0.47, 0.76),   # pink
    (0.74, 0.74, 0.13),   # olive
    (1.0, 0.73, 0.47),    # light orange
    (0.77, 0.69, 0.84),   # lavender
)
CAMERA_COLOUR = (0.09, 0.75, 0.81, 1.0)   # cyan
# Alpha of TRANSIENT tracks' markers with faint_transient.
TRANSIENT_ALPHA = 0.3
# Label text height per metre of distance from the camera (about 1.4 degrees seen from it),
# and its minimum.
LABEL_HEIGHT_PER_M = 0.025
MIN_LABEL_HEIGHT_M = 0.03
# Camera frusta are drawn to this depth (m), the boresights (optical axes) to twice it.
FRUSTUM_DEPTH_M = 0.5
CAMERA_NAMESPACE = 'cameras'
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


def display_position(track):
    """Return the position a track is drawn at: smoothed when it has one, else raw (or None)."""
    for position in (track.smoothed_position, track.position):
        if position is not None and np.all(np.isfinite(position)):
            return position
    return None


def persistent_points(result) -> np.ndarray:
    """Return the structured array of the result's PERSISTENT tracks with a finite position."""
    rows = [(display_position(t), t.probability, t.id) for t in result.tracks
            if t.state == TrackState.PERSISTENT and display_position(t) is not None]
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
        msg.position = _point(track.position)
    if track.has_smoothed:
        msg.has_smoothed = True
        msg.smoothed_position = _point(track.smoothed_position)
        vx, vy, vz = (float(v) for v in track.smoothed_velocity)
        msg.smoothed_velocity = Vector3(x=vx, y=vy, z=vz)
        msg.smoothed_position_covariance = _matrix9(track.smoothed_position_covariance)
        msg.smoothed_velocity_covariance = _matrix9(track.smoothed_velocity_covariance)
    return msg


def _matrix9(matrix) -> List[float]:
    return [float(v) for v in np.asarray(matrix, dtype=np.float64).reshape(9)]


def track_array(result, frame_id: str) -> TrackArray:
    """Return the TrackArray of every live stereo track of a result."""
    return TrackArray(header=header(result.stamp_ns, frame_id),
                      tracks=[track_msg(t) for t in result.tracks])


def marker_id(track_id: int) -> int:
    """Return the (int32) marker id of a stereo track id."""
    return int(track_id) % (2 ** 31)


def track_colour(track_id: int) -> Tuple[float, float, float]:
    """
    Return the RGB colour of a stereo track: the same in every frame, state and process.

    A multiplicative (Fibonacci) hash of the id picks the palette entry, so that colours do
    not simply cycle with the id (an object and its reflection often get neighbouring ids);
    Python's ``hash`` is not used (salted for strings, the identity for ints).
    """
    mixed = (int(track_id) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    return TRACK_PALETTE[(mixed >> 32) % len(TRACK_PALETTE)]


def label_height(position) -> float:
    """Return the label text height (m) at ``position`` (left optical frame)."""
    return max(MIN_LABEL_HEIGHT_M, LABEL_HEIGHT_PER_M * float(np.linalg.norm(position)))


def _colour(rgba) -> ColorRGBA:
    r, g, b, a = (float(c) for c in rgba)
    return ColorRGBA(r=r, g=g, b=b, a=a)


def _point(p) -> Point:
    return Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))


class MarkerBuilder:
    """
    Stateful MarkerArray builder: remembers each track's recent positions and its markers.

    ``history``: trajectory points kept per track; ``faint_transient``: draw TRANSIENT tracks
    at ``TRANSIENT_ALPHA``.  Call :meth:`update` once per frame.
    """

    def __init__(self, history: int = 30, faint_transient: bool = True,
                 line_width: float = 0.02, sphere_size: float = 0.04):
        self.history = int(history)
        self.faint_transient = bool(faint_transient)
        self.line_width = float(line_width)
        self.sphere_size = float(sphere_size)
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
            position = display_position(track)
            if position is not None:
                self._positions.setdefault(track.id, deque(maxlen=self.history)).append(
                    (int(result.stamp_ns), np.asarray(position, dtype=np.float64)))
            positions = self._positions.get(track.id)
            if not positions:
                continue
            markers.extend(self._track_markers(hdr, track, positions))
        return MarkerArray(markers=markers)

    def _track_markers(self, hdr: Header, track, positions) -> List[Marker]:
        out = []
        alpha = (TRANSIENT_ALPHA if self.faint_transient and track.state == TrackState.TRANSIENT
                 else 1.0)
        colour = track_colour(track.id) + (alpha,)
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
                spheres.colors = [_colour((1.0, 1.0 - a / top, 1.0,
                                           alpha * (0.25 + 0.75 * a / top))) for _, a in pts]
                spheres.pose.orientation.w = 1.0
                out.append(spheres)
        label = self._marker(hdr, 'label', track.id, Marker.TEXT_VIEW_FACING)
        last = positions[-1][1]
        height = label_height(last)
        # one line above the point (-y is up in an optical frame)
        label.pose.position = Point(x=float(last[0]), y=float(last[1]) - height,
                                    z=float(last[2]))
        label.pose.orientation.w = 1.0
        label.scale = Vector3(x=0.0, y=0.0, z=height)
        label.color = _colour(STATE_COLOURS[track.state][:3] + (alpha,))
        label.text = f'#{track.id} {track.state.label} {track.probability:.2f}'
        out.append(label)
        return out


def _camera_geometry(camera, to_optical: np.ndarray, depth: float):
    """Return one camera's optical centre and LINE_LIST points (frustum, boresight)."""
    intrinsics = camera.P[:, :3]
    centre = to_optical @ -np.linalg.solve(intrinsics, camera.P[:, 3])
    axis = to_optical @ camera.R @ np.array([0.0, 0.0, 1.0])
    w, h = float(camera.width), float(camera.height)
    corners = camera.rectify_points(np.array([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]]))
    rays = np.linalg.solve(intrinsics, np.column_stack([corners, np.ones(4)]).T).T
    rays = rays @ to_optical.T
    ends = [centre + depth / float(np.dot(ray, axis)) * ray for ray in rays
            if np.all(np.isfinite(ray)) and np.dot(ray, axis) > 0.0]
    segments = [(centre, end) for end in ends]
    segments += [(ends[k], ends[(k + 1) % len(ends)]) for k in range(len(ends))]
    segments.append((centre, centre + 2.0 * depth * axis))
    return centre, [_point(p) for segment in segments for p in segment]


def camera_markers(calibration, stamp_ns: int, frame_id: str,
                   depth: float = FRUSTUM_DEPTH_M) -> MarkerArray:
    """
    Return the cameras of a ``StereoCalibration`` as markers in the left optical frame.

    Namespace ``cameras``: per camera (id 0 left, 1 right) a LINE_LIST of the frustum (the
    optical centre to the image corners, rectified, at ``depth`` along the camera's optical
    axis, and the rectangle they span) and the boresight (the optical axis, to twice
    ``depth``); ids 2 and 3 name them (TEXT_VIEW_FACING, beside each camera, away from the
    other one).  ``P`` holds the rectified left frame, which ``R_left.T`` turns into the left
    optical frame (calibration module).
    """
    hdr = header(stamp_ns, frame_id)
    to_optical = calibration.left.R.T
    geometry = [_camera_geometry(camera, to_optical, depth)
                for camera in (calibration.left, calibration.right)]
    baseline = geometry[1][0] - geometry[0][0]
    outward = baseline / max(float(np.linalg.norm(baseline)), 1e-9)
    markers = []
    for k, (name, (centre, points)) in enumerate(zip(('left', 'right'), geometry)):
        lines = Marker(header=hdr, ns=CAMERA_NAMESPACE, id=k, type=Marker.LINE_LIST,
                       action=Marker.ADD, scale=Vector3(x=0.01, y=0.0, z=0.0),
                       color=_colour(CAMERA_COLOUR), points=points)
        lines.pose.orientation.w = 1.0
        text = Marker(header=hdr, ns=CAMERA_NAMESPACE, id=2 + k, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, scale=Vector3(x=0.0, y=0.0, z=0.2 * depth),
                      color=_colour(CAMERA_COLOUR), text=name)
        text.pose.position = _point(centre + (2 * k - 1) * 0.4 * depth * outward)
        text.pose.orientation.w = 1.0
        markers += [lines, text]
    return MarkerArray(markers=markers)


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
