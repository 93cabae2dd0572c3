"""
Standard inputs without ROS: vision_msgs detections and compressed images.

Read from bags and converted as the node converts them; bad ones refused by name.
"""

from collections import Counter
import math

import numpy as np
import pytest

from persistence_ros import bag_io
from persistence_ros.detections import (detection_frame_from_vision_msg, detection_frame_of,
                                        detection_from_vision_msg, DETECTION_TYPES)
from persistence_ros.filter_factory import build_filter
from persistence_ros.offline_runner import read_stereo_bag, run_pipeline
from persistence_ros.overrides import replace_fields
from persistence_ros.pipeline import DETECTION_REJECTIONS
from persistence_ros.settings import Settings

N_FRAMES = 20


def _vision(dets, stamp_ns=5_000_000_123, frame_id='cam_left'):
    return bag_io.vision_detection_array_msg(dets, stamp_ns, frame_id)


def test_the_vision_msgs_stand_in_is_registered_for_bags():
    store = bag_io.get_typestore()
    assert DETECTION_TYPES['vision_msgs'] in store.types
    assert bag_io.vision_msgs_dir() is not None
    fields = [name for name, _ in store.fielddefs['vision_msgs/msg/Detection2D'][1]]
    assert fields == ['header', 'results', 'bbox', 'id']


def test_vision_msgs_mapping_best_hypothesis_box_and_id():
    msg = _vision([
        {'id': 'a', 'box': [10.5, 20.25, 8.0, 6.0],
         'hypotheses': [('person', 0.4), ('robot', 0.9), ('cat', 0.9)]},
        {'id': '', 'box': [50.0, 60.0, 10.0, 4.0], 'score': 0.5, 'class_id': '3',
         'theta': math.pi / 2},
    ])
    frame = detection_frame_from_vision_msg(msg)
    assert (frame.stamp_ns, frame.frame_id) == (5_000_000_123, 'cam_left')
    first, second = frame.detections
    assert (first.center_x, first.center_y, first.width, first.height) == (10.5, 20.25, 8.0, 6.0)
    assert (first.class_id, first.score, first.id) == ('robot', 0.9, 'a')  # first of the best
    # a box rotated by 90 degrees: the axis-aligned box around it
    assert second.width == pytest.approx(4.0) and second.height == pytest.approx(10.0)
    assert (second.class_id, second.id) == ('3', '')
    assert detection_frame_of(msg, DETECTION_TYPES['vision_msgs']).detections == frame.detections
    with pytest.raises(ValueError, match='unsupported detection message type'):
        detection_frame_of(msg, 'sensor_msgs/msg/Image')


def test_vision_msgs_without_hypothesis_or_with_nan_numbers():
    msg = _vision([{'id': 'none', 'box': [10.0, 10.0, 4.0, 4.0], 'hypotheses': []},
                   {'id': 'nan', 'box': [10.0, 10.0, math.nan, 4.0], 'score': 0.8},
                   {'id': 'nan-score', 'box': [10.0, 10.0, 4.0, 4.0],
                    'hypotheses': [('x', math.nan), ('y', 0.3)]}])
    assert detection_from_vision_msg(msg.detections[0]) is None
    rejected = Counter()
    frame = detection_frame_from_vision_msg(msg, rejected)
    assert rejected == Counter({'no_hypothesis': 1})   # counted, never silently lost
    assert [d.id for d in frame.detections] == ['nan', 'nan-score']
    assert frame.detections[0].problem() == 'non_finite'   # the pipeline refuses it by name
    assert frame.detections[1].class_id == 'y'             # a NaN score is the lowest


def _bag(scene, tmp_path, detections, images, name='bag'):
    out = tmp_path / name
    bag_io.convert_inputs(scene[0], out, detections=detections, images=images)
    return out


def _runs(bag, settings, rejected=None):
    calibration, frames = read_stereo_bag(bag, with_images=True)
    return run_pipeline(calibration, frames, build_filter(settings), settings,
                        rejected=rejected)


def _same_tracks(a, b, probability_atol=0.0):
    assert [s for s, _ in a] == [s for s, _ in b]
    for (_, ta), (_, tb) in zip(a, b):
        assert [t.id for t in ta] == [t.id for t in tb]
        for x, y in zip(ta, tb):
            assert (x.state, x.left_detection_id, x.right_detection_id) == (
                y.state, y.left_detection_id, y.right_detection_id)
            assert x.probability == pytest.approx(y.probability, abs=probability_atol)
            if x.position is None:
                assert y.position is None
            else:
                np.testing.assert_allclose(x.position, y.position)


