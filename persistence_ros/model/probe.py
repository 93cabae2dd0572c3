"""
Linear probe: how much a track's label can be read linearly from its tokenizer features.

A tokenizer trained for reconstruction can collapse to a few codes and still reach a good
PSNR; a probe on the codes (and on the pre-quantization latents the classifier reads) says
whether the visual features carry the persistence signal at all. A logistic regression on
each track's per-frame features averaged over its frames, cross-validated with folds
grouped by scene (never by track), so the probe is judged on scenes it was not fitted on.
"""

from typing import Dict, Sequence

import numpy as np


def linear_probe(features: np.ndarray, labels: np.ndarray, groups: Sequence[str],
                 folds: int = 5) -> Dict[str, float]:
    """
    Return ``{'auc', 'accuracy'}`` of out-of-fold logistic-regression predictions.

    ``features`` ``[N, F]`` (one row per track), ``labels`` ``[N]`` (1 = persistent),
    ``groups`` the scene of each track. Empty when there are fewer than two scenes or one
    class only (nothing to judge).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels).astype(int)
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < 2 or len(np.unique(labels)) < 2:
        return {}
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    try:
        prob = cross_val_predict(probe, np.asarray(features, dtype=np.float64), labels,
                                 groups=groups, cv=GroupKFold(n_splits=min(folds, n_groups)),
                                 method='predict_proba')[:, 1]
    except ValueError:  # a training fold with one class only
        return {}
    return {'auc': float(roc_auc_score(labels, prob)),
            'accuracy': float(np.mean((prob >= 0.5) == (labels == 1)))}
