"""Issue 22: bounds on what an input can grow, stamp faults, calibration faults (pure core)."""

from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from persistence_ros.baselines import MinHitsFilter, NoFilter
from persistence_ros.calibration import CAMERA_INFO_STABLE, CameraCalibration, \
    CameraInfoMonitor, StereoCalibration
from persistence_ros.detections import Detection, DetectionFrame
from persistence_ros.gbdt import GbdtFilter
from persistence_ros.image_codec import decode_image, encode_image, ImageEncodingError
from persistence_ros.pipeline import DETECTION_REJECTIONS, StereoPipeline, TRACK_REJECTIONS
from persistence_ros.settings import PipelineConfig, Settings
from persistence_ros.stamp_gate import STAMP_REJECTIONS, StampGate, TIME_JUMP_CONFIRM

W, H, F, BASE = 320, 240, 300.0, 0.1
T0, PERIOD = 10 ** 12, 33_000_000
S = 10 ** 9


def _rig(width=W, height=H, tx=-F * BASE):
    k = [F, 0.0, width / 2, 0.0, F, height / 2, 0.0, 0.0, 1.0]
    p = k[:3] + [0.0] + k[3:6] + [0.0] + k[6:] + [0.0]
    right = list(p)
    right[3] = tx
    return StereoCalibration(CameraCalibration(width, height, k, [], P=p),
                             CameraCalibration(width, height, k, [], P=right))


def _frames(i, left_dets, right_dets=()):
    stamp = T0 + i * PERIOD
    return (DetectionFrame(stamp, 'L', list(left_dets)),
            DetectionFrame(stamp, 'R', list(right_dets)))


def _pipeline(filt=None, **pipeline):
    settings = Settings(pipeline=PipelineConfig(**pipeline))
    return StereoPipeline(_rig(), settings, filt or MinHitsFilter(3))


