"""StereoPipeline: frames joined by frame not by stamp, refused frames, boxes, filter reuse."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from persistence_ros.baselines import (
    GroundPlaneFilter, MinHitsFilter, ScoreFilter, StereoConsistencyFilter)
from persistence_ros.calibration import CameraCalibration, StereoCalibration
from persistence_ros.detections import Detection, DetectionFrame
from persistence_ros.features import GEOMETRY_FEATURES, side_geometry, SIDES
from persistence_ros.offline_runner import run_pipeline, StereoFrame
from persistence_ros.pipeline import (
    crop_box, DETECTION_REJECTIONS, FRAME_REJECTIONS, StereoPipeline)
from persistence_ros.stereo_track import TrackState

PERSISTENT, TENTATIVE, TRANSIENT = (TrackState.PERSISTENT, TrackState.TENTATIVE,
                                    TrackState.TRANSIENT)

F, BASE, WIDTH, HEIGHT = 500.0, 0.1, 640, 480
FLOOR = [0.0, -1.0, 0.0, 1.0]  # y down: the floor is 1 m below the optical centre
PERIOD_NS = 33_000_000
T0 = 1_000_000_000
HAS_PARTNER = GEOMETRY_FEATURES.index('has_partner')


def _rig() -> StereoCalibration:
    k = [F, 0.0, 320.0, 0.0, F, 240.0, 0.0, 0.0, 1.0]
    left = CameraCalibration(WIDTH, HEIGHT, k, [], P=k[:3] + [0.0] + k[3:6] + [0.0] + k[6:]
                             + [0.0])
    right = CameraCalibration(WIDTH, HEIGHT, k, [], P=k[:3] + [-F * BASE] + k[3:6] + [0.0]
                              + k[6:] + [0.0])
    return StereoCalibration(left, right)


def _px(point, camera: str):
    x, y, z = point
    shift = F * BASE / z if camera == 'R' else 0.0
    return F * x / z + 320.0 - shift, F * y / z + 240.0


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    return np.repeat(np.repeat(coarse, 40, axis=0), 40, axis=1)


def _det(point, camera, tag, score=0.9, size=20.0):
    x, y = _px(point, camera)
    return Detection(x, y, size, size, score, '', f'{camera}-{tag}')


def _scene(right_offset_ns: int, frames: int = 12):
    """Return StereoFrames: a real object and its floor reflection; right misses frame 6."""
    image = _image()
    out = []
    for i in range(frames):
        stamp = T0 + i * PERIOD_NS
        real = (0.1 + 0.02 * i, 0.3, 4.0)
        mirror = (real[0], 2.0 - real[1], 4.0)
        left = [_det(real, 'L', f'{i}-0'), _det(mirror, 'L', f'{i}-1', 0.7)]
        right = [_det(mirror, 'R', f'{i}-1', 0.7)]
        if i != 6:
            right.insert(0, _det(real, 'R', f'{i}-0'))
        out.append(StereoFrame(stamp, DetectionFrame(stamp, 'L', left),
                               DetectionFrame(stamp + right_offset_ns, 'R', right),
                               image, image))
    return out


def _run_scene(right_offset_ns: int):
    states = []
    run = run_pipeline(_rig(), _scene(right_offset_ns), GroundPlaneFilter(FLOOR),
                       on_states=lambda s: states.append(list(s)))
    return run, states


def test_right_stamps_a_few_ms_late_give_the_same_features_points_and_decisions():
    offset = 5_000_000
    run0, states0 = _run_scene(0)
    run5, states5 = _run_scene(offset)
    assert len(states0) == len(states5) and states0
    for frame0, frame5 in zip(states0, states5):
        assert [s.id for s in frame0] == [s.id for s in frame5]
        for a, b in zip(frame0, frame5):
            assert b.frames_observed == a.frames_observed
            assert list(b.stamps_ns) == list(a.stamps_ns)  # frames: the left stamps
            assert list(b.right_stamps_ns) == [s + offset for s in a.stamps_ns]
            np.testing.assert_array_equal(b.epipolar_residuals, a.epipolar_residuals)
            np.testing.assert_array_equal(b.points, a.points)
            for side in SIDES:
                ga = side_geometry(a, side, _rig(), FLOOR)
                gb = side_geometry(b, side, _rig(), FLOOR)
                np.testing.assert_array_equal(gb.geometry, ga.geometry)
    for (_, tracks0), (_, tracks5) in zip(run0, run5):
        assert [(t.id, t.state, t.probability, t.frames_observed, t.decision_frame)
                for t in tracks5] == [(t.id, t.state, t.probability, t.frames_observed,
                                       t.decision_frame) for t in tracks0]
        for a, b in zip(tracks0, tracks5):
            assert (a.position is None) == (b.position is None)
            if a.position is not None:
                np.testing.assert_array_equal(b.position, a.position)
    # and the numbers are the right ones: one frame per call, partners found, points valid
    last = {st.left_track_id: st for st in states5[-1]}
    real = last[1]
    assert real.frames_observed == 12 and len(real.stamps_ns) == 12
    partner = side_geometry(real, 'left', _rig(), FLOOR).geometry[:, HAS_PARTNER]
    assert list(partner) == [1.0] * 6 + [0.0] + [1.0] * 5
    valid = np.all(np.isfinite(real.points), axis=1)
    assert list(valid) == [True] * 6 + [False] + [True] * 5
    np.testing.assert_allclose(real.points[-1], (0.32, 0.3, 4.0), atol=1e-6)
    decided = {t.left_detection_id: t for t in run5[-1][1]}
    assert decided['L-11-0'].state == PERSISTENT and decided['L-11-1'].state == TRANSIENT
    np.testing.assert_allclose(decided['L-11-0'].position, (0.32, 0.3, 4.0), atol=1e-6)


def _frame(stamp, camera, x):
    return DetectionFrame(stamp, camera, [Detection(x, 240.0, 40.0, 40.0, 0.9)])


def test_box_that_cannot_be_on_the_image_is_dropped_and_counted():
    pipeline = StereoPipeline(_rig(), None, MinHitsFilter(3))
    image = _image()
    for i in range(4):
        stamp = T0 + i * PERIOD_NS
        left = DetectionFrame(stamp, 'L', [
            Detection(330.0, 240.0, 40.0, 40.0, 0.9),
            Detection(320.0, 240.0, 8000.0, 40.0, 0.9),   # wider than the image can show
            Detection(320.0, 240.0, 40.0, 1e5, 0.9),
            Detection(-500.0, 240.0, 40.0, 40.0, 0.9)])   # no pixel on the image
        right = DetectionFrame(stamp, 'R', [
            Detection(317.5, 240.0, 40.0, 40.0, 0.9),
            Detection(320.0, 5000.0, 40.0, 40.0, 0.9)])
        result = pipeline.process(left, right, image, image)
        assert result.accepted
        assert result.rejected_detections == {'box_too_large': 2, 'box_outside_image': 2}
    assert set(result.rejected_detections) <= set(DETECTION_REJECTIONS)
    assert pipeline.rejected_detections == {'box_too_large': 8, 'box_outside_image': 8}
    for tracker in (pipeline.left_tracker, pipeline.right_tracker):
        assert [t.box[2] for t in tracker.tracks] == [pytest.approx(40.0)]
    assert [(t.state, t.frames_observed) for t in result.tracks] == [(PERSISTENT, 4)]
    # a box partly off the image is kept
    edge = pipeline.process(_frame(T0 + 4 * PERIOD_NS, 'L', 5.0),
                            _frame(T0 + 4 * PERIOD_NS, 'R', 2.0), image, image)
    assert edge.accepted and edge.rejected_detections == {}


def test_invalid_detections_are_dropped_and_counted_by_reason():
    pipeline = StereoPipeline(_rig(), None, MinHitsFilter(3))
    image = _image()
    for i in range(4):
        stamp = T0 + i * PERIOD_NS
        left = DetectionFrame(stamp, 'L', [
            Detection(330.0, 240.0, 40.0, 40.0, 0.9), Detection(float('nan'), 1.0, 1.0, 1.0),
            Detection(330.0, 240.0, 0.0, 40.0, 0.9), Detection(330.0, 240.0, 40.0, 40.0, 1.5)])
        right = DetectionFrame(stamp, 'R', [Detection(317.5, 240.0, 40.0, 40.0, 0.9),
                                            Detection(1.0, float('inf'), 1.0, 1.0)])
        result = pipeline.process(left, right, image, image)
        assert result.accepted
        assert result.rejected_detections == {'non_finite': 2, 'non_positive_size': 1,
                                              'score_out_of_range': 1}
    assert set(pipeline.rejected_detections) <= set(DETECTION_REJECTIONS)
    assert pipeline.rejected_detections['non_finite'] == 8
    assert [(t.state, t.frames_observed) for t in result.tracks] == [(PERSISTENT, 4)]


@pytest.mark.parametrize('left_id, right_id, image_ids', [
    ('L', 'L', None), ('', 'R', None), ('L', 'R', ('L', 'other')), ('L', 'R', ('R', 'L'))])
def test_frame_ids_that_do_not_name_two_cameras_refuse_the_frame(left_id, right_id, image_ids):
    pipeline = StereoPipeline(_rig(), None, MinHitsFilter(3))
    image = _image()
    result = pipeline.process(DetectionFrame(T0, left_id, []), DetectionFrame(T0, right_id, []),
                              image, image, image_ids)
    assert not result.accepted and result.reason == 'frame_id_mismatch' and result.detail
    assert pipeline.rejected_frames == {'frame_id_mismatch': 1}
    _check_untouched(pipeline, 0)
    assert pipeline.process(_frame(T0, 'L', 330.0), _frame(T0, 'R', 317.5), image, image,
                            ('L', 'R')).accepted


def test_a_stamp_far_back_starts_a_new_sequence_a_near_one_is_refused():
    pipeline = StereoPipeline(_rig(), None, MinHitsFilter(3))
    image = _image()
    t = T0 + 5 * 10 ** 9
    for i in range(4):
        result = pipeline.process(_frame(t + i * PERIOD_NS, 'L', 330.0 + i),
                                  _frame(t + i * PERIOD_NS, 'R', 317.5 + i), image, image)
    assert [x.id for x in result.tracks] == [1] and not result.restarted
    near = pipeline.process(_frame(t, 'L', 330.0), _frame(t, 'R', 317.5), image, image)
    assert not near.accepted and near.reason == 'stamp_not_increasing'
    # a bag played again from its start: more than TIME_JUMP_RESET_NS back
    again = pipeline.process(_frame(T0, 'L', 330.0), _frame(T0, 'R', 317.5), image, image)
    assert again.accepted and again.restarted and again.tracks == []
    assert pipeline.frames == 1 and pipeline.left_tracker.last_stamp_ns == T0


_CROP_UNDER_MEMORY_LIMIT = """
import resource, sys
import numpy as np
from persistence_ros.pipeline import crop_box
image = np.full((480, 640, 3), 77, np.uint8)
with open('/proc/self/status') as status:
    vm = [int(line.split()[1]) * 1024 for line in status if line.startswith('VmSize')][0]
