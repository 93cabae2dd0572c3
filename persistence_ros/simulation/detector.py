"""
Classical colour/brightness blob detector against the known (empty-scene) background.

It sees pixels, not ground truth: reflections and glare are detected because they change the
image like an object does.
"""

from dataclasses import dataclass
from typing import List, Tuple

import cv2
import numpy as np


@dataclass
class Blob:
    """One connected component: box ``[cx, cy, w, h]`` (pixels), score, area and label."""

    box: List[float]
    score: float
    area: int
    label: int


def mask_box(mask: np.ndarray) -> List[float]:
    """Return ``[cx, cy, w, h]`` of the pixels of a boolean mask (pixel centres at integers)."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    return [0.5 * (x0 + x1), 0.5 * (y0 + y1), float(x1 - x0 + 1), float(y1 - y0 + 1)]


class BlobDetector:
    """
    Detect blobs that differ from a background image in colour or brightness.

    ``threshold``: the max-over-channels absolute difference a pixel needs;
    ``min_area_px``: smaller components are dropped; ``smooth_px``: Gaussian sigma applied to
    both images before differencing (sensor noise), 0: none.
    """

    def __init__(self, background: np.ndarray, threshold: float = 10, min_area_px: int = 6,
                 smooth_px: float = 0.0):
        self.smooth_px = float(smooth_px)
        self.background = self._smooth(background).astype(np.int16)
        self.threshold = float(threshold)
        self.min_area_px = int(min_area_px)
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))

    def _smooth(self, image: np.ndarray) -> np.ndarray:
        if self.smooth_px <= 0:
            return image
        return cv2.GaussianBlur(image, (0, 0), self.smooth_px)

    def detect(self, image: np.ndarray) -> Tuple[List[Blob], np.ndarray]:
        """Return the blobs of an RGB image and the component label image."""
        diff = np.abs(self._smooth(image).astype(np.int16) - self.background).max(axis=2)
        mask = (diff > self.threshold).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._kernel)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        blobs = []
        for label in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[label])
            if area < self.min_area_px:
                continue
            contrast = float(diff[labels == label].mean()) / 255.0
            # score: saturating in contrast and area, a faint or tiny blob is less certain
            score = 0.5 * min(1.0, contrast / 0.25) + 0.5 * min(1.0, area / 150.0)
            blobs.append(Blob([x + 0.5 * w - 0.5, y + 0.5 * h - 0.5, float(w), float(h)],
                              float(np.clip(score, 0.05, 1.0)), area, label))
        return blobs, labels
