"""
Every setting of the core pipeline and its persistence filter, as one tree of dataclasses.

``Settings`` is the one config path: a dotted name is a path in the tree
(``tracker.appearance_gate``, ``pipeline.window``, ``filter.name``,
``model.decision.min_frames``, ``detections.classes``, ``smoothing.acceleration_noise``).
The command line's ``--set KEY=VALUE`` and the node's ROS parameters of the same names are
both applied with ``overrides.replace_fields``, which checks each value against its field's
type; every section validates its values.  Defaults live
here only (the node's parameter table and the README take them from this tree; a test
keeps them equal).
"""

from dataclasses import dataclass, field
import math
from typing import List, Optional

from persistence_ros.model import ATTENTION_MODES
from persistence_ros.model.decision import EarlyDecision
from persistence_ros.overrides import check_fields, require
from persistence_ros.smoothing import SmoothingConfig
from persistence_ros.stereo import AssociationConfig, TriangulationConfig
from persistence_ros.tracking import TrackerConfig

FILTER_NAMES = ('none', 'min_hits', 'score', 'stereo', 'ground_plane', 'gbdt', 'learned')
# the rules the learned filter may fall back on out of its domain (need no plane, no training)
FALLBACK_NAMES = ('none', 'min_hits', 'score', 'stereo')
DEVICES = ('auto', 'cpu', 'cuda')
# The shipped learned model (persistence_ros/model/weights/cpu.safetensors); docs/model.md.
DEFAULT_FILTER = 'learned'


@dataclass(frozen=True)
class PipelineConfig:
    """
    History and crops of ``StereoPipeline`` (section ``pipeline``).

    ``window``: frames of history kept per stereo track, and per 2D track (it sets the
    trackers' ``window``); ``crop_size``: side of the square RGB crops stored in the 2D
    track histories when images are given; ``crop_context``: extra border around a box, as a
    fraction of its larger side on each side.

    Bounds on what an input can grow (each excess is dropped and counted by reason, see
    ``pipeline.DETECTION_REJECTIONS``): ``max_detections`` per camera per frame (the excess
    dropped lowest score first, ``too_many_detections``; 100 is several times the boxes of
    the busiest simulated scene); ``max_tracks`` live 2D tracks per
    camera (a detection that would start one more is dropped, ``too_many_tracks``);
    ``max_stereo_tracks`` live stereo tracks (pairs beyond it are not formed); ``max_id_length``
    characters of a detection id (longer: the detection is dropped, ``id_too_long``; a UUID
    has 36).  ``max_stamp_ahead_s``: a message stamped further ahead of the node's clock is
    refused (``stamp_gate.STAMP_REJECTIONS``).  README "Memory bound" derives the most the
    node holds from these.
    """

    window: int = 64
    crop_size: int = 64
    crop_context: float = 0.25
    max_detections: int = 100
    max_tracks: int = 100
    max_stereo_tracks: int = 100
    max_id_length: int = 256
    max_stamp_ahead_s: float = 2.0

    def __post_init__(self):
        """Check types and values."""
        check_fields(self, 'pipeline')
        require(self.window >= 1, 'pipeline.window', 'an integer >= 1', self.window)
        for name in ('max_detections', 'max_tracks', 'max_stereo_tracks', 'max_id_length'):
            value = getattr(self, name)
            require(value >= 1, f'pipeline.{name}', 'an integer >= 1', value)
        require(math.isfinite(self.max_stamp_ahead_s) and self.max_stamp_ahead_s > 0.0,
                'pipeline.max_stamp_ahead_s', 'a finite number > 0', self.max_stamp_ahead_s)
        require(self.crop_size >= 2, 'pipeline.crop_size', 'an integer >= 2', self.crop_size)
        require(math.isfinite(self.crop_context) and self.crop_context >= 0.0,
                'pipeline.crop_context', 'a finite number >= 0', self.crop_context)


@dataclass(frozen=True)
class DetectionSettings:
    """
    Which detections the pipeline tracks (section ``detections``).

    ``classes``: the ``class_id`` values to track; a detection of another class is dropped
    and counted (``class_filtered``).  Empty: every class.
    """

    classes: List[str] = field(default_factory=list)

    def __post_init__(self):
        """Check types and values."""
        check_fields(self, 'detections')
        require(all(isinstance(c, str) for c in self.classes), 'detections.classes',
                'a list of class names', self.classes)


