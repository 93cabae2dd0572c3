"""
Online multi-object 2D tracker for one camera (SORT / ByteTrack style).

Every frame the constant-velocity Kalman filter of each track predicts its box, then detections
are assigned to tracks in two stages (ByteTrack): high-score detections against all tracks,
then low-score detections against the tracks left over. Only unmatched high-score detections
start new tracks. The assignment is Hungarian (``scipy.optimize.linear_sum_assignment``) on a
cost built from IoU, with a centre-distance fallback for small or non-overlapping boxes.
When the caller passes colour descriptors of the detections (``persistence_ros.appearance``),
a track only matches a detection whose colour histogram is within ``appearance_gate`` of the
track's (an exponential moving average of its matched detections): at the 8-20 pixel boxes of
glare and reflections, position alone hands an object's track to the glare it passes.

Memory is bounded: each track keeps its last ``window`` observations (``Tracker2D``'s
argument; the pipeline passes ``pipeline.window``) in a
``collections.deque(maxlen=window)``; at most ``max_tracks`` tracks live at once (the
pipeline passes ``pipeline.max_tracks``): unmatched high-score detections start tracks
highest score first while there is room, the others start none (``TrackerUpdate.refused``);
ended tracks are handed out once (``TrackerUpdate.ended``) and then forgotten.

Semantics of the counters (all in frames, i.e. calls of ``Tracker2D.update``):

* ``hits``: frames in which the track was matched to a detection (its birth counts as one);
  a track is ``confirmed`` once ``hits >= min_hits`` and stays confirmed.
* ``age``: frames since birth (0 in the frame that created it).
* ``time_since_update``: frames since the last match (0 when matched in this frame).
* A track survives ``max_age`` consecutive missed frames; it ends at the update that makes
  ``time_since_update`` exceed ``max_age`` (``max_age=0``: it ends at its first miss).
"""

from collections import deque
from dataclasses import dataclass, field
import itertools
import math
from typing import Any, Deque, List, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from persistence_ros.appearance import hellinger_distances
from persistence_ros.detections import Detection, DetectionFrame

Box = Tuple[float, float, float, float]

# Cost given to pairs that must never be assigned (finite: linear_sum_assignment rejects inf
# rows when no feasible assignment exists).
_FORBIDDEN = 1e6
_EYE4 = np.eye(4)
_EYE8 = np.eye(8)


@dataclass(frozen=True)
class TrackerConfig:
    """
    Parameters of ``Tracker2D``; every field is validated in ``__post_init__``.

    Attributes
    ----------
    high_score:
        Detections with ``score >= high_score`` take part in the first matching stage and may
        start new tracks.
    low_score:
        Detections with ``low_score <= score < high_score`` only extend existing tracks
        (second stage); detections below ``low_score`` are ignored.
    iou_threshold:
        Minimum IoU for an IoU match in the first stage.
    low_iou_threshold:
        Minimum IoU for an IoU match in the second (low-score) stage.
    small_box_px:
        When both boxes have ``max(w, h) < small_box_px`` (or their IoU is below the stage's
        threshold), the centre distance is used instead of IoU.
    center_radius_px:
        Gate of the centre-distance fallback: centres further apart never match.
    max_age:
        Consecutive missed frames a track survives.
    min_hits:
        Matches (birth included) before a track is confirmed.
    position_noise, velocity_noise:
        Kalman process noise (standard deviations per frame) as fractions of the box size.
    measurement_noise:
        Kalman measurement noise (standard deviation) as a fraction of the box size.
    min_noise_px:
        Floor of the box size used to scale the noises (keeps tiny boxes from a degenerate
        filter).
    appearance_gate:
        Largest Hellinger distance between a track's colour histogram and a detection's for
        them to match (only when ``update`` gets descriptors; 1.0 switches the gate off).
    appearance_momentum:
        Weight of the old value in the track's moving-average histogram.

    """

    high_score: float = 0.5
    low_score: float = 0.1
    iou_threshold: float = 0.2
    low_iou_threshold: float = 0.5
    small_box_px: float = 16.0
    center_radius_px: float = 24.0
    max_age: int = 30
    min_hits: int = 3
    position_noise: float = 1.0 / 20.0
    velocity_noise: float = 1.0 / 160.0
    measurement_noise: float = 1.0 / 20.0
    min_noise_px: float = 4.0
    appearance_gate: float = 0.5
    appearance_momentum: float = 0.8

    def __post_init__(self):
        """Validate the fields; raise ValueError saying what to fix."""
        for name in ('max_age',):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
                raise ValueError(f'{name} must be an integer >= 0, got {value!r}')
        for name in ('min_hits',):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
        for name in ('high_score', 'low_score', 'iou_threshold', 'low_iou_threshold',
                     'appearance_gate', 'appearance_momentum'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f'{name} must be a number in [0, 1], got {value!r}')
        if self.low_score > self.high_score:
            raise ValueError(f'low_score must be <= high_score, got low_score={self.low_score}'
                             f' > high_score={self.high_score}')
        for name in ('small_box_px', 'position_noise', 'velocity_noise'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0.0):
                raise ValueError(f'{name} must be a finite number >= 0, got {value!r}')
        for name in ('center_radius_px', 'measurement_noise', 'min_noise_px'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0.0):
                raise ValueError(f'{name} must be a finite number > 0, got {value!r}')

    @property
    def uses_appearance(self) -> bool:
        """Return True if the appearance gate is on (``appearance_gate < 1``)."""
        return self.appearance_gate < 1.0


