"""
Persistence filters: decide per stereo track whether it is a real, persistent object.

Every filter implements ``PersistenceFilter``: ``update`` is called once per synchronized
frame with every live stereo track (``StereoTrackState``) and returns a ``FilterDecision`` per
track id.  Decisions latch: once a track is PERSISTENT or TRANSIENT it keeps that state (and
the probability of the decision frame) until it ends, so "frames to decision" is well
defined.  Filter state is pruned to the ids passed in, so it stays bounded.

Baselines (``make_filter(name, ...)``):

* ``none``: every track is persistent at once.
* ``min_hits``: persistent after ``min_hits`` observed frames (never transient).
* ``score``: mean detector score of the track's matched boxes (both cameras).
* ``stereo``: mean epipolar residual (pixels) of the left/right boxes.
* ``ground_plane``: median signed height of the triangulated points above a plane;
  a track below ``n.X + d < -margin`` is transient (floor reflections).
* ``gbdt``: scikit-learn ``HistGradientBoostingClassifier`` on hand-crafted track features
  (``track_features``).  It is stored without pickle: ``save`` writes the training features
  and labels to ``.npz`` and ``load`` refits deterministically (fixed ``random_state``).

The learned video model (``persistence_ros.model``) implements the same interface.
"""

import abc
from dataclasses import dataclass, field
import math
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from persistence_ros.tracking import TrackObservation

TENTATIVE = 'tentative'
PERSISTENT = 'persistent'
TRANSIENT = 'transient'
STATES = (TENTATIVE, PERSISTENT, TRANSIENT)


@dataclass
class StereoTrackState:
    """
    What a filter sees of one stereo track (a left and a right 2D track paired).

    ``left`` / ``right`` are the 2D tracks' observation histories (oldest first, bounded by
    the tracker window; ``TrackObservation.crop`` holds an RGB crop when images were given).
    ``stamps_ns``, ``epipolar_residuals`` (pixels, NaN where a side was not matched) and
    ``points`` (N x 3, metres in the left optical frame, NaN rows where triangulation was
    invalid) are aligned per synchronized frame since the pair formed (bounded too); a
    frame's stamp is the left camera's.  ``right_stamps_ns``, aligned with them, holds the
    right camera's stamp of each frame (it may differ by the synchroniser's slop); empty
    means equal to ``stamps_ns``.  ``frames_observed`` counts the synchronized frames in
    which at least one side was matched to a detection.
    """

    id: int
    left_track_id: int
    right_track_id: int
    left: Sequence[TrackObservation] = field(default_factory=list)
    right: Sequence[TrackObservation] = field(default_factory=list)
    stamps_ns: Sequence[int] = field(default_factory=list)
    epipolar_residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    frames_observed: int = 0
    right_stamps_ns: Sequence[int] = field(default_factory=list)


@dataclass
class FilterDecision:
    """
    A filter's output for one track at one frame.

    ``attention``: weights over the frames the filter looked at (oldest first, sums to 1),
    None for filters without attention; ``frame_stamps_ns``: those frames' stamps (None:
    the last ``len(attention)`` stamps of the track).
    """

    probability: float
    state: str = TENTATIVE
    attention: Optional[np.ndarray] = None
    frame_stamps_ns: Optional[List[int]] = None

    def __post_init__(self):
        """Validate the state name."""
        if self.state not in STATES:
            raise ValueError(f'state must be one of {STATES}, got {self.state!r}')


class PersistenceFilter(abc.ABC):
    """Interface of every persistence filter (baselines and the learned model)."""

    name: str = 'filter'
    #: True if the filter reads ``TrackObservation.crop`` (the caller must pass images).
    uses_images: bool = False

    @abc.abstractmethod
    def update(self, tracks: Sequence[StereoTrackState]) -> Dict[int, FilterDecision]:
        """Return a decision for every live stereo track (called once per frame)."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget all per-track state (start of a new sequence)."""

    def set_calibration(self, calibration) -> None:
        """Receive the rig's ``StereoCalibration`` (the pipeline calls this; default: ignore)."""


