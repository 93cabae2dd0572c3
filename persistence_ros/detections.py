"""2D detections as the core sees them: one box of one camera at one stamp."""

from dataclasses import dataclass, field
from typing import List

import numpy as np


@dataclass(frozen=True)
class Detection:
    """
    One detector box (centre/size in pixels of the image it came from).

    ``id`` is unique within a stream (it joins detections to ground truth);
    it may be empty when the detector does not provide one.
    """

    center_x: float
    center_y: float
    width: float
    height: float
    score: float = 1.0
    class_id: str = ''
    id: str = ''

    def xyxy(self) -> np.ndarray:
        """Return the box as ``[x_min, y_min, x_max, y_max]``."""
        hw, hh = 0.5 * self.width, 0.5 * self.height
        return np.array([self.center_x - hw, self.center_y - hh,
                         self.center_x + hw, self.center_y + hh], dtype=np.float64)

    def is_valid(self) -> bool:
        """Return True if every number is finite, sizes positive and score in [0, 1]."""
        values = (self.center_x, self.center_y, self.width, self.height, self.score)
        return (all(np.isfinite(v) for v in values) and self.width > 0.0
                and self.height > 0.0 and 0.0 <= self.score <= 1.0)


@dataclass
class DetectionFrame:
    """All detections of one camera image: stamp in integer nanoseconds and the frame id."""

    stamp_ns: int
    frame_id: str
    detections: List[Detection] = field(default_factory=list)
