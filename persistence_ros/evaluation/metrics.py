"""
MOT metrics (HOTA, MOTA, IDF1) computed by ``trackeval`` from plain arrays.

``trackeval``'s own MOTChallenge loader applies a preprocessing step that removes
tracker boxes matched to distractor classes (class 12 is ``reflection``), which would
hide exactly the errors this package is about.  This wrapper bypasses the loaders: it
builds the per-timestep arrays (ground-truth ids, tracker ids, IoU similarity matrix)
itself and calls the metric classes directly, so every tracker box that matches no
ground truth counts as a false positive.

The only preprocessing applied is the one the MOTChallenge 2015 devkit applies
(``trackeval`` with ``BENCHMARK='MOT15'``): ground-truth rows whose confidence column is
0 ("zero marked") are ignored; callers do that by not passing those rows.  With this,
the wrapper reproduces the official devkit numbers on the MOT15 sequences shipped with
``motmetrics`` (see ``test/test_metrics.py``).

All scores are fractions in [0, 1] (not percent).
"""

from dataclasses import dataclass, field
from typing import Dict, Hashable, List, Sequence

import numpy as np
from trackeval.datasets._base_dataset import _BaseDataset
from trackeval.metrics import CLEAR, HOTA, Identity

_QUIET = {'PRINT_CONFIG': False, 'THRESHOLD': 0.5}


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray, box_format: str = 'cxcywh') -> np.ndarray:
    """
    Return the IoU matrix (len(a), len(b)) of two box arrays.

    ``box_format`` is ``'cxcywh'`` (centre and size, the package convention),
    ``'xywh'`` (top-left corner and size, MOTChallenge files) or ``'xyxy'``.
    """
    a = _to_xyxy(boxes_a, box_format)
    b = _to_xyxy(boxes_b, box_format)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    return _BaseDataset._calculate_box_ious(a, b, box_format='x0y0x1y1')


def _to_xyxy(boxes: np.ndarray, box_format: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if box_format == 'xyxy':
        return boxes.copy()
    if box_format == 'xywh':
        return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    if box_format == 'cxcywh':
        half = 0.5 * boxes[:, 2:]
        return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)
    raise ValueError(f'unknown box format {box_format!r}')


@dataclass
class MotAccumulator:
    """
    Collect one sequence frame by frame and compute HOTA / CLEAR / Identity metrics.

    Ids may be any hashable values (strings, ints); they are relabelled to contiguous
    integers as ``trackeval`` requires.  Every frame of the sequence should be added,
    including frames without ground truth or tracker boxes.
    """

    box_format: str = 'cxcywh'
    _gt_ids: List[List[Hashable]] = field(default_factory=list)
    _tracker_ids: List[List[Hashable]] = field(default_factory=list)
    _similarity: List[np.ndarray] = field(default_factory=list)

    def add_frame(self, gt_ids: Sequence[Hashable], gt_boxes, tracker_ids: Sequence[Hashable],
                  tracker_boxes) -> None:
        """Add one frame given boxes; the similarity is their IoU."""
        sim = box_iou(np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4),
                      np.asarray(tracker_boxes, dtype=np.float64).reshape(-1, 4),
                      self.box_format)
        self.add_frame_similarity(gt_ids, tracker_ids, sim)

    def add_frame_similarity(self, gt_ids: Sequence[Hashable], tracker_ids: Sequence[Hashable],
                             similarity: np.ndarray) -> None:
        """Add one frame given a (len(gt_ids), len(tracker_ids)) similarity matrix."""
        gt_ids = list(gt_ids)
        tracker_ids = list(tracker_ids)
        similarity = np.asarray(similarity, dtype=np.float64).reshape(len(gt_ids),
                                                                      len(tracker_ids))
        if len(set(gt_ids)) != len(gt_ids) or len(set(tracker_ids)) != len(tracker_ids):
            raise ValueError('ids must be unique within a frame')
        self._gt_ids.append(gt_ids)
        self._tracker_ids.append(tracker_ids)
        self._similarity.append(similarity)

    @property
    def num_frames(self) -> int:
        """Return the number of frames added."""
        return len(self._gt_ids)

    def trackeval_data(self) -> dict:
        """Return the sequence in the dictionary layout ``trackeval`` metrics consume."""
        gt_map: Dict[Hashable, int] = {}
        tr_map: Dict[Hashable, int] = {}
        gt_ids_t, tr_ids_t = [], []
        for gt_ids, tr_ids in zip(self._gt_ids, self._tracker_ids):
            gt_ids_t.append(np.array([gt_map.setdefault(i, len(gt_map)) for i in gt_ids],
                                     dtype=int))
            tr_ids_t.append(np.array([tr_map.setdefault(i, len(tr_map)) for i in tr_ids],
                                     dtype=int))
        return {
            'num_timesteps': len(gt_ids_t),
            'num_gt_ids': len(gt_map),
            'num_tracker_ids': len(tr_map),
            'num_gt_dets': int(sum(len(x) for x in gt_ids_t)),
            'num_tracker_dets': int(sum(len(x) for x in tr_ids_t)),
            'gt_ids': gt_ids_t,
            'tracker_ids': tr_ids_t,
            'similarity_scores': list(self._similarity),
            'seq': 'sequence',
        }

    def compute(self) -> Dict[str, float]:
        """
        Return the metrics of the sequence (fractions in [0, 1] and integer counts).

        Keys: ``hota``, ``deta``, ``assa``, ``loca`` (averaged over the HOTA alpha
        thresholds), ``mota``, ``motp``, ``idf1``, ``idp``, ``idr``, ``tp``, ``fp``, ``fn``,
        ``id_switches``, ``num_gt_dets``, ``num_tracker_dets``, ``num_gt_ids``,
        ``num_tracker_ids``, ``num_frames``.
        """
        data = self.trackeval_data()
        hota = HOTA().eval_sequence(data)
        clear = CLEAR(dict(_QUIET)).eval_sequence(data)
        ident = Identity(dict(_QUIET)).eval_sequence(data)
        if data['num_gt_dets'] == 0 or data['num_tracker_dets'] == 0:
            # trackeval's early exits leave the derived fields at 0; set them explicitly:
            # perfect when both are empty, 0 otherwise (MOTA is undefined without ground truth).
            both_empty = data['num_gt_dets'] == data['num_tracker_dets'] == 0
            clear['MOTA'] = 1.0 if both_empty else 0.0
            ident['IDF1'] = 1.0 if both_empty else 0.0
            hota['HOTA'] = np.full_like(hota['HOTA'], ident['IDF1'])
        return {
            'hota': float(np.mean(hota['HOTA'])),
            'deta': float(np.mean(hota['DetA'])),
            'assa': float(np.mean(hota['AssA'])),
            'loca': float(np.mean(hota['LocA'])),
            'mota': float(clear['MOTA']),
            'motp': float(clear['MOTP']),
            'idf1': float(ident['IDF1']),
            'idp': float(ident['IDP']),
            'idr': float(ident['IDR']),
            'tp': int(clear['CLR_TP']),
            'fp': int(clear['CLR_FP']),
            'fn': int(clear['CLR_FN']),
            'id_switches': int(clear['IDSW']),
            'num_gt_dets': data['num_gt_dets'],
            'num_tracker_dets': data['num_tracker_dets'],
            'num_gt_ids': data['num_gt_ids'],
            'num_tracker_ids': data['num_tracker_ids'],
            'num_frames': data['num_timesteps'],
        }
