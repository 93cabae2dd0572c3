"""Tests of the per-camera 2D tracker."""

import math

import numpy as np
import pytest

from persistence_ros.detections import Detection, DetectionFrame
from persistence_ros.tracking import association_cost, Tracker2D, TrackerConfig

FRAME_NS = 33_333_333


def _frame(index, boxes):
    """Build a DetectionFrame from (cx, cy, w, h, score, id) tuples."""
    dets = [Detection(cx, cy, w, h, score, '', det_id) for cx, cy, w, h, score, det_id in boxes]
    return DetectionFrame(stamp_ns=(index + 1) * FRAME_NS, frame_id='left', detections=dets)


def test_identity_kept_through_occlusion():
    """A moving object unseen for 10 frames keeps its id (and loses it if max_age is short)."""
    def run(max_age):
        tracker = Tracker2D(TrackerConfig(max_age=max_age, min_hits=1))
        ids_seen = set()
        ids_per_frame = []
        for k in range(35):
            occluded = 10 <= k < 20
            x = 100.0 + 6.0 * k
            boxes = [] if occluded else [(x, 200.0, 40.0, 60.0, 0.9, f'o{k}')]
            update = tracker.update(_frame(k, boxes))
            ids_seen.update(t.id for t in update.tracks)
            matched = [t.id for t in update.tracks if t.matched]
            ids_per_frame.append(matched)
        return ids_seen, ids_per_frame

    ids_seen, per_frame = run(max_age=10)
    assert ids_seen == {1}
    assert per_frame[9] == [1] and per_frame[20] == [1] and per_frame[34] == [1]
    assert all(per_frame[k] == [] for k in range(10, 20))
    # Control: the same sequence with max_age 5 loses the identity.
    ids_short, per_frame_short = run(max_age=5)
    assert per_frame_short[20] == [2]
    assert ids_short == {1, 2}


def test_two_crossing_objects_keep_their_ids():
    """Two boxes crossing each other (overlapping at the crossing) keep their ids."""
    tracker = Tracker2D(TrackerConfig(min_hits=1, max_age=5))
    owner = {}
    for k in range(50):
        xa = 100.0 + 8.0 * k
        xb = 500.0 - 8.0 * k
        boxes = [(xa, 200.0, 40.0, 40.0, 0.9, f'a{k}'), (xb, 210.0, 40.0, 40.0, 0.9, f'b{k}')]
        update = tracker.update(_frame(k, boxes))
        assert len(update.tracks) == 2
        for track in update.tracks:
            assert track.matched
            owner.setdefault(track.id, track.detection.id[0])
            assert track.detection.id[0] == owner[track.id], f'id switch at frame {k}'
    assert sorted(owner.items()) == [(1, 'a'), (2, 'b')]


def test_small_boxes_use_centre_distance():
    """Tiny boxes that never overlap from frame to frame are still tracked (centre fallback)."""
    config = TrackerConfig(min_hits=1, small_box_px=16.0, center_radius_px=12.0)
    tracker = Tracker2D(config)
    for k in range(20):
        update = tracker.update(_frame(k, [(50.0 + 7.0 * k, 80.0, 4.0, 4.0, 0.9, f's{k}')]))
    assert [t.id for t in update.tracks] == [1]
    assert update.tracks[0].hits == 20
    # The gate is a real gate: a jump beyond the radius starts a new track.
    update = tracker.update(_frame(20, [(50.0 + 7.0 * 20 + 40.0, 80.0, 4.0, 4.0, 0.9, 'far')]))
    assert sorted(t.id for t in update.tracks) == [1, 2]


def test_association_cost_prefers_iou_and_gates_distance():
    tracks = np.array([[100.0, 100.0, 40.0, 40.0], [300.0, 100.0, 8.0, 8.0]])
    dets = np.array([[105.0, 100.0, 40.0, 40.0], [303.0, 104.0, 8.0, 8.0], [600.0, 0.0, 8, 8]])
    cost = association_cost(tracks, dets, 0.2, 16.0, 20.0)
    iou = (35.0 * 40.0) / (2 * 1600.0 - 35.0 * 40.0)
    assert cost[0, 0] == pytest.approx(1.0 - iou)
    assert cost[1, 1] == pytest.approx(1.0 + 5.0 / 20.0)
    assert cost[1, 2] > 2.0 and cost[0, 2] > 2.0


def test_max_age_ends_track_after_exactly_max_age_misses():
    max_age = 3
    tracker = Tracker2D(TrackerConfig(max_age=max_age, min_hits=1))
    for k in range(5):
        tracker.update(_frame(k, [(100.0, 100.0, 30.0, 30.0, 0.9, f'd{k}')]))
    for miss in range(1, max_age + 1):
        update = tracker.update(_frame(4 + miss, []))
        assert [t.id for t in update.tracks] == [1], f'ended too early at miss {miss}'
        assert update.tracks[0].time_since_update == miss
        assert update.ended == []
    update = tracker.update(_frame(5 + max_age, []))
    assert update.tracks == []
    assert [t.id for t in update.ended] == [1]
    # Ended tracks are reported once only.
    assert tracker.update(_frame(6 + max_age, [])).ended == []