@dataclass
class TrackObservation:
    """
    One frame of a track's history.

    ``box`` is the matched detection's box (centre x, centre y, width, height in pixels) when
    ``matched``, else the Kalman prediction. ``score`` is the detection score (0.0 when not
    matched), ``detection_id`` the detection's id ('' when not matched). ``crop`` is a free slot
    (None until the node or the data-set builder stores an image crop there); ``crop_stats``
    holds ``appearance.crop_statistics`` of the crop instead, for a filter that reads only
    those (the pipeline then stores no crop).
    """

    box: Box
    score: float
    stamp_ns: int
    detection_id: str
    matched: bool
    crop: Any = None
    crop_stats: Any = None


class _BoxKalman:
    """
    Constant-velocity Kalman filter on (cx, cy, w, h) and their velocities.

    Written with numpy: an 8-state linear filter is a few lines, and no maintained Kalman
    library is in the environment (filterpy is unmaintained, cv2.KalmanFilter cannot scale the
    noise with the box size per step).
    """

    _F = np.eye(8)
    _F[:4, 4:] = np.eye(4)
    _H = np.eye(4, 8)

    def __init__(self, box: Box, config: TrackerConfig):
        self.config = config
        self.x = np.zeros(8)
        self.x[:4] = box
        scale = self._scale(self.x)
        std = np.concatenate([2.0 * config.position_noise * scale,
                              10.0 * config.velocity_noise * scale])
        self.P = np.diag(np.square(std))

    def _scale(self, x: np.ndarray) -> np.ndarray:
        size = np.maximum(x[2:4], self.config.min_noise_px)
        return np.array([size[0], size[1], size[0], size[1]])

    def predict(self) -> None:
        self.predict_all([self])

    def update(self, box: Box) -> None:
        self.update_all([self], [box])

    @property
    def box(self) -> Box:
        return tuple(float(v) for v in self.x[:4])

    # The same steps for many filters at once: one stacked numpy operation per step instead
    # of one per track (numpy runs each stacked matrix product and solve through the same
    # BLAS/LAPACK call as a single one: the results are bit for bit ``predict``/``update``'s).

    @classmethod
    def _scales(cls, x: np.ndarray, config: TrackerConfig) -> np.ndarray:
        size = np.maximum(x[:, 2:4], config.min_noise_px)
        return np.concatenate([size, size], axis=1)

    @classmethod
    def predict_all(cls, filters: Sequence['_BoxKalman']) -> None:
        """Run ``predict`` of every filter (all with one config) in one batched step."""
        if not filters:
            return
        config = filters[0].config
        x = np.stack([f.x for f in filters])
        cov = np.stack([f.P for f in filters])
        scale = cls._scales(x, config)
        q = np.concatenate([config.position_noise * scale, config.velocity_noise * scale],
                           axis=1)
        x = (cls._F @ x[..., None])[..., 0]
        cov = cls._F @ cov @ cls._F.T + _EYE8 * np.square(q)[:, None, :]
        for i in (2, 3):
            small = x[:, i] < 1.0
            x[small, i] = 1.0
            x[small, i + 4] = 0.0
        for k, f in enumerate(filters):
            f.x, f.P = x[k], cov[k]

    @classmethod
    def update_all(cls, filters: Sequence['_BoxKalman'], boxes: Sequence[Box]) -> None:
        """Run ``update`` of every filter with its box (all with one config) in one step."""
        if not filters:
            return
        config = filters[0].config
        x = np.stack([f.x for f in filters])
        cov = np.stack([f.P for f in filters])
        r = np.square(config.measurement_noise * cls._scales(x, config))
        s = cls._H @ cov @ cls._H.T + _EYE4 * r[:, None, :]
        gain = np.linalg.solve(s, cls._H @ cov).transpose(0, 2, 1)
        z = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        x = x + (gain @ (z - (cls._H @ x[..., None])[..., 0])[..., None])[..., 0]
        cov = (_EYE8 - gain @ cls._H) @ cov
        x[:, 2:4] = np.maximum(x[:, 2:4], 1.0)
        for k, f in enumerate(filters):
            f.x, f.P = x[k], cov[k]


