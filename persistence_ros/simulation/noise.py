"""Detector noise model: box jitter, misses, lingering false positives and edge flicker."""

from typing import Dict, List

import numpy as np


class NoiseModel:
    """
    Perturb one camera's detections frame by frame, reproducibly from ``rng``.

    False-positive episodes and edge flicker are drawn up front; each injected box carries a
    ``source`` id (``fp<n>`` / ``edge<n>``) so one episode forms one ground-truth 2D track.
    """

    def __init__(self, cfg: dict, rng: np.random.Generator, width: int, height: int,
                 n_frames: int, camera: str):
        self.cfg, self.rng = cfg, rng
        self.width, self.height = width, height
        self.injected: Dict[int, List[dict]] = {}
        prefix = camera[0].upper()
        low, high = cfg['lingering_frames']
        for n in range(int(cfg['false_positives'])):
            start = int(rng.integers(0, n_frames))
            length = int(rng.integers(low, high + 1))
            centre = rng.uniform([0.05 * width, 0.05 * height], [0.95 * width, 0.95 * height])
            size = rng.uniform(0.03, 0.12) * min(width, height) * rng.uniform(0.7, 1.3, size=2)
            drift = rng.normal(0.0, 0.004 * width, size=2)
            score = rng.uniform(0.25, 0.85)
            for k, frame in enumerate(range(start, min(n_frames, start + length))):
                c = centre + k * drift + rng.normal(0.0, 0.5, size=2)
                self._add(frame, c, size, score + rng.normal(0.0, 0.03), f'fp{prefix}{n}')
        rate = float(cfg['edge_flicker_rate'])
        count = 0
        for frame in range(n_frames):
            if rate <= 0.0 or rng.random() >= rate:
                continue
            side = int(rng.integers(0, 4))
            along = rng.uniform(0.05, 0.95)
            depth = rng.uniform(0.0, 0.06)
            if side < 2:
                c = np.array([along * width, (depth if side == 0 else 1.0 - depth) * height])
            else:
                c = np.array([(depth if side == 2 else 1.0 - depth) * width, along * height])
            size = rng.uniform(4.0, 16.0, size=2)
            score = rng.uniform(0.15, 0.6)
            for f in range(frame, min(n_frames, frame + int(rng.integers(1, 3)))):
                self._add(f, c, size, score, f'edge{prefix}{count}')
            count += 1

    def _add(self, frame: int, centre, size, score: float, source: str) -> None:
        x = float(np.clip(centre[0], 0.0, self.width - 1.0))
        y = float(np.clip(centre[1], 0.0, self.height - 1.0))
        self.injected.setdefault(frame, []).append({
            'box': [x, y, float(max(2.0, size[0])), float(max(2.0, size[1]))],
            'score': float(np.clip(score, 0.05, 1.0)), 'kind': 'false_positive',
            'object_id': None, 'source': source})

    def apply(self, frame: int, detections: List[dict]) -> List[dict]:
        """Return this frame's detections after misses and jitter, plus injected boxes."""
        out = []
        jitter = float(self.cfg['jitter_px'])
        for det in detections:
            if self.rng.random() < self.cfg['miss_prob']:
                continue
            noise = self.rng.normal(0.0, jitter, size=4) if jitter > 0 else np.zeros(4)
            cx, cy, w, h = det['box']
            det = dict(det, box=[cx + noise[0], cy + noise[1], max(1.0, w + noise[2]),
                                 max(1.0, h + noise[3])])
            out.append(det)
        return out + [dict(d) for d in self.injected.get(frame, [])]
