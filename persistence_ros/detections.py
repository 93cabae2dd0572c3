"""2D detections as the core sees them: one box of one camera at one stamp."""

from dataclasses import dataclass, field
import math
from typing import List, Tuple

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

    def cxcywh(self) -> Tuple[float, float, float, float]:
        """Return the box as ``(centre x, centre y, width, height)`` floats (a track's box)."""
        return (float(self.center_x), float(self.center_y), float(self.width),
                float(self.height))

    def xyxy(self) -> np.ndarray:
        """Return the box as ``[x_min, y_min, x_max, y_max]``."""
        hw, hh = 0.5 * self.width, 0.5 * self.height
        return np.array([self.center_x - hw, self.center_y - hh,
                         self.center_x + hw, self.center_y + hh], dtype=np.float64)

    def problem(self) -> str:
        """
        Return what is wrong with the numbers, '' if nothing.

        ``'non_finite'`` (a NaN or inf), ``'non_positive_size'`` (width or height <= 0) or
        ``'score_out_of_range'`` (outside [0, 1]); ``pipeline.DETECTION_REJECTIONS`` names.
        """
        values = (self.center_x, self.center_y, self.width, self.height, self.score)
        # math.isfinite: ten times faster than np.isfinite on scalars (a 5000-box message)
        if not all(math.isfinite(v) for v in values):
            return 'non_finite'
        if not (self.width > 0.0 and self.height > 0.0):
            return 'non_positive_size'
        if not 0.0 <= self.score <= 1.0:
            return 'score_out_of_range'
        return ''

    def is_valid(self) -> bool:
        """Return True if every number is finite, sizes positive and score in [0, 1]."""
        return not self.problem()


@dataclass
class DetectionFrame:
    """All detections of one camera image: stamp in integer nanoseconds and the frame id."""

    stamp_ns: int
    frame_id: str
    detections: List[Detection] = field(default_factory=list)


NANOSECONDS = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """Return a ``builtin_interfaces/Time`` (rclpy or rosbags message) as integer nanoseconds."""
    return int(stamp.sec) * NANOSECONDS + int(stamp.nanosec)


def detection_frame_from_msg(msg) -> DetectionFrame:
    """
    Return the DetectionFrame of a ``persistence_ros/msg/Detection2DArray``.

    Works with rclpy and rosbags messages; invalid boxes are kept (see ``is_valid``).
    """
    return DetectionFrame(
        stamp_ns=stamp_to_ns(msg.header.stamp), frame_id=str(msg.header.frame_id),
        detections=[Detection(center_x=float(d.center_x), center_y=float(d.center_y),
                              width=float(d.width), height=float(d.height),
                              score=float(d.score), class_id=str(d.class_id), id=str(d.id))
                    for d in msg.detections])