def _grid(n, score=0.9, prefix='d', size=6.0):
    """Return n non-overlapping boxes on a grid."""
    return [Detection(8.0 + 12.0 * (k % 25), 8.0 + 12.0 * (k // 25), size, size,
                      score, '', f'{prefix}{k}') for k in range(n)]


# -- detections ------------------------------------------------------------------------------

def test_excess_detections_are_dropped_lowest_score_first_and_counted():
    pipeline = _pipeline(max_detections=10)
    dets = [replace(d, score=0.5 + 0.02 * k) for k, d in enumerate(_grid(20))]
    result = pipeline.process(*_frames(0, dets))
    assert result.rejected_detections == {'too_many_detections': 10}
    kept = {t.history[-1].detection_id for t in pipeline.left_tracker.tracks}
    assert kept == {f'd{k}' for k in range(10, 20)}   # the ten highest scores
    assert set(result.rejected_detections) <= set(DETECTION_REJECTIONS)


def test_duplicate_ids_keep_the_highest_score_and_empty_ids_are_legal():
    pipeline = _pipeline()
    dets = [Detection(20, 20, 8, 8, 0.6, '', 'a'), Detection(60, 20, 8, 8, 0.9, '', 'a'),
            Detection(100, 20, 8, 8, 0.7, '', ''), Detection(140, 20, 8, 8, 0.8, '', ''),
            Detection(180, 20, 8, 8, 0.9, '', 'b')]
    result = pipeline.process(*_frames(0, dets))
    assert result.rejected_detections == {'duplicate_id': 1}
    boxes = sorted(t.history[-1].box[0] for t in pipeline.left_tracker.tracks)
    assert boxes == [60, 100, 140, 180]   # the 0.6 'a' went; both empty ids stay


def test_an_overlong_id_drops_its_detection():
    pipeline = _pipeline(max_id_length=16)
    result = pipeline.process(*_frames(0, [Detection(20, 20, 8, 8, 0.9, '', 'x' * 100_000),
                                           Detection(60, 20, 8, 8, 0.9, '', 'y' * 16)]))
    assert result.rejected_detections == {'id_too_long': 1}
    assert [t.history[-1].detection_id for t in pipeline.left_tracker.tracks] == ['y' * 16]


def test_live_2d_and_stereo_tracks_are_bounded_and_counted():
    pipeline = _pipeline(max_tracks=30, max_stereo_tracks=5)
    dets = _grid(40)
    # the same boxes on both sides shifted by a disparity: every one pairs
    right = [replace(d, center_x=d.center_x - 10.0, id='r' + d.id) for d in dets]
    rejected = Counter()
    for i in range(6):
        result = pipeline.process(*_frames(i, dets, right))
        rejected.update(result.rejections())
        assert len(pipeline.left_tracker.tracks) <= 30
        assert len(pipeline.right_tracker.tracks) <= 30
        assert len(result.tracks) <= 5
    assert rejected['too_many_tracks'] == 2 * 10 * 6   # 10 per side and frame, untracked
    assert rejected['too_many_stereo_tracks'] > 0 and len(result.tracks) == 5
    assert set(rejected) <= set(TRACK_REJECTIONS)
    # when tracks end, everything they held goes and new ones start again
    for i in range(6, 6 + 32):
        pipeline.process(*_frames(i, []))
    assert not pipeline.left_tracker.tracks and not pipeline._records


def test_a_5000_box_message_costs_no_more_than_the_bounds():
    pipeline = _pipeline(NoFilter())
    dets = [Detection(float(x), float(y), 5.0, 5.0, 0.9, '', f'f{k}') for k, (x, y) in
            enumerate(np.random.default_rng(0).uniform(0, 240, (5000, 2)))]
    result = pipeline.process(*_frames(0, dets))
    assert result.rejected_detections['too_many_detections'] == 4900
    assert len(pipeline.left_tracker.tracks) <= 100


def test_crops_only_for_matched_observations_of_filters_that_read_them():
    image = np.full((H, W, 3), 90, np.uint8)
    box = [Detection(100, 100, 20, 20, 0.9, '', 'a')]
    for filt, expect in ((MinHitsFilter(3), None), (GbdtFilter(), 'statistics'),
                         (_CropReader(), 'crop')):
        pipeline = StereoPipeline(_rig(), Settings(), filt)
        pipeline.process(*_frames(0, box), image, image)
        pipeline.process(*_frames(1, []), image, image)   # missed: no crop for a prediction
        matched, missed = pipeline.left_tracker.tracks[0].history
        assert missed.crop is None and missed.crop_stats is None
        if expect is None:
            assert matched.crop is None and matched.crop_stats is None
        elif expect == 'statistics':
            assert matched.crop is None and len(matched.crop_stats) == 3
        else:
            assert matched.crop.shape == (64, 64, 3)


class _CropReader(NoFilter):
    uses_images = True


def test_gbdt_features_are_the_same_from_statistics_as_from_crops():
    from persistence_ros.appearance import crop_statistics
    from persistence_ros.gbdt import track_features
    from persistence_ros.stereo_track import StereoTrackHistory
    from persistence_ros.tracking import TrackObservation
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    with_crops = [TrackObservation((10, 10, 5, 5), 0.9, k, '', True, crop=c)
                  for k, c in enumerate(crops)]
    with_stats = [TrackObservation((10, 10, 5, 5), 0.9, k, '', True,
                                   crop_stats=crop_statistics(c)) for k, c in enumerate(crops)]
    a = track_features(StereoTrackHistory(1, 1, 1, with_crops, with_crops, frames_observed=4))
    b = track_features(StereoTrackHistory(1, 1, 1, with_stats, with_stats, frames_observed=4))
    np.testing.assert_array_equal(a, b)


def test_image_data_must_be_exactly_step_times_height():
    fields = encode_image(np.zeros((4, 5, 3), np.uint8), 'rgb8')
    decode_image(4, 5, 'rgb8', False, fields.step, fields.data)
    for data in (fields.data + b'\0' * 7, fields.data[:-1]):
        with pytest.raises(ImageEncodingError) as error:
            decode_image(4, 5, 'rgb8', False, fields.step, data)
        assert error.value.reason == 'bad_image_layout'
    with pytest.raises(ImageEncodingError) as error:
        decode_image(4, 5, 'yuv422', False, 10, bytes(40))
    assert error.value.reason == 'unsupported_image'


# -- stamps ----------------------------------------------------------------------------------

def _t(ns):
    return SimpleNamespace(sec=ns // S, nanosec=ns % S)


def _offer(gate, index, ns, now=None):
    return gate.offer(index, _t(ns), (index, ns), now)


def test_a_lone_out_of_order_or_absurd_stamp_is_refused_without_a_reset():
    gate = StampGate(4)
    for k in range(5):
        for i in range(4):
            assert _offer(gate, i, T0 + k * PERIOD).release == [(i, (i, T0 + k * PERIOD))]
    # stamp 0 on one topic, then that topic goes on: held, then refused, nothing reset
    held = _offer(gate, 2, 0)
    assert held.release == [] and not held.rejected and gate.held == 1
    back = _offer(gate, 2, T0 + 5 * PERIOD)
    assert back.rejected == {'stamp_jumped_back': 1} and not back.reset
    assert back.release == [(2, (2, T0 + 5 * PERIOD))] and gate.held == 0
    # a whole set stamped a day ahead, twice: never released, refused once the stream goes on
    day = 86_400 * S
    for k in range(2):
        for i in range(4):
            assert _offer(gate, i, T0 + day + k * PERIOD).release == []
    rejected = Counter()
    for i in range(4):
        verdict = _offer(gate, i, T0 + 6 * PERIOD)
        rejected.update(verdict.rejected)
        assert not verdict.reset
    assert rejected == {'stamp_jumped_ahead': 8} and gate.resets == 0
    assert gate.timeline_ns == T0 + 6 * PERIOD


def test_a_stamp_ahead_of_the_clock_is_refused_and_invalid_stamps_too():
    gate = StampGate(2, max_ahead_ns=2 * S)
    assert _offer(gate, 0, T0, now=T0).release
    assert _offer(gate, 1, T0 + 86_400 * S, now=T0).rejected == {'stamp_in_future': 1}
    assert gate.offer(0, SimpleNamespace(sec=1000, nanosec=2 * S), 'x').rejected == {
        'stamp_invalid': 1}
    assert gate.offer(0, SimpleNamespace(sec=-1, nanosec=0), 'x').rejected == {
        'stamp_invalid': 1}
    assert set(STAMP_REJECTIONS) >= {'stamp_in_future', 'stamp_invalid'}
    assert gate.timeline_ns == T0   # nothing refused moved the timeline


def test_every_input_jumping_back_resets_once_and_loses_nothing():
    gate = StampGate(3)
    for k in range(10):
        for i in range(3):
            _offer(gate, i, T0 + k * PERIOD)
    released, resets = [], 0
    for k in range(TIME_JUMP_CONFIRM + 2):   # the bag plays again from its start
        for i in range(3):
            verdict = _offer(gate, i, T0 - 60 * S + k * PERIOD)
            assert not verdict.rejected
            resets += verdict.reset
            released += [m for _, m in verdict.release]
    assert resets == 1 and gate.resets == 1
    assert sorted(released) == sorted((i, T0 - 60 * S + k * PERIOD)
                                      for k in range(TIME_JUMP_CONFIRM + 2) for i in range(3))


def test_a_future_stamped_set_without_a_clock_causes_no_reset_at_all():
    gate = StampGate(2)
    for k in range(5):
        for i in range(2):
            _offer(gate, i, T0 + k * PERIOD)
    for i in range(2):
        assert _offer(gate, i, T0 + 86_400 * S).release == []
    resets = 0
    for k in range(5, 20):
        for i in range(2):
            verdict = _offer(gate, i, T0 + k * PERIOD)
            resets += verdict.reset
            assert verdict.release
    assert resets == 0 and gate.switches == 0


def test_the_pipeline_restarts_only_when_both_stamps_jumped_back():
    pipeline = _pipeline()
    box = [Detection(100, 100, 10, 10, 0.9, '', 'a')]
    for i in range(3):
        assert pipeline.process(*_frames(i, box, box)).accepted
    left, right = _frames(5, box, box)
    lone = pipeline.process(replace(left, stamp_ns=left.stamp_ns - 60 * S), right)
    assert not lone.accepted and lone.reason == 'stamp_not_increasing' and not lone.restarted
    assert pipeline.left_tracker.tracks   # nothing was reset
    both = pipeline.process(replace(left, stamp_ns=left.stamp_ns - 60 * S),
                            replace(right, stamp_ns=right.stamp_ns - 60 * S))
    assert both.accepted and both.restarted


# -- calibration -----------------------------------------------------------------------------

def _info(calibration: CameraCalibration):
    return SimpleNamespace(
        header=SimpleNamespace(frame_id='f'), k=calibration.K.reshape(-1).tolist(),
        d=calibration.D.tolist(), r=calibration.R.reshape(-1).tolist(),
        p=calibration.P.reshape(-1).tolist(), width=calibration.width,
        height=calibration.height, distortion_model=calibration.distortion_model,
        binning_x=0, binning_y=0, roi=SimpleNamespace(width=0, height=0))


def test_camera_info_that_keeps_changing_is_held_off_and_a_recalibration_is_taken():
    rig = _rig()
    monitor = CameraInfoMonitor()
    assert monitor.offer('left', _info(rig.left)).calibration is None
    first = monitor.offer('right', _info(rig.right)).calibration
    assert first is not None and monitor.current is first
    # P changes on every message: refused, the first calibration stays
    reasons = Counter()
    for k in range(20):
        moved = replace(rig.left, P=rig.left.P + [[0, 0, 0.1 * (k + 1), 0], [0] * 4, [0] * 4])
        update = monitor.offer('left', _info(moved))
        assert update.calibration is None
        reasons[update.reason] += 1
    assert reasons['camera_info_unstable'] == 19 and monitor.current is first
    assert monitor.offer('left', _info(rig.left)).reason == 'camera_info_unstable'
    # a real recalibration: one change, then stable
    recal = replace(rig.right, P=rig.right.P + [[0, 0, 0, -1.0], [0] * 4, [0] * 4])
    updates = [monitor.offer('right', _info(recal)) for _ in range(CAMERA_INFO_STABLE)]
    assert [u.calibration is None for u in updates] == [True] * (CAMERA_INFO_STABLE - 1) + [
        False]
    assert updates[-1].recalibrated and not any(u.reason for u in updates)
    assert np.allclose(monitor.current.right.P, recal.P) and monitor.recalibrations == 1


def test_camera_info_of_another_size_than_the_images_is_held_off():
    rig, big = _rig(), _rig(2 * W, 2 * H)
    monitor = CameraInfoMonitor()
    monitor.offer('left', _info(rig.left))
    first = monitor.offer('right', _info(rig.right)).calibration
    monitor.observe_image('left', W + 1, H)   # one odd image: the size is not known
    for _ in range(CAMERA_INFO_STABLE - 1):
        monitor.observe_image('left', W, H)
    assert monitor.image_size('left') is None
    monitor.observe_image('left', W, H)
    assert monitor.image_size('left') == (W, H)
    for _ in range(2 * CAMERA_INFO_STABLE):
        update = monitor.offer('left', _info(big.left))
        assert update.reason == 'camera_info_size_mismatch' and update.calibration is None
    assert monitor.current is first


def test_a_camera_info_pair_without_baseline_is_refused():
    rig = _rig()
    monitor = CameraInfoMonitor()
    monitor.offer('left', _info(rig.left))
    monitor.offer('right', _info(rig.right))
    flat = replace(rig.right, P=np.hstack([rig.right.P[:, :3], np.zeros((3, 1))]))
    updates = [monitor.offer('right', _info(flat)) for _ in range(CAMERA_INFO_STABLE)]
    assert updates[-1].reason == 'bad_camera_info' and monitor.current.right.P[0, 3] != 0.0
    uncalibrated = _info(rig.left)
    uncalibrated.k = [0.0] * 9
    assert monitor.offer('left', uncalibrated).reason == 'uncalibrated_camera_info'