@dataclass(eq=False)
class Track2D:
    """
    One 2D track of one camera.

    ``matched`` and ``detection`` describe the latest update (``detection`` is the Detection
    matched in that frame, None when missed); ``last_detection`` is the most recent matched
    Detection ever. ``box`` is the current Kalman estimate (centre x, centre y, w, h).
    """

    id: int
    min_hits: int
    history: Deque[TrackObservation]
    hits: int = 1
    age: int = 0
    time_since_update: int = 0
    matched: bool = True
    detection: Optional[Detection] = None
    last_detection: Optional[Detection] = None
    start_stamp_ns: int = 0
    last_stamp_ns: int = 0
    appearance: Optional[np.ndarray] = field(default=None, repr=False)
    _kf: Optional[_BoxKalman] = field(default=None, repr=False)

    @property
    def confirmed(self) -> bool:
        """Return True once the track has been matched at least ``min_hits`` times."""
        return self.hits >= self.min_hits

    @property
    def box(self) -> Box:
        """Return the current box estimate (centre x, centre y, width, height)."""
        return self._kf.box

    @property
    def velocity(self) -> Tuple[float, float]:
        """Return the estimated centre velocity in pixels per frame."""
        return float(self._kf.x[4]), float(self._kf.x[5])


@dataclass
class TrackerUpdate:
    """
    Result of one ``Tracker2D.update``.

    ``tracks``: live tracks after the update (each knows ``matched`` / ``detection`` for this
    frame). ``ended``: tracks that ended at this update (publish DELETE markers for them).
    ``refused``: high-score detections that would have started a track beyond
    ``max_tracks``.
    """

    stamp_ns: int
    frame_id: str
    tracks: List[Track2D]
    ended: List[Track2D]
    refused: int = 0

    @property
    def confirmed(self) -> List[Track2D]:
        """Return the confirmed live tracks."""
        return [t for t in self.tracks if t.confirmed]


