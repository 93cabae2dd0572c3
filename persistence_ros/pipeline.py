"""
The core stereo pipeline, one synchronized frame at a time (no ROS).

Data flow per frame::

    detections (left, right)
      -> input checks (every input rule of the package: FRAME_REJECTIONS, DETECTION_REJECTIONS)
      -> 2D tracks per camera (Tracker2D)
      -> stereo candidate pairs (StereoAssociator, over the tracks' histories)
      -> persistence decisions per stereo track (a PersistenceFilter)
      -> triangulation of PERSISTENT tracks -> published positions
      -> a constant-velocity Kalman filter per PERSISTENT track (smoothing.TrackSmoother)

The decision uses stereo cues (epipolar residuals, candidate 3D points, both views' crops),
so candidate pairing comes before the decision.  Candidate points of every pair are computed
as filter features; only PERSISTENT tracks get a published position (``has_position``), and
only their triangulation rejections are counted.  A PERSISTENT track also gets a smoothed
position, velocity and covariances (``smoothed_*``): its filter starts when it becomes
persistent, over the points of its history, and is updated with every published position
(the measurement covariance from the stereo geometry, ``Triangulator.point_covariance``).

Each output track (``PipelineTrack``) mirrors ``msg/Track.msg`` field by field; the ROS
node converts it to a message.  State is bounded: per stereo track the pipeline keeps at
most ``pipeline.window`` frames (the 2D histories too), and a track's state is dropped when
its pair ends.

A frame is one call of ``process``: its stamp is the LEFT detections' stamp; the right
stamp may differ (cameras without hardware sync, within the synchroniser's slop) and is kept
per frame (``StereoTrackHistory.right_stamps_ns``), so the two 2D histories are joined frame
by frame, never by equal stamps.

Every input rule lives here, so the node and the offline runner refuse and count the same
inputs alike.  A frame is checked whole before either tracker sees it (distinct frame ids,
stamps increasing on both sides, images non-empty RGB of the calibrated size): a refused
frame changes nothing and names its reason (``PipelineFrameResult.reason``, one of
``FRAME_REJECTIONS``).  A frame whose left AND right stamps are both more than
``TIME_JUMP_RESET_NS`` before the last ones starts a new sequence (a bag played in a loop):
the pipeline resets itself and says so (``PipelineFrameResult.restarted``); one side alone
jumping back is a lone bad stamp, refused as ``stamp_not_increasing`` (no reset on the
evidence of one message).  Detections that are invalid, cannot be on the image, repeat an
id of their frame or carry an overlong id are dropped and counted by reason
(``DETECTION_REJECTIONS``) before tracking.

Memory is bounded whatever arrives (``settings.PipelineConfig``): at most
``pipeline.max_detections`` detections per camera and frame are tracked (the lowest scores
dropped), at most ``pipeline.max_tracks`` 2D tracks live per camera and
``pipeline.max_stereo_tracks`` stereo tracks (``TRACK_REJECTIONS`` count what the bounds
refused), each with at most ``pipeline.window`` frames.  Crops are stored only for matched
observations and only when the filter reads them (``PersistenceFilter.uses_images``); a
filter that reads only their statistics (``appearance_input = 'statistics'``, the gbdt
baseline) gets the three numbers (``TrackObservation.crop_stats``) instead of the 12 KB
crop.  Everything a track holds goes with it when it ends.
"""

from collections import Counter, deque
from dataclasses import dataclass, field
import math
from typing import Deque, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from persistence_ros.appearance import colour_histograms, crop_statistics
from persistence_ros.calibration import CameraCalibration, StereoCalibration
from persistence_ros.detections import DetectionFrame
from persistence_ros.settings import Settings
from persistence_ros.smoothing import SmoothedState, TrackSmoother
from persistence_ros.stamp_gate import TIME_JUMP_NS
from persistence_ros.stereo import object_centres, StereoAssociator, StereoPair, Triangulator
from persistence_ros.stereo_track import (
    FilterDecision, PersistenceFilter, StereoTrackHistory, TrackState)
from persistence_ros.timing import StageTimer
from persistence_ros.tracking import Track2D, Tracker2D

# Why ``StereoPipeline.process`` refused a whole frame (``PipelineFrameResult.reason``).
FRAME_REJECTIONS = ('frame_id_mismatch', 'stamp_not_increasing', 'empty_image',
                    'image_not_rgb', 'image_size_mismatch')
