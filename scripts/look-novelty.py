#!/usr/bin/env python3
"""
How unfamiliar a data set's crops look to a model: the tokenizer's reconstruction error per track.

An analysis for issue 23 (a "look" check beside the fail-safe's rig and feature checks), not a
part of the node. For each track (at least 3 frames) the first 16 crops (``--frames``) go
through the model's tokenizer (encode, quantize, decode); the track's score is the mean
squared error of the reconstruction in [-1, 1] pixel units. The first data set is the
reference: the other sets print the fraction of their tracks (and of their real tracks) above its 95th and 99th
percentiles.

    python scripts/look-novelty.py --model CKPT --reference DS[:SPLIT[:SCENARIO_PREFIX]] \
        --data DS ... [--tracks 300]

Data sets are those of ``persistence-ros simulate --dataset`` (crops and labels; held-out bags
can be turned into one with ``simulation.dataset.build_dataset(..., allow_evaluation_seeds=
True)`` for analysis only).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from persistence_ros.model.checkpoint import load_model

FRAMES = 16  # default of --frames


def track_crops(spec: str, limit: int, frames: int = FRAMES):
    """Return [(crops [T, H, W, 3] uint8, label)] of a 'DS[:SPLIT[:PREFIX]]' data set."""
    root, split, prefix = (spec.split(':') + ['', ''])[:3]
    manifest = json.loads((Path(root) / 'manifest.json').read_text())
    out = []
    for scene in manifest['scenes']:
        if (split and scene['split'] != split) or not scene['scenario'].startswith(prefix):
            continue
        with np.load(Path(root) / scene['file']) as arrays:  # each array read once
            crops, offsets = arrays['crops'], arrays['track_offsets']
            labels = arrays['track_label']
        for i in range(len(offsets) - 1):
            a, b = int(offsets[i]), int(offsets[i + 1])
            if b - a >= 3:   # a copy: a view would keep the scene's whole crop array alive
                out.append((crops[a:min(b, a + frames)].copy(), int(labels[i])))
        if len(out) >= limit:
            break
    return out


@torch.no_grad()
def recon_errors(model, tracks) -> np.ndarray:
    """Return each track's mean squared reconstruction error."""
    errors = []
    for crops, _ in tracks:
        clip = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))[None]
        out = model.tokenizer(clip)
        errors.append(float((out['recon'] - out['target']).pow(2).mean()))
    return np.array(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--model', required=True)
    parser.add_argument('--reference', required=True, metavar='DS[:SPLIT[:PREFIX]]')
    parser.add_argument('--data', action='append', default=[], metavar='DS[:SPLIT[:PREFIX]]')
    parser.add_argument('--tracks', type=int, default=300, help='tracks per set (at most)')
    parser.add_argument('--frames', type=int, default=FRAMES,
                        help='first crops of each track scored (default %(default)s)')
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model)
    ref = recon_errors(model, track_crops(args.reference, args.tracks, args.frames))
    q95, q99 = np.percentile(ref, [95, 99])
    print(f'reference {args.reference}: {len(ref)} tracks, error q50/q95/q99 '
          f'{np.median(ref):.3f} / {q95:.3f} / {q99:.3f}')
    for spec in args.data:
        tracks = track_crops(spec, args.tracks, args.frames)
        err = recon_errors(model, tracks)
        real = np.array([label for _, label in tracks]) == 1
        print(f'{spec}: {len(err)} tracks ({int(real.sum())} real), error q50/q90/q99 '
              f'{np.median(err):.3f} / {np.percentile(err, 90):.3f} / '
              f'{np.percentile(err, 99):.3f}; above reference q95: {np.mean(err > q95):.2f} '
              f'(real {np.mean(err[real] > q95):.2f}), above q99: {np.mean(err > q99):.2f} '
              f'(real {np.mean(err[real] > q99):.2f})')


if __name__ == '__main__':
    main()
