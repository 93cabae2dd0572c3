"""
Detector noise model: jitter, misses, score calibration, false positives and edge flicker.

False positives linger over several frames, alone or in clusters.

Options that are off (``jitter_rel`` 0, ``score_gain`` 1, ``score_bias`` 0, ``score_noise`` 0,
``fp_cluster`` [1, 1]) draw nothing, so a scenario without them gets the same random stream.
"""

from typing import Dict, List

import numpy as np


class NoiseModel:
    """
    Perturb one camera's detections frame by frame, reproducibly from ``rng``.

    False-positive episodes and edge flicker are drawn up front; each injected box carries a
    ``source`` id (``fp<n>`` / ``edge<n>``; cluster members ``fp<n>c<k>``) so one episode forms
    one ground-truth 2D track per box.
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
            score = rng.uniform(*cfg['fp_score'])
            members = self._cluster(size, score)
            for k, frame in enumerate(range(start, min(n_frames, start + length))):
                c = centre + k * drift + rng.normal(0.0, 0.5, size=2)
                self._add(frame, c, size, score + rng.normal(0.0, 0.03), f'fp{prefix}{n}')
                for m, (offset, m_size, m_score) in enumerate(members):
                    self._add(frame, c + offset + rng.normal(0.0, 0.5, size=2), m_size,
                              m_score + rng.normal(0.0, 0.03), f'fp{prefix}{n}c{m}')
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

    def _cluster(self, size: np.ndarray, score: float) -> list:
        """Return the other members (offset, size, score) of a false-positive cluster."""
        low, high = self.cfg['fp_cluster']
        if high <= 1:
            return []
        spread = float(self.cfg['fp_spread'])
        count = int(self.rng.integers(low, high + 1)) - 1
        return [(self.rng.uniform(-spread, spread, size=2) * size,
                 size * self.rng.uniform(0.6, 1.4, size=2),
                 float(self.rng.uniform(*self.cfg['fp_score']))) for _ in range(count)]

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
        relative = float(self.cfg['jitter_rel'])
        calibrate = (self.cfg['score_gain'] != 1.0 or self.cfg['score_bias'] != 0.0
                     or self.cfg['score_noise'] > 0.0)
        for det in detections:
            if self.rng.random() < self.cfg['miss_prob']:
                continue
            cx, cy, w, h = det['box']
            if relative > 0:  # std grows with the box: centre x and width with w, y and h with h
                scale = jitter + relative * np.array([w, h, w, h])
                noise = self.rng.normal(0.0, 1.0, size=4) * scale
            else:
                noise = self.rng.normal(0.0, jitter, size=4) if jitter > 0 else np.zeros(4)
            det = dict(det, box=[cx + noise[0], cy + noise[1], max(1.0, w + noise[2]),
                                 max(1.0, h + noise[3])])
            if calibrate:
                score = self.cfg['score_gain'] * det['score'] + self.cfg['score_bias']
                if self.cfg['score_noise'] > 0:
                    score += self.rng.normal(0.0, self.cfg['score_noise'])
                det['score'] = float(np.clip(score, 0.05, 1.0))
            out.append(det)
        return out + [dict(d) for d in self.injected.get(frame, [])]