def test_min_hits_confirms_only_after_enough_matches():
    tracker = Tracker2D(TrackerConfig(min_hits=3, max_age=5))
    confirmed = []
    for k in range(5):
        boxes = [] if k == 1 else [(100.0 + k, 100.0, 30.0, 30.0, 0.9, f'd{k}')]
        update = tracker.update(_frame(k, boxes))
        confirmed.append(update.tracks[0].confirmed)
        assert update.tracks[0].age == k
    # Matches at frames 0, 2, 3, 4: the third match (frame 3) confirms.
    assert confirmed == [False, False, False, True, True]
    assert update.tracks[0].hits == 4
    assert [t.id for t in update.confirmed] == [1]


def test_track_ids_never_reused():
    tracker = Tracker2D(TrackerConfig(max_age=0, min_hits=1))
    all_ids = []
    k = 0
    for cycle in range(6):
        update = tracker.update(_frame(k, [(50.0 + 100.0 * cycle, 50.0, 20.0, 20.0, 0.9, 'x')]))
        all_ids += [t.id for t in update.tracks]
        k += 1
        update = tracker.update(_frame(k, []))  # max_age 0: the track ends at its first miss
        assert update.tracks == [] and len(update.ended) == 1
        k += 1
    assert all_ids == [1, 2, 3, 4, 5, 6]


def test_low_score_detections_extend_but_never_start_tracks():
    config = TrackerConfig(high_score=0.6, low_score=0.2, min_hits=1)
    tracker = Tracker2D(config)
    update = tracker.update(_frame(0, [(100.0, 100.0, 30.0, 30.0, 0.4, 'low')]))
    assert update.tracks == []
    update = tracker.update(_frame(1, [(100.0, 100.0, 30.0, 30.0, 0.9, 'high')]))
    assert [t.id for t in update.tracks] == [1]
    for k in range(2, 6):
        update = tracker.update(_frame(k, [(100.0 + k, 100.0, 30.0, 30.0, 0.3, f'l{k}'),
                                           (400.0, 300.0, 30.0, 30.0, 0.3, f'c{k}'),
                                           (700.0, 300.0, 30.0, 30.0, 0.1, f'v{k}')]))
        assert [t.id for t in update.tracks] == [1]
        assert update.tracks[0].matched and update.tracks[0].detection.id == f'l{k}'
    assert update.tracks[0].hits == 5
    assert tracker.ignored_low_score == 4


def test_high_score_detection_wins_over_low_score_one():
    tracker = Tracker2D(TrackerConfig(min_hits=1))
    tracker.update(_frame(0, [(100.0, 100.0, 30.0, 30.0, 0.9, 'h0')]))
    update = tracker.update(_frame(1, [(100.0, 100.0, 30.0, 30.0, 0.3, 'low'),
                                       (104.0, 100.0, 30.0, 30.0, 0.8, 'high')]))
    assert [t.detection.id for t in update.tracks] == ['high']


def test_ring_buffer_never_exceeds_window():
    window = 5
    tracker = Tracker2D(TrackerConfig(min_hits=1, max_age=50), window=window)
    for k in range(30):
        boxes = [] if k % 3 == 0 and k else [(100.0 + k, 100.0, 30.0, 30.0, 0.9, f'd{k}')]
        update = tracker.update(_frame(k, boxes))
        history = update.tracks[0].history
        assert len(history) <= window
        assert history.maxlen == window
    stamps = [obs.stamp_ns for obs in history]
    assert stamps == [(k + 1) * FRAME_NS for k in range(25, 30)]
    by_stamp = {obs.stamp_ns: obs for obs in history}
    missed = by_stamp[28 * FRAME_NS]  # frame index 27 had no detection
    assert not missed.matched and missed.detection_id == '' and missed.crop is None
    hit = by_stamp[29 * FRAME_NS]
    assert hit.matched and hit.detection_id == 'd28' and hit.box == (128.0, 100.0, 30.0, 30.0)


def test_invalid_detections_name_their_problem_and_the_tracker_refuses_them():
    boxes = [(math.nan, 10.0, 5.0, 5.0, 0.9, 'nan'), (10.0, 10.0, 0.0, 5.0, 0.9, 'zero'),
             (10.0, 10.0, -3.0, 5.0, 0.9, 'neg'), (10.0, 10.0, 5.0, 5.0, 1.5, 'score'),
             (10.0, math.inf, 5.0, 5.0, 0.9, 'inf'), (200.0, 200.0, 20.0, 20.0, 0.9, 'ok')]
    problems = [Detection(*b[:5]).problem() for b in boxes]
    assert problems == ['non_finite', 'non_positive_size', 'non_positive_size',
                        'score_out_of_range', 'non_finite', '']
    # the pipeline drops and counts them first; the tracker refuses what it must not get
    tracker = Tracker2D(TrackerConfig(min_hits=1))
    with pytest.raises(ValueError, match='invalid detection'):
        tracker.update(_frame(0, boxes))
    assert tracker.last_stamp_ns is None and not tracker.tracks
    update = tracker.update(_frame(0, boxes[-1:]))
    assert [t.detection.id for t in update.tracks] == ['ok']


