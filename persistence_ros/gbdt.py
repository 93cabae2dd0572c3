"""
The gradient-boosting baseline: scikit-learn trees on hand-crafted track features.

``track_features`` summarises a stereo track (scores, motion, box sizes, crop statistics,
epipolar residuals, depth and height) in ``FEATURE_NAMES`` order; ``GbdtFilter`` decides on
them at ``decide_after`` observed frames.  It is stored without pickle: ``save`` writes the
training features and labels to ``.npz`` and ``load`` refits deterministically (fixed
``random_state``).  This is the only module that imports scikit-learn; the model and the
node never import it unless ``filter.name`` is ``gbdt``.
"""

from typing import Optional, Sequence

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from persistence_ros.appearance import crop_statistics
from persistence_ros.baselines import LatchingFilter
from persistence_ros.stereo import plane_heights
from persistence_ros.stereo_track import StereoTrackHistory
from persistence_ros.tracking import TrackObservation


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


def _crop_features(obs: Sequence[TrackObservation]) -> np.ndarray:
    # the pipeline stores only the statistics for this filter (appearance_input); a history
    # built elsewhere (data sets, tests) may carry the crop
    stats = [o.crop_stats if o.crop_stats is not None else crop_statistics(o.crop)
             for o in obs if o.matched and (o.crop is not None or o.crop_stats is not None)]
    if not stats:
        return np.full((0, 3), np.nan)
    return np.array(stats, dtype=np.float64)


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else np.nan


def track_features(track: StereoTrackHistory,
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
    appearance_input = 'statistics'

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

    def features(self, track: StereoTrackHistory) -> np.ndarray:
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

    def probability(self, track: StereoTrackHistory) -> Optional[float]:
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
