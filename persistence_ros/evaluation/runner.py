"""Run the core pipeline over a bag, or read a node's recorded tracks, and score the run."""

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple
import warnings

import numpy as np

from persistence_ros import __version__, bag_io
from persistence_ros.calibration import (
    calibration_from_camera_info, CameraCalibration, StereoCalibration)
from persistence_ros.detections import detection_frame_from_msg, DetectionFrame, stamp_to_ns
from persistence_ros.evaluation.scoring import score_run, track_labels, Truth
from persistence_ros.filters import (
    GBDT_DECIDE_AFTER, GbdtFilter, make_filter, NoFilter, PersistenceFilter, StereoTrackState)
from persistence_ros.pipeline import PipelineConfig, PipelineTrack, StereoPipeline

CAMERAS = ('left', 'right')
TOPICS = {cam: {'image': f'/stereo/{cam}/image_raw', 'info': f'/stereo/{cam}/camera_info',
                'detections': f'/stereo/{cam}/detections'} for cam in CAMERAS}
TOPIC_TYPES = {'image': bag_io.IMAGE, 'info': bag_io.CAMERA_INFO,
               'detections': bag_io.DETECTION_2D_ARRAY}
TRACK_ARRAY = 'persistence_ros/msg/TrackArray'
STATE_NAMES = ('tentative', 'persistent', 'transient')

Run = List[Tuple[int, List[PipelineTrack]]]


@dataclass
class StereoFrame:
    """One synchronized frame of a stereo bag."""

    stamp_ns: int
    left: DetectionFrame
    right: DetectionFrame
    left_image: Optional[np.ndarray] = None
    right_image: Optional[np.ndarray] = None


def read_stereo_bag(bag_dir, with_images: bool = False
                    ) -> Tuple[StereoCalibration, List[StereoFrame]]:
    """
    Return the calibration (first CameraInfo of each camera) and the synchronized frames.

    Frames are joined on equal header stamps; a stamp without detections in both cameras
    is skipped. With ``with_images``, detection frames without an image of the same stamp
    run without images, and a warning says how many there are.
    """
    kinds = ('info', 'detections', 'image') if with_images else ('info', 'detections')
    topics = [TOPICS[c][k] for c in CAMERAS for k in kinds]
    _check_topic_types(bag_dir, {TOPICS[c][k]: TOPIC_TYPES[k] for c in CAMERAS for k in kinds})
    info: Dict[str, CameraCalibration] = {}
    by_stamp: Dict[int, Dict[str, object]] = defaultdict(dict)
    for topic, _, msg in bag_io.read_messages(bag_dir, topics):
        cam = 'left' if topic.startswith('/stereo/left/') else 'right'
        if topic.endswith('camera_info'):
            if cam not in info:
                info[cam] = calibration_from_camera_info(msg)
        elif topic.endswith('detections'):
            frame = detection_frame_from_msg(msg)
            by_stamp[frame.stamp_ns][cam] = frame
        else:
            by_stamp[stamp_to_ns(msg.header.stamp)][cam + '_image'] = \
                bag_io.image_to_rgb(msg)
    if set(info) != set(CAMERAS):
        raise ValueError(f'{bag_dir}: no CameraInfo for {sorted(set(CAMERAS) - set(info))}')
    frames = [StereoFrame(s, d['left'], d['right'], d.get('left_image'), d.get('right_image'))
              for s, d in sorted(by_stamp.items()) if 'left' in d and 'right' in d]
    if with_images:
        _warn_missing_images(bag_dir, frames)
    return StereoCalibration(info['left'], info['right']), frames


def _check_topic_types(bag_dir, expected: Dict[str, str]) -> None:
    """Raise ``ValueError`` if a topic of the bag has another type than ``expected``."""
    found = bag_io.bag_topics(bag_dir)
    wrong = [f'{topic} is {found[topic]}, expected {msgtype}'
             for topic, msgtype in expected.items() if found.get(topic, msgtype) != msgtype]
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
                 config: Optional[PipelineConfig] = None,
                 on_states=None) -> Run:
    """
    Run ``StereoPipeline`` over frames; return ``[(stamp_ns, tracks)]``.

    ``on_states(states)`` (optional) sees the filter inputs of every frame (used to collect
    gbdt training features).
    """
    filt = persistence_filter
    if on_states is not None:
        filt = _Spy(persistence_filter, on_states)
    pipeline = StereoPipeline(calibration, config, filt)
    run: Run = []
    for f in frames:
        result = pipeline.process(f.left, f.right, f.left_image, f.right_image)
        run.append((f.stamp_ns, result.tracks))
    return run


class _Spy(PersistenceFilter):
    """Pass-through filter wrapper that shows every frame's inputs to a callback."""

    def __init__(self, inner: PersistenceFilter, callback):
        self.inner, self.callback, self.name = inner, callback, inner.name
        self.uses_images = inner.uses_images

    def set_calibration(self, calibration):
        self.inner.set_calibration(calibration)

    def update(self, tracks):
        self.callback(tracks)
        return self.inner.update(tracks)

    def reset(self):
        self.inner.reset()


