"""
2D detections as the core sees them: one box of one camera at one stamp.

Two message types convert to a ``DetectionFrame`` (field by field, so rclpy messages and the
dataclasses ``rosbags`` deserializes into both work): the package's own
``persistence_ros/msg/Detection2DArray`` (:func:`detection_frame_from_msg`) and
``vision_msgs/msg/Detection2DArray`` (:func:`detection_frame_from_vision_msg`, vision_msgs
4.x as in Humble, Jazzy and Kilted).
"""

from collections import Counter
from dataclasses import dataclass, field
import math
from typing import List, Optional, Tuple

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


# persistence_ros/msg/Detection2DArray or vision_msgs/msg/Detection2DArray: the choices of the
# node's ``detections.type`` parameter, and the message type each names.
DETECTION_TYPES = {'persistence_ros': 'persistence_ros/msg/Detection2DArray',
                   'vision_msgs': 'vision_msgs/msg/Detection2DArray'}
# Why a vision_msgs detection has no Detection (counted as ``rejected.<reason>`` like the
# pipeline's DETECTION_REJECTIONS): it carries no class hypothesis, so no score.
VISION_MSGS_REJECTIONS = ('no_hypothesis',)


def _axis_aligned_size(size_x: float, size_y: float, theta: float) -> Tuple[float, float]:
    """Return the width and height of the axis-aligned box around a rotated one."""
    if theta == 0.0 or not math.isfinite(theta):
        return size_x, size_y
    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    return size_x * c + size_y * s, size_x * s + size_y * c


def detection_from_vision_msg(det) -> Optional[Detection]:
    """
    Return the Detection of one ``vision_msgs/msg/Detection2D``, None if it has no hypothesis.

    Mapping: centre = ``bbox.center.position.x/y``, width/height = ``bbox.size_x/size_y`` (a
    box rotated by ``bbox.center.theta`` becomes the axis-aligned box around it), ``id`` =
    ``Detection2D.id``, ``class_id``/``score`` = ``hypothesis.class_id``/``hypothesis.score`` of
    the result with the highest score (the first one on a tie; a NaN score counts as lowest,
    and is kept, for the pipeline to reject as ``non_finite``).  The per-detection header
    and the hypotheses' poses are not used (the array's header names the image).
    """
    results = list(det.results)
    if not results:
        return None
    scores = [float(r.hypothesis.score) for r in results]
    best = max(range(len(results)),
               key=lambda k: scores[k] if not math.isnan(scores[k]) else -math.inf)
    box = det.bbox
    width, height = _axis_aligned_size(float(box.size_x), float(box.size_y),
                                       float(box.center.theta))
    return Detection(center_x=float(box.center.position.x),
                     center_y=float(box.center.position.y), width=width, height=height,
                     score=scores[best], class_id=str(results[best].hypothesis.class_id),
                     id=str(det.id))


def detection_frame_from_vision_msg(msg, rejected: Optional[Counter] = None
                                    ) -> DetectionFrame:
    """
    Return the DetectionFrame of a ``vision_msgs/msg/Detection2DArray``.

    Each detection maps as :func:`detection_from_vision_msg` says; one without a hypothesis
    is left out and counted in ``rejected['no_hypothesis']`` (``VISION_MSGS_REJECTIONS``).
    Invalid numbers (NaN sizes, ...) are kept for the pipeline's input checks.
    """
    detections = []
    for det in msg.detections:
        converted = detection_from_vision_msg(det)
        if converted is None:
            if rejected is not None:
                rejected['no_hypothesis'] += 1
            continue
        detections.append(converted)
    return DetectionFrame(stamp_ns=stamp_to_ns(msg.header.stamp),
                          frame_id=str(msg.header.frame_id), detections=detections)


def detection_frame_of(msg, msgtype: str, rejected: Optional[Counter] = None
                       ) -> DetectionFrame:
    """Return the DetectionFrame of a detection message of either ``DETECTION_TYPES`` type."""
    if msgtype == DETECTION_TYPES['vision_msgs']:
        return detection_frame_from_vision_msg(msg, rejected)
    if msgtype == DETECTION_TYPES['persistence_ros']:
        return detection_frame_from_msg(msg)
    raise ValueError(f'unsupported detection message type {msgtype!r}; supported: '
                     + ', '.join(DETECTION_TYPES.values()))