class LatchingFilter(PersistenceFilter):
    """
    Base of the baselines: score a track, decide once enough frames were seen, latch.

    Subclasses implement ``probability(track)``, returning a probability that the track is
    real, or None when there is not enough evidence yet.  The track is decided at the first
    frame with ``frames_observed >= decide_after`` and a probability:
    persistent when ``probability >= threshold``, else transient.
    """

    def __init__(self, decide_after: int = 3, threshold: float = 0.5):
        if decide_after < 1:
            raise ValueError(f'decide_after must be >= 1, got {decide_after}')
        self.decide_after = int(decide_after)
        self.threshold = float(threshold)
        self._latched: Dict[int, FilterDecision] = {}

    @abc.abstractmethod
    def probability(self, track: StereoTrackState) -> Optional[float]:
        """Return the probability that the track is real, or None if undecidable yet."""

    def update(self, tracks: Sequence[StereoTrackState]) -> Dict[int, FilterDecision]:
        """Return the (latched) decision of every live track."""
        out: Dict[int, FilterDecision] = {}
        for track in tracks:
            latched = self._latched.get(track.id)
            if latched is not None:
                out[track.id] = latched
                continue
            p = self.probability(track)
            if p is None or not math.isfinite(p):
                out[track.id] = FilterDecision(probability=0.5, state=TENTATIVE)
                continue
            p = float(min(max(p, 0.0), 1.0))
            if track.frames_observed >= self.decide_after:
                state = PERSISTENT if p >= self.threshold else TRANSIENT
                decision = FilterDecision(probability=p, state=state)
                self._latched[track.id] = decision
            else:
                decision = FilterDecision(probability=p, state=TENTATIVE)
            out[track.id] = decision
        live = {t.id for t in tracks}
        for tid in [k for k in self._latched if k not in live]:
            del self._latched[tid]
        return out

    def reset(self) -> None:
        """Forget all latched decisions."""
        self._latched.clear()


class NoFilter(LatchingFilter):
    """Accept everything: every track is persistent at its first frame."""

    name = 'none'

    def __init__(self):
        super().__init__(decide_after=1, threshold=0.5)

    def probability(self, track: StereoTrackState) -> Optional[float]:
        """Return 1."""
        return 1.0


class MinHitsFilter(LatchingFilter):
    """Duration baseline: persistent once observed in ``min_hits`` frames; never transient."""

    name = 'min_hits'

    def __init__(self, min_hits: int = 5):
        super().__init__(decide_after=min_hits, threshold=1.0)
        self.min_hits = int(min_hits)

    def probability(self, track: StereoTrackState) -> Optional[float]:
        """Return ``frames_observed / min_hits`` capped at 1."""
        return min(1.0, track.frames_observed / self.min_hits)


def _matched_scores(track: StereoTrackState) -> np.ndarray:
    return np.array([o.score for o in list(track.left) + list(track.right) if o.matched],
                    dtype=np.float64)


class ScoreFilter(LatchingFilter):
    """Detector-score baseline: mean score of the matched boxes of both cameras."""

    name = 'score'

    def __init__(self, decide_after: int = 3, threshold: float = 0.6):
        super().__init__(decide_after, threshold)

    def probability(self, track: StereoTrackState) -> Optional[float]:
        """Return the mean detector score, None without matched boxes."""
        scores = _matched_scores(track)
        return float(scores.mean()) if scores.size else None


class StereoConsistencyFilter(LatchingFilter):
    """
    Stereo baseline: mean epipolar residual below ``max_residual_px`` means real.

    The probability is ``1 / (1 + (r / max_residual_px)^2)`` (0.5 at the threshold).
    """

    name = 'stereo'

    def __init__(self, decide_after: int = 3, max_residual_px: float = 2.0):
        super().__init__(decide_after, threshold=0.5)
        self.max_residual_px = float(max_residual_px)

    def probability(self, track: StereoTrackState) -> Optional[float]:
        """Return the residual-based probability, None without residuals."""
        r = np.asarray(track.epipolar_residuals, dtype=np.float64)
        r = r[np.isfinite(r)]
        if r.size == 0:
            return None
        return 1.0 / (1.0 + (float(r.mean()) / self.max_residual_px) ** 2)


def plane_heights(points: np.ndarray, plane: Sequence[float]) -> np.ndarray:
    """
    Return the signed heights ``n.X + d`` of points above a plane ``[a, b, c, d]``.

    The normal is normalised first; rows of ``points`` with NaN give NaN.
    """
    plane = np.asarray(plane, dtype=np.float64).reshape(4)
    norm = np.linalg.norm(plane[:3])
    if not norm > 0.0:
        raise ValueError('plane normal must be non-zero')
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return (pts @ plane[:3] + plane[3]) / norm