@dataclass(frozen=True)
class FilterSettings:
    """
    Which persistence filter decides, and the baselines' thresholds (section ``filter``).

    ``ground_plane``: ``[a, b, c, d]`` in the left optical frame (``n.X + d = 0``, normal
    up); all zero means unset (``plane`` is then None).
    """

    name: str = DEFAULT_FILTER
    decide_after: int = 3
    # the score rule's threshold; 0.6 is what the evaluator's tables used (docs/benchmarks.md)
    threshold: float = 0.6
    min_hits: int = 5
    max_residual_px: float = 2.0
    ground_plane: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    ground_margin_m: float = 0.05
    gbdt_path: str = ''

    def __post_init__(self):
        """Check types and values; the names say what to fix."""
        check_fields(self, 'filter')
        require(self.name in FILTER_NAMES, 'filter.name', f'one of {FILTER_NAMES}', self.name)
        require(self.decide_after >= 1, 'filter.decide_after', 'an integer >= 1',
                self.decide_after)
        require(self.min_hits >= 1, 'filter.min_hits', 'an integer >= 1', self.min_hits)
        require(0.0 <= self.threshold <= 1.0, 'filter.threshold', 'in [0, 1]', self.threshold)
        for name in ('max_residual_px', 'ground_margin_m'):
            value = getattr(self, name)
            require(math.isfinite(value) and value >= 0.0, f'filter.{name}',
                    'a finite number >= 0', value)
        plane = list(self.ground_plane)
        require(len(plane) == 4 and all(math.isfinite(v) for v in plane), 'filter.ground_plane',
                '4 finite numbers [a, b, c, d] (all zero: unset)', plane)

    @property
    def plane(self) -> Optional[List[float]]:
        """Return the ground plane, or None when unset (normal all zero)."""
        plane = [float(v) for v in self.ground_plane]
        return plane if any(plane[:3]) else None


@dataclass(frozen=True)
class ModelSettings:
    """
    The learned filter's weights, device, attention and decision rule (section ``model``).

    ``path``: a safetensors checkpoint ('' means the shipped ``cpu`` weights); ``decision``:
    the early-decision rule the filter applies (it overrides the checkpoint's);
    ``fallback``: the rule (one of ``FALLBACK_NAMES``, with its ``filter.*`` thresholds) that
    decides the tracks the model is out of its depth on: all of them when the rig or the
    frame rate is outside the training ranges, a track when its features mostly are
    (``model.domain``).  The default ``none`` keeps every such track.  ``catch_up_frames``:
    the most back-filled frames of a track side the model reads per frame (0: all at once;
    ``LearnedFilter``).  ``ensemble_paths``: more checkpoints; p is then the mean of the
    members' p (``path``'s weights first, which also give the attention).
    """

    path: str = ''
    ensemble_paths: List[str] = field(default_factory=list)
    device: str = 'auto'
    attention: str = 'last_layer'
    fallback: str = 'none'
    catch_up_frames: int = 8
    decision: EarlyDecision = field(default_factory=EarlyDecision)

    def __post_init__(self):
        """Check types and choices."""
        check_fields(self, 'model')
        require(self.device in DEVICES or self.device.startswith('cuda:'), 'model.device',
                f'one of {DEVICES} (or cuda:N)', self.device)
        require(self.attention in ATTENTION_MODES, 'model.attention',
                f'one of {ATTENTION_MODES}', self.attention)
        require(self.fallback in FALLBACK_NAMES, 'model.fallback', f'one of {FALLBACK_NAMES}',
                self.fallback)
        require(0 <= self.catch_up_frames <= 1000, 'model.catch_up_frames',
                'an integer in [0, 1000]', self.catch_up_frames)


@dataclass(frozen=True)
class Settings:
    """The core's settings: the tree that ``--set`` keys and node parameters address."""

    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    association: AssociationConfig = field(default_factory=AssociationConfig)
    triangulation: TriangulationConfig = field(default_factory=TriangulationConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    filter: FilterSettings = field(default_factory=FilterSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    detections: DetectionSettings = field(default_factory=DetectionSettings)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)

    def __post_init__(self):
        """Check that every section holds its type."""
        check_fields(self, '')
