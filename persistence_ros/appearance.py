"""
Colour appearance of detections, for the 2D trackers' appearance gate.

Each detection box is described by the normalised HSV histogram of its pixels
(``HIST_BINS`` hue x saturation x value bins, ``cv2.calcHist``); two descriptors are compared
with the Hellinger distance (OpenCV's ``HISTCMP_BHATTACHARYYA``), 0 for equal histograms, 1
for histograms with no bin in common. Glare (white, saturated in value) and reflections (the
object dimmed and mixed with the surface) sit far from the object they come from, while one
object keeps its colour from frame to frame: measured on the selection scenes, see
docs/evaluation.md.

``crop_statistics`` gives the brightness, saturation and contrast of an image crop (features
of the gbdt baseline and of the model).

A zero row means "no descriptor" (no image, or a box outside the image); distances that
involve one are 0, so they never gate a match.
"""

from typing import Sequence

import cv2
import numpy as np

from persistence_ros.detections import Detection

HIST_BINS = (8, 4, 4)
DESCRIPTOR_SIZE = int(np.prod(HIST_BINS))
_RANGES = [0, 180, 0, 256, 0, 256]


def colour_histograms(image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """
    Return one HSV histogram (sum 1) per detection of an RGB uint8 image, ``[N, D]``.

    The histogram covers the pixels of the box (centre inside) clipped to the image; invalid
    detections and boxes with no pixel inside the image get a zero row.
    """
    out = np.zeros((len(detections), DESCRIPTOR_SIZE), dtype=np.float32)
    if not len(detections):
        return out
    height, width = image.shape[:2]
    regions = {}
    for i, det in enumerate(detections):
        if not det.is_valid():
            continue
        # the pixels whose centres (at integer coordinates) lie inside the box
        x0, y0, x1, y1 = det.xyxy()
        x0, y0 = max(0, int(np.ceil(x0))), max(0, int(np.ceil(y0)))
        x1, y1 = min(width, int(np.floor(x1)) + 1), min(height, int(np.floor(y1)) + 1)
        if x1 > x0 and y1 > y0:
            regions[i] = (x0, y0, x1, y1)
    # HSV is per pixel: convert the boxes only, unless they cover more than the image
    area = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in regions.values())
    hsv = (cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV)
           if area >= width * height else None)
    for i, (x0, y0, x1, y1) in regions.items():
        box = (hsv[y0:y1, x0:x1] if hsv is not None
               else cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2HSV))
        hist = cv2.calcHist([box], [0, 1, 2], None, list(HIST_BINS), _RANGES)
        out[i] = hist.ravel() / hist.sum()
    return out


def hellinger_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """
    Return the ``(len(a), len(b))`` Hellinger distances between histogram rows.

    Rows are normalised here; a pair with a zero row has distance 0. (The matrix form of
    ``cv2.compareHist(..., HISTCMP_BHATTACHARYYA)``, which compares one pair per call.)
    """
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    sa, sb = a.sum(axis=1, keepdims=True), b.sum(axis=1, keepdims=True)
    ra = np.sqrt(a / np.where(sa > 0.0, sa, 1.0))
    rb = np.sqrt(b / np.where(sb > 0.0, sb, 1.0))
    dist = np.sqrt(np.clip(1.0 - ra @ rb.T, 0.0, 1.0))
    known = (sa > 0.0) & (sb.T > 0.0)
    return np.where(known, dist, 0.0)


def crop_statistics(crop: np.ndarray):
    """Return (brightness, saturation, contrast) in [0, 1] of an RGB uint8 crop."""
    crop = np.asarray(crop)
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.size == 0:
        return np.nan, np.nan, np.nan
    hsv = cv2.cvtColor(np.ascontiguousarray(crop, dtype=np.uint8), cv2.COLOR_RGB2HSV)
    gray = cv2.cvtColor(np.ascontiguousarray(crop, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    return (float(hsv[..., 2].mean()) / 255.0, float(hsv[..., 1].mean()) / 255.0,
            float(gray.std()) / 255.0)
