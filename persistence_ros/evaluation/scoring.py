"""
Score a run (stereo tracks per stamp) against ``truth.json``.

A run is a sequence of ``(stamp_ns, tracks)`` where each track has the fields of
``Track.msg`` as attributes (``persistence_ros.pipeline.PipelineTrack`` or the converted
``TrackArray`` messages): ``id``, ``left_track_id``, ``right_track_id``, ``state``
(a ``TrackState``, its constant or its name), ``probability``, ``frames_observed``,
``decision_frame``, ``position`` (3 floats or None), ``left_detection_id``,
``right_detection_id``.  Everything is joined to the truth through the detection ids.

Definitions (all fractions in [0, 1]):

* tracks: a stereo track's truth label is the majority kind of all detections it used
  (left and right; positive when more than half are ``object``); it is predicted positive
  when it was ever PERSISTENT.  precision / recall / f1 over stereo tracks.
* points: every (stamp, persistent track with a position) is a published point.  A point
  is real when the detections it used at that stamp are ``object`` detections of one object
  (a side without a detection falls back to the other side, then to the track label).
  ``spurious_fraction`` = non-real / published; ``real_kept_fraction`` = (frame, object)
  pairs with an ``object`` detection in both cameras that got a real published point /
  all such pairs; ``rmse_m`` = RMS distance of real points to the object's truth
  ``left_optical`` position at that frame; ``rmse_smoothed_m`` = the same at the same points
  for the position the node draws (``~/points``): the track's smoothed position
  (``smoothed_position``, the Kalman filter's) where it has one, else the raw one
  (``smoothed_scored`` counts the points with a smoothed position; None when none has).
* decision: ``decision_frame`` of each decided track (frames to decision).
* mot: the published (PERSISTENT) 2D tracks per camera, with the boxes of the detections
  they used (from the truth), against the reflection-free ``gt_boxes`` of every frame.
"""

from collections import Counter, defaultdict
import json
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from persistence_ros.evaluation.metrics import MotAccumulator
from persistence_ros.stereo_track import TrackState

CAMERAS = ('left', 'right')


class Truth:
    """Read-only view of a ``truth.json`` with the look-ups the scoring needs."""

    def __init__(self, data: dict):
        self.data = data
        self.detections: Dict[str, dict] = data.get('detections', {})
        self.frames: List[dict] = data.get('frames', [])
        self.frame_of_stamp: Dict[int, int] = {int(f['stamp_ns']): int(f['index'])
                                               for f in self.frames}
        self.objects: Dict[str, dict] = data.get('objects', {})
        self._positions: Dict[Tuple[str, int], np.ndarray] = {}
        for oid, obj in self.objects.items():
            for st in obj.get('states', []):
                self._positions[(oid, int(st['frame']))] = np.asarray(st['left_optical'],
                                                                      dtype=np.float64)

    @classmethod
    def load(cls, path: Union[str, Path]) -> 'Truth':
        """Read a ``truth.json``."""
        with open(path, 'r', encoding='utf-8') as f:
            return cls(json.load(f))

    @property
    def scenario(self) -> str:
        """Return the scenario name."""
        return str(self.data.get('scenario', ''))

    @property
    def seed(self) -> Optional[int]:
        """Return the scene seed."""
        return self.data.get('seed')

    @property
    def ground_plane(self) -> Optional[List[float]]:
        """Return the floor plane ``[a, b, c, d]`` in the left optical frame, if known."""
        return self.data.get('rig', {}).get('ground_plane_left_optical')

    def kind(self, detection_id: str) -> Optional[str]:
        """Return the kind of a detection ('object', 'reflection', ...) or None if unknown."""
        det = self.detections.get(detection_id) if detection_id else None
        return None if det is None else det.get('kind')

    def object_id(self, detection_id: str) -> Optional[str]:
        """Return the object a detection belongs to (None for glare / false positives)."""
        det = self.detections.get(detection_id) if detection_id else None
        return None if det is None else det.get('object_id')

    def position(self, object_id: str, frame: int) -> Optional[np.ndarray]:
        """Return the object's truth position in the left optical frame at a frame."""
        return self._positions.get((object_id, frame))

    def frame(self, stamp_ns: int) -> Optional[int]:
        """Return the frame index of a stamp."""
        return self.frame_of_stamp.get(int(stamp_ns))

    def stereo_object_observations(self) -> set:
        """Return the (frame, object_id) pairs with an ``object`` detection in both cameras."""
        seen = defaultdict(set)
        for det in self.detections.values():
            if det.get('kind') == 'object' and det.get('object_id') is not None:
                seen[(int(det['frame']), det['object_id'])].add(det['camera'])
        return {key for key, cams in seen.items() if {'left', 'right'} <= cams}