def _xyxy(boxes: np.ndarray) -> np.ndarray:
    half = 0.5 * boxes[:, 2:4]
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Return the (len(a), len(b)) IoU matrix of boxes given as rows (cx, cy, w, h)."""
    a = _xyxy(np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4))
    b = _xyxy(np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4))
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0.0, inter / np.where(union > 0.0, union, 1.0), 0.0)


def association_cost(track_boxes: np.ndarray, det_boxes: np.ndarray, iou_threshold: float,
                     small_box_px: float, center_radius_px: float) -> np.ndarray:
    """
    Return the track x detection cost matrix; pairs with ``cost > 2`` never match.

    IoU matches cost ``1 - IoU`` (in ``[0, 1)``). When both boxes are small
    (``max(w, h) < small_box_px``) or their IoU is below ``iou_threshold`` (0 included), the
    normalised centre distance ``d / center_radius_px`` is used instead, as ``1 + d / radius``
    (in ``[1, 2]`` inside the radius), so that any IoU match is preferred to a centre-distance
    one.
    """
    tb = np.asarray(track_boxes, dtype=np.float64).reshape(-1, 4)
    db = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    iou = iou_matrix(tb, db)
    small = ((tb[:, None, 2:4].max(axis=2) < small_box_px)
             & (db[None, :, 2:4].max(axis=2) < small_box_px))
    dist = np.linalg.norm(tb[:, None, :2] - db[None, :, :2], axis=2) / center_radius_px
    use_iou = (~small) & (iou >= iou_threshold) & (iou > 0.0)
    centre_cost = np.where(dist <= 1.0, 1.0 + dist, _FORBIDDEN)
    return np.where(use_iou, 1.0 - iou, centre_cost)


class Tracker2D:
    """
    Online multi-object tracker of one camera stream.

    Its input must be checked: stamps increasing and every detection valid
    (``Detection.problem``); ``StereoPipeline`` checks, drops and counts bad input before the
    trackers see it (one place for every input rule), and ``update`` raises ValueError on
    what it was not meant to get. ``ignored_low_score`` counts valid detections below
    ``low_score``.
    """

    def __init__(self, config: Optional[TrackerConfig] = None, window: int = 64,
                 max_tracks: Optional[int] = None):
        for name, value in (('window', window), ('max_tracks', max_tracks)):
            if value is None and name == 'max_tracks':
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
        self.config = config if config is not None else TrackerConfig()
        self.window = window
        self.max_tracks = max_tracks
        self._tracks: List[Track2D] = []
        self._ids = itertools.count(1)
        self._last_stamp_ns: Optional[int] = None
        self.ignored_low_score = 0
        self.frames = 0

    @property
    def tracks(self) -> List[Track2D]:
        """Return a copy of the list of live tracks."""
        return list(self._tracks)

    @property
    def last_stamp_ns(self) -> Optional[int]:
        """Return the stamp of the last accepted frame (None before the first)."""
        return self._last_stamp_ns

    def _match(self, tracks: Sequence[Track2D], dets: Sequence[Detection],
               descriptors: Optional[np.ndarray], iou_threshold: float
               ) -> Tuple[List[Tuple[int, int]], List[int], List[int]]:
        """Return (matches as (track index, det index), unmatched tracks, unmatched dets)."""
        if not tracks or not dets:
            return [], list(range(len(tracks))), list(range(len(dets)))
        cost = association_cost(np.array([t.box for t in tracks]),
                                np.array([[d.center_x, d.center_y, d.width, d.height]
                                          for d in dets]),
                                iou_threshold, self.config.small_box_px,
                                self.config.center_radius_px)
        if descriptors is not None and self.config.uses_appearance:
            # a track without a histogram yet is a zero row: distance 0, never gated
            zero = np.zeros(descriptors.shape[1])
            track_desc = np.stack([zero if t.appearance is None else t.appearance
                                   for t in tracks])
            far = hellinger_distances(track_desc, descriptors) > self.config.appearance_gate
            cost = np.where(far, _FORBIDDEN, cost)
        rows, cols = linear_sum_assignment(cost)
        matches = [(int(r), int(c)) for r, c in zip(rows, cols) if cost[r, c] <= 2.0]
        matched_t = {m[0] for m in matches}
        matched_d = {m[1] for m in matches}
        return (matches, [i for i in range(len(tracks)) if i not in matched_t],
                [j for j in range(len(dets)) if j not in matched_d])

    def update(self, frame: DetectionFrame,
               descriptors: Optional[np.ndarray] = None) -> TrackerUpdate:
        """
        Process one frame of detections and return the live and the ended tracks.

        ``descriptors``: optional appearance rows, one per detection of the frame in order
        (``appearance.colour_histograms``; a zero row: unknown); they gate the matching.
        Steps: ``_check`` (the input contract), ``_split_by_score``, ``_predict``,
        ``_associate`` (ByteTrack's two stages), ``_correct``, ``_retire``, ``_birth``.
        """
        stamp = self._check(frame, descriptors)
        descriptors = None if descriptors is None else np.asarray(descriptors, np.float64)
        self._last_stamp_ns = stamp
        self.frames += 1
        high, low = self._split_by_score(frame.detections)
        self._predict()
        assigned, free_high = self._associate(frame.detections, high, low, descriptors)
        self._correct(assigned, frame.detections, descriptors, stamp)
        live, ended = self._retire(stamp)
        births, refused = self._room([high[j] for j in free_high], frame.detections, len(live))
        live += self._birth(births, frame.detections, descriptors, stamp)
        self._tracks = live
        return TrackerUpdate(stamp, frame.frame_id, list(live), ended, refused)

    def _room(self, indices: Sequence[int], dets: Sequence[Detection], live: int
              ) -> Tuple[List[int], int]:
        """Return the births there is room for (``max_tracks``) and how many were refused."""
        room = len(indices) if self.max_tracks is None else max(0, self.max_tracks - live)
        refused = max(0, len(indices) - room)
        if refused:   # the highest scores, in detection order
            best = set(sorted(indices, key=lambda k: -dets[k].score)[:room])
            indices = [k for k in indices if k in best]
        return list(indices), refused

    def _check(self, frame: DetectionFrame, descriptors: Optional[np.ndarray]) -> int:
        """Return the frame's stamp; raise ValueError on input the pipeline should refuse."""
        if descriptors is not None:
            descriptors = np.asarray(descriptors, dtype=np.float64)
            if descriptors.ndim != 2 or len(descriptors) != len(frame.detections):
                raise ValueError(f'descriptors must have one row per detection '
                                 f'({len(frame.detections)}), got shape {descriptors.shape}')
        stamp = int(frame.stamp_ns)
        if self._last_stamp_ns is not None and stamp <= self._last_stamp_ns:
            raise ValueError(f'stamp {stamp} is not after the last one {self._last_stamp_ns} '
                             '(StereoPipeline refuses such frames before tracking)')
        problems = [det.problem() for det in frame.detections if det.problem()]
        if problems:
            raise ValueError(f'{len(problems)} invalid detection(s) ({problems[0]}); '
                             'StereoPipeline drops them before tracking')
        return stamp

    def _split_by_score(self, detections: Sequence[Detection]) -> Tuple[List[int], List[int]]:
        """Return the indices of the high- and the low-score detections (others ignored)."""
        high: List[int] = []
        low: List[int] = []
        for k, det in enumerate(detections):
            if det.score >= self.config.high_score:
                high.append(k)
            elif det.score >= self.config.low_score:
                low.append(k)
            else:
                self.ignored_low_score += 1
        return high, low

    def _predict(self) -> None:
        """Advance every track's Kalman filter one frame; nothing is matched yet."""
        _BoxKalman.predict_all([track._kf for track in self._tracks])
        for track in self._tracks:
            track.age += 1
            track.time_since_update += 1
            track.matched = False
            track.detection = None

    def _associate(self, dets: Sequence[Detection], high: List[int], low: List[int],
                   descriptors: Optional[np.ndarray]
                   ) -> Tuple[List[Tuple[Track2D, int]], List[int]]:
        """
        Return (track, detection index) matches and the unmatched high-score positions.

        Stage 1: high-score detections against all tracks; stage 2: low-score detections
        against the tracks left over (ByteTrack).
        """
        def rows(indices: List[int]) -> Optional[np.ndarray]:
            return None if descriptors is None else descriptors[indices]

        cfg = self.config
        matches, free_tracks, free_high = self._match(
            self._tracks, [dets[k] for k in high], rows(high), cfg.iou_threshold)
        assigned = [(self._tracks[t], high[d]) for t, d in matches]
        remaining = [self._tracks[i] for i in free_tracks]
        matches2, _, _ = self._match(remaining, [dets[k] for k in low], rows(low),
                                     cfg.low_iou_threshold)
        assigned += [(remaining[t], low[d]) for t, d in matches2]
        return assigned, free_high

    def _correct(self, assigned: Sequence[Tuple[Track2D, int]], dets: Sequence[Detection],
                 descriptors: Optional[np.ndarray], stamp: int) -> None:
        """Update each matched track with its detection (Kalman, appearance, history)."""
        boxes = [dets[k].cxcywh() for _, k in assigned]
        _BoxKalman.update_all([track._kf for track, _ in assigned], boxes)
        for (track, k), box in zip(assigned, boxes):
            det = dets[k]
            self._update_appearance(track, descriptors, k)
            track.hits += 1
            track.time_since_update = 0
            track.matched = True
            track.detection = det
            track.last_detection = det
            track.last_stamp_ns = stamp
            track.history.append(TrackObservation(box, float(det.score), stamp, det.id, True))

    def _retire(self, stamp: int) -> Tuple[List[Track2D], List[Track2D]]:
        """Return (live, ended) tracks; a live unmatched track records its prediction."""
        live: List[Track2D] = []
        ended: List[Track2D] = []
        for track in self._tracks:
            if track.time_since_update > self.config.max_age:
                ended.append(track)
                continue
            if not track.matched:
                track.history.append(TrackObservation(track.box, 0.0, stamp, '', False))
            live.append(track)
        return live, ended

    def _birth(self, indices: Sequence[int], dets: Sequence[Detection],
               descriptors: Optional[np.ndarray], stamp: int) -> List[Track2D]:
        """Return new tracks for the unmatched high-score detections ``indices``."""
        born: List[Track2D] = []
        for k in indices:
            det = dets[k]
            box = det.cxcywh()
            track = Track2D(id=next(self._ids), min_hits=self.config.min_hits,
                            history=deque(maxlen=self.window), detection=det,
                            last_detection=det, start_stamp_ns=stamp, last_stamp_ns=stamp,
                            _kf=_BoxKalman(box, self.config))
            self._update_appearance(track, descriptors, k)
            track.history.append(TrackObservation(box, float(det.score), stamp, det.id, True))
            born.append(track)
        return born

    def _update_appearance(self, track: Track2D, descriptors: Optional[np.ndarray],
                           k: int) -> None:
        """Blend detection ``k``'s descriptor into the track's moving average."""
        if descriptors is None or not descriptors[k].any():
            return
        row = descriptors[k] / descriptors[k].sum()
        if track.appearance is None:
            track.appearance = row
        else:
            m = self.config.appearance_momentum
            track.appearance = m * track.appearance + (1.0 - m) * row
