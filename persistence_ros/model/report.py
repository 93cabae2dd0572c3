"""
Model-card numbers of a checkpoint on a data-set split.

Run as ``python -m persistence_ros.model.report --weights W --data DIR --split test``.

* ``split_metrics``: the training loop's validation metrics (per-track accuracy / F1 / AUC
  at the last frame of the first ``4 x window`` frames, codebook usage and perplexity) on any
  split, e.g. the held-out ``test`` scenes.
* ``earliness``: accuracy of p(persistent) after k frames of each track (k = 1..K, tracks with
  at least k frames), and how many tracks the early-decision rule has decided by then and how
  accurately: the accuracy-versus-frames curve of the early decision.
"""

import argparse
import dataclasses
import json
from typing import Dict, List

import numpy as np
import torch
from torch.utils.data import DataLoader

from persistence_ros.model.checkpoint import load_model
from persistence_ros.model.data import collate, TrackDataset
from persistence_ros.model.train import evaluate
from persistence_ros.stereo_track import TrackState


def _dataset(model, data_dir, split: str, window: int) -> TrackDataset:
    return TrackDataset(data_dir, split, model.config.classifier.geometry_features, window,
                        random_windows=False)


def split_metrics(weights, data_dir, split: str = 'test', batch_size: int = 32) -> Dict:
    """Return the validation metrics of ``weights`` on ``split``."""
    model = load_model(weights)
    window = 4 * model.config.train.window
    loader = DataLoader(_dataset(model, data_dir, split, window), batch_size=batch_size,
                        collate_fn=collate)
    return evaluate(model, loader, 'classifier', 'cpu')


@torch.no_grad()
def earliness(weights, data_dir, split: str = 'test', frames: int = 32) -> List[Dict]:
    """Return per k: tracks, accuracy of p >= 0.5, decided fraction, decided accuracy."""
    model = load_model(weights)
    rule = dataclasses.replace(model.config.decision)
    dataset = _dataset(model, data_dir, split, frames)
    probs, labels, lengths = [], [], []
    for batch in DataLoader(dataset, batch_size=32, collate_fn=collate):
        out = model(batch['crops'], batch['geometry'])
        probs.append(out['prob'].numpy())
        labels.append(batch['track_label'].numpy())
        lengths.append(batch['length'].numpy())
    width = max(p.shape[1] for p in probs)
    prob = np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=0.5)
                           for p in probs])
    label = np.concatenate(labels)
    length = np.concatenate(lengths)
    decision = np.zeros(len(label), dtype=int)
    rows = []
    for k in range(1, width + 1):
        alive = length >= k
        for i in np.flatnonzero(alive):
            decision[i] = rule.decide(float(prob[i, k - 1]), k, TrackState(decision[i]))
        p = prob[alive, k - 1]
        y = label[alive]
        decided = alive & (decision != TrackState.TENTATIVE)
        right = (decision[decided] == TrackState.PERSISTENT) == (label[decided] == 1)
        rows.append({'frames': k, 'tracks': int(alive.sum()),
                     'accuracy': float(np.mean((p >= 0.5) == (y == 1))) if len(y) else None,
                     'decided_fraction': float(decided.sum() / max(alive.sum(), 1)),
                     'decided_accuracy': float(right.mean()) if decided.any() else None})
    return rows


def main(argv=None) -> int:
    """Print the split metrics and the earliness curve as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--weights', required=True)
    parser.add_argument('--data', required=True, help='data set directory (manifest.json)')
    parser.add_argument('--split', default='test')
    parser.add_argument('--frames', type=int, default=32, help='earliness curve length')
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    result = {'weights': args.weights, 'split': args.split,
              'metrics': split_metrics(args.weights, args.data, args.split),
              'earliness': earliness(args.weights, args.data, args.split, args.frames)}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