def _state(track) -> TrackState:
    return TrackState.parse(track.state)


def _prf(tp: int, fp: int, fn: int) -> Dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {'precision': precision, 'recall': recall, 'f1': f1}


def track_kind_counts(run: Sequence[Tuple[int, Sequence]], truth: Truth) -> Dict[int, Counter]:
    """Return per stereo track id the true kinds of the detections it used, counted."""
    kinds: Dict[int, Counter] = defaultdict(Counter)
    for _, tracks in run:
        for t in tracks:
            kinds.setdefault(t.id, Counter())
            for det_id in (t.left_detection_id, t.right_detection_id):
                kind = truth.kind(det_id)
                if kind is not None:
                    kinds[t.id][kind] += 1
    return kinds


def track_labels(run: Sequence[Tuple[int, Sequence]], truth: Truth) -> Dict[int, Optional[bool]]:
    """
    Return per stereo track id: True (real object), False (transient), None (no truth).

    A track is real when more than half of the detections it used are real objects.
    """
    return labels_from_kind_counts(track_kind_counts(run, truth))


def labels_from_kind_counts(kinds: Dict[int, Counter]) -> Dict[int, Optional[bool]]:
    """Return the ``track_labels`` of already counted kinds (``track_kind_counts``)."""
    labels: Dict[int, Optional[bool]] = {}
    for tid, counter in kinds.items():
        total = sum(counter.values())
        labels[tid] = None if total == 0 else counter['object'] * 2 > total
    return labels


def score_tracks(run: Sequence[Tuple[int, Sequence]], truth: Truth,
                 errors: bool = False) -> Dict[str, float]:
    """
    Return precision / recall / f1 of the PERSISTENT decision per stereo track.

    ``errors``: also list the wrongly decided tracks under ``errors``: per track its
    ``outcome`` ("fp": a transient that was PERSISTENT; "fn": a real track that never was),
    the true ``kinds`` of the detections it used (counted; a mix of kinds means the 2D
    trackers swapped targets), and its last output: ``state``, ``probability``,
    ``frames_observed``, ``decision_frame`` (0: never decided).
    """
    kinds = track_kind_counts(run, truth)
    persistent = set()
    for _, tracks in run:
        persistent.update(t.id for t in tracks if _state(t) == TrackState.PERSISTENT)
    outcomes = {tid: (label, tid in persistent)  # (real, predicted persistent)
                for tid, label in labels_from_kind_counts(kinds).items() if label is not None}
    counts = Counter(outcomes.values())
    tp, fp = counts[(True, True)], counts[(False, True)]
    fn, tn = counts[(True, False)], counts[(False, False)]
    out = _prf(tp, fp, fn)
    out.update({'count': tp + fp + fn + tn, 'tp': tp, 'fp': fp, 'fn': fn, 'tn': tn,
                'unlabelled': len(kinds) - len(outcomes)})
    if errors:
        last = {t.id: t for _, tracks in run for t in tracks}
        out['errors'] = [_error_row(tid, label, kinds[tid], last[tid])
                         for tid, (label, pred) in sorted(outcomes.items()) if label != pred]
    return out


def _error_row(tid: int, real: bool, kinds: Counter, last) -> dict:
    return {'id': tid, 'outcome': 'fn' if real else 'fp',
            'left_track_id': int(last.left_track_id),
            'right_track_id': int(last.right_track_id),
            'kinds': dict(sorted(kinds.items())), 'state': _state(last).label,
            'probability': float(last.probability),
            'frames_observed': int(last.frames_observed),
            'decision_frame': int(last.decision_frame)}


def _point_object(track, truth: Truth, label: Optional[bool]) -> Optional[str]:
    """Return the object id a published point comes from, or None if it is not real."""
    objects = []
    for det_id in (track.left_detection_id, track.right_detection_id):
        kind = truth.kind(det_id)
        if kind is None:
            continue
        if kind != 'object':
            return None
        objects.append(truth.object_id(det_id))
    if objects:
        return objects[0] if len(set(objects)) == 1 else None
    return None if not label else ''  # '' = real by track label, object unknown