# Why it dropped a detection before tracking (``PipelineFrameResult.rejected_detections``):
# a NaN/inf number, a width or height <= 0, a score outside [0, 1] (``Detection.problem``);
# a class not in ``detections.classes`` (when that list is not empty); a box wider or taller
# than ``MAX_BOX_IMAGE_RATIO`` times the image, or one with no point on the image; an id
# longer than ``pipeline.max_id_length``; an id already used by a higher-scored detection of
# the same camera and frame (an empty id is legal, see msg/Detection2D.msg, and never a
# duplicate); beyond ``pipeline.max_detections`` valid detections of one camera and frame,
# the lowest scores.
DETECTION_REJECTIONS = ('non_finite', 'non_positive_size', 'score_out_of_range',
                        'class_filtered', 'box_too_large', 'box_outside_image', 'id_too_long',
                        'duplicate_id', 'too_many_detections')
# What a bound on live tracks refused (``PipelineFrameResult.rejected_tracks``): detections
# that would have started a 2D track beyond ``pipeline.max_tracks``; stereo pairs that would
# have formed beyond ``pipeline.max_stereo_tracks`` (counted once per frame refused).
TRACK_REJECTIONS = ('too_many_tracks', 'too_many_stereo_tracks')
MAX_BOX_IMAGE_RATIO = 2.0
# Left and right stamps this far before the last ones start a new sequence (a bag played in
# a loop, a restarted driver) instead of being refused as out of order; the node's
# ``stamp_gate.StampGate`` lets such a frame through only once every input jumped.
TIME_JUMP_RESET_NS = TIME_JUMP_NS
# A crop whose square side exceeds this many times the image's larger side (at least
# 256 px) is sampled straight to ``size`` x ``size`` instead of cut out first: the memory of
# a crop stays bounded by the image, whatever the box.
MAX_CROP_IMAGE_RATIO = 4.0
# The stages of ``StereoPipeline.timer``, in the order a frame runs them: input checks,
# colour histograms, both 2D trackers, crops, stereo pairing, triangulation of this frame's
# pairs, the stereo histories the filter reads, the filter's features and model (the learned
# filter's laps), the rest of the filter (its decision rule), the output tracks.
PIPELINE_STAGES = ('checks', 'appearance', 'tracking', 'crops', 'association',
                   'triangulation', 'history', 'features', 'model', 'decision', 'output')


@dataclass
class PipelineTrack:
    """
    One stereo track at one stamp; the fields of ``Track.msg``.

    ``position``: this frame's triangulated point (None: none); ``smoothed_position``,
    ``smoothed_velocity`` (m, m/s) and their 3x3 covariances: the track's Kalman filter
    estimate at this stamp (None: no estimate; ``smoothing``).
    """

    id: int
    left_track_id: int
    right_track_id: int
    state: TrackState
    probability: float
    frames_observed: int
    decision_frame: int
    frame_stamps_ns: List[int] = field(default_factory=list)
    attention: List[float] = field(default_factory=list)
    position: Optional[np.ndarray] = None
    left_detection_id: str = ''
    right_detection_id: str = ''
    smoothed_position: Optional[np.ndarray] = None
    smoothed_velocity: Optional[np.ndarray] = None
    smoothed_position_covariance: Optional[np.ndarray] = None
    smoothed_velocity_covariance: Optional[np.ndarray] = None

    def __post_init__(self):
        """Accept a state's constant or name."""
        self.state = TrackState.parse(self.state)

    @property
    def has_position(self) -> bool:
        """Return True if ``position`` holds a triangulated point."""
        return self.position is not None

    @property
    def has_smoothed(self) -> bool:
        """Return True if the ``smoothed_*`` fields hold an estimate."""
        return self.smoothed_position is not None

    def set_smoothed(self, state: Optional[SmoothedState]) -> None:
        """Fill the ``smoothed_*`` fields from a filter's estimate (None: clear them)."""
        self.smoothed_position = None if state is None else state.position
        self.smoothed_velocity = None if state is None else state.velocity
        self.smoothed_position_covariance = None if state is None else state.position_covariance
        self.smoothed_velocity_covariance = None if state is None else state.velocity_covariance


