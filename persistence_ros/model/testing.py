"""
Tiny synthetic data set in the simulator's format, for tests only (not for real training).

Persistent tracks: a sharp, saturated disc moving over a textured background. Transient
tracks: 'reflection' (a faint, blurred copy moving the same way) or 'false_positive' (a short,
flickering blob). Geometry columns are drawn from the same distribution for both classes, so
only the crops separate them.
"""

import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from persistence_ros.features import DEFAULT_MODEL_FEATURES, GEOMETRY_FEATURES


def _background(rng, size):
    coarse = rng.uniform(60, 190, (4, 4, 3))
    idx = np.linspace(0, 3, size)
    i0 = np.floor(idx).astype(int).clip(0, 2)
    f = (idx - i0)[:, None]
    rows = coarse[i0] * (1 - f[..., None]) + coarse[i0 + 1] * f[..., None]
    bg = rows[:, i0] * (1 - f[None, :, :]) + rows[:, i0 + 1] * f[None, :, :]
    return bg


def render_track(rng: np.random.Generator, kind: str, frames: int, size: int = 64
                 ) -> np.ndarray:
    """Return uint8 crops ``[frames, size, size, 3]`` of one synthetic track."""
    bg = _background(rng, size)
    colour = rng.uniform(0, 255, 3)
    colour[rng.integers(3)] = 255.0
    colour[rng.integers(3)] = 0.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = np.array([size / 2, size / 2]) + rng.normal(0, 2, 2)
    vel = rng.normal(0, 0.8, 2)
    radius = rng.uniform(0.18, 0.28) * size
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        c = np.clip(c + vel + rng.normal(0, 0.5, 2), 0.3 * size, 0.7 * size)
        d = np.hypot(xx - c[0], yy - c[1])
        if kind == 'object':
            alpha, edge = 1.0, 1.0
        elif kind == 'reflection':
            alpha, edge = 0.35, 6.0
        else:
            alpha, edge = rng.uniform(0.1, 0.6), 4.0
        m = alpha * np.clip((radius - d) / edge + 0.5, 0.0, 1.0)[..., None]
        img = bg * (1 - m) + colour * m + rng.normal(0, 6, (size, size, 3))
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def make_synthetic_dataset(root, splits: Sequence[str] = ('train',) * 4 + ('val', 'test'),
                           tracks_per_scene: int = 16, max_frames: int = 24,
                           crop_size: int = 64, seed: int = 0,
                           persistent_share: float = 0.5) -> Path:
    """Write a data set (manifest.json + scenes/*.npz, the real format) and return its root."""
    root = Path(root)
    (root / 'scenes').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    manifest = {'schema_version': 1, 'crop_size': crop_size, 'context': 1.5,
                'geometry_features': list(GEOMETRY_FEATURES),
                'label_meaning': {'1': 'persistent real object', '0': 'transient'},
                'scenes': []}
    g = len(GEOMETRY_FEATURES)
    for s, split in enumerate(splits):
        name = f'synthetic-s{seed:02d}{s:03d}'
        crops, kinds, labels, offsets, cams = [], [], [], [0], []
        for _ in range(tracks_per_scene):
            label = int(rng.random() < persistent_share)
            kind = 'object' if label else str(rng.choice(['reflection', 'false_positive']))
            n = int(rng.integers(1, max_frames + 1))
            if kind == 'false_positive':
                n = int(rng.integers(1, min(6, max_frames) + 1))
            crops.append(render_track(rng, kind, n, crop_size))
            kinds.append(kind)
            labels.append(label)
            cams.append(str(rng.choice(['left', 'right'])))
            offsets.append(offsets[-1] + n)
        total = offsets[-1]
        # geometry is noise from its own generator: adding feature columns to the package
        # changes neither the crops nor the labels of the data set
        noise = np.random.default_rng((seed, s, 1))
        geometry = noise.normal(0, 1, (total, g)).astype(np.float32)
        geometry[:, 10] = (noise.random(total) < 0.5).astype(np.float32)
        frame_label = np.concatenate([np.full(len(c), lab, np.uint8)
                                      for c, lab in zip(crops, labels)])
        path = root / 'scenes' / f'{name}.npz'
        np.savez_compressed(
            path, crops=np.concatenate(crops), geometry=geometry, frame_label=frame_label,
            frame_stamp_ns=np.arange(total, dtype=np.int64) * 33_333_333,
            track_offsets=np.array(offsets, np.int64), track_label=np.array(labels, np.uint8),
            track_kind=np.array(kinds, dtype='<U16'), track_camera=np.array(cams, dtype='<U8'),
            track_id=np.arange(tracks_per_scene, dtype=np.int64))
        manifest['scenes'].append({
            'name': name, 'scenario': 'synthetic', 'seed': seed * 1000 + s, 'split': split,
            'file': f'scenes/{name}.npz',
            'sha256': hashlib.sha256(path.read_bytes()).hexdigest(),
            'tracks': tracks_per_scene, 'frames': total})
    with open(root / 'manifest.json', 'w', encoding='utf-8') as stream:
        json.dump(manifest, stream, indent=2)
    return root


def synthetic_batch(n_tracks: int = 8, frames: int = 12, size: int = 64, seed: int = 0,
                    geometry_dim: int = len(DEFAULT_MODEL_FEATURES),
                    kinds: Optional[Sequence[str]] = None):
    """Return (crops uint8 [N, T, 3, H, W], geometry [N, T, G], labels [N]) arrays."""
    rng = np.random.default_rng(seed)
    kinds = kinds or [('object', 'reflection')[i % 2] for i in range(n_tracks)]
    crops = np.stack([render_track(rng, k, frames, size) for k in kinds]).transpose(
        0, 1, 4, 2, 3)
    geometry = rng.normal(0, 1, (n_tracks, frames, geometry_dim)).astype(np.float32)
    labels = np.array([int(k == 'object') for k in kinds], np.int64)
    return np.ascontiguousarray(crops), geometry, labels