resource.setrlimit(resource.RLIMIT_AS, (vm + 512 * 2 ** 20, resource.RLIM_INFINITY))
crop = crop_box(image, (320.0, 240.0, 1e5, 40.0))
assert crop.shape == (64, 64, 3) and np.all(crop == 77), crop.shape
print('ok')
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc, sets RLIMIT_AS')
def test_crop_of_a_huge_box_needs_memory_bounded_by_the_image():
    import cv2
    # beyond MAX_CROP_IMAGE_RATIO the crop is sampled straight at 64 x 64: the same picture
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.stack([xx * 255 // WIDTH, yy * 255 // HEIGHT, (xx + yy) % 256],
                     axis=-1).astype(np.uint8)
    image = cv2.GaussianBlur(image, (0, 0), 8)
    box = (300.0, 200.0, 1800.0, 1800.0)  # side 2700 > 4 x 640
    expected = cv2.resize(cv2.getRectSubPix(image, (2700, 2700), box[:2]), (64, 64),
                          interpolation=cv2.INTER_AREA)
    crop = crop_box(image, box)
    assert crop.shape == (64, 64, 3)
    assert np.abs(crop.astype(int) - expected.astype(int)).mean() < 2.0
    # 1e5 px x 1.5 used to be one 150000 x 150000 x 3 patch (~68 GB): here 512 MB is plenty
    done = subprocess.run([sys.executable, '-c', _CROP_UNDER_MEMORY_LIMIT],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == 'ok', done.stderr[-2000:]


def _check_untouched(pipeline, frames):
    assert pipeline.left_tracker.frames == frames and pipeline.right_tracker.frames == frames
    assert pipeline.frames == frames


@pytest.mark.parametrize('reason, left_stamp, right_stamp, right_image', [
    ('empty_image', 2, 2, np.zeros((0, 0, 3), np.uint8)),
    ('image_size_mismatch', 2, 2, np.zeros((240, 320, 3), np.uint8)),
    ('image_not_rgb', 2, 2, np.zeros((HEIGHT, WIDTH), np.uint8)),
    ('stamp_not_increasing', 2, 0, None),
    ('stamp_not_increasing', 1, 2, None),
])
def test_bad_frame_is_refused_before_either_tracker_moves(reason, left_stamp, right_stamp,
                                                          right_image):
    image = _image()
    if right_image is None:
        right_image = image
    ms = 1_000_000

    def pipeline_after(first_frames):
        p = StereoPipeline(_rig(), None, MinHitsFilter(3))
        for t in first_frames:
            assert p.process(_frame(t * ms, 'L', 330.0), _frame(t * ms, 'R', 317.5),
                             image, image).accepted
        return p

    pipeline = pipeline_after([1])
    result = pipeline.process(_frame(left_stamp * ms, 'L', 331.0),
                              _frame(right_stamp * ms, 'R', 318.5), image, right_image)
    assert not result.accepted and result.reason == reason and result.detail
    assert reason in FRAME_REJECTIONS
    assert pipeline.rejected_frames == {reason: 1}
    _check_untouched(pipeline, 1)
    # The refused frame left no trace: the rest runs as if it had never come.
    reference = pipeline_after([1])
    for t in range(3, 9):
        got = pipeline.process(_frame(t * ms, 'L', 330.0 + t), _frame(t * ms, 'R', 317.5 + t),
                               image, image)
        want = reference.process(_frame(t * ms, 'L', 330.0 + t),
                                 _frame(t * ms, 'R', 317.5 + t), image, image)
        assert got.accepted
        assert [(x.id, x.state, x.frames_observed) for x in got.tracks] == [
            (x.id, x.state, x.frames_observed) for x in want.tracks]
    assert [(x.state, x.frames_observed) for x in got.tracks] == [(PERSISTENT, 7)]


def _feed(pipeline, t0, n, right_dy=0.0, score=0.9, y_m=0.0, until_pair=False):
    """Feed one object at 4 m; return the (id, state, p) of the last or the first pair."""
    result = None
    point = (0.0, y_m, 4.0)
    for i in range(n):
        stamp = t0 + i * PERIOD_NS
        right = _det(point, 'R', str(i), score)
        right = dataclasses.replace(right, center_y=right.center_y + right_dy)
        result = pipeline.process(DetectionFrame(stamp, 'L', [_det(point, 'L', str(i), score)]),
                                  DetectionFrame(stamp, 'R', [right]))
        if until_pair and result.tracks:
            break
    return [(t.id, t.state, t.probability) for t in result.tracks]


# (filter, input that latches a decision, input a fresh filter decides otherwise)
_REUSED = [
    (lambda: MinHitsFilter(5), {'n': 8}, {'n': 8}),
    (lambda: ScoreFilter(), {'n': 8, 'score': 0.55}, {'n': 8, 'score': 0.95}),
    (lambda: StereoConsistencyFilter(), {'n': 8, 'right_dy': 2.5}, {'n': 8}),
    (lambda: GroundPlaneFilter(FLOOR), {'n': 8, 'y_m': 1.5}, {'n': 8, 'y_m': 0.2}),
]


@pytest.mark.parametrize('make, first, second', _REUSED,
                         ids=['min_hits', 'score', 'stereo', 'ground_plane'])
def test_new_pipeline_around_a_used_filter_starts_it_afresh(make, first, second):
    rig = _rig()
    filt = make()
    latched = _feed(StereoPipeline(rig, None, filt), T0, **first)
    assert latched and latched[0][0] == 1 and latched[0][1] != TENTATIVE
    # the node rebuilds the pipeline around the same filter when camera_info changes
    reused = _feed(StereoPipeline(rig, None, filt), 2 * T0, until_pair=True, **second)
    fresh = _feed(StereoPipeline(rig, None, make()), 2 * T0, until_pair=True, **second)
    assert reused == fresh
    assert fresh[0][0] == 1 and fresh[0][1:] != latched[0][1:]
