"""Model configuration: nested dataclasses read from and written to YAML/JSON dictionaries."""

import dataclasses
from dataclasses import dataclass, field
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

from persistence_ros.features import DEFAULT_MODEL_FEATURES
from persistence_ros.model.decision import EarlyDecision
from persistence_ros.overrides import check_fields, replace_fields, require

CONFIG_DIR = Path(__file__).resolve().parent / 'configs'


def _check(section, where: str, test, requirement: str, *names: str) -> None:
    """Raise ValueError naming ``where.name`` and its value unless ``test(value)`` holds."""
    for name in names:
        value = getattr(section, name)
        require(test(value), f'{where}.{name}' if where else name, requirement, value)


def _positive(value) -> bool:
    return value >= 1


def _finite_at_least_0(value) -> bool:
    return math.isfinite(value) and value >= 0.0


def latent_grid(config: 'ModelConfig') -> int:
    """
    Return the side of the tokenizer's latent grid: ``input_size / 2 ** stages``.

    ValueError unless ``input_size`` is a positive multiple of ``2 ** stages`` (one 2x
    downsample per entry of ``tokenizer.channels``; the convolutions would give another grid).
    """
    stages = len(config.tokenizer.channels)
    if config.input_size < 2 ** stages or config.input_size % (2 ** stages):
        raise ValueError(f'input_size must be a multiple of 2 ** {stages} = {2 ** stages} '
                         f'(one 2x downsample per entry of tokenizer.channels), got '
                         f'{config.input_size}')
    return config.input_size // (2 ** stages)


@dataclass
class TokenizerConfig:
    """Causal 3D-conv encoder, FSQ/LFQ quantizer and a per-frame decoder."""

    channels: List[int] = field(default_factory=lambda: [8, 16, 32])
    res_blocks: int = 0
    kernel_t: int = 3
    quantizer: str = 'fsq'
    fsq_levels: List[int] = field(default_factory=lambda: [8, 5, 5, 5])
    lfq_dim: int = 8
    lfq_entropy_weight: float = 0.1
    lfq_commitment_weight: float = 0.25
    decoder_channels: List[int] = field(default_factory=lambda: [32, 16, 8])

    def __post_init__(self):
        """Check types and values (``tokenizer.kernel_t: 0`` would build no convolution)."""
        check_fields(self, 'tokenizer')
        _check(self, 'tokenizer', lambda v: v and all(c >= 1 for c in v),
               'a non-empty list of integers >= 1', 'channels')
        _check(self, 'tokenizer', lambda v: len(v) == len(self.channels)
               and all(c >= 1 for c in v), 'integers >= 1, one per entry of tokenizer.channels',
               'decoder_channels')
        _check(self, 'tokenizer', lambda v: v >= 0, '>= 0', 'res_blocks')
        _check(self, 'tokenizer', _positive, '>= 1', 'kernel_t', 'lfq_dim')
        _check(self, 'tokenizer', lambda v: v and all(n >= 3 for n in v),
               'a non-empty list of integers >= 3 (FSQ refuses 2 and divides by zero at 1)',
               'fsq_levels')
        _check(self, 'tokenizer', _finite_at_least_0, 'a finite number >= 0',
               'lfq_entropy_weight', 'lfq_commitment_weight')


@dataclass
class ClassifierConfig:
    """Causal transformer over per-frame tokens (visual features + geometry)."""

    width: int = 64
    layers: int = 2
    heads: int = 4
    mlp_ratio: int = 2
    window: int = 32
    features: str = 'latent'
    pool: str = 'flatten'
    use_visual: bool = True
    use_geometry: bool = True
    fusion: str = 'concat'
    temporal: str = 'transformer'
    fusion_queries: int = 4
    geometry_features: List[str] = field(default_factory=lambda: list(DEFAULT_MODEL_FEATURES))
    # a token of frames since the track began (age / age_max): counts frames, so it means
    # another time on every frame rate; false for models that read ``age_s`` instead
    frame_age: bool = True
    age_max: int = 64
    dropout: float = 0.1

    def __post_init__(self):
        """Check types and values (``classifier.age_max: 0`` would divide by zero)."""
        check_fields(self, 'classifier')
        _check(self, 'classifier', _positive, '>= 1', 'width', 'layers', 'heads', 'mlp_ratio',
               'window', 'fusion_queries', 'age_max')
        if self.width % self.heads:
            raise ValueError(f'classifier.width ({self.width}) must be divisible by '
                             f'classifier.heads ({self.heads})')
        _check(self, 'classifier', lambda v: 0.0 <= v < 1.0, 'in [0, 1)', 'dropout')


