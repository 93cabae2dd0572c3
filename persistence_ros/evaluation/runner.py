"""Score a scene: run the core pipeline over its bag, or read a node's recorded tracks."""

from dataclasses import replace
import logging
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from persistence_ros import __version__, bag_io
from persistence_ros.baselines import NoFilter
from persistence_ros.detections import stamp_to_ns
from persistence_ros.evaluation.scoring import score_run, track_labels, Truth
from persistence_ros.filter_factory import build_filter
from persistence_ros.gbdt import GBDT_DECIDE_AFTER, GbdtFilter
from persistence_ros.offline_runner import needs_images, read_stereo_bag, Run, run_pipeline
from persistence_ros.pipeline import PipelineTrack
from persistence_ros.settings import Settings
from persistence_ros.smoothing import SmoothedState
from persistence_ros.stereo_track import PersistenceFilter, StereoTrackHistory, TrackState

LOG = logging.getLogger(__name__)

TRACK_ARRAY = 'persistence_ros/msg/TrackArray'


def _vector(v) -> np.ndarray:
    return np.array([v.x, v.y, v.z], dtype=np.float64)


def read_track_bag(bag_dir, topic: Optional[str] = None) -> Run:
    """
    Return ``[(stamp_ns, tracks)]`` from the ``TrackArray`` messages a node published.

    Every field of ``Track.msg`` comes back, the smoothed state too (``has_smoothed``).
    """
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
            track = PipelineTrack(
                id=int(t.id), left_track_id=int(t.left_track_id),
                right_track_id=int(t.right_track_id), state=TrackState(int(t.state)),
                probability=float(t.probability), frames_observed=int(t.frames_observed),
                decision_frame=int(t.decision_frame),
                frame_stamps_ns=[stamp_to_ns(s) for s in t.frame_stamps],
                attention=[float(a) for a in t.attention],
                position=_vector(t.position) if t.has_position else None,
                left_detection_id=str(t.left_detection_id),
                right_detection_id=str(t.right_detection_id))
            if t.has_smoothed:
                track.set_smoothed(SmoothedState(
                    _vector(t.smoothed_position), _vector(t.smoothed_velocity),
                    np.asarray(t.smoothed_position_covariance, dtype=np.float64).reshape(3, 3),
                    np.asarray(t.smoothed_velocity_covariance, dtype=np.float64).reshape(3, 3)))
            tracks.append(track)
        run.append((stamp_to_ns(msg.header.stamp), tracks))
    return run


def scene_settings(settings: Optional[Settings], truth: Optional[Truth],
                   plane_from_truth: bool = False) -> Settings:
    """
    Return the settings a filter runs with on a scene.

    As the node runs with its defaults: no ground plane unless ``settings`` has one.  With
    ``plane_from_truth`` the truth rig's floor becomes ``filter.ground_plane`` (an input a robot
    has only when its floor is configured).
    """
    settings = settings if settings is not None else Settings()
    if not plane_from_truth or truth is None:
        return settings
    if truth.ground_plane is None:
        LOG.warning('--plane-from-truth: scene %s-s%s has no ground plane in its truth (a '
                    'composite scene has none); its filter runs without one',
                    truth.scenario, truth.data.get('seed'))
        return settings
    return replace(settings, filter=replace(settings.filter,
                                            ground_plane=[float(v) for v in truth.ground_plane]))


def build_scene_filter(settings: Optional[Settings], truth: Optional[Truth],
                       plane_from_truth: bool = False) -> PersistenceFilter:
    """Build the filter of ``settings`` for a scene (``scene_settings``)."""
    return build_filter(scene_settings(settings, truth, plane_from_truth))


def evaluate_bag(bag_dir, truth_path=None, settings: Optional[Settings] = None,
                 tracks_bag=None, persistence_filter: Optional[PersistenceFilter] = None,
                 tracks_topic: Optional[str] = None, errors: bool = False,
                 plane_from_truth: bool = False) -> dict:
    """
    Return the metrics of one scene (the JSON of ``persistence-ros evaluate``).

    With ``tracks_bag`` the recorded ``TrackArray`` messages are scored (``run.filter`` is
    ``'node'``); otherwise the core pipeline runs over ``bag_dir`` with
    ``persistence_filter`` (default: the filter of ``settings`` for the scene,
    ``build_scene_filter``).  ``errors`` adds the wrongly decided tracks (``tracks.errors``,
    ``scoring.score_tracks``).
    """
    truth_path = Path(truth_path) if truth_path else Path(bag_dir) / 'truth.json'
    truth = Truth.load(truth_path)
    if tracks_bag is not None:
        run = read_track_bag(tracks_bag, tracks_topic)
        name = 'node'
    else:
        filt = persistence_filter or build_scene_filter(settings, truth, plane_from_truth)
        calibration, frames = read_stereo_bag(bag_dir,
                                              with_images=needs_images(filt, settings))
        run = run_pipeline(calibration, frames, filt, settings)
        name = filt.name
    return score_run(run, truth, name, __version__, errors)


GBDT_PLANES = ('truth', 'none')


def collect_gbdt_training(bag_dirs: Iterable, decide_after: int = GBDT_DECIDE_AFTER,
                          settings: Optional[Settings] = None,
                          planes: Sequence[str] = GBDT_PLANES
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """
    Return (features, labels) of the stereo tracks of training bags.

    Each stereo track contributes one sample per entry of ``planes``: its features at the
    frame where ``frames_observed`` first reaches ``decide_after`` (the frame the gbdt filter
    decides at), computed with the truth's ground plane (``'truth'``) and without one
    (``'none'``: the height features are missing, as on a robot whose floor is not
    configured), so one fit serves both.  Labels (1 = real object) are the majority kind of
    the detections the track used over the whole run, from each bag's ``truth.json``.  Use
    training-split bags only.
    """
    unknown = sorted(set(planes) - set(GBDT_PLANES))
    if unknown or not planes:
        raise ValueError(f'planes must be some of {GBDT_PLANES}, got {list(planes)}')
    xs: List[np.ndarray] = []
    ys: List[int] = []
    for bag_dir in bag_dirs:
        truth = Truth.load(Path(bag_dir) / 'truth.json')
        featurizers = [GbdtFilter(plane=truth.ground_plane if plane == 'truth' else None,
                                  decide_after=decide_after) for plane in planes]
        snapshots: Dict[int, List[np.ndarray]] = {}

        def on_states(states: Sequence[StereoTrackHistory]) -> None:
            for st in states:
                if st.id not in snapshots and st.frames_observed >= decide_after:
                    snapshots[st.id] = [f.features(st) for f in featurizers]

        calibration, frames = read_stereo_bag(bag_dir, with_images=True)
        run = run_pipeline(calibration, frames, NoFilter(), settings, on_states=on_states)
        labels = track_labels(run, truth)
        for tid, feats in snapshots.items():
            if labels.get(tid) is not None:
                xs.extend(feats)
                ys.extend([int(labels[tid])] * len(feats))
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