def read_track_bag(bag_dir, topic: Optional[str] = None) -> Run:
    """Return ``[(stamp_ns, tracks)]`` from the ``TrackArray`` messages a node published."""
    topics = bag_io.bag_topics(bag_dir)
    if topic is None:
        candidates = [t for t, ty in topics.items() if ty == TRACK_ARRAY]
        if len(candidates) != 1:
            raise ValueError(f'{bag_dir}: expected one {TRACK_ARRAY} topic, found '
                             f'{candidates or "none"}; name it with --tracks-topic')
        topic = candidates[0]
    elif topics.get(topic) != TRACK_ARRAY:
        raise ValueError(f'{bag_dir}: topic {topic} is {topics.get(topic, "not in the bag")}, '
                         f'expected {TRACK_ARRAY}')
    run: Run = []
    for _, _, msg in bag_io.read_messages(bag_dir, [topic]):
        tracks = []
        for t in msg.tracks:
            tracks.append(PipelineTrack(
                id=int(t.id), left_track_id=int(t.left_track_id),
                right_track_id=int(t.right_track_id), state=STATE_NAMES[int(t.state)],
                probability=float(t.probability), frames_observed=int(t.frames_observed),
                decision_frame=int(t.decision_frame),
                frame_stamps_ns=[stamp_to_ns(s) for s in t.frame_stamps],
                attention=[float(a) for a in t.attention],
                position=(np.array([t.position.x, t.position.y, t.position.z])
                          if t.has_position else None),
                left_detection_id=str(t.left_detection_id),
                right_detection_id=str(t.right_detection_id)))
        run.append((stamp_to_ns(msg.header.stamp), tracks))
    return run


def needs_images(persistence_filter: PersistenceFilter,
                 config: Optional[PipelineConfig] = None) -> bool:
    """
    Return True if the run needs the images (reading them is slow).

    They are needed when the filter uses image crops or the trackers gate on colour.
    """
    tracker = (config if config is not None else PipelineConfig()).tracker
    return bool(getattr(persistence_filter, 'uses_images', True) or tracker.uses_appearance)


def build_filter(filter_name: str, truth: Optional[Truth] = None,
                 gbdt_path: Optional[str] = None, **kwargs) -> PersistenceFilter:
    """Build a filter; the ground plane comes from the truth rig when known."""
    plane = truth.ground_plane if truth is not None else None
    return make_filter(filter_name, plane=plane, gbdt_path=gbdt_path, **kwargs)


def evaluate_bag(bag_dir, truth_path=None, filter_name: str = 'none',
                 tracks_bag=None, gbdt_path: Optional[str] = None,
                 config: Optional[PipelineConfig] = None,
                 persistence_filter: Optional[PersistenceFilter] = None,
                 tracks_topic: Optional[str] = None, errors: bool = False) -> dict:
    """
    Return the metrics of one scene (the JSON of ``persistence-ros evaluate``).

    With ``tracks_bag`` the recorded ``TrackArray`` messages are scored (``run.filter`` is
    ``'node'``); otherwise the core pipeline runs over ``bag_dir`` with the filter.
    ``errors`` adds the wrongly decided tracks (``tracks.errors``, ``scoring.score_tracks``).
    """
    truth_path = Path(truth_path) if truth_path else Path(bag_dir) / 'truth.json'
    truth = Truth.load(truth_path)
    if tracks_bag is not None:
        run = read_track_bag(tracks_bag, tracks_topic)
        name = 'node'
    else:
        filt = persistence_filter or build_filter(filter_name, truth, gbdt_path)
        calibration, frames = read_stereo_bag(bag_dir, with_images=needs_images(filt, config))
        run = run_pipeline(calibration, frames, filt, config)
        name = filt.name
    return score_run(run, truth, name, __version__, errors)


def collect_gbdt_training(bag_dirs: Iterable, decide_after: int = GBDT_DECIDE_AFTER,
                          config: Optional[PipelineConfig] = None
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """
    Return (features, labels) of the stereo tracks of training bags.

    Each stereo track contributes one sample: its features at the frame where
    ``frames_observed`` first reaches ``decide_after`` (the frame the gbdt filter decides
    at).  Labels (1 = real object) are the majority kind of the detections the track used
    over the whole run, from each bag's ``truth.json``.  Use training-split bags only.
    """
    xs: List[np.ndarray] = []
    ys: List[int] = []
    for bag_dir in bag_dirs:
        truth = Truth.load(Path(bag_dir) / 'truth.json')
        featurizer = GbdtFilter(plane=truth.ground_plane, decide_after=decide_after)
        snapshots: Dict[int, np.ndarray] = {}

        def on_states(states: Sequence[StereoTrackState]) -> None:
            for st in states:
                if st.id not in snapshots and st.frames_observed >= decide_after:
                    snapshots[st.id] = featurizer.features(st)

        calibration, frames = read_stereo_bag(bag_dir, with_images=True)
        run = run_pipeline(calibration, frames, NoFilter(), config, on_states=on_states)
        labels = track_labels(run, truth)
        for tid, feats in snapshots.items():
            if labels.get(tid) is not None:
                xs.append(feats)
                ys.append(int(labels[tid]))
    if not xs:
        raise ValueError('no labelled stereo tracks in the training bags')
    return np.stack(xs), np.array(ys, dtype=np.int64)


def train_gbdt(bag_dirs: Iterable, out_path: str, decide_after: int = GBDT_DECIDE_AFTER,
               plane: Optional[Sequence[float]] = None) -> GbdtFilter:
    """Fit the gbdt filter on training bags and save its training set to ``out_path``."""
    x, y = collect_gbdt_training(bag_dirs, decide_after)
    filt = GbdtFilter(plane=plane, decide_after=decide_after).fit(x, y)
    filt.save(out_path)
    return filt
