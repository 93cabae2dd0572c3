"""Output messages: PointCloud2 layout, markers, TrackArray, debug image, diagnostics."""

import struct

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import PointField
from visualization_msgs.msg import Marker

from persistence_ros.bag_io import get_typestore
from persistence_ros.calibration import CameraCalibration, StereoCalibration
from persistence_ros.detections import stamp_to_ns
from persistence_ros.msg import Track
from persistence_ros.pipeline import PipelineFrameResult, PipelineTrack
from persistence_ros.ros import messages
from persistence_ros.stereo_track import TrackState

FRAME = 'stereo_left_optical'


def track(id_, state='persistent', position=(0.1, -0.2, 2.0), **kw):
    fields = dict(left_track_id=10 + id_, right_track_id=20 + id_, probability=0.75,
                  frames_observed=4, decision_frame=3 if state != 'tentative' else 0)
    fields.update(kw)
    return PipelineTrack(id=id_, state=state,
                         position=None if position is None else np.array(position, float),
                         **fields)


def result(stamp_ns, tracks, ended=()):
    return PipelineFrameResult(stamp_ns, FRAME, list(tracks), list(ended), {})


def frame_1():
    return result(5_000_000_123, [
        track(1), track(2, position=(-1.5, 0.25, 7.125)),
        track(3, state='tentative', position=None),
        track(4, state='transient', position=None),
        track(5, position=None),   # persistent, not observed now
        track(6, position=(np.nan, 0.0, 1.0)),   # never published (defensive)
        track(2 ** 32 + 7, position=(0.0, 0.0, 1.0)),   # id wraps in the uint32 field
    ])


def test_pointcloud2_layout_and_values_with_an_independent_reader():
    msg = messages.points_cloud(frame_1(), FRAME)
    assert msg.header.frame_id == FRAME and stamp_to_ns(msg.header.stamp) == 5_000_000_123
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ('x', 0, PointField.FLOAT32, 1), ('y', 4, PointField.FLOAT32, 1),
        ('z', 8, PointField.FLOAT32, 1), ('probability', 12, PointField.FLOAT32, 1),
        ('track_id', 16, PointField.UINT32, 1)]
    assert (msg.height, msg.width, msg.point_step) == (1, 3, 20)
    assert msg.row_step == 60 and len(msg.data) == msg.row_step * msg.height
    assert msg.is_dense and not msg.is_bigendian
    rows = [struct.unpack_from('<ffffI', bytes(msg.data), k * 20) for k in range(3)]
    assert [r[4] for r in rows] == [1, 2, 7]
    assert rows[1][:4] == (-1.5, 0.25, 7.125, 0.75)
    assert all(np.isfinite(r[:4]).all() for r in rows)


def test_pointcloud2_deserializes_with_rosbags_and_empty_cloud_is_valid():
    store = get_typestore()
    msg = messages.points_cloud(frame_1(), FRAME)
    other = store.deserialize_cdr(serialize_message(msg), 'sensor_msgs/msg/PointCloud2')
    assert other.width == 3 and other.point_step == 20
    cloud = np.frombuffer(bytes(other.data), messages.POINT_DTYPE)
    np.testing.assert_array_equal(cloud['z'], np.float32([2.0, 7.125, 1.0]))
    empty = messages.points_cloud(result(1, [track(1, state='tentative', position=None)]),
                                  FRAME)
    assert (empty.width, empty.row_step, len(empty.data), empty.is_dense) == (0, 0, 0, True)


def test_track_array_fields():
    tracks = frame_1().tracks
    tracks[0].frame_stamps_ns = [4_000_000_000, 5_000_000_123]
    tracks[0].attention = [0.25, 0.75]
    tracks[0].left_detection_id = 'L000001-00'
    msg = messages.track_array(result(5_000_000_123, tracks), FRAME)
    assert msg.header.frame_id == FRAME and len(msg.tracks) == len(tracks)
    first = msg.tracks[0]
    assert first.state == Track.PERSISTENT and first.has_position
    assert (first.position.x, first.position.y, first.position.z) == (0.1, -0.2, 2.0)
    assert [stamp_to_ns(s) for s in first.frame_stamps] == [4_000_000_000, 5_000_000_123]
    assert list(first.attention) == [0.25, 0.75]
    assert (first.left_track_id, first.right_track_id) == (11, 21)
    assert first.left_detection_id == 'L000001-00' and first.decision_frame == 3
    states = [t.state for t in msg.tracks]
    assert states[2:4] == [Track.TENTATIVE, Track.TRANSIENT]
    assert not msg.tracks[2].has_position and msg.tracks[2].decision_frame == 0


