"""The benchmarks' own logic (what they count), never their speed."""

import json

import pytest

from persistence_ros.tools.bench import bench_age, format_age, format_stages, scene_overrides
from persistence_ros.tools.long_stream import stream


def test_long_stream_objects_become_one_stereo_track_each_and_live_on():
    result = bench_age(40, 5, '320x240', 15.0, 'none', windows=10)
    assert result['frames'] == 40
    # every sphere is paired once the association has its 3 common frames, and stays paired
    assert result['stereo_tracks_max'] == 5
    assert result['age']['early_frames'] == [10, 20] and result['age']['late_frames'] == [30, 40]
    assert set(result['age']['stages']) >= {'tracking', 'association', 'model', 'crops'}
    assert 'p50 ms of frames' in format_age(result) and 'slow frame' in format_stages(result)
    json.dumps(result)  # the --json output


def test_long_stream_is_the_same_for_a_seed_and_keeps_every_object_on_the_image():
    a = list(stream(3, objects=6, width=160, height=120, seed=2))
    b = list(stream(3, objects=6, width=160, height=120, seed=2))
    for fa, fb in zip(a, b):
        boxes = [[d.cxcywh() for d in f.left.detections] for f in (fa, fb)]
        assert boxes[0] == boxes[1]
        assert (fa.left_image == fb.left_image).all()
        for frame in (fa.left, fa.right):
            assert len(frame.detections) == 6
            for d in frame.detections:
                assert 0.0 < d.center_x < 160.0 and 0.0 < d.center_y < 120.0
    # the right view is the left one shifted by the disparity (a rectified rig)
    pairs = zip(a[0].left.detections, a[0].right.detections)
    assert all(right.center_x < left.center_x for left, right in pairs)


def test_scene_overrides_of_the_pipeline_benchmark():
    assert scene_overrides(60, 30.0, 32, '640x480') == {
        'fps': 30.0, 'duration_s': 2.0, 'objects': {'count': 32},
        'rig': {'width': 640, 'height': 480}}
    assert scene_overrides(30, base_fps=15.0) == {'fps': 15.0, 'duration_s': 2.0}
    with pytest.raises(ValueError, match='WxH'):
        scene_overrides(10, size='640')
