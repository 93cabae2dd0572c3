"""
The core stereo pipeline, one synchronized frame at a time (no ROS).

Data flow per frame::

    detections (left, right)
      -> 2D tracks per camera (Tracker2D)
      -> stereo candidate pairs (StereoAssociator, over the tracks' histories)
      -> persistence decisions per stereo track (a PersistenceFilter)
      -> triangulation of PERSISTENT tracks -> published positions

The decision uses stereo cues (epipolar residuals, candidate 3D points, both views' crops),
so candidate pairing comes before the decision.  Candidate points of every pair are computed
as filter features; only PERSISTENT tracks get a published position (``has_position``), and
only their triangulation rejections are counted.

Each output track (``PipelineTrack``) mirrors ``msg/Track.msg`` field by field; the ROS
node converts it to a message.  State is bounded: per stereo track the pipeline keeps at
most ``window`` frames (2D histories are bounded by the trackers), and a track's state is
dropped when its pair ends.

A frame is one call of ``process``: its stamp is the LEFT detections' stamp; the right
stamp may differ (cameras without hardware sync, within the synchroniser's slop) and is kept
per frame (``StereoTrackState.right_stamps_ns``), so the two 2D histories are joined frame by
frame, never by equal stamps.  A frame is checked whole before either tracker sees it (stamps
increasing on both sides, images non-empty RGB of the calibrated size): a refused frame
changes nothing and names its reason (``PipelineFrameResult.reason``, ``FRAME_REJECTIONS``).
Detections that cannot be on the image (``DETECTION_REJECTIONS``) are dropped and counted
before tracking.
"""

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from persistence_ros.appearance import colour_histograms
from persistence_ros.calibration import CameraCalibration, StereoCalibration
from persistence_ros.detections import Detection, DetectionFrame
from persistence_ros.filters import (
    PersistenceFilter, PERSISTENT, StereoTrackState, TENTATIVE)
from persistence_ros.stereo import (
    AssociationConfig, StereoAssociator, StereoPair, TriangulationConfig, Triangulator)
from persistence_ros.tracking import Track2D, Tracker2D, TrackerConfig

# Track.msg state constants.
STATE_CODES = {'tentative': 0, 'persistent': 1, 'transient': 2}

# Why ``StereoPipeline.process`` refused a whole frame (``PipelineFrameResult.reason``).
FRAME_REJECTIONS = ('stamp_not_increasing', 'empty_image', 'image_not_rgb',
                    'image_size_mismatch')
# Why it dropped a detection before tracking (``PipelineFrameResult.rejected_detections``):
# a box wider or taller than ``MAX_BOX_IMAGE_RATIO`` times the image, or one with no point
# on the image.
DETECTION_REJECTIONS = ('box_too_large', 'box_outside_image')
MAX_BOX_IMAGE_RATIO = 2.0
# A crop whose square side exceeds this many times the image's larger side (at least
# 256 px) is sampled straight to ``size`` x ``size`` instead of cut out first: the memory of
# a crop stays bounded by the image, whatever the box.
MAX_CROP_IMAGE_RATIO = 4.0


@dataclass
class PipelineConfig:
    """
    Parameters of ``StereoPipeline``.

    ``window``: frames of per-stereo-track history kept (residuals, points, stamps).
    ``crop_size``: side of the square RGB crops stored in the 2D track histories when images
    are given; ``crop_context``: extra border around a box, as a fraction of its larger side
    on each side.  ``attention_window``: frame stamps reported with attention.
    """

    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    association: AssociationConfig = field(default_factory=AssociationConfig)
    triangulation: TriangulationConfig = field(default_factory=TriangulationConfig)
    window: int = 64
    crop_size: int = 64
    crop_context: float = 0.25