def test_markers_stable_ids_history_attention_and_delete_on_end():
    builder = messages.MarkerBuilder(history=3)
    ids_by_ns = {}
    for k in range(5):
        t = track(9, position=(0.1 * k, 0.0, 2.0), probability=0.9,
                  frame_stamps_ns=[k * 100, (k - 1) * 100], attention=[0.6, 0.4])
        other = track(4, state='tentative', position=None)
        markers = builder.update(result(k * 100, [t, other]), FRAME).markers
        assert all(m.header.frame_id == FRAME for m in markers)
        assert all(m.action == Marker.ADD for m in markers)
        for m in markers:
            ids_by_ns.setdefault(m.ns, set()).add(m.id)
        by_ns = {m.ns: m for m in markers}
        assert 'label' in by_ns and by_ns['label'].text == '#9 persistent 0.90'
        if k >= 1:
            assert len(by_ns['trajectory'].points) == min(k + 1, 3)
            assert by_ns['trajectory'].type == Marker.LINE_STRIP
            spheres = by_ns['attention']
            assert spheres.type == Marker.SPHERE_LIST and len(spheres.points) == 2
            assert len(spheres.colors) == 2 and spheres.colors[0].a > spheres.colors[1].a
    assert ids_by_ns == {'trajectory': {9}, 'attention': {9}, 'label': {9}}
    ended = builder.update(result(600, [], ended=[9, 4]), FRAME).markers
    assert sorted((m.ns, m.id, m.action) for m in ended) == [
        ('attention', 9, Marker.DELETE), ('label', 9, Marker.DELETE),
        ('trajectory', 9, Marker.DELETE)]
    assert builder.update(result(700, [], ended=[9]), FRAME).markers == []


def _rgba(colour):
    return (colour.r, colour.g, colour.b, colour.a)


def test_track_colour_is_stable_through_state_changes_and_spread_over_the_palette():
    builder = messages.MarkerBuilder(history=5)
    colours = []
    for k, state in enumerate(('tentative', 'persistent', 'transient')):
        markers = builder.update(result(k, [track(12, state=state, position=(0.0, 0.0, k + 1))]),
                                 FRAME).markers
        by_ns = {m.ns: m for m in markers}
        if 'trajectory' in by_ns:
            colours.append(_rgba(by_ns['trajectory'].color)[:3])
        # the state shows in the label: its text and colour
        assert by_ns['label'].text.split()[1] == state
        assert _rgba(by_ns['label'].color)[:3] == pytest.approx(
            messages.STATE_COLOURS[TrackState.parse(state)][:3])
    assert colours == [pytest.approx(messages.track_colour(12))] * 2
    # a fixed function of the id (not Python's salted hash), over the whole palette
    assert messages.track_colour(12) == messages.track_colour(12)
    used = {messages.track_colour(i) for i in range(1, 41)}
    assert used == set(messages.TRACK_PALETTE)
    # neighbouring ids (an object and its reflection) rarely share a colour
    assert sum(messages.track_colour(i) == messages.track_colour(i + 1)
               for i in range(1, 1001)) < 1000 / len(messages.TRACK_PALETTE) * 1.5
    reserved = [c[:3] for c in messages.STATE_COLOURS.values()] + [
        messages.CAMERA_COLOUR[:3], (1.0, 1.0, 1.0)]
    assert not set(messages.TRACK_PALETTE) & set(reserved)


@pytest.mark.parametrize('faint', [True, False])
def test_transient_tracks_are_faint_only_when_asked(faint):
    builder = messages.MarkerBuilder(faint_transient=faint)
    for k in range(2):
        markers = builder.update(result(k, [
            track(1, state='transient', position=(0.0, 0.0, 2.0 + k)),
            track(2, position=(1.0, 0.0, 2.0 + k))]), FRAME).markers
    alphas = {(m.ns, m.id): m.color.a for m in markers}
    expected = messages.TRANSIENT_ALPHA if faint else 1.0
    assert alphas[('trajectory', 1)] == pytest.approx(expected)
    assert alphas[('label', 1)] == pytest.approx(expected)
    assert alphas[('trajectory', 2)] == alphas[('label', 2)] == 1.0


def test_label_height_grows_with_distance():
    heights = {}
    for z in (2.0, 8.0, 32.0):
        builder = messages.MarkerBuilder()
        (label,) = [m for m in builder.update(result(0, [track(3, position=(0.0, 0.0, z))]),
                                              FRAME).markers if m.ns == 'label']
        heights[z] = label.scale.z
        assert label.pose.position.y == pytest.approx(-label.scale.z)   # one line above
    assert heights[8.0] == pytest.approx(4 * heights[2.0])
    assert heights[32.0] == pytest.approx(4 * heights[8.0])
    assert messages.label_height((0.0, 0.0, 0.01)) == messages.MIN_LABEL_HEIGHT_M


