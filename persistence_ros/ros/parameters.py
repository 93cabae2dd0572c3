"""
The node's parameters: names, descriptions and ranges in ONE table, defaults from one tree.

Every parameter is a dotted path in ``NodeSettings``: the core ``settings.Settings`` (tracker,
association, triangulation, pipeline, filter, model, detections and smoothing sections, the
same tree the command line's ``--set`` changes) plus the node's own sections and fields
(calibration, images, detections.type, sync, processing, qos, publish, diagnostics, log).
The node reads its parameters and applies them to that tree with
``overrides.replace_fields``, the function ``--set`` uses; it holds no mapping of its own.
``PARAMETERS`` adds what ROS declares (description, range, choices) and takes each default
and type from the tree.

This module is plain Python (no rclpy at import), so ``config/persistence.yaml``, the README
table and the launch files can be checked against it without ROS
(test/test_parameters_doc.py). :func:`declare_parameters` turns the table into typed, ranged
``ParameterDescriptor`` declarations; :func:`validate` checks a ``{name: value}`` dict and
returns messages that say what to fix; :func:`node_settings` returns the tree.
"""

from dataclasses import dataclass, field, fields, is_dataclass
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from persistence_ros.detections import DETECTION_TYPES
from persistence_ros.model import ATTENTION_MODES, DEFAULT_WEIGHTS
from persistence_ros.overrides import check_fields, replace_fields
from persistence_ros.settings import (DetectionSettings, DEVICES, FALLBACK_NAMES, FILTER_NAMES,
                                      Settings)

RELIABILITIES = ('best_effort', 'reliable')
# images.transport: sensor_msgs/Image on <side>/image_raw, or sensor_msgs/CompressedImage
# (JPEG, PNG) on <side>/image_raw/compressed as image_transport's compressed plugin names it
IMAGE_TRANSPORTS = ('raw', 'compressed')


@dataclass(frozen=True)
class CalibrationFiles:
    """Calibration files (section ``calibration``); empty: the camera_info topics."""

    left_file: str = ''
    right_file: str = ''


@dataclass(frozen=True)
class NodeDetectionSettings(DetectionSettings):
    """
    The core's ``detections`` section plus what the node subscribes to.

    ``type``: the message type; ``max_message_bytes``: a detection message larger than this
    (serialized) is refused before it is deserialized, so a runaway detector costs neither the
    time nor the memory of turning it into Python objects (counted as
    ``rejected.message_too_large``).  The default, 128 KiB, holds ``pipeline.max_detections``
    (100) detections of either type with ids of ``pipeline.max_id_length`` (256) characters
    (about 30 kB of ``persistence_ros`` detections; 45-70 kB of ``vision_msgs`` ones with one
    hypothesis each) with room to spare; 5000 boxes of the package's type are 200 kB.
    """

    type: str = 'persistence_ros'
    max_message_bytes: int = 131072


@dataclass(frozen=True)
class ImageSettings:
    """How the node receives images (section ``images``)."""

    transport: str = 'raw'


@dataclass(frozen=True)
class SyncSettings:
    """Approximate-time synchronizer of the inputs (section ``sync``)."""

    queue_size: int = 10
    slop: float = 0.02


@dataclass(frozen=True)
class ProcessingSettings:
    """
    The worker's queue of synchronized frames and its CPU threads (section ``processing``).

    ``torch_threads``: intra-op threads of the model on the CPU; 0 picks
    ``model.auto_torch_threads()`` (one core is left to the executor that receives the
    images).  ``malloc_mmap_threshold_bytes``: glibc's mmap threshold for the whole process,
    fixed at configure (``memory.set_mmap_threshold``; 0: glibc's moving default).
    """

    queue_size: int = 4
    torch_threads: int = 0
    malloc_mmap_threshold_bytes: int = 4194304


@dataclass(frozen=True)
class QosProfileSettings:
    """QoS of one kind of input subscription."""

    reliability: str = 'best_effort'
    depth: int = 10


@dataclass(frozen=True)
class QosSettings:
    """QoS of the input subscriptions (section ``qos``)."""

    images: QosProfileSettings = field(default_factory=lambda: QosProfileSettings(depth=5))
    detections: QosProfileSettings = field(default_factory=QosProfileSettings)
    camera_info: QosProfileSettings = field(
        default_factory=lambda: QosProfileSettings(depth=5))