@dataclass
class PipelineFrameResult:
    """
    Output of one ``StereoPipeline.process`` call.

    ``tracks``: every live stereo track; ``ended``: stereo track ids that ended at this
    frame; ``rejected_triangulation``: reason -> count for the PERSISTENT tracks of this
    frame; ``accepted``: False when the frame was refused, before either tracker saw it;
    then ``reason`` is one of ``FRAME_REJECTIONS`` and ``detail`` says what was wrong.
    ``rejected_detections``: reason (``DETECTION_REJECTIONS``) -> detections of this frame
    (both sides) dropped before tracking; ``rejected_tracks``: reason (``TRACK_REJECTIONS``)
    -> what the track bounds refused at this frame.  ``restarted``: this frame started a new
    sequence (both stamps jumped back; every earlier track ended).
    """

    stamp_ns: int
    frame_id: str
    tracks: List[PipelineTrack]
    ended: List[int]
    rejected_triangulation: Dict[str, int]
    accepted: bool = True
    reason: str = ''
    detail: str = ''
    rejected_detections: Dict[str, int] = field(default_factory=dict)
    restarted: bool = False
    rejected_tracks: Dict[str, int] = field(default_factory=dict)

    def rejections(self) -> Dict[str, int]:
        """Return every rejection of this frame by reason (frame, detections, tracks)."""
        out = Counter(self.rejected_detections)
        out.update(self.rejected_tracks)
        if not self.accepted:
            out[self.reason] += 1
        return dict(out)


def detection_rejection(detection, width: int, height: int,
                        classes: Sequence[str] = ()) -> str:
    """
    Return why a detection is dropped before tracking, '' if it is kept.

    One of ``DETECTION_REJECTIONS``: its own numbers (``Detection.problem``), its class (not
    in ``classes``, when that is not empty), then whether it can be on a ``width`` x
    ``height`` image.
    """
    problem = detection.problem()
    if problem:
        return problem
    if classes and detection.class_id not in classes:
        return 'class_filtered'
    if (detection.width > MAX_BOX_IMAGE_RATIO * width
            or detection.height > MAX_BOX_IMAGE_RATIO * height):
        return 'box_too_large'
    hw, hh = 0.5 * detection.width, 0.5 * detection.height   # xyxy() without an array
    if (detection.center_x + hw < 0.0 or detection.center_y + hh < 0.0
            or detection.center_x - hw > width or detection.center_y - hh > height):
        return 'box_outside_image'
    return ''


