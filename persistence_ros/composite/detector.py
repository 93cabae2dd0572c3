"""
The compositor's detector: boxes of the drawn pixels, with errors, plus false positives.

The boxes come from the drawn elements' pixels with a learned-detector-like error model; false
positives that no pixel caused are added. Built differently from the MuJoCo simulator's
background-difference blob detector on purpose: it never thresholds pixels. Each drawn element
(object, mirror image, flare) is detected with a probability that falls with its contrast
against the photograph and its size; its box is the bounding box of its visible pixels with
temporally correlated jitter proportional to the box size; its score comes from a per-track
Beta draw of its kind (so objects mostly score high and reflections and flares overlap with
them), lowered when the photograph hides part of it; overlapping boxes go through non-maximum
suppression. On top: lingering false positives, false positives on the photograph's own
structure in both views (static and stereo-consistent, like a detector firing on a poster), and
short bursts of clustered boxes. Every box carries its kind and object id for the truth.
"""

from dataclasses import dataclass
from typing import Dict, List, Tuple

import cv2
import numpy as np

from persistence_ros.composite.render import CameraFrame
from persistence_ros.composite.scene import back_project, CompositeScene, scene_rng
from persistence_ros.simulation.detector import mask_box

AR = 0.6  # jitter autocorrelation from frame to frame


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def box_iou(a, b) -> float:
    """Return the IoU of two ``[cx, cy, w, h]`` boxes."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _TrackNoise:
    error: np.ndarray   # [4] relative centre and log-size error
    base: float         # per-track base score


class CompositeDetector:
    """Detections of both cameras of one scene, reproducible from the scene's seed."""

    def __init__(self, scene: CompositeScene):
        self.cfg = scene.preset['detector']
        self.rng = scene_rng(scene.seed, 'detector')
        self.width, self.height = scene.plate.left.width, scene.plate.left.height
        self.fps = scene.fps
        self._noise: Dict[Tuple[str, str], _TrackNoise] = {}
        self._base: Dict[str, float] = {}
        self.injected: Dict[Tuple[str, int], List[dict]] = {}
        n = scene.n_frames
        for cam in ('left', 'right'):
            self._lingering(cam, n)
            self._clusters(cam, n)
        self._clutter(scene, n)

    def _score_base(self, source: str, kind: str) -> float:
        if source not in self._base:
            a, b = self.cfg['scores'][kind]
            self._base[source] = float(self.rng.beta(a, b))
        return self._base[source]

    def _inject(self, cam: str, frame: int, centre, size, score: float, source: str) -> None:
        x = float(np.clip(centre[0], 0.0, self.width - 1.0))
        y = float(np.clip(centre[1], 0.0, self.height - 1.0))
        self.injected.setdefault((cam, frame), []).append({
            'box': [x, y, float(max(3.0, size[0])), float(max(3.0, size[1]))],
            'score': float(np.clip(score, 0.02, 0.99)), 'kind': 'false_positive',
            'object_id': None, 'source': source})

    def _lingering(self, cam: str, n_frames: int) -> None:
        low, high = self.cfg['lingering_frames']
        side = min(self.width, self.height)
        for k in range(int(self.cfg['false_positives'])):
            source = f'fp{cam[0].upper()}{k}'
            start = int(self.rng.integers(0, n_frames))
            length = int(self.rng.integers(low, high + 1))
            centre = self.rng.uniform([0.03 * self.width, 0.03 * self.height],
                                      [0.97 * self.width, 0.97 * self.height])
            size = self.rng.uniform(0.03, 0.15) * side * self.rng.uniform(0.6, 1.6, size=2)
            drift = self.rng.normal(0.0, 0.003 * self.width, size=2)
            base = self._score_base(source, 'false_positive')
            for i, frame in enumerate(range(start, min(n_frames, start + length))):
                jitter = self.rng.normal(0.0, 0.02, size=4) * np.r_[size, size]
                self._inject(cam, frame, centre + i * drift + jitter[:2], size + jitter[2:],
                             base + self.rng.normal(0.0, 0.05), source)

    def _clusters(self, cam: str, n_frames: int) -> None:
        rate = float(self.cfg['cluster_rate_hz']) / self.fps
        side = min(self.width, self.height)
        count = 0
        for frame in range(n_frames):
            if rate <= 0.0 or self.rng.random() >= rate:
                continue
            centre = self.rng.uniform([0.0, 0.0], [self.width, self.height])
            frames = int(self.rng.integers(1, 4))
            for k in range(int(self.rng.integers(2, 5))):
                source = f'cl{cam[0].upper()}{count}-{k}'
                offset = self.rng.normal(0.0, 0.04 * side, size=2)
                size = self.rng.uniform(0.02, 0.08) * side * self.rng.uniform(0.7, 1.4, size=2)
                base = self._score_base(source, 'false_positive')
                for f in range(frame, min(n_frames, frame + frames)):
                    self._inject(cam, f, centre + offset + self.rng.normal(0.0, 1.0, size=2),
                                 size, base + self.rng.normal(0.0, 0.05), source)
            count += 1

    def _clutter(self, scene: CompositeScene, n_frames: int) -> None:
        """Add false positives on the photograph's structure, at its disparity in both views."""
        count = int(self.cfg['stereo_clutter'])
        if count == 0:
            return
        left, right = scene.plate.left, scene.plate.right
        grey = cv2.cvtColor(left.image, cv2.COLOR_RGB2GRAY)
        corners = cv2.goodFeaturesToTrack(grey, 200, 0.01, 0.05 * min(left.width, left.height))
        if corners is None:
            return
        corners = corners.reshape(-1, 2)
        low, high = self.cfg['lingering_frames']
        side = min(self.width, self.height)
        for k in range(count):
            col, row = corners[int(self.rng.integers(len(corners)))]
            point = back_project(scene.plate, (col, row), float(left.depth[int(row), int(col)]))
            right_px = right.project(right.to_camera(point))[0]
            size = self.rng.uniform(0.04, 0.12) * side * self.rng.uniform(0.7, 1.4, size=2)
            start = int(self.rng.integers(0, n_frames))
            length = int(self.rng.integers(2 * low, 2 * high + 1))
            source = f'clutter{k}'
            base = self._score_base(source, 'false_positive')
            for frame in range(start, min(n_frames, start + length)):
                for cam, pixel in (('left', np.array([col, row])), ('right', right_px)):
                    if self.rng.random() < 0.1:
                        continue
                    jitter = self.rng.normal(0.0, 0.02, size=4) * np.r_[size, size]
                    self._inject(cam, frame, pixel + jitter[:2], size + jitter[2:],
                                 base + self.rng.normal(0.0, 0.05), source)

    def detect(self, cam: str, frame: int, rendered: CameraFrame) -> List[dict]:
        """Return one camera's detections of a frame (dicts with box, score, kind, ...)."""
        cfg = self.cfg
        min_area = float(cfg['min_area_px'])
        min_contrast = float(cfg['min_contrast'])
        out = []
        for index, element in enumerate(rendered.elements):
            mask = rendered.mask(index)
            area = int(mask.sum())
            if area < max(min_area, 1.0):
                continue
            contrast = rendered.contrast.get(index, 0.0)
            p_detect = (1.0 - cfg['miss_prob']) * _sigmoid(
                (contrast - min_contrast) / (0.3 * min_contrast + 1.0)) * _sigmoid(
                (area - min_area) / (0.5 * min_area + 1.0))
            if self.rng.random() >= p_detect:
                continue
            noise = self._noise.get((cam, element.source))
            if noise is None:
                noise = _TrackNoise(np.zeros(4), self._score_base(element.source, element.kind))
                self._noise[(cam, element.source)] = noise
            noise.error = AR * noise.error + np.sqrt(1 - AR * AR) * self.rng.normal(
                0.0, cfg['jitter'], size=4)
            cx, cy, w, h = mask_box(mask)
            box = [cx + noise.error[0] * w, cy + noise.error[1] * h,
                   max(2.0, w * np.exp(noise.error[2])), max(2.0, h * np.exp(noise.error[3]))]
            hidden = 1.0 - element.drawn_px / max(element.full_px, 1)
            score = noise.base + self.rng.normal(0.0, 0.04) - 0.35 * max(hidden, 0.0)
            out.append({'box': box, 'score': float(np.clip(score, 0.02, 0.99)),
                        'kind': element.kind, 'object_id': element.object_id,
                        'source': element.source})
        out.sort(key=lambda d: -d['score'])
        kept: List[dict] = []
        for det in out:  # non-maximum suppression, as a learned detector's post-processing
            if all(box_iou(det['box'], k['box']) <= cfg['nms_iou'] for k in kept):
                kept.append(det)
        return kept + [dict(d) for d in self.injected.get((cam, frame), [])]