class GroundPlaneFilter(LatchingFilter):
    """
    Ground-plane baseline: points triangulated below the floor are reflections.

    ``plane`` is ``[a, b, c, d]`` in the left optical frame with the normal pointing up
    (truth ``rig.ground_plane_left_optical``).  The median height ``h`` of the valid points
    decides: transient when ``h < -margin_m``.  Probability ``sigmoid((h + margin) / scale)``.
    A track whose points are mostly invalid (behind a camera, no stereo) is transient.
    """

    name = 'ground_plane'

    def __init__(self, plane: Sequence[float], margin_m: float = 0.05,
                 decide_after: int = 3, scale_m: float = 0.02):
        super().__init__(decide_after, threshold=0.5)
        self.plane = np.asarray(plane, dtype=np.float64).reshape(4)
        plane_heights(np.zeros((0, 3)), self.plane)  # validates the normal
        self.margin_m = float(margin_m)
        self.scale_m = float(scale_m)

    def probability(self, track: StereoTrackState) -> Optional[float]:
        """Return the height-based probability, None without points."""
        heights = plane_heights(track.points, self.plane)
        if heights.size == 0:
            return None
        valid = heights[np.isfinite(heights)]
        if valid.size * 2 < heights.size or valid.size == 0:
            return 0.0
        h = float(np.median(valid))
        z = (h + self.margin_m) / self.scale_m
        return 1.0 / (1.0 + math.exp(-min(max(z, -60.0), 60.0)))


# ------------------------------------------------------------------------------------------
# Hand-crafted features and the gradient-boosting baseline.

FEATURE_NAMES = (
    'frames_observed', 'history_len', 'left_matched_fraction', 'right_matched_fraction',
    'score_mean', 'score_std', 'score_min', 'score_lr_diff',
    'speed_px', 'jerk_px', 'jerk_rel',
    'log_area_mean', 'log_area_std', 'aspect_mean', 'lr_log_area_diff',
    'brightness_mean', 'brightness_std', 'saturation_mean', 'contrast_mean', 'lr_brightness_diff',
    'epipolar_mean', 'epipolar_max',
    'depth_median', 'depth_std', 'height_median', 'height_std', 'valid_point_fraction',
)


def _motion_features(obs: Sequence[TrackObservation]):
    boxes = np.array([o.box for o in obs if o.matched], dtype=np.float64).reshape(-1, 4)
    if len(boxes) < 2:
        return np.nan, np.nan, np.nan
    centres = boxes[:, :2]
    vel = np.diff(centres, axis=0)
    speed = float(np.linalg.norm(vel, axis=1).mean())
    if len(boxes) < 3:
        return speed, np.nan, np.nan
    jerk = float(np.linalg.norm(np.diff(vel, axis=0), axis=1).mean())
    size = float(np.mean(np.sqrt(boxes[:, 2] * boxes[:, 3])))
    return speed, jerk, jerk / max(size, 1.0)