@dataclass
class TrainConfig:
    """Optimisation settings shared by the tokenizer and classifier stages."""

    window: int = 32
    batch_size: int = 32
    lr: float = 1.0e-3
    weight_decay: float = 0.01
    epochs: int = 10
    steps_per_epoch: int = 0
    recon_weight: float = 1.0
    finetune_tokenizer: bool = True
    tokenizer_checkpoint: str = ''
    grad_clip: float = 1.0
    start_at_track_start: float = 0.5
    checkpoint_every: int = 1
    num_workers: int = 0
    collapse_min_usage: float = 0.02
    collapse_min_perplexity: float = 4.0
    # probability that a training track is shown without its ground plane (height_m and
    # plane_known zeroed), so one model serves robots with and without a configured floor
    plane_dropout: float = 0.0
    # probability that a training track's crops get one photometric change (gain, colour
    # cast, contrast, gamma, blur, noise; data.jitter_appearance) against the simulator's look
    appearance_jitter: float = 0.0
    # > 0: keep an exponential moving average of the weights (this decay per step) and
    # validate, choose the epoch and save it instead of the last step's weights; 0 = off
    ema_decay: float = 0.0

    def __post_init__(self):
        """Check types and values (a string ``lr`` used to reach the optimizer)."""
        check_fields(self, 'train')
        _check(self, 'train', _positive, '>= 1', 'window', 'batch_size')
        _check(self, 'train', lambda v: v >= 0, '>= 0', 'epochs', 'steps_per_epoch',
               'num_workers')
        _check(self, 'train', lambda v: math.isfinite(v) and v > 0.0, 'a finite number > 0',
               'lr')
        _check(self, 'train', _finite_at_least_0, 'a finite number >= 0', 'weight_decay',
               'recon_weight')
        _check(self, 'train', lambda v: 0.0 <= v <= 1.0, 'in [0, 1]', 'start_at_track_start',
               'plane_dropout', 'appearance_jitter')
        _check(self, 'train', lambda v: 0.0 <= v < 1.0, 'in [0, 1)', 'ema_decay')


def _range(value) -> bool:
    return value == [] or (len(value) == 2 and all(math.isfinite(v) for v in value)
                           and value[0] <= value[1])


@dataclass
class DomainConfig:
    """
    What the training data covered, written by ``train`` from the data set.

    Rig ranges ``[min, max]`` over the training scenes (empty: unknown, not checked):
    ``image_width`` (pixels), ``fovy_deg``, ``baseline_m``, ``fps``; ``feature_ranges``: per
    geometry column the 0.1 % and 99.9 % quantiles of the training rows; ``sources``: the
    scene sources trained on.  The learned filter's fail-safe compares a rig and a track's
    features with them (``persistence_filter.DomainCheck``).
    """

    image_width: List[float] = field(default_factory=list)
    fovy_deg: List[float] = field(default_factory=list)
    baseline_m: List[float] = field(default_factory=list)
    fps: List[float] = field(default_factory=list)
    feature_ranges: Dict[str, List[float]] = field(default_factory=dict)
    sources: List[str] = field(default_factory=list)

    def __post_init__(self):
        """Check that every range is empty or [min, max]."""
        check_fields(self, 'domain')
        _check(self, 'domain', _range, 'empty or [min, max] of finite numbers',
               'image_width', 'fovy_deg', 'baseline_m', 'fps')
        for name, value in self.feature_ranges.items():
            if not (_range(value) and value):
                raise ValueError(f'domain.feature_ranges.{name} must be [low, high], got '
                                 f'{value!r}')


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (stored in the checkpoint JSON)."""

    name: str = 'cpu'
    crop_size: int = 64
    input_size: int = 32
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decision: EarlyDecision = field(default_factory=EarlyDecision)
    domain: DomainConfig = field(default_factory=DomainConfig)

    def __post_init__(self):
        """Check types and values; ``input_size`` must halve exactly at every encoder stage."""
        check_fields(self, '')
        _check(self, '', _positive, '>= 1', 'crop_size', 'input_size')
        latent_grid(self)

    def to_dict(self) -> Dict[str, Any]:
        """Return the configuration as plain dictionaries."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'ModelConfig':
        """Build a configuration, rejecting unknown keys with a clear error."""
        return _from_dict(cls, data, 'config')


def _from_dict(cls, data, where):
    if not isinstance(data, dict):
        raise ValueError(f'{where}: expected a mapping, got {type(data).__name__}')
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f'{where}: unknown keys {unknown}; known: {sorted(fields)}')
    kwargs = {}
    for name, value in data.items():
        ftype = fields[name].type
        if dataclasses.is_dataclass(ftype):
            kwargs[name] = _from_dict(ftype, value, f'{where}.{name}')
        else:
            kwargs[name] = value
    return cls(**kwargs)


def load_config(name_or_path: Union[str, Path], overrides: Optional[Dict] = None) -> ModelConfig:
    """
    Return the configuration named ``cpu``/``gpu`` (built in) or read from a YAML file.

    Every field is checked against its type (``lr: 1e-3``, a string to YAML, is read as a
    float) and its range, in the file and in ``overrides`` alike; ValueError names the key.
    """
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f'{name_or_path}.yaml'
    if not path.exists():
        raise FileNotFoundError(f'no model config {name_or_path!r} (looked at {path})')
    try:
        with open(path, 'r', encoding='utf-8') as stream:
            data = yaml.safe_load(stream) or {}
        config = ModelConfig.from_dict(data)
    except (yaml.YAMLError, ValueError) as error:
        raise ValueError(f'model config {path}: {error}') from None
    return replace_fields(config, overrides) if overrides else config
