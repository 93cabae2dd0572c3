"""
The offline runner: read a stereo bag and run the core pipeline over it (no ROS).

``read_stereo_bag`` reads a simulator-style bag (``TOPICS``: images, camera_info and
detections of both cameras under ``/stereo``) into synchronized ``StereoFrame``s;
``run_pipeline`` runs ``StereoPipeline`` over them and returns the ``Run`` (the output tracks
per stamp) and, when asked, the input rejections by reason (the same counters the node
reports).  The evaluator and the data-set builder both run scenes through here.

The detections may be ``persistence_ros/msg/Detection2DArray`` or
``vision_msgs/msg/Detection2DArray`` (``detections.DETECTION_TYPES``), the images
``sensor_msgs/msg/Image`` on ``image_raw`` or ``sensor_msgs/msg/CompressedImage`` (JPEG, PNG)
on ``image_raw/compressed`` (image_transport's name; used when there is no raw image topic),
decoded as the node decodes them.  What the node refuses while converting messages is
refused here by the same reason: a vision_msgs detection without a hypothesis
(``no_hypothesis``), an image it cannot decode (``corrupt_image``, ``unsupported_image``:
the frame is skipped).
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple
import warnings

import numpy as np

from persistence_ros import bag_io
from persistence_ros.calibration import (
    calibration_from_camera_info, CameraCalibration, StereoCalibration)
from persistence_ros.detections import (detection_frame_of, DETECTION_TYPES, DetectionFrame,
                                        stamp_to_ns)
from persistence_ros.image_codec import ImageEncodingError
from persistence_ros.pipeline import PipelineTrack, StereoPipeline
from persistence_ros.settings import Settings
from persistence_ros.stereo_track import PersistenceFilter

CAMERAS = ('left', 'right')
TOPICS = {cam: {'image': f'/stereo/{cam}/image_raw', 'info': f'/stereo/{cam}/camera_info',
                'detections': f'/stereo/{cam}/detections',
                'compressed': f'/stereo/{cam}/image_raw/compressed'} for cam in CAMERAS}
# the message types each kind of topic may have
TOPIC_TYPES = {'image': (bag_io.IMAGE,), 'info': (bag_io.CAMERA_INFO,),
               'detections': tuple(DETECTION_TYPES.values()),
               'compressed': (bag_io.COMPRESSED_IMAGE,)}
Run = List[Tuple[int, List[PipelineTrack]]]


@dataclass
class StereoFrame:
    """
    One synchronized frame of a stereo bag.

    ``rejected``: what converting its messages refused (reason -> count: detections without
    a hypothesis); ``image_problem``: (reason, detail) when an image could not be decoded,
    the frame is then refused whole, as the node refuses it.
    """

    stamp_ns: int
    left: DetectionFrame
    right: DetectionFrame
    left_image: Optional[np.ndarray] = None
    right_image: Optional[np.ndarray] = None
    rejected: Counter = field(default_factory=Counter)
    image_problem: Optional[Tuple[str, str]] = None


def read_stereo_bag(bag_dir, with_images: bool = False
                    ) -> Tuple[StereoCalibration, List[StereoFrame]]:
    """
    Return the calibration (first CameraInfo of each camera) and the synchronized frames.

    Frames are joined on equal header stamps; a stamp without detections in both cameras
    is skipped. With ``with_images``, detection frames without an image of the same stamp
    run without images, and a warning says how many there are.  The images are read from
    ``image_raw`` (Image) or, when the bag has no such topic, ``image_raw/compressed``
    (CompressedImage); the detections in either type of ``DETECTION_TYPES``.
    """
    found = bag_io.bag_topics(bag_dir)
    kinds = {'info': 'info', 'detections': 'detections'}
    if with_images:
        raw = all(TOPICS[c]['image'] in found for c in CAMERAS)
        compressed = all(TOPICS[c]['compressed'] in found for c in CAMERAS)
        kinds['image'] = 'compressed' if compressed and not raw else 'image'
    _check_topic_types(bag_dir, found, {TOPICS[c][k]: TOPIC_TYPES[k]
                                        for c in CAMERAS for k in kinds.values()})
    topics = {TOPICS[c][k]: (c, role) for c in CAMERAS for role, k in kinds.items()}
    info: Dict[str, CameraCalibration] = {}
    by_stamp: Dict[int, Dict[str, object]] = defaultdict(dict)
    rejected: Dict[int, Counter] = defaultdict(Counter)
    problems: Dict[int, Tuple[str, str]] = {}
    for topic, _, msg in bag_io.read_messages(bag_dir, topics):
        cam, role = topics[topic]
        if role == 'info':
            if cam not in info:
                info[cam] = calibration_from_camera_info(msg)
        elif role == 'detections':
            stamp = stamp_to_ns(msg.header.stamp)
            by_stamp[stamp][cam] = detection_frame_of(msg, found[topic], rejected[stamp])
        else:
            stamp = stamp_to_ns(msg.header.stamp)
            try:
                by_stamp[stamp][cam + '_image'] = bag_io.image_to_rgb(msg)
            except ImageEncodingError as error:
                problems.setdefault(stamp, (error.reason, f'{cam} image: {error}'))
    if set(info) != set(CAMERAS):
        raise ValueError(f'{bag_dir}: no CameraInfo for {sorted(set(CAMERAS) - set(info))}')
    frames = [StereoFrame(s, d['left'], d['right'], d.get('left_image'), d.get('right_image'),
                          rejected[s], problems.get(s))
              for s, d in sorted(by_stamp.items()) if 'left' in d and 'right' in d]
    if with_images:
        _warn_missing_images(bag_dir, [f for f in frames if f.image_problem is None])
    return StereoCalibration(info['left'], info['right']), frames


def _check_topic_types(bag_dir, found: Dict[str, str],
                       expected: Dict[str, Tuple[str, ...]]) -> None:
    """Raise ``ValueError`` if a topic of the bag has a type other than ``expected`` allows."""
    wrong = [f'{topic} is {found[topic]}, expected {" or ".join(msgtypes)}'
             for topic, msgtypes in expected.items()
             if topic in found and found[topic] not in msgtypes]
    if wrong:
        raise ValueError(f'{bag_dir}: wrong message type: {"; ".join(wrong)}')


def _warn_missing_images(bag_dir, frames: Sequence[StereoFrame]) -> None:
    """Warn once if detection frames have no image (left or right) of the same stamp."""
    missing = sum(f.left_image is None or f.right_image is None for f in frames)
    if missing:
        warnings.warn(
            f'{bag_dir}: {missing} of {len(frames)} detection frames have no left or right '
            'image with the same header stamp and run without images (frames are joined on '
            'equal stamps: the detections must carry the stamp of their image)', stacklevel=3)


def run_pipeline(calibration: StereoCalibration, frames: Sequence[StereoFrame],
                 persistence_filter: PersistenceFilter,
                 settings: Optional[Settings] = None,
                 on_states=None, rejected: Optional[Counter] = None) -> Run:
    """
    Run ``StereoPipeline`` over frames; return ``[(stamp_ns, tracks)]``.

    ``on_states(states)`` (optional) sees the filter inputs of every frame (used to collect
    gbdt training features and data sets).  ``rejected`` (optional) is updated with the
    refused frames, dropped detections and what the track bounds refused, by reason
    (``pipeline.FRAME_REJECTIONS``, ``DETECTION_REJECTIONS``, ``TRACK_REJECTIONS``, and the
    conversion's: ``StereoFrame.rejected``, ``image_problem``), as the node counts them.
    """
    filt = persistence_filter
    if on_states is not None:
        filt = _Spy(persistence_filter, on_states)
    pipeline = StereoPipeline(calibration, settings, filt)
    run: Run = []
    for f in frames:
        if rejected is not None:
            rejected.update(f.rejected)
        if f.image_problem is not None:  # the node refuses the frame before the pipeline
            if rejected is not None:
                rejected[f.image_problem[0]] += 1
            continue
        result = pipeline.process(f.left, f.right, f.left_image, f.right_image)
        if rejected is not None:
            rejected.update(result.rejections())
        if result.accepted:
            run.append((f.stamp_ns, result.tracks))
    return run


class _Spy(PersistenceFilter):
    """Pass-through filter wrapper that shows every frame's inputs to a callback."""

    def __init__(self, inner: PersistenceFilter, callback):
        self.inner, self.callback, self.name = inner, callback, inner.name
        # the callback may read the crops (data sets, gbdt training features): keep them
        self.uses_images, self.appearance_input = True, 'crop'

    def set_calibration(self, calibration):
        self.inner.set_calibration(calibration)

    def set_timer(self, timer):
        self.inner.set_timer(timer)

    def update(self, tracks):
        self.callback(tracks)
        return self.inner.update(tracks)

    def reset(self):
        self.inner.reset()


def needs_images(persistence_filter: PersistenceFilter,
                 settings: Optional[Settings] = None) -> bool:
    """
    Return True if the run needs the images (reading them is slow).

    They are needed when the filter uses image crops or the trackers gate on colour.
    """
    tracker = (settings if settings is not None else Settings()).tracker
    return bool(getattr(persistence_filter, 'uses_images', True) or tracker.uses_appearance)