def test_vision_msgs_and_png_bags_give_the_raw_bags_result(scene, tmp_path):
    settings = replace_fields(Settings(), {'model.device': 'cpu'})   # the learned filter
    raw = _runs(scene[0], settings)
    assert any(t.has_position for _, tracks in raw for t in tracks)
    bag = _bag(scene, tmp_path, 'vision_msgs', 'png')
    topics = bag_io.bag_topics(bag)
    assert topics['/stereo/left/detections'] == DETECTION_TYPES['vision_msgs']
    assert topics['/stereo/left/image_raw/compressed'] == bag_io.COMPRESSED_IMAGE
    assert '/stereo/left/image_raw' not in topics
    _, raw_frames = read_stereo_bag(scene[0], with_images=True)
    _, frames = read_stereo_bag(bag, with_images=True)
    for a, b in zip(raw_frames, frames):
        np.testing.assert_array_equal(a.left_image, b.left_image)   # png: lossless
        assert a.left.detections == b.left.detections
    _same_tracks(raw, _runs(bag, settings))   # identical, field by field


def test_a_jpeg_bag_gives_the_raw_bags_result_within_jpeg_loss(scene, tmp_path):
    # Without the trackers' colour gate: on these 160x120 images JPEG moves a colour
    # histogram across the gate now and then, which pairs boxes differently (a real effect
    # of lossy images, not of decoding); the model's inputs are compared here.
    settings = replace_fields(Settings(), {'model.device': 'cpu',
                                           'tracker.appearance_gate': 1.0})
    bag = _bag(scene, tmp_path, 'persistence_ros', 'jpeg')
    _, raw_frames = read_stereo_bag(scene[0], with_images=True)
    _, frames = read_stereo_bag(bag, with_images=True)
    for a, b in zip(raw_frames, frames):
        assert np.abs(a.right_image.astype(int) - b.right_image).mean() < 3.0
    # the same tracks, decisions and points; the model's probabilities move a little
    _same_tracks(_runs(scene[0], settings), _runs(bag, settings), probability_atol=0.05)


def test_bad_inputs_in_a_bag_are_refused_by_name_as_the_node_refuses_them(scene, tmp_path):
    """
    Count a vision_msgs + jpeg bag's bad inputs by reason.

    Detections without hypotheses, NaN sizes, other classes and a corrupt image.
    """
    bag = _bag(scene, tmp_path, 'vision_msgs', 'jpeg')
    types = bag_io.get_typestore().types
    bad = tmp_path / 'bad'
    corrupt_stamp = None
    with bag_io.BagWriter(bad) as out:
        for topic, log_ns, msg in bag_io.read_messages(bag):
            k = bag_io.stamp_to_ns(msg.header.stamp) // 66_666_666 % 4
            if topic.endswith('/left/detections'):
                extra = bag_io.vision_detection_array_msg(
                    [{'id': f'x{k}', 'box': [80.0, 60.0, 10.0, 10.0], 'hypotheses': []},
                     {'id': f'n{k}', 'box': [80.0, 60.0, math.nan, 10.0], 'score': 0.9},
                     {'id': f'g{k}', 'box': [30.0, 30.0, 6.0, 6.0], 'score': 0.9,
                      'class_id': 'glare'}], 0, '').detections
                msg = types[DETECTION_TYPES['vision_msgs']](
                    header=msg.header, detections=list(msg.detections) + list(extra))
            elif topic.endswith('/right/image_raw/compressed') and corrupt_stamp is None:
                corrupt_stamp = bag_io.stamp_to_ns(msg.header.stamp)
                msg = types[bag_io.COMPRESSED_IMAGE](header=msg.header, format=msg.format,
                                                     data=msg.data[: len(msg.data) // 3])
            out.write(topic, log_ns, msg)
    classes = sorted({d.class_id for f in read_stereo_bag(scene[0])[1]
                      for d in f.left.detections})
    settings = replace_fields(Settings(), {'filter.name': 'none', 'detections.classes': classes})
    rejected = Counter()
    run = _runs(bad, settings, rejected)
    assert len(run) == N_FRAMES - 1   # the frame with the corrupt image is refused
    assert corrupt_stamp not in [s for s, _ in run]
    assert rejected['corrupt_image'] == 1
    assert rejected['no_hypothesis'] == N_FRAMES
    assert rejected['non_finite'] == N_FRAMES - 1
    assert rejected['class_filtered'] == N_FRAMES - 1
    assert 'class_filtered' in DETECTION_REJECTIONS
    # every kept track is made of the real detections only
    ids = {t.left_detection_id for _, tracks in run for t in tracks}
    assert not any(i.startswith(('x', 'n', 'g')) for i in ids if i)