def test_out_of_order_stamps_are_refused():
    tracker = Tracker2D(TrackerConfig(min_hits=1))
    box = [(100.0, 100.0, 30.0, 30.0, 0.9, 'a')]
    tracker.update(DetectionFrame(200, 'cam', [Detection(*box[0][:5])]))
    for stamp in (150, 200):
        with pytest.raises(ValueError, match='not after the last one'):
            tracker.update(DetectionFrame(stamp, 'cam', [Detection(*box[0][:5])]))
    assert tracker.tracks[0].hits == 1 and tracker.tracks[0].age == 0
    later = tracker.update(DetectionFrame(300, 'cam', [Detection(*box[0][:5])]))
    assert later.tracks[0].hits == 2
    assert [o.stamp_ns for o in later.tracks[0].history] == [200, 300]


@pytest.mark.parametrize('kwargs, message', [
    ({'max_age': -1}, 'max_age must be an integer >= 0, got -1'),
    ({'min_hits': 0}, 'min_hits must be an integer >= 1'),
    ({'high_score': 1.2}, 'high_score must be a number in [0, 1]'),
    ({'low_score': 0.8, 'high_score': 0.5}, 'low_score must be <= high_score'),
    ({'center_radius_px': 0.0}, 'center_radius_px must be a finite number > 0'),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError) as info:
        TrackerConfig(**kwargs)
    assert message in str(info.value)


def test_window_must_be_a_positive_integer():
    with pytest.raises(ValueError, match='window must be an integer >= 1'):
        Tracker2D(TrackerConfig(), window=0)


def test_history_boxes_are_the_matched_detections_as_plain_floats():
    tracker = Tracker2D(TrackerConfig(min_hits=1))
    for k in range(3):
        det = Detection(center_x=np.float32(50.5 + k), center_y=np.float64(20.0), width=8,
                        height=np.float32(12.25), score=0.9, id=f'd{k}')
        update = tracker.update(DetectionFrame(stamp_ns=k + 1, frame_id='cam', detections=[det]))
    (track,) = update.tracks
    assert [o.box for o in track.history] == [(50.5 + k, 20.0, 8.0, 12.25) for k in range(3)]
    assert all(type(v) is float for o in track.history for v in o.box)


def test_batched_kalman_steps_equal_the_single_filter_equations():
    # predict_all / update_all run every track's filter in one stacked numpy step; each
    # filter's numbers must be bit for bit those of its own 8-state equations.
    from persistence_ros.tracking import _BoxKalman
    config = TrackerConfig()
    rng = np.random.default_rng(3)
    f_mat = np.eye(8)
    f_mat[:4, 4:] = np.eye(4)
    h_mat = np.eye(4, 8)

    def scale(x):
        size = np.maximum(x[2:4], config.min_noise_px)
        return np.array([size[0], size[1], size[0], size[1]])

    for _ in range(20):
        n = int(rng.integers(1, 40))
        filters = [_BoxKalman(tuple(rng.uniform([0, 0, 0.5, 0.5], [640, 480, 80, 80])), config)
                   for _ in range(n)]
        for f in filters:  # a few steps' worth of velocity and covariance
            f.x[4:] = rng.normal(0.0, 3.0, 4)
            f.x[2] = rng.choice([0.3, f.x[2]])  # sizes below a pixel get clamped
            f.P = f.P + 0.1 * np.abs(rng.normal(size=(8, 8)))
        expected = []
        for f in filters:
            s = scale(f.x)
            q = np.concatenate([config.position_noise * s, config.velocity_noise * s])
            x = f_mat @ f.x
            cov = f_mat @ f.P @ f_mat.T + np.diag(np.square(q))
            for i in (2, 3):
                if x[i] < 1.0:
                    x[i], x[i + 4] = 1.0, 0.0
            expected.append((x, cov))
        _BoxKalman.predict_all(filters)
        for f, (x, cov) in zip(filters, expected):
            assert np.array_equal(f.x, x) and np.array_equal(f.P, cov)
        boxes = [tuple(rng.uniform([0, 0, 1, 1], [640, 480, 80, 80])) for _ in filters]
        expected = []
        for f, box in zip(filters, boxes):
            r = np.diag(np.square(config.measurement_noise * scale(f.x)))
            s = h_mat @ f.P @ h_mat.T + r
            gain = np.linalg.solve(s, h_mat @ f.P).T
            x = f.x + gain @ (np.asarray(box) - h_mat @ f.x)
            cov = (np.eye(8) - gain @ h_mat) @ f.P
            x[2:4] = np.maximum(x[2:4], 1.0)
            expected.append((x, cov))
        _BoxKalman.update_all(filters, boxes)
        for f, (x, cov) in zip(filters, expected):
            assert np.array_equal(f.x, x) and np.array_equal(f.P, cov)