@dataclass
class PipelineTrack:
    """One stereo track at one stamp; the fields of ``Track.msg`` (state as a name)."""

    id: int
    left_track_id: int
    right_track_id: int
    state: str
    probability: float
    frames_observed: int
    decision_frame: int
    frame_stamps_ns: List[int] = field(default_factory=list)
    attention: List[float] = field(default_factory=list)
    position: Optional[np.ndarray] = None
    left_detection_id: str = ''
    right_detection_id: str = ''

    @property
    def has_position(self) -> bool:
        """Return True if ``position`` holds a triangulated point."""
        return self.position is not None

    @property
    def state_code(self) -> int:
        """Return the Track.msg state constant."""
        return STATE_CODES[self.state]


@dataclass
class PipelineFrameResult:
    """
    Output of one ``StereoPipeline.process`` call.

    ``tracks``: every live stereo track; ``ended``: stereo track ids that ended at this
    frame; ``rejected_triangulation``: reason -> count for the PERSISTENT tracks of this
    frame; ``accepted``: False when the frame was refused, before either tracker saw it;
    then ``reason`` is one of ``FRAME_REJECTIONS`` and ``detail`` says what was wrong.
    ``rejected_detections``: reason (``DETECTION_REJECTIONS``) -> detections of this frame
    (both sides) dropped before tracking.
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


def off_image_reason(detection: Detection, width: int, height: int) -> str:
    """
    Return why a box cannot be on a ``width`` x ``height`` image, '' if it can.

    One of ``DETECTION_REJECTIONS``; invalid detections (``Detection.is_valid``) give '':
    they are the tracker's to reject and count.
    """
    if not detection.is_valid():
        return ''
    if (detection.width > MAX_BOX_IMAGE_RATIO * width
            or detection.height > MAX_BOX_IMAGE_RATIO * height):
        return 'box_too_large'
    x0, y0, x1, y1 = detection.xyxy()
    if x1 < 0.0 or y1 < 0.0 or x0 > width or y0 > height:
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
    frames_observed: int = 0
    state: str = TENTATIVE
    decision_frame: int = 0


_NAN3 = (float('nan'),) * 3


class StereoPipeline:
    """Detections of a stereo pair in, decided and triangulated stereo tracks out."""

    def __init__(self, calibration: StereoCalibration, config: Optional[PipelineConfig] = None,
                 persistence_filter: Optional[PersistenceFilter] = None):
        if persistence_filter is None:
            raise ValueError('StereoPipeline needs a persistence filter (e.g. NoFilter())')
        self.calibration = calibration
        self.config = config if config is not None else PipelineConfig()
        self.filter = persistence_filter
        self.filter.set_calibration(calibration)
        self.left_tracker = Tracker2D(self.config.tracker)
        self.right_tracker = Tracker2D(self.config.tracker)
        self.associator = StereoAssociator(calibration, self.config.association)
        self.triangulator = Triangulator(calibration, self.config.triangulation)
        self._records: Dict[int, _StereoRecord] = {}
        # (left stamp, right stamp) of the latest frames: joins the 2D histories by frame
        self._frame_stamps: Deque[Tuple[int, int]] = deque(
            maxlen=self.config.tracker.window + 1)
        self.rejected_triangulation: Counter = Counter()
        self.rejected_frames: Counter = Counter()
        self.rejected_detections: Counter = Counter()
        self.frames = 0
        # a filter used before (e.g. the node rebuilds the pipeline when camera_info changes)
        # must not hand its latched decisions to the new tracks, whose ids restart at 1
        self.filter.reset()

    def reset(self) -> None:
        """Start a new sequence: new trackers, associator and filter state."""
        self.left_tracker = Tracker2D(self.config.tracker)
        self.right_tracker = Tracker2D(self.config.tracker)
        self.associator = StereoAssociator(self.calibration, self.config.association)
        self._records.clear()
        self._frame_stamps.clear()
        self.filter.reset()
        self.rejected_triangulation.clear()
        self.rejected_frames.clear()
        self.rejected_detections.clear()
        self.frames = 0

    # -- helpers -------------------------------------------------------------------------

    def _frame_problem(self, left: DetectionFrame, right: DetectionFrame,
                       left_image: Optional[np.ndarray], right_image: Optional[np.ndarray]
                       ) -> Tuple[str, str]:
        """Return (reason, detail) if the frame must be refused, else ('', '')."""
        # the trackers' own rule, checked for both before either of them moves
        for side, frame, last in (('left', left, self.left_tracker.last_stamp_ns),
                                  ('right', right, self.right_tracker.last_stamp_ns)):
            if last is not None and int(frame.stamp_ns) <= last:
                return 'stamp_not_increasing', (f'{side} stamp {int(frame.stamp_ns)} is not '
                                                f'after the last one {last}')
        for side, image, camera in (('left', left_image, self.calibration.left),
                                    ('right', right_image, self.calibration.right)):
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

    def _drop_off_image(self, frame: DetectionFrame, camera: CameraCalibration,
                        rejected: Counter) -> DetectionFrame:
        """Return the frame without the boxes that cannot be on the image; count them."""
        keep = []
        for det in frame.detections:
            reason = off_image_reason(det, camera.width, camera.height)
            if reason:
                rejected[reason] += 1
            else:
                keep.append(det)
        if len(keep) == len(frame.detections):
            return frame
        return DetectionFrame(frame.stamp_ns, frame.frame_id, keep)

    def _descriptors(self, frame: DetectionFrame, image: Optional[np.ndarray]
                     ) -> Optional[np.ndarray]:
        """Return the detections' colour histograms when the trackers gate on appearance."""
        if image is None or not self.config.tracker.uses_appearance:
            return None
        return colour_histograms(image, frame.detections)

    def _store_crops(self, tracks: Sequence[Track2D], image: Optional[np.ndarray]) -> None:
        if image is None:
            return
        for track in tracks:
            obs = track.history[-1]
            if obs.crop is None:
                obs.crop = crop_box(image, obs.box, self.config.crop_size,
                                    self.config.crop_context)

    def _new_record(self, pair: StereoPair) -> _StereoRecord:
        """Create a record, backfilled from the 2D histories (the pair forms late)."""
        window = self.config.window
        rec = _StereoRecord(pair.id, deque(maxlen=window), deque(maxlen=window),
                            deque(maxlen=window), deque(maxlen=window))
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
            tri = self.triangulator.triangulate(
                np.array([left[s].box[:2] for s in both]),
                np.array([right[s].box[:2] for s in both]))
            for k, s in enumerate(both):
                results[s] = (float(tri.epipolar_px[k]),
                              tuple(tri.points_optical[k]) if tri.valid[k] else _NAN3)
        for s in past:
            residual, point = results.get(s, (float('nan'), _NAN3))
            rec.stamps.append(s)
            rec.right_stamps.append(right_of.get(s, s))
            rec.residuals.append(residual)
            rec.points.append(point)
        rec.frames_observed = len(past)
        return rec

    # -- main entry ----------------------------------------------------------------------

    def process(self, left: DetectionFrame, right: DetectionFrame,
                left_image: Optional[np.ndarray] = None,
                right_image: Optional[np.ndarray] = None) -> PipelineFrameResult:
        """
        Process one synchronized pair of detection frames (images optional, RGB).

        The frame is checked whole first: a refused one (``accepted`` False, ``reason``)
        leaves both trackers and every track untouched.
        """
        stamp, right_stamp = int(left.stamp_ns), int(right.stamp_ns)
        reason, detail = self._frame_problem(left, right, left_image, right_image)
        if reason:
            self.rejected_frames[reason] += 1
            return PipelineFrameResult(stamp, left.frame_id, [], [], {}, accepted=False,
                                       reason=reason, detail=detail)
        dropped: Counter = Counter()
        left = self._drop_off_image(left, self.calibration.left, dropped)
        right = self._drop_off_image(right, self.calibration.right, dropped)
        self.rejected_detections.update(dropped)
        # everything that may raise on bad input runs before either tracker advances
        left_descriptors = self._descriptors(left, left_image)
        right_descriptors = self._descriptors(right, right_image)
        lu = self.left_tracker.update(left, left_descriptors)  # accepted: checked above
        ru = self.right_tracker.update(right, right_descriptors)
        self.frames += 1
        self._frame_stamps.append((stamp, right_stamp))
        self._store_crops(lu.tracks, left_image)
        self._store_crops(ru.tracks, right_image)

        pairs = self.associator.update(lu.tracks, ru.tracks)
        ended = [p.id for p in self.associator.ended]
        for pid in ended:
            self._records.pop(pid, None)

        # Candidate points and residuals of every pair matched in both views at this stamp.
        both_now = [p for p in pairs if p.matched_now]
        tri = None
        if both_now:
            lpts = np.concatenate([p.current_points()[0] for p in both_now])
            rpts = np.concatenate([p.current_points()[1] for p in both_now])
            tri = self.triangulator.triangulate(lpts, rpts)
        index_now = {p.id: k for k, p in enumerate(both_now)}

        states: List[StereoTrackState] = []
        for pair in pairs:
            rec = self._records.get(pair.id)
            if rec is None:
                rec = self._records[pair.id] = self._new_record(pair)
            k = index_now.get(pair.id)
            rec.stamps.append(stamp)
            rec.right_stamps.append(right_stamp)
            if k is None:
                rec.residuals.append(float('nan'))
                rec.points.append(_NAN3)
            else:
                rec.residuals.append(float(tri.epipolar_px[k]))
                rec.points.append(tuple(tri.points_optical[k]) if tri.valid[k] else _NAN3)
            if pair.left.matched or pair.right.matched:
                rec.frames_observed += 1
            states.append(StereoTrackState(
                id=pair.id, left_track_id=pair.left_id, right_track_id=pair.right_id,
                left=list(pair.left.history), right=list(pair.right.history),
                stamps_ns=list(rec.stamps), right_stamps_ns=list(rec.right_stamps),
                epipolar_residuals=np.array(rec.residuals, dtype=np.float64),
                points=np.array(rec.points, dtype=np.float64).reshape(-1, 3),
                frames_observed=rec.frames_observed))

        decisions = self.filter.update(states) if states else {}
        rejected: Counter = Counter()
        out: List[PipelineTrack] = []
        for pair, st in zip(pairs, states):
            rec = self._records[pair.id]
            decision = decisions.get(pair.id)
            state = decision.state if decision is not None else TENTATIVE
            if state != rec.state:
                rec.state = state
                rec.decision_frame = 0 if state == TENTATIVE else rec.frames_observed
            position = None
            k = index_now.get(pair.id)
            if state == PERSISTENT and k is not None:
                if tri.valid[k]:
                    position = np.array(tri.points_optical[k], dtype=np.float64)
                else:
                    rejected[str(tri.reason[k])] += 1
            attention: List[float] = []
            stamps: List[int] = []
            if decision is not None and decision.attention is not None:
                attention = [float(a) for a in np.asarray(decision.attention).reshape(-1)]
                stamps = (list(decision.frame_stamps_ns) if decision.frame_stamps_ns is not None
                          else list(st.stamps_ns)[-len(attention):] if attention else [])
            out.append(PipelineTrack(
                id=pair.id, left_track_id=pair.left_id, right_track_id=pair.right_id,
                state=state, probability=float(decision.probability) if decision else 0.5,
                frames_observed=rec.frames_observed, decision_frame=rec.decision_frame,
                frame_stamps_ns=stamps, attention=attention, position=position,
                left_detection_id=pair.left.detection.id if pair.left.matched else '',
                right_detection_id=pair.right.detection.id if pair.right.matched else ''))
        self.rejected_triangulation.update(rejected)
        return PipelineFrameResult(stamp, left.frame_id, out, ended, dict(rejected),
                                   rejected_detections=dict(dropped))
