"""Reproduce the official MOT15 devkit numbers with the trackeval array wrapper."""

import importlib.util
import os

import numpy as np
import pytest

from persistence_ros.evaluation.metrics import box_iou, MotAccumulator


def _motmetrics_data_dir():
    spec = importlib.util.find_spec('motmetrics')
    if spec is None or not spec.submodule_search_locations:
        pytest.skip('motmetrics (for its bundled MOT15 data) is not installed')
    # motmetrics itself does not import with numpy 2: only its data files are used.
    return os.path.join(list(spec.submodule_search_locations)[0], 'data')


def _read_mot_txt(path):
    rows = np.loadtxt(path, delimiter=',', ndmin=2)
    return {int(f): rows[rows[:, 0] == f] for f in np.unique(rows[:, 0])}


def _evaluate_mot15(sequence):
    folder = os.path.join(_motmetrics_data_dir(), sequence)
    gt = _read_mot_txt(os.path.join(folder, 'gt.txt'))
    tracker = _read_mot_txt(os.path.join(folder, 'test.txt'))
    acc = MotAccumulator(box_format='xywh')
    empty = np.zeros((0, 10))
    for frame in range(1, max(max(gt), max(tracker)) + 1):
        g = gt.get(frame, empty)
        g = g[g[:, 6] != 0]  # MOT15 devkit: zero-marked gt rows are ignored
        t = tracker.get(frame, empty)
        acc.add_frame(g[:, 1].astype(int), g[:, 2:6], t[:, 1].astype(int), t[:, 2:6])
    return acc.compute()


@pytest.mark.parametrize('sequence, mota, idf1, hota', [
    ('TUD-Campus', 52.65, 55.77, 39.14),
    ('TUD-Stadtmitte', 56.40, 64.46, 39.79),
])
def test_mot15_reference_values(sequence, mota, idf1, hota):
    result = _evaluate_mot15(sequence)
    assert 100.0 * result['mota'] == pytest.approx(mota, abs=0.01)
    assert 100.0 * result['idf1'] == pytest.approx(idf1, abs=0.01)
    assert 100.0 * result['hota'] == pytest.approx(hota, abs=0.01)


def test_unmatched_tracker_boxes_are_false_positives():
    acc = MotAccumulator()
    for _ in range(5):
        # One real object tracked perfectly, plus a 'reflection' track far away.
        acc.add_frame(['obj'], [[100, 100, 20, 20]], [1, 2],
                      [[100, 100, 20, 20], [100, 300, 20, 20]])
    result = acc.compute()
    assert result['fp'] == 5 and result['tp'] == 5 and result['fn'] == 0
    assert result['mota'] == pytest.approx(0.0)
    assert result['idf1'] == pytest.approx(2 * 5 / (10 + 5))
    clean = MotAccumulator()
    for _ in range(5):
        clean.add_frame(['obj'], [[100, 100, 20, 20]], [1], [[100, 100, 20, 20]])
    assert clean.compute()['hota'] == pytest.approx(1.0)
    assert result['hota'] < clean.compute()['hota']


def test_box_iou_formats_agree():
    a = np.array([[10.0, 20.0, 4.0, 6.0]])
    b = np.array([[11.0, 20.0, 4.0, 6.0]])
    iou = box_iou(a, b)[0, 0]
    assert iou == pytest.approx(18.0 / 30.0)
    a_xywh = a.copy()
    a_xywh[:, :2] -= a[:, 2:] / 2
    b_xywh = b.copy()
    b_xywh[:, :2] -= b[:, 2:] / 2
    assert box_iou(a_xywh, b_xywh, 'xywh')[0, 0] == pytest.approx(iou)
    assert box_iou(a, np.zeros((0, 4))).shape == (1, 0)