def _rig(rotation_deg=0.0, width=640, height=480):
    """Return a stereo pair rectified by R: both cameras turned by rotation_deg about y."""
    angle = np.radians(rotation_deg)
    rot = np.array([[np.cos(angle), 0.0, np.sin(angle)], [0.0, 1.0, 0.0],
                    [-np.sin(angle), 0.0, np.cos(angle)]])
    K = np.array([[500.0, 0.0, width / 2], [0.0, 500.0, height / 2], [0.0, 0.0, 1.0]])
    left = CameraCalibration(K=K, D=np.zeros(5), R=rot, P=np.hstack([K, np.zeros((3, 1))]),
                             width=width, height=height, frame_id=FRAME)
    right = CameraCalibration(K=K, D=np.zeros(5), R=rot,
                              P=np.hstack([K, [[-500.0 * 0.2], [0.0], [0.0]]]),
                              width=width, height=height)
    return StereoCalibration(left, right)


@pytest.mark.parametrize('rotation_deg', [0.0, 10.0])
def test_camera_markers_are_frusta_and_boresights_in_the_left_optical_frame(rotation_deg):
    rig = _rig(rotation_deg)
    msg = messages.camera_markers(rig, 7_000_000_000, FRAME, depth=0.5)
    by_id = {m.id: m for m in msg.markers}
    assert sorted(by_id) == [0, 1, 2, 3]
    assert all(m.ns == messages.CAMERA_NAMESPACE and m.header.frame_id == FRAME
               and stamp_to_ns(m.header.stamp) == 7_000_000_000 for m in msg.markers)
    assert (by_id[2].text, by_id[3].text) == ('left', 'right')
    # the rectified frame is R (here a rotation about y) from the optical frame
    angle = np.radians(rotation_deg)
    rect_x = np.array([np.cos(angle), 0.0, np.sin(angle)])   # R.T @ x: the baseline
    for k, centre in ((0, np.zeros(3)), (1, 0.2 * rect_x)):
        lines = by_id[k]
        assert lines.type == Marker.LINE_LIST and len(lines.points) == 2 * (4 + 4 + 1)
        pts = np.array([[p.x, p.y, p.z] for p in lines.points])
        # four rays from the optical centre, then the far rectangle, then the boresight
        np.testing.assert_allclose(pts[0:8:2], [centre] * 4, atol=1e-9)
        corners = pts[1:8:2]
        depth_axis = np.array([0.0, 0.0, 1.0])   # the camera's own z: R maps it to rectified
        np.testing.assert_allclose((corners - centre) @ depth_axis, 0.5, atol=1e-9)
        # the corners project to the image corners
        uv = (rig.left.K @ (corners - centre).T).T
        np.testing.assert_allclose(uv[:, :2] / uv[:, 2:], [[0, 0], [640, 0], [640, 480],
                                                           [0, 480]], atol=1e-6)
        np.testing.assert_allclose(pts[16], centre, atol=1e-9)
        np.testing.assert_allclose(pts[17], centre + [0.0, 0.0, 1.0], atol=1e-9)
    # the names sit beside each camera, away from the other one
    assert by_id[2].pose.position.x < 0.0 < 0.2 < by_id[3].pose.position.x + 1e-9


def test_debug_image_colours_boxes_by_state():
    rgb = np.zeros((60, 80, 3), np.uint8)
    res = result(1, [track(1), track(2, state='transient', position=None)])
    out = messages.debug_image(rgb, res, {11: (20.0, 30.0, 10.0, 10.0),
                                          12: (60.0, 30.0, 10.0, 10.0)})
    assert out.shape == rgb.shape and not rgb.any()
    green = tuple(int(255 * c) for c in messages.STATE_COLOURS[TrackState.PERSISTENT][:3])
    red = tuple(int(255 * c) for c in messages.STATE_COLOURS[TrackState.TRANSIENT][:3])
    assert tuple(out[25, 20]) == green   # top edge of the persistent box (y = 30 - 5)
    assert tuple(out[25, 60]) == red


def test_diagnostics_values_as_text():
    msg = messages.diagnostics(messages.header(0, '').stamp, 'node: pipeline', '/node',
                               {'a': 1, 'b': 0.5, 'c': 'cpu'})
    status = msg.status[0]
    assert status.name == 'node: pipeline' and status.hardware_id == '/node'
    assert {kv.key: kv.value for kv in status.values} == {'a': '1', 'b': '0.5', 'c': 'cpu'}