def score_points(run: Sequence[Tuple[int, Sequence]], truth: Truth) -> Dict[str, float]:
    """Return published / spurious_fraction / real_kept_fraction / rmse_m of the points."""
    labels = track_labels(run, truth)
    published = spurious = 0
    sq_errors: List[float] = []
    shown: List[float] = []  # squared errors of the drawn (smoothed, else raw) positions
    n_smoothed = 0
    kept = set()
    for stamp, tracks in run:
        frame = truth.frame(stamp)
        for t in tracks:
            if _state(t) != TrackState.PERSISTENT or t.position is None:
                continue
            published += 1
            obj = _point_object(t, truth, labels.get(t.id))
            if obj is None:
                spurious += 1
                continue
            if obj and frame is not None:
                kept.add((frame, obj))
                ref = truth.position(obj, frame)
                if ref is not None:
                    sq_errors.append(float(np.sum((np.asarray(t.position) - ref) ** 2)))
                    smoothed = getattr(t, 'smoothed_position', None)
                    n_smoothed += smoothed is not None
                    shown.append(sq_errors[-1] if smoothed is None
                                 else float(np.sum((np.asarray(smoothed) - ref) ** 2)))
    observable = truth.stereo_object_observations()
    return {
        'published': published,
        'spurious_fraction': spurious / published if published else 0.0,
        'real_kept_fraction': len(kept & observable) / len(observable) if observable else 0.0,
        'rmse_m': math.sqrt(float(np.mean(sq_errors))) if sq_errors else None,
        'rmse_smoothed_m': math.sqrt(float(np.mean(shown))) if n_smoothed else None,
        'real_points_scored': len(sq_errors),
        'smoothed_scored': n_smoothed,
        'observable': len(observable),
    }


def score_decisions(run: Sequence[Tuple[int, Sequence]]) -> Dict[str, float]:
    """Return median / p90 frames to decision of the decided stereo tracks."""
    decided: Dict[int, int] = {}
    seen = set()
    for _, tracks in run:
        for t in tracks:
            seen.add(t.id)
            if _state(t) != TrackState.TENTATIVE and t.decision_frame > 0:
                decided.setdefault(t.id, int(t.decision_frame))
    frames = np.array(list(decided.values()), dtype=np.float64)
    return {
        'median_frames': float(np.median(frames)) if frames.size else None,
        'p90_frames': float(np.percentile(frames, 90)) if frames.size else None,
        'decided': int(frames.size),
        'undecided': len(seen) - int(frames.size),
    }


def score_mot(run: Sequence[Tuple[int, Sequence]], truth: Truth,
              cameras: Iterable[str] = CAMERAS) -> Dict[str, dict]:
    """Return MOT metrics per camera of the published 2D tracks (see the module docstring)."""
    by_stamp: Dict[int, Sequence] = {int(s): tracks for s, tracks in run}
    gt_boxes = truth.data.get('gt_boxes', {})
    out = {}
    for cam in cameras:
        acc = MotAccumulator(box_format='cxcywh')
        gt_cam = gt_boxes.get(cam, {})
        for frame in truth.frames:
            gts = gt_cam.get(str(frame['index']), [])
            tr_ids, tr_boxes = [], []
            for t in by_stamp.get(int(frame['stamp_ns']), []):
                det_id = getattr(t, f'{cam}_detection_id')
                det = truth.detections.get(det_id) if det_id else None
                if _state(t) != TrackState.PERSISTENT or det is None:
                    continue
                tid = getattr(t, f'{cam}_track_id')
                if tid in tr_ids:  # one 2D track in two stereo tracks: count it once
                    continue
                tr_ids.append(tid)
                tr_boxes.append(det['box'])
            acc.add_frame([g['object_id'] for g in gts], [g['box'] for g in gts],
                          tr_ids, tr_boxes)
        out[cam] = acc.compute()
    return out


def score_run(run: Sequence[Tuple[int, Sequence]], truth: Truth, filter_name: str,
              package_version: str = '', errors: bool = False) -> dict:
    """
    Return the full metrics dictionary (the JSON written by ``evaluate``).

    ``errors``: also list the wrongly decided tracks under ``tracks.errors`` (``score_tracks``).
    """
    mot = score_mot(run, truth)
    left = mot['left']
    return {
        'tracks': score_tracks(run, truth, errors),
        'points': score_points(run, truth),
        'decision': score_decisions(run),
        'mot': {'hota': left['hota'], 'mota': left['mota'], 'idf1': left['idf1'],
                'camera': 'left', 'per_camera': mot},
        'run': {'scenario': truth.scenario, 'seed': truth.seed, 'filter': filter_name,
                'package_version': package_version, 'frames': len(run)},
    }