@dataclass(frozen=True)
class PublishSettings:
    """Optional outputs (section ``publish``)."""

    debug_image: bool = False
    marker_history: int = 30
    faint_transient: bool = True


@dataclass(frozen=True)
class DiagnosticsSettings:
    """
    ``/diagnostics`` (section ``diagnostics``).

    ``stall_timeout_s``: ERROR once no frame was processed for this long while inputs arrive
    (5 s: well past any start-up pause of a frame, and 2.5 frames at the slowest rate (0.5 Hz)
    the node is meant for).
    """

    period: float = 1.0
    stall_timeout_s: float = 5.0


@dataclass(frozen=True)
class LogSettings:
    """Logging (section ``log``)."""

    throttle_s: float = 5.0


@dataclass(frozen=True)
class NodeSettings(Settings):
    """``Settings`` plus the node's own sections: every parameter of persistence_node."""

    calibration: CalibrationFiles = field(default_factory=CalibrationFiles)
    frame_id: str = ''
    use_images: bool = True
    images: ImageSettings = field(default_factory=ImageSettings)
    detections: NodeDetectionSettings = field(default_factory=NodeDetectionSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    processing: ProcessingSettings = field(default_factory=ProcessingSettings)
    qos: QosSettings = field(default_factory=QosSettings)
    publish: PublishSettings = field(default_factory=PublishSettings)
    diagnostics: DiagnosticsSettings = field(default_factory=DiagnosticsSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self):
        """Check that every section holds its type."""
        check_fields(self, '')


def leaf_values(tree, prefix: str = '') -> Dict[str, Any]:
    """Return ``{dotted name: value}`` of every leaf field of a dataclass tree."""
    out: Dict[str, Any] = {}
    for f in fields(tree):
        value = getattr(tree, f.name)
        if is_dataclass(value):
            out.update(leaf_values(value, f'{prefix}{f.name}.'))
        else:
            out[f'{prefix}{f.name}'] = list(value) if isinstance(value, tuple) else value
    return out


_TREE_DEFAULTS = leaf_values(NodeSettings())


@dataclass(frozen=True)
class Parameter:
    """
    One declared parameter (``range``: inclusive (min, max); ``choices``: allowed strings).

    ``default`` is the value of ``name`` in ``NodeSettings()``; ``kind`` names the type when
    the default cannot (an empty list: ``'string[]'``).
    """

    name: str
    description: str
    range: Optional[Tuple[float, float]] = None
    choices: Optional[Sequence[str]] = None
    kind: Optional[str] = None

    @property
    def default(self) -> Any:
        """Return the default: the tree's value at ``name``."""
        return _TREE_DEFAULTS[self.name]

    @property
    def type_name(self) -> str:
        """Return the ROS parameter type name (bool, integer, double, string, double[], ...)."""
        if self.kind is not None:
            return self.kind
        if isinstance(self.default, bool):
            return 'bool'
        if isinstance(self.default, int):
            return 'integer'
        if isinstance(self.default, float):
            return 'double'
        if isinstance(self.default, str):
            return 'string'
        return 'double[]'


_P = Parameter
PARAMETERS: List[Parameter] = [
    _P('calibration.left_file',
       'camera_calibration_parsers YAML of the left camera; empty: use left/camera_info'),
    _P('calibration.right_file',
       'camera_calibration_parsers YAML of the right camera; empty: use right/camera_info'),
    _P('frame_id', "frame of the outputs; empty: the left detections' header.frame_id"),
    _P('use_images',
       'subscribe to and synchronize the images (needed by the learned filter and the debug '
       'image); false: detections only'),
    _P('images.transport',
       'raw: sensor_msgs/Image on <side>/image_raw; compressed: sensor_msgs/CompressedImage '
       '(jpeg, png) on <side>/image_raw/compressed (side: left, right)',
       choices=IMAGE_TRANSPORTS),
    _P('detections.type',
       'message type of left/detections and right/detections: '
       'persistence_ros/msg/Detection2DArray or vision_msgs/msg/Detection2DArray (best '
       'hypothesis: class_id, score)', choices=tuple(DETECTION_TYPES)),
    _P('detections.max_message_bytes',
       'a detection message larger than this (serialized bytes) is refused before it is '
       'read (counted as message_too_large)', range=(1024, 1073741824)),
    _P('detections.classes',
       'class_id values to track (others are dropped and counted as class_filtered); empty: '
       'every class', kind='string[]'),
    _P('sync.queue_size',
       'messages kept per input by the approximate-time synchronizer', range=(1, 1000)),
    _P('sync.slop',
       'seconds: a synchronized set spreads less than this (left/right/images)',
       range=(1e-06, 10.0)),
    _P('processing.queue_size',
       'synchronized frames waiting for the worker; when full the oldest is dropped (counted)',
       range=(1, 1000)),
    _P('processing.torch_threads',
       'CPU threads of the learned model (torch intra-op); 0: cores - 1, 1 to 4',
       range=(0, 256)),
    _P('processing.malloc_mmap_threshold_bytes',
       'glibc malloc: blocks of this size or more get their own mapping, returned to the '
       'system when freed (bounds the heap a flood of large messages leaves); 0: the '
       'moving default of glibc', range=(0, 33554432)),
    _P('filter.name', 'persistence filter: ' + '|'.join(FILTER_NAMES), choices=FILTER_NAMES),
    _P('filter.decide_after', 'observed frames before a baseline filter decides', range=(1, 1000)),
    _P('filter.threshold',
       'score filter: mean detector score at or above which a track is persistent',
       range=(0.0, 1.0)),
    _P('filter.min_hits',
       'min_hits filter: observed frames to become persistent', range=(1, 1000)),
    _P('filter.max_residual_px',
       'stereo filter: mean epipolar residual gate (pixels)', range=(0.0, 100.0)),
    _P('filter.ground_plane',
       'ground_plane/gbdt/learned filters: plane [a, b, c, d] in the left optical frame (n.X + '
       'd = 0, n up); all zero: unset'),
    _P('filter.ground_margin_m',
       'ground_plane filter: tracks lower than this below the plane are transient',
       range=(0.0, 10.0)),
    _P('filter.gbdt_path', 'gbdt filter: training file written by GbdtFilter.save (.npz)'),
    _P('model.path',
       "learned filter: safetensors checkpoint of the persistence model ('': the shipped cpu "
       'weights)'),
    _P('model.ensemble_paths',
       'learned filter: more checkpoints; p is the mean over model.path and these (an '
       'ensemble: each member streams every track, so model time grows with their number); '
       'empty: one model', kind='string[]'),
    _P('model.device', 'device of the learned model: auto|cpu|cuda', choices=DEVICES),
    _P('model.attention',
       'attention published per track: last_layer (the decision layer, over the last W frames) '
       'or rollout (all layers, over the last L(W-1)+1 frames)', choices=ATTENTION_MODES),
    _P('model.fallback',
       'learned filter: the rule that decides the tracks the model is out of its depth on (the '
       'rig, frame rate or a track outside its training ranges); none keeps them',
       choices=FALLBACK_NAMES),
    _P('model.catch_up_frames',
       "learned filter: the most back-filled frames of a late pair's side it streams per frame "
       '(the rest follow, the track stays undecided until caught up); 0: all at once',
       range=(0, 1000)),
    _P('model.decision.hi',
       'learned filter: decided persistent once p(persistent) is at or above this',
       range=(0.5, 1.0)),
    _P('model.decision.lo',
       'learned filter: decided transient once p(persistent) is at or below this',
       range=(0.0, 0.5)),
    _P('model.decision.min_frames',
       'learned filter: observed frames before it decides', range=(1, 1000)),
    _P('model.decision.recheck',
       'learned filter: keep scoring decided tracks (a transient one can still turn '
       'persistent); false: decided tracks cost no model time'),
    _P('model.decision.keep_unsure_after',
       'learned filter: a track still undecided after this many observed frames is decided '
       'persistent (published, not lost because the model is unsure); 0: never',
       range=(0, 100000)),
    _P('tracker.high_score',
       'detections at or above it start and extend 2D tracks', range=(0.0, 1.0)),
    _P('tracker.low_score', 'detections at or above it only extend 2D tracks', range=(0.0, 1.0)),
    _P('tracker.iou_threshold', 'minimum IoU of a first-stage 2D match', range=(0.0, 1.0)),
    _P('tracker.max_age', 'missed frames a 2D track survives', range=(0, 10000)),
    _P('tracker.min_hits', 'matches before a 2D track is confirmed', range=(1, 1000)),
    _P('tracker.appearance_gate',
       'largest colour-histogram (Hellinger) distance of a 2D match, needs use_images; 1.0: off',
       range=(0.0, 1.0)),
    _P('association.max_epipolar_px',
       'mean epipolar cost gate (pixels) for pairing left/right tracks', range=(0.01, 1000.0)),
    _P('association.gate_box_fraction',
       "the pairing gate grows to this fraction of the boxes' height for large boxes; 0: "
       'pixels only', range=(0.0, 1.0)),
    _P('association.min_common_frames',
       'frames both tracks were seen before pairing', range=(1, 1000)),
    _P('triangulation.max_epipolar_px',
       'epipolar gate before triangulating (pixels)', range=(0.01, 1000.0)),
    _P('triangulation.max_reprojection_error_px',
       'reprojection error gate after triangulating (pixels)', range=(0.01, 1000.0)),
    _P('triangulation.gate_box_fraction',
       "the two pixel gates grow to this fraction of the boxes' height for large boxes; 0: "
       'pixels only', range=(0.0, 1.0)),
    _P('triangulation.max_depth_sigma_m',
       'depth standard deviation gate (metres)', range=(0.001, 1000.0)),
    _P('pipeline.window', 'frames of history kept per stereo track', range=(1, 10000)),
    _P('pipeline.max_detections',
       'detections per camera and frame that are tracked; beyond it the lowest scores are '
       'dropped (counted)', range=(1, 100000)),
    _P('pipeline.max_tracks',
       'live 2D tracks per camera; detections that would start more start none (counted)',
       range=(1, 100000)),
    _P('pipeline.max_stereo_tracks',
       'live stereo tracks; pairs beyond it are not formed (counted)', range=(1, 100000)),
    _P('pipeline.max_id_length',
       'characters of a detection id; a longer id drops its detection (counted)',
       range=(1, 1000000)),
    _P('pipeline.max_stamp_ahead_s',
       'seconds: an input stamped further ahead of the node clock is refused (counted)',
       range=(0.001, 1000000.0)),
    _P('smoothing.enabled',
       'smooth PERSISTENT tracks in 3D (constant-velocity Kalman filter; Track.smoothed_*, the '
       'points and trajectory markers)'),
    _P('smoothing.acceleration_noise',
       'm/s^2: white-noise acceleration of the constant-velocity model (larger follows faster '
       'manoeuvres, smooths less)', range=(0.001, 1000.0)),
    _P('smoothing.initial_velocity_sigma',
       'm/s: velocity uncertainty of a new track filter', range=(0.001, 1000.0)),
    _P('smoothing.gate',
       'squared Mahalanobis distance above which a point is an outlier (16.27: chi-square, 3 '
       'dof, p=0.999)', range=(0.1, 1000.0)),
    _P('smoothing.max_outliers',
       'outliers in a row after which the filter restarts at the new point', range=(1, 1000)),
    _P('smoothing.max_gap_s',
       'seconds without a point after which a track has no smoothed state until the next one',
       range=(0.001, 3600.0)),
    _P('qos.images.reliability',
       'QoS reliability of the image subscriptions', choices=RELIABILITIES),
    _P('qos.images.depth', 'QoS history depth of the image subscriptions', range=(1, 1000)),
    _P('qos.detections.reliability',
       'QoS reliability of the detection subscriptions', choices=RELIABILITIES),
    _P('qos.detections.depth',
       'QoS history depth of the detection subscriptions', range=(1, 1000)),
    _P('qos.camera_info.reliability',
       'QoS reliability of the camera_info subscriptions', choices=RELIABILITIES),
    _P('qos.camera_info.depth',
       'QoS history depth of the camera_info subscriptions', range=(1, 1000)),
    _P('publish.debug_image', 'publish ~/debug_image (left image with state boxes)'),
    _P('publish.marker_history', 'trajectory points per track in ~/markers', range=(2, 10000)),
    _P('publish.faint_transient',
       'draw TRANSIENT tracks (reflections, glare, false positives) faint in ~/markers; false: '
       'as opaque as the others'),
    _P('diagnostics.period', 'seconds between /diagnostics messages', range=(0.05, 3600.0)),
    _P('diagnostics.stall_timeout_s',
       'seconds without a processed frame, while inputs arrive, before /diagnostics says ERROR',
       range=(0.1, 3600.0)),
    _P('log.throttle_s', 'seconds between repeated warnings of one kind', range=(0.0, 3600.0)),
]

DEFAULTS: Dict[str, Any] = {p.name: p.default for p in PARAMETERS}
BY_NAME: Dict[str, Parameter] = {p.name: p for p in PARAMETERS}


def _type_ok(parameter: Parameter, value: Any) -> bool:
    kind = parameter.type_name
    if kind == 'bool':
        return isinstance(value, bool)
    if kind == 'integer':
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == 'double':
        return isinstance(value, float)
    if kind == 'string':
        return isinstance(value, str)
    item = str if kind == 'string[]' else float
    return (isinstance(value, (list, tuple))
            and all(isinstance(v, item) for v in value))


def validate(values: Dict[str, Any]) -> List[str]:
    """Return messages (empty if valid) saying which value to fix and how."""
    errors = []
    for name, value in values.items():
        parameter = BY_NAME.get(name)
        if parameter is None:
            errors.append(f'unknown parameter {name!r}')
            continue
        if not _type_ok(parameter, value):
            errors.append(f'{name}: expected a {parameter.type_name} (e.g. {parameter.default!r}'
                          f'), got {value!r}')
            continue
        if parameter.range is not None:
            low, high = parameter.range
            if not (math.isfinite(value) and low <= value <= high):
                errors.append(f'{name}: must be in [{low}, {high}], got {value!r}')
        if parameter.choices is not None and value not in parameter.choices:
            errors.append(f'{name}: must be one of {"|".join(parameter.choices)}, got {value!r}')
    merged = dict(DEFAULTS, **values)
    if not errors:
        errors.extend(_semantic_errors(merged))
    if not errors:
        try:
            node_settings(values)
        except ValueError as error:
            errors.append(str(error))
    return errors


def _semantic_errors(v: Dict[str, Any]) -> List[str]:
    errors = []
    if v['tracker.low_score'] > v['tracker.high_score']:
        errors.append(f"tracker.low_score ({v['tracker.low_score']}) must be <= "
                      f"tracker.high_score ({v['tracker.high_score']})")
    left, right = v['calibration.left_file'], v['calibration.right_file']
    if bool(left) != bool(right):
        errors.append('calibration.left_file and calibration.right_file: set both (files) or '
                      'neither (camera_info topics)')
    for name in ('calibration.left_file', 'calibration.right_file', 'filter.gbdt_path',
                 'model.path'):
        if v[name] and not Path(v[name]).is_file():
            errors.append(f'{name}: file {v[name]!r} does not exist')
    for path in v['model.ensemble_paths']:
        if not Path(path).is_file():
            errors.append(f'model.ensemble_paths: file {path!r} does not exist')
    plane = list(v['filter.ground_plane'])
    filter_name = v['filter.name']
    if len(plane) != 4 or not all(math.isfinite(x) for x in plane):
        errors.append(f'filter.ground_plane: must be 4 finite numbers [a, b, c, d], got {plane}')
    elif filter_name == 'ground_plane' and not any(plane[:3]):
        errors.append('filter.name is ground_plane: set filter.ground_plane to the floor plane '
                      '[a, b, c, d] in the left optical frame (n.X + d = 0, n pointing up)')
    if filter_name == 'gbdt' and not v['filter.gbdt_path']:
        errors.append('filter.name is gbdt: set filter.gbdt_path to a file written by '
                      'GbdtFilter.save (or choose another filter.name)')
    if v['model.decision.lo'] >= v['model.decision.hi']:
        errors.append(f"model.decision.lo ({v['model.decision.lo']}) must be < "
                      f"model.decision.hi ({v['model.decision.hi']})")
    if filter_name == 'learned' and not v['model.path'] and not DEFAULT_WEIGHTS.exists():
        errors.append(f'filter.name is learned: no shipped weights at {DEFAULT_WEIGHTS}; set '
                      'model.path to a trained checkpoint (or choose another filter.name, '
                      'e.g. stereo)')
    return errors


def node_settings(values: Dict[str, Any]) -> NodeSettings:
    """
    Return the settings tree with ``values`` (``{dotted name: value}``) applied.

    The same ``replace_fields`` as the command line's ``--set``; ValueError names the key.
    Call :func:`validate` first for the ROS-side checks (ranges, choices, files).
    """
    return replace_fields(NodeSettings(), values)


def nested(values: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Return ``{a: {b: value}}`` for dotted names (the YAML layout of ros__parameters)."""
    out: Dict[str, Any] = {}
    for name, value in (DEFAULTS if values is None else values).items():
        node = out
        parts = name.split('.')
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = list(value) if isinstance(value, tuple) else value
    return out


# -- rclpy side (imported lazily so the table above needs no ROS) ---------------------------

def descriptor(parameter: Parameter):
    """Return the rcl_interfaces ParameterDescriptor of a parameter."""
    from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                    ParameterType)
    types = {'bool': ParameterType.PARAMETER_BOOL, 'integer': ParameterType.PARAMETER_INTEGER,
             'double': ParameterType.PARAMETER_DOUBLE, 'string': ParameterType.PARAMETER_STRING,
             'double[]': ParameterType.PARAMETER_DOUBLE_ARRAY,
             'string[]': ParameterType.PARAMETER_STRING_ARRAY}
    description = parameter.description
    if parameter.choices:
        description += f' (one of: {", ".join(parameter.choices)})'
    desc = ParameterDescriptor(name=parameter.name, type=types[parameter.type_name],
                               description=description)
    if parameter.range is not None:
        low, high = parameter.range
        if parameter.type_name == 'integer':
            desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(low),
                                                            to_value=float(high), step=0.0)]
    return desc


def declare_parameters(node) -> Dict[str, str]:
    """
    Declare every parameter on ``node``; return ``{name: error}`` of rejected overrides.

    An override that rclpy refuses (wrong type, out of range) is not raised here: the
    parameter is declared with its default and the message is returned, so that the node
    fails at configure with it (fail fast, with a message saying what to fix) until the
    parameter is set to a valid value.

    A string array is declared by its type (rclpy reads an empty list as a byte array) and
    then set to its default unless an override gave it a value; an empty list in a
    parameters file (``classes: []``, which rcl reads as "not set") leaves the default.
    """
    from rclpy.exceptions import (InvalidParameterTypeException,
                                  InvalidParameterValueException)
    from rclpy.parameter import Parameter as RclpyParameter
    errors = {}
    overrides = getattr(node, '_parameter_overrides', {})  # rclpy keeps them there
    for parameter in PARAMETERS:
        if node.has_parameter(parameter.name):
            continue
        desc = descriptor(parameter)
        string_array = parameter.type_name == 'string[]'
        initial = RclpyParameter.Type.STRING_ARRAY if string_array else parameter.default
        try:
            node.declare_parameter(parameter.name, initial, desc)
        except (InvalidParameterTypeException, InvalidParameterValueException,
                TypeError, ValueError) as error:
            given = overrides.get(parameter.name)
            shown = given.value if isinstance(given, RclpyParameter) else given
            errors[parameter.name] = (f'{parameter.name}: invalid value {shown!r} ({error}); '
                                      f'expected a {parameter.type_name}'
                                      + (f' in [{parameter.range[0]}, {parameter.range[1]}]'
                                         if parameter.range else ''))
            node.declare_parameter(parameter.name, initial, desc, ignore_override=True)
        if string_array and node.get_parameter_or(parameter.name).value is None:
            node.set_parameters([RclpyParameter(parameter.name,
                                                RclpyParameter.Type.STRING_ARRAY,
                                                list(parameter.default))])
    return errors


def read_parameters(node) -> Dict[str, Any]:
    """Return ``{name: value}`` of every declared parameter of the table."""
    values = {}
    for parameter in PARAMETERS:
        value = node.get_parameter(parameter.name).value
        if parameter.type_name == 'double[]':
            value = [float(x) for x in value]
        elif parameter.type_name == 'string[]':
            value = [str(x) for x in value]
        values[parameter.name] = value
    return values


def yaml_defaults(node_name: str = '/**') -> Dict[str, Any]:
    """Return the defaults as a ROS 2 parameter file dict (``{node: {ros__parameters}}``)."""
    return {node_name: {'ros__parameters': nested()}}