def crop_box(image: np.ndarray, box: Sequence[float], size: int = 64,
             context: float = 0.25) -> np.ndarray:
    """
    Return a ``size`` x ``size`` crop centred on a box (cx, cy, w, h) with context.

    The crop is square (side = larger box side * (1 + 2 * context)) so the aspect ratio is
    kept; outside the image the border is replicated (``cv2.getRectSubPix``).  A square
    larger than ``MAX_CROP_IMAGE_RATIO`` times the image is sampled directly at the output
    size (no area averaging), so memory never grows with the box.
    """
    cx, cy, w, h = (float(v) for v in box)
    side = max(2, int(round(max(w, h, 1.0) * (1.0 + 2.0 * context))))
    image = np.ascontiguousarray(image)
    if side > MAX_CROP_IMAGE_RATIO * max(image.shape[0], image.shape[1], 256):
        # output pixel centre x -> patch x (x + 0.5) * scale - 0.5 -> image x
        scale = side / float(size)
        shift = 0.5 * scale - 0.5 - 0.5 * (side - 1)
        warp = np.array([[scale, 0.0, cx + shift], [0.0, scale, cy + shift]])
        return cv2.warpAffine(image, warp, (size, size),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
    patch = cv2.getRectSubPix(image, (side, side), (cx, cy))
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


@dataclass
class _StereoRecord:
    pair_id: int
    stamps: Deque[int]
    right_stamps: Deque[int]
    residuals: Deque[float]
    points: Deque[Tuple[float, float, float]]
    # what the Kalman filter is given per frame: the triangulated point also when only the
    # depth-uncertainty gate refused it (the filter weighs it by its covariance), and the
    # pixel standard deviations of the two box centres (left x, y, right x, y)
    measurements: Deque[Tuple[float, float, float]]
    sigmas: Deque[Tuple[float, float, float, float]]
    frames_observed: int = 0
    state: TrackState = TrackState.TENTATIVE
    decision_frame: int = 0
    smoothing: bool = False  # the Kalman filter has taken the track's history


_NAN3 = (float('nan'),) * 3
_NAN4 = (float('nan'),) * 4


def _mean_height(left_box: Sequence[float], right_box: Sequence[float]) -> float:
    """Return the mean height of a pair's left and right boxes (the triangulation gates')."""
    return 0.5 * (float(left_box[3]) + float(right_box[3]))


def _measurement(tri, k: int) -> Tuple[float, float, float]:
    """Return point k for the Kalman filter: valid, or refused only as too uncertain in depth."""
    if tri.valid[k] or tri.reason[k] == 'depth_uncertainty':
        point = tuple(float(v) for v in tri.points_optical[k])
        if all(math.isfinite(v) for v in point):
            return point
    return _NAN3


class StereoPipeline:
    """Detections of a stereo pair in, decided and triangulated stereo tracks out."""

    def __init__(self, calibration: StereoCalibration, settings: Optional[Settings] = None,
                 persistence_filter: Optional[PersistenceFilter] = None,
                 timer: Optional[StageTimer] = None):
        if persistence_filter is None:
            raise ValueError('StereoPipeline needs a persistence filter (e.g. NoFilter())')
        self.calibration = calibration
        self.settings = settings if settings is not None else Settings()
        self.filter = persistence_filter
        self.filter.set_calibration(calibration)
        self.triangulator = Triangulator(calibration, self.settings.triangulation)
        self.smoother = TrackSmoother(self.settings.smoothing)
        self._records: Dict[int, _StereoRecord] = {}
        # (left stamp, right stamp) of the latest frames: joins the 2D histories by frame
        self._frame_stamps: Deque[Tuple[int, int]] = deque(
            maxlen=self.settings.pipeline.window + 1)
        self.rejected_triangulation: Counter = Counter()
        self.rejected_frames: Counter = Counter()
        self.rejected_detections: Counter = Counter()
        self.rejected_tracks: Counter = Counter()
        # what the filter reads of a crop: None (nothing), 'crop' or 'statistics'
        self._appearance = (getattr(self.filter, 'appearance_input', 'crop')
                            if getattr(self.filter, 'uses_images', False) else None)
        # time per stage of the last frames (``timing``; the node reports it); a given timer
        # must know PIPELINE_STAGES
        self.timer = timer if timer is not None else StageTimer(PIPELINE_STAGES)
        self.filter.set_timer(self.timer)
        self.reset()

    def reset(self) -> None:
        """
        Start a new sequence: new trackers, associator and filter state.

        A filter used before (e.g. the node rebuilds the pipeline when camera_info changes)
        must not hand its latched decisions to the new tracks, whose ids restart at 1.
        """
        # one history length: the 2D tracks keep as many frames as the stereo records
        options = self.settings.pipeline
        self.left_tracker = Tracker2D(self.settings.tracker, options.window, options.max_tracks)
        self.right_tracker = Tracker2D(self.settings.tracker, options.window, options.max_tracks)
        self.associator = StereoAssociator(self.calibration, self.settings.association,
                                           options.max_stereo_tracks)
        self._records.clear()
        self._frame_stamps.clear()
        self.smoother.reset()
        self.filter.reset()
        self.rejected_triangulation.clear()
        self.rejected_frames.clear()
        self.rejected_detections.clear()
        self.rejected_tracks.clear()
        self.frames = 0

    # -- input checks --------------------------------------------------------------------

    def _jumped_back(self, left: DetectionFrame, right: DetectionFrame) -> bool:
        """Return True if both stamps are far enough before the last ones to restart."""
        return all(last is not None and last - int(frame.stamp_ns) > TIME_JUMP_RESET_NS
                   for frame, last in ((left, self.left_tracker.last_stamp_ns),
                                       (right, self.right_tracker.last_stamp_ns)))

    def _frame_problem(self, left: DetectionFrame, right: DetectionFrame,
                       images: Tuple[Optional[np.ndarray], Optional[np.ndarray]],
                       image_frame_ids: Optional[Tuple[str, str]], restart: bool
                       ) -> Tuple[str, str]:
        """Return (reason, detail) if the frame must be refused, else ('', '')."""
        if not left.frame_id or not right.frame_id or left.frame_id == right.frame_id:
            return 'frame_id_mismatch', (f'left/right detections need distinct, non-empty '
                                         f'frame ids, got {left.frame_id!r} and '
                                         f'{right.frame_id!r}')
        if image_frame_ids is not None:
            for side, frame, image_frame in (('left', left, image_frame_ids[0]),
                                             ('right', right, image_frame_ids[1])):
                if image_frame != frame.frame_id:
                    return 'frame_id_mismatch', (f'{side} image frame_id {image_frame!r} != '
                                                 f'{side} detections frame_id '
                                                 f'{frame.frame_id!r}')
        # the trackers' own rule, checked for both before either of them moves (after a
        # restart both start afresh)
        for side, frame, last in (('left', left, self.left_tracker.last_stamp_ns),
                                  ('right', right, self.right_tracker.last_stamp_ns)):
            if not restart and last is not None and int(frame.stamp_ns) <= last:
                return 'stamp_not_increasing', (f'{side} stamp {int(frame.stamp_ns)} is not '
                                                f'after the last one {last}')
        for side, image, camera in (('left', images[0], self.calibration.left),
                                    ('right', images[1], self.calibration.right)):
            if image is None:
                continue
            shape = np.shape(image)
            if np.size(image) == 0:
                return 'empty_image', f'{side} image is empty (shape {shape})'
            if len(shape) != 3 or shape[2] != 3:
                return 'image_not_rgb', f'{side} image has shape {shape}, not (H, W, 3)'
            if shape[:2] != (camera.height, camera.width):
                return 'image_size_mismatch', (
                    f'{side} image is {shape[1]}x{shape[0]}, the calibration says '
                    f'{camera.width}x{camera.height}')
        return '', ''

    def _drop_rejected(self, frame: DetectionFrame, camera: CameraCalibration,
                       rejected: Counter) -> DetectionFrame:
        """Return the frame without the detections it must not track; count them."""
        options = self.settings.pipeline
        keep = []
        classes = self.settings.detections.classes
        for det in frame.detections:
            reason = detection_rejection(det, camera.width, camera.height, classes)
            if not reason and len(det.id) > options.max_id_length:
                reason = 'id_too_long'
            if reason:
                rejected[reason] += 1
            else:
                keep.append(det)
        # one detection per non-empty id (the highest score; the first of equal scores):
        # the id joins a published track to its detection and to the ground truth
        ranked = sorted(range(len(keep)), key=lambda k: -keep[k].score)
        seen, unique = set(), set()
        for k in ranked:
            if keep[k].id and keep[k].id in seen:
                rejected['duplicate_id'] += 1
                continue
            seen.add(keep[k].id)
            unique.add(k)
        # beyond max_detections, the lowest scores go (ranked is by score, stable)
        ranked = [k for k in ranked if k in unique]
        if len(ranked) > options.max_detections:
            rejected['too_many_detections'] += len(ranked) - options.max_detections
            unique = set(ranked[:options.max_detections])
        if len(unique) == len(frame.detections):
            return frame
        return DetectionFrame(frame.stamp_ns, frame.frame_id,
                              [det for k, det in enumerate(keep) if k in unique])

    # -- per-frame steps -----------------------------------------------------------------

    def _descriptors(self, frame: DetectionFrame, image: Optional[np.ndarray]
                     ) -> Optional[np.ndarray]:
        """Return the detections' colour histograms when the trackers gate on appearance."""
        if image is None or not self.settings.tracker.uses_appearance:
            return None
        return colour_histograms(image, frame.detections)

    def _store_crops(self, tracks: Sequence[Track2D], image: Optional[np.ndarray]) -> None:
        """
        Store what the filter reads of this frame's crops, for matched observations only.

        No filter reads the crop of a missed frame (a Kalman prediction), and the filters
        that read no image get none; 'statistics' keeps the three numbers of
        ``crop_statistics`` instead of the 12 KB crop.
        """
        if image is None or self._appearance is None:
            return
        options = self.settings.pipeline
        for track in tracks:
            obs = track.history[-1]
            if not obs.matched or obs.crop is not None or obs.crop_stats is not None:
                continue
            crop = crop_box(image, obs.box, options.crop_size, options.crop_context)
            if self._appearance == 'statistics':
                obs.crop_stats = crop_statistics(crop)
            else:
                obs.crop = crop

    def _track(self, left: DetectionFrame, right: DetectionFrame,
               left_image: Optional[np.ndarray], right_image: Optional[np.ndarray]
               ) -> List[StereoPair]:
        """Advance both trackers and the associator; return the current stereo pairs."""
        # everything that may raise on bad input runs before either tracker advances
        timer = self.timer
        left_descriptors = self._descriptors(left, left_image)
        right_descriptors = self._descriptors(right, right_image)
        timer.lap('appearance')
        lu = self.left_tracker.update(left, left_descriptors)
        ru = self.right_tracker.update(right, right_descriptors)
        self.frames += 1
        self._frame_stamps.append((int(left.stamp_ns), int(right.stamp_ns)))
        timer.lap('tracking')
        self._store_crops(lu.tracks, left_image)
        self._store_crops(ru.tracks, right_image)
        timer.lap('crops')
        right_to_frame = {r: s for s, r in self._frame_stamps}
        pairs = self.associator.update(lu.tracks, ru.tracks, right_to_frame)
        timer.lap('association')
        refused = Counter({'too_many_tracks': lu.refused + ru.refused,
                           'too_many_stereo_tracks': self.associator.refused})
        return pairs, +refused

    def _triangulate_boxes(self, boxes: Sequence[Tuple[Sequence[float], Sequence[float]]]):
        """Triangulate the centres of (left box, right box) pairs, gated by their heights."""
        return self.triangulator.triangulate(
            np.array([left[:2] for left, _ in boxes], dtype=np.float64).reshape(-1, 2),
            np.array([right[:2] for _, right in boxes], dtype=np.float64).reshape(-1, 2),
            [_mean_height(left, right) for left, right in boxes])

    def _triangulate_now(self, pairs: Sequence[StereoPair]):
        """
        Return (triangulation, {pair id: row}, boxes) of the pairs matched in both views now.

        Row k of the triangulation is that of ``boxes[k]``, the k-th such pair's
        (left box, right box).
        """
        both_now = [p for p in pairs if p.matched_now]
        if not both_now:
            return None, {}, []
        boxes = [p.current_boxes() for p in both_now]
        return self._triangulate_boxes(boxes), {p.id: k for k, p in enumerate(both_now)}, boxes

    def _histories(self, pairs: Sequence[StereoPair], stamps: Tuple[int, int], tri,
                   index_now: Dict[int, int], boxes_now) -> List[StereoTrackHistory]:
        """Append this frame to every pair's record; return what the filter sees."""
        states: List[StereoTrackHistory] = []
        measurements = self._kalman_measurements(boxes_now, tri)
        for pair in pairs:
            rec = self._records.get(pair.id)
            if rec is None:
                rec = self._records[pair.id] = self._new_record(pair)
            k = index_now.get(pair.id)
            rec.stamps.append(stamps[0])
            rec.right_stamps.append(stamps[1])
            if k is None:
                rec.residuals.append(float('nan'))
                rec.points.append(_NAN3)
                rec.measurements.append(_NAN3)
                rec.sigmas.append(_NAN4)
            else:
                rec.residuals.append(float(tri.epipolar_px[k]))
                rec.points.append(tuple(tri.points_optical[k]) if tri.valid[k] else _NAN3)
                rec.measurements.append(measurements[k][0])
                rec.sigmas.append(measurements[k][1])
            if pair.left.matched or pair.right.matched:
                rec.frames_observed += 1
            states.append(StereoTrackHistory(
                id=pair.id, left_track_id=pair.left_id, right_track_id=pair.right_id,
                left=list(pair.left.history), right=list(pair.right.history),
                stamps_ns=list(rec.stamps), right_stamps_ns=list(rec.right_stamps),
                epipolar_residuals=np.array(rec.residuals, dtype=np.float64),
                points=np.array(rec.points, dtype=np.float64).reshape(-1, 3),
                frames_observed=rec.frames_observed, left_start_ns=pair.left.start_stamp_ns,
                right_start_ns=pair.right.start_stamp_ns))
        return states

    def _output(self, pair: StereoPair, history: StereoTrackHistory,
                decision: Optional[FilterDecision], tri, k: Optional[int],
                rejected: Counter) -> PipelineTrack:
        """Return the output track of a pair: its state, probability, position, attention."""
        rec = self._records[pair.id]
        state = decision.state if decision is not None else TrackState.TENTATIVE
        if state != rec.state:
            rec.state = state
            rec.decision_frame = 0 if state == TrackState.TENTATIVE else rec.frames_observed
        position = None
        if state == TrackState.PERSISTENT and k is not None:
            if tri.valid[k]:
                position = np.array(tri.points_optical[k], dtype=np.float64)
            else:
                rejected[str(tri.reason[k])] += 1
        smoothed = self._smooth(rec, state)
        attention: List[float] = []
        stamps: List[int] = []
        if decision is not None and decision.attention is not None:
            attention = [float(a) for a in np.asarray(decision.attention).reshape(-1)]
            stamps = (list(decision.frame_stamps_ns) if decision.frame_stamps_ns is not None
                      else list(history.stamps_ns)[-len(attention):] if attention else [])
        track = PipelineTrack(
            id=pair.id, left_track_id=pair.left_id, right_track_id=pair.right_id,
            state=state, probability=float(decision.probability) if decision else 0.5,
            frames_observed=rec.frames_observed, decision_frame=rec.decision_frame,
            frame_stamps_ns=stamps, attention=attention, position=position,
            left_detection_id=pair.left.detection.id if pair.left.matched else '',
            right_detection_id=pair.right.detection.id if pair.right.matched else '')
        track.set_smoothed(smoothed)
        return track

    def _kalman_measurements(self, boxes, tri) -> List[Tuple[Tuple[float, ...], ...]]:
        """
        Return (point, pixel sigmas) for the Kalman filter of each (left box, right box).

        ``tri`` triangulated the boxes' centres, row k for pair k.  Where a box is cut by the
        image border the object's centre is estimated first (``stereo.object_centres``) and
        triangulated again; the sigmas (left x, y, right x, y) weigh the point through
        ``Triangulator.point_covariance``.  Points the depth gate refused are kept
        (``_measurement``): the filter weighs them by their covariance.
        """
        cal, sigma = self.calibration, self.settings.triangulation.sigma_px
        sizes = ((cal.left.width, cal.left.height), (cal.right.width, cal.right.height))
        out = []
        moved = []
        for k, (left_box, right_box) in enumerate(boxes):
            centres, sigmas = object_centres(left_box, right_box, sizes, sigma)
            out.append([_measurement(tri, k), tuple(float(v) for v in sigmas.reshape(4))])
            if not np.allclose(centres, [left_box[:2], right_box[:2]]):
                moved.append((k, centres))
        if moved:
            again = self.triangulator.triangulate(
                np.array([c[0] for _, c in moved]), np.array([c[1] for _, c in moved]),
                [_mean_height(*boxes[k]) for k, _ in moved])
            for row, (k, _) in enumerate(moved):
                out[k][0] = _measurement(again, row)
        return [tuple(m) for m in out]

    def _smooth(self, rec: _StereoRecord, state: TrackState) -> Optional[SmoothedState]:
        """
        Return the Kalman estimate of a track at this frame (None unless PERSISTENT).

        A track that has just become persistent starts its filter over the frames of its
        history, so its first smoothed positions are smoothed already.  The filter takes
        every triangulated point of the track (``_measurement``: also those the depth gate
        refuses to publish, weighed by their covariance, so that far points are not only
        the ones measured too near) with its covariance from the stereo geometry and the
        boxes' pixel deviations (``Triangulator.point_covariance``, ``_kalman_measurements``).
        """
        smoother = self.smoother
        if state != TrackState.PERSISTENT or not smoother.config.enabled:
            smoother.drop(rec.pair_id)
            rec.smoothing = False
            return None
        # the history once, when the track becomes persistent; afterwards this frame only
        first = 0 if not rec.smoothing else len(rec.stamps) - 1
        rec.smoothing = True
        frames = range(first, len(rec.stamps))
        points = np.array([rec.measurements[i] for i in frames], dtype=np.float64)
        sigmas = np.array([rec.sigmas[i] for i in frames], dtype=np.float64).reshape(-1, 2, 2)
        covariances = self.triangulator.point_covariance(points, sigmas)
        estimate = None
        for i, point, covariance in zip(frames, points, covariances):
            estimate = smoother.step(rec.pair_id, rec.stamps[i], point, covariance)
        return estimate

    def _new_record(self, pair: StereoPair) -> _StereoRecord:
        """Create a record, backfilled from the 2D histories (the pair forms late)."""
        window = self.settings.pipeline.window
        rec = _StereoRecord(pair.id, *(deque(maxlen=window) for _ in range(6)))  # the deques
        # frames are keyed by their left stamp; a right observation joins the frame it was
        # processed in (equal stamps: the same key)
        right_of = dict(self._frame_stamps)
        frame_of = {r: s for s, r in self._frame_stamps}
        left = {o.stamp_ns: o for o in pair.left.history if o.matched}
        right = {frame_of.get(o.stamp_ns, o.stamp_ns): o
                 for o in pair.right.history if o.matched}
        current = pair.left.history[-1].stamp_ns
        past = sorted(s for s in set(left) | set(right) if s < current)
        both = [s for s in past if s in left and s in right]
        results = {}
        if both:
            boxes = [(left[s].box, right[s].box) for s in both]
            tri = self._triangulate_boxes(boxes)
            measurements = self._kalman_measurements(boxes, tri)
            for k, s in enumerate(both):
                results[s] = (float(tri.epipolar_px[k]),
                              tuple(tri.points_optical[k]) if tri.valid[k] else _NAN3,
                              *measurements[k])
        for s in past:
            residual, point, measurement, sigmas = results.get(
                s, (float('nan'), _NAN3, _NAN3, _NAN4))
            rec.stamps.append(s)
            rec.right_stamps.append(right_of.get(s, s))
            rec.residuals.append(residual)
            rec.points.append(point)
            rec.measurements.append(measurement)
            rec.sigmas.append(sigmas)
        rec.frames_observed = len(past)
        return rec

    # -- main entry ----------------------------------------------------------------------

    def process(self, left: DetectionFrame, right: DetectionFrame,
                left_image: Optional[np.ndarray] = None,
                right_image: Optional[np.ndarray] = None,
                image_frame_ids: Optional[Tuple[str, str]] = None) -> PipelineFrameResult:
        """
        Process one synchronized pair of detection frames (images optional, RGB).

        ``image_frame_ids``: the images' frame ids when known (the node passes them), which
        must equal the detections'.  The frame is checked whole first: a refused one
        (``accepted`` False, ``reason``) leaves both trackers and every track untouched.
        """
        timer = self.timer
        timer.start()
        stamp, right_stamp = int(left.stamp_ns), int(right.stamp_ns)
        restart = self._jumped_back(left, right)
        reason, detail = self._frame_problem(left, right, (left_image, right_image),
                                             image_frame_ids, restart)
        if reason:
            timer.cancel()
            self.rejected_frames[reason] += 1
            return PipelineFrameResult(stamp, left.frame_id, [], [], {}, accepted=False,
                                       reason=reason, detail=detail)
        if restart:
            self.reset()
        dropped: Counter = Counter()
        left = self._drop_rejected(left, self.calibration.left, dropped)
        right = self._drop_rejected(right, self.calibration.right, dropped)
        self.rejected_detections.update(dropped)
        timer.lap('checks')

        pairs, refused = self._track(left, right, left_image, right_image)
        self.rejected_tracks.update(refused)
        ended = [p.id for p in self.associator.ended]
        for pid in ended:
            self._records.pop(pid, None)
            self.smoother.drop(pid)
        tri, index_now, boxes_now = self._triangulate_now(pairs)
        timer.lap('triangulation')
        histories = self._histories(pairs, (stamp, right_stamp), tri, index_now, boxes_now)
        timer.lap('history')
        decisions = self.filter.update(histories) if histories else {}
        timer.lap('decision')
        rejected: Counter = Counter()
        out = [self._output(pair, history, decisions.get(pair.id), tri,
                            index_now.get(pair.id), rejected)
               for pair, history in zip(pairs, histories)]
        self.rejected_triangulation.update(rejected)
        timer.lap('output')
        timer.finish()
        return PipelineFrameResult(stamp, left.frame_id, out, ended, dict(rejected),
                                   rejected_detections=dict(dropped), restarted=restart,
                                   rejected_tracks=dict(refused))