def _box_features(obs: Sequence[TrackObservation]):
    boxes = np.array([o.box for o in obs if o.matched], dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.nan, np.nan, np.nan
    log_area = np.log(np.maximum(boxes[:, 2] * boxes[:, 3], 1e-6))
    aspect = boxes[:, 2] / np.maximum(boxes[:, 3], 1e-6)
    return float(log_area.mean()), float(log_area.std()), float(aspect.mean())


def crop_statistics(crop: np.ndarray):
    """Return (brightness, saturation, contrast) in [0, 1] of an RGB uint8 crop."""
    crop = np.asarray(crop)
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.size == 0:
        return np.nan, np.nan, np.nan
    hsv = cv2.cvtColor(np.ascontiguousarray(crop, dtype=np.uint8), cv2.COLOR_RGB2HSV)
    gray = cv2.cvtColor(np.ascontiguousarray(crop, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    return (float(hsv[..., 2].mean()) / 255.0, float(hsv[..., 1].mean()) / 255.0,
            float(gray.std()) / 255.0)


def _crop_features(obs: Sequence[TrackObservation]) -> np.ndarray:
    stats = [crop_statistics(o.crop) for o in obs if o.matched and o.crop is not None]
    if not stats:
        return np.full((0, 3), np.nan)
    return np.array(stats, dtype=np.float64)


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else np.nan


def track_features(track: StereoTrackState,
                   plane: Optional[Sequence[float]] = None) -> np.ndarray:
    """Return the hand-crafted feature vector (``FEATURE_NAMES`` order; NaN = missing)."""
    left, right = list(track.left), list(track.right)
    sl = np.array([o.score for o in left if o.matched])
    sr = np.array([o.score for o in right if o.matched])
    scores = np.concatenate([sl, sr])
    motion = [_motion_features(side) for side in (left, right)]
    boxes = [_box_features(side) for side in (left, right)]
    crops = [_crop_features(side) for side in (left, right)]
    all_crops = np.concatenate(crops, axis=0)
    res = np.asarray(track.epipolar_residuals, dtype=np.float64)
    res = res[np.isfinite(res)]
    pts = np.asarray(track.points, dtype=np.float64).reshape(-1, 3)
    valid = np.all(np.isfinite(pts), axis=1)
    vp = pts[valid]
    if plane is not None and len(vp):
        heights = plane_heights(vp, plane)
        h_med, h_std = float(np.median(heights)), float(heights.std())
    else:
        h_med = h_std = np.nan
    feats = [
        track.frames_observed, len(left) + len(right),
        float(np.mean([o.matched for o in left])) if left else np.nan,
        float(np.mean([o.matched for o in right])) if right else np.nan,
        float(scores.mean()) if scores.size else np.nan,
        float(scores.std()) if scores.size else np.nan,
        float(scores.min()) if scores.size else np.nan,
        float(sl.mean() - sr.mean()) if sl.size and sr.size else np.nan,
        _nanmean([m[0] for m in motion]), _nanmean([m[1] for m in motion]),
        _nanmean([m[2] for m in motion]),
        _nanmean([b[0] for b in boxes]), _nanmean([b[1] for b in boxes]),
        _nanmean([b[2] for b in boxes]), abs(boxes[0][0] - boxes[1][0]),
        _nanmean(all_crops[:, 0]),
        float(all_crops[:, 0].std()) if len(all_crops) > 1 else np.nan,
        _nanmean(all_crops[:, 1]), _nanmean(all_crops[:, 2]),
        (abs(_nanmean(crops[0][:, 0]) - _nanmean(crops[1][:, 0]))
         if len(crops[0]) and len(crops[1]) else np.nan),
        float(res.mean()) if res.size else np.nan,
        float(res.max()) if res.size else np.nan,
        float(np.median(vp[:, 2])) if len(vp) else np.nan,
        float(vp[:, 2].std()) if len(vp) else np.nan,
        h_med, h_std,
        float(valid.mean()) if len(pts) else np.nan,
    ]
    return np.array(feats, dtype=np.float64)


# Frames the gbdt baseline waits before deciding (its training point); 3 beat 5 on the
# selection scenes (docs/evaluation.md), as it did for the learned filter's min_frames.
GBDT_DECIDE_AFTER = 3


class GbdtFilter(LatchingFilter):
    """
    Gradient-boosted trees on ``track_features``, decided at ``decide_after`` frames.

    Train with ``fit(features, labels)`` (labels 1 = real object) on the training split
    only.  Persistence without pickle: ``save(path)`` stores the training set as ``.npz``;
    ``load(path)`` refits with the same hyper-parameters and ``random_state`` (deterministic).
    """

    name = 'gbdt'
    uses_images = True

    def __init__(self, plane: Optional[Sequence[float]] = None,
                 decide_after: int = GBDT_DECIDE_AFTER, threshold: float = 0.5,
                 max_iter: int = 200, learning_rate: float = 0.1,
                 random_state: int = 0):
        super().__init__(decide_after, threshold)
        self.plane = None if plane is None else np.asarray(plane, dtype=np.float64).reshape(4)
        self.max_iter = int(max_iter)
        self.learning_rate = float(learning_rate)
        self.random_state = int(random_state)
        self._model: Optional[HistGradientBoostingClassifier] = None
        self._features = np.zeros((0, len(FEATURE_NAMES)))
        self._labels = np.zeros(0, dtype=np.int64)

    @property
    def is_fitted(self) -> bool:
        """Return True once the classifier was trained."""
        return self._model is not None

    def features(self, track: StereoTrackState) -> np.ndarray:
        """Return the feature vector of a track (with this filter's plane)."""
        return track_features(track, self.plane)

    def fit(self, features: np.ndarray, labels: np.ndarray) -> 'GbdtFilter':
        """Train on an (N, len(FEATURE_NAMES)) feature matrix and 0/1 labels."""
        x = np.asarray(features, dtype=np.float64).reshape(-1, len(FEATURE_NAMES))
        y = np.asarray(labels).astype(np.int64).reshape(-1)
        if len(x) != len(y) or len(np.unique(y)) < 2:
            raise ValueError('need features and labels of equal length with both classes')
        # sklearn's default min_samples_leaf (20) forbids any split on small training sets.
        model = HistGradientBoostingClassifier(max_iter=self.max_iter,
                                               learning_rate=self.learning_rate,
                                               min_samples_leaf=max(2, min(20, len(y) // 10)),
                                               random_state=self.random_state)
        model.fit(x, y)
        self._model, self._features, self._labels = model, x, y
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Return P(real) for each feature row."""
        if self._model is None:
            raise RuntimeError('gbdt filter is not trained: fit() or load() it first')
        x = np.asarray(features, dtype=np.float64).reshape(-1, len(FEATURE_NAMES))
        classes = list(self._model.classes_)
        return self._model.predict_proba(x)[:, classes.index(1)]

    def probability(self, track: StereoTrackState) -> Optional[float]:
        """Return P(real) once ``decide_after`` frames were observed (the training point)."""
        if track.frames_observed < self.decide_after:
            return None
        return float(self.predict_proba(self.features(track))[0])

    def save(self, path: str) -> None:
        """Write the training set and hyper-parameters to an ``.npz`` file (no pickle)."""
        np.savez(path, features=self._features, labels=self._labels,
                 feature_names=np.array(FEATURE_NAMES),
                 plane=self.plane if self.plane is not None else np.full(4, np.nan),
                 params=np.array([self.decide_after, self.threshold, self.max_iter,
                                  self.learning_rate, self.random_state], dtype=np.float64))

    @classmethod
    def load(cls, path: str, plane: Optional[Sequence[float]] = None) -> 'GbdtFilter':
        """Refit a filter from a file written by ``save`` (``plane`` overrides the stored)."""
        with np.load(path, allow_pickle=False) as data:
            names = tuple(str(n) for n in data['feature_names'])
            if names != FEATURE_NAMES:
                raise ValueError(f'{path}: features {names} differ from {FEATURE_NAMES}')
            params = data['params']
            stored_plane = data['plane']
            features, labels = data['features'], data['labels']
        if plane is None and np.all(np.isfinite(stored_plane)):
            plane = stored_plane
        filt = cls(plane=plane, decide_after=int(params[0]), threshold=float(params[1]),
                   max_iter=int(params[2]), learning_rate=float(params[3]),
                   random_state=int(params[4]))
        return filt.fit(features, labels)


FILTER_NAMES = ('none', 'min_hits', 'score', 'stereo', 'ground_plane', 'gbdt', 'learned')


def make_filter(name: str, plane: Optional[Sequence[float]] = None,
                gbdt_path: Optional[str] = None, **kwargs) -> PersistenceFilter:
    """
    Build a filter by name; ``kwargs`` go to its constructor (thresholds).

    ``plane`` is needed by ``ground_plane`` (and used by ``gbdt``); ``gbdt_path`` names a
    file written by ``GbdtFilter.save``.  ``learned`` loads ``persistence_ros.model``.
    """
    if name == 'none':
        return NoFilter()
    if name == 'min_hits':
        return MinHitsFilter(**kwargs)
    if name == 'score':
        return ScoreFilter(**kwargs)
    if name == 'stereo':
        return StereoConsistencyFilter(**kwargs)
    if name == 'ground_plane':
        if plane is None:
            raise ValueError('ground_plane filter needs a plane [a, b, c, d]')
        return GroundPlaneFilter(plane, **kwargs)
    if name == 'gbdt':
        if gbdt_path is None:
            raise ValueError('gbdt filter needs training data: a file written by '
                             'GbdtFilter.save (or fit one on training bags)')
        return GbdtFilter.load(gbdt_path, plane=plane)
    if name == 'learned':
        return _load_learned(plane=plane, **kwargs)
    raise ValueError(f'unknown filter {name!r}; choose one of {FILTER_NAMES}')


def _load_learned(plane: Optional[Sequence[float]] = None, **kwargs) -> PersistenceFilter:
    """Return the learned filter (``persistence_ros.model.persistence_filter``; needs torch)."""
    from persistence_ros.model.persistence_filter import load_persistence_filter
    return load_persistence_filter(plane=plane, **kwargs)
