"""
Scenario files: YAML schema with defaults, validation and the preset library.

A scenario is a nested dict; every key is optional and defaults to :data:`DEFAULTS`.
Unknown keys and wrong types fail with a ``ScenarioError`` naming the key path
(e.g. ``detector.miss_prob``). See docs/simulator.md for the schema.
"""

import copy
from pathlib import Path
import re
import sys
from typing import Any, Dict, List, Optional

import yaml

SHAPES = ('sphere', 'box', 'capsule', 'cylinder')
TRAJECTORIES = ('linear', 'circular', 'helical', 'parabolic')
OCCLUDER_KINDS = ('pillar', 'box')

DEFAULTS: Dict[str, Any] = {
    'name': '',
    'seed': 0,
    'duration_s': 4.0,
    'fps': 15.0,
    'rig': {
        'width': 320,
        'height': 240,
        'fovy_deg': 60.0,
        'focal_px': None,            # overrides fovy_deg when set (principal point: centre)
        'baseline_m': 0.12,
        'position': [0.0, -1.5, 1.2],  # left camera, world metres (floor is z = 0)
        'look_at': [0.0, 2.0, 0.6],
    },
    'objects': {
        'count': 2,
        'shapes': list(SHAPES),
        'trajectories': list(TRAJECTORIES),
        'size_range_m': [0.08, 0.18],   # radius / half-extent range
        'speed_range_mps': [0.3, 1.0],
        'region_min': [-1.5, 0.8, 0.2],  # box where objects are at their reference time
        'region_max': [1.5, 3.5, 1.4],
        'specular': 0.6,
    },
    'floor': {'reflectance': 0.0, 'rgba': [0.45, 0.45, 0.47, 1.0]},
    'window': {
        'enabled': False,
        'center': [0.0, 4.0, 1.0],
        'yaw_deg': 0.0,         # rotation about world z; 0: the pane faces -y (the camera)
        'size_m': [3.0, 1.6],   # width, height
        'reflectance': 0.6,
        'rgba': [0.25, 0.3, 0.35, 1.0],
    },
    'glare': {
        'count': 0,
        'blink_period_s': [0.4, 1.5],
        'duty': 0.5,
        'size_m': 0.05,
    },
    'occluders': {'count': 0, 'kinds': list(OCCLUDER_KINDS)},
    'detector': {
        'threshold': 10,          # |image - background| (max over channels) to count a pixel
        'min_area_px': 6,
        'jitter_px': 0.5,         # std of centre and size noise
        'miss_prob': 0.02,
        'false_positives': 0,     # lingering false-positive episodes per camera per scene
        'lingering_frames': [5, 30],
        'edge_flicker_rate': 0.0,  # probability per frame and camera of a flicker box at an edge
    },
}

NULLABLE = {('rig', 'focal_px')}


class ScenarioError(ValueError):
    """A scenario file has a bad key or value."""


def preset_dirs() -> List[Path]:
    """Return the directories searched for preset ``<name>.yaml`` files."""
    dirs = [Path(__file__).resolve().parents[2] / 'config' / 'scenarios']
    try:  # an installed package: share/persistence_ros/config/scenarios (no rclpy needed)
        from ament_index_python.packages import get_package_share_directory
        dirs.append(Path(get_package_share_directory('persistence_ros')) / 'config' / 'scenarios')
    except Exception:  # noqa: B902 - not installed
        pass
    dirs.append(Path(sys.prefix) / 'share' / 'persistence_ros' / 'config' / 'scenarios')
    return dirs


def file_name(name: str) -> str:
    """
    Return a scenario name as a safe file name (for scene folders).

    Only letters, digits, ``.``, ``_`` and ``-`` are kept (others become ``_``) and leading or
    trailing dots are dropped, so the result never names a parent folder or a path; an empty
    result is ``custom``.
    """
    return re.sub(r'[^A-Za-z0-9._-]+', '_', str(name)).strip('.') or 'custom'


def _yaml_error(path: Path, error: Exception) -> str:
    """Return a one-line description of a YAML or decoding error in ``path``."""
    mark = getattr(error, 'problem_mark', None)
    problem = getattr(error, 'problem', None) or str(error)
    where = f' at line {mark.line + 1}, column {mark.column + 1}' if mark is not None else ''
    return f'{path}: not a valid YAML file{where}: ' + ' '.join(str(problem).split())


def list_presets() -> List[str]:
    """Return the names of the available presets."""
    names = set()
    for directory in preset_dirs():
        names.update(p.stem for p in directory.glob('*.yaml'))
    return sorted(names)


def _check(value: Any, default: Any, path: tuple) -> Any:
    name = '.'.join(path)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ScenarioError(f'scenario key {name!r} must be a mapping, got {value!r}')
        merged = copy.deepcopy(default)
        for key, sub in value.items():
            if key not in default:
                raise ScenarioError(f'unknown scenario key {".".join(path + (str(key),))!r}; '
                                    f'allowed: {sorted(default)}')
            merged[key] = _check(sub, default[key], path + (key,))
        return merged
    if value is None and path in NULLABLE:
        return None
    if default is None:
        default = 0.0
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ScenarioError(f'scenario key {name!r} must be true/false, got {value!r}')
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ScenarioError(f'scenario key {name!r} must be a number, got {value!r}')
        return int(value) if isinstance(default, int) else float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ScenarioError(f'scenario key {name!r} must be a string, got {value!r}')
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ScenarioError(f'scenario key {name!r} must be a list, got {value!r}')
        if default and isinstance(default[0], (int, float)):
            if len(value) != len(default):
                raise ScenarioError(f'scenario key {name!r} must have {len(default)} numbers, '
                                    f'got {value!r}')
            return [_check(v, default[0], path) for v in value]
        return [str(v) for v in value]
    raise ScenarioError(f'scenario key {name!r}: unsupported value {value!r}')


def _semantics(s: Dict[str, Any]) -> None:
    def fail(key, why):
        raise ScenarioError(f'scenario key {key!r} {why}')

    if s['duration_s'] <= 0:
        fail('duration_s', 'must be > 0')
    if s['fps'] <= 0:
        fail('fps', 'must be > 0')
    rig = s['rig']
    for key in ('width', 'height'):
        if rig[key] < 16:
            fail(f'rig.{key}', 'must be >= 16')
    if not 1.0 < rig['fovy_deg'] < 170.0:
        fail('rig.fovy_deg', 'must be in (1, 170)')
    if rig['focal_px'] is not None and rig['focal_px'] <= 0:
        fail('rig.focal_px', 'must be > 0')
    if rig['baseline_m'] <= 0:
        fail('rig.baseline_m', 'must be > 0')
    objects = s['objects']
    if objects['count'] < 0:
        fail('objects.count', 'must be >= 0')
    for shape in objects['shapes']:
        if shape not in SHAPES:
            fail('objects.shapes', f'has unknown shape {shape!r}; allowed: {list(SHAPES)}')
    for kind in objects['trajectories']:
        if kind not in TRAJECTORIES:
            fail('objects.trajectories',
                 f'has unknown trajectory {kind!r}; allowed: {list(TRAJECTORIES)}')
    if objects['count'] and not (objects['shapes'] and objects['trajectories']):
        fail('objects', 'needs at least one shape and one trajectory')
    for key in ('size_range_m', 'speed_range_mps'):
        low, high = objects[key]
        if not 0 < low <= high:
            fail(f'objects.{key}', 'must be [low, high] with 0 < low <= high')
    if any(a > b for a, b in zip(objects['region_min'], objects['region_max'])):
        fail('objects.region_min', 'must be <= objects.region_max')
    for key, value in (('floor.reflectance', s['floor']['reflectance']),
                       ('window.reflectance', s['window']['reflectance'])):
        if not 0.0 <= value <= 1.0:
            fail(key, 'must be in [0, 1]')
    if s['window']['enabled'] and s['window']['reflectance'] > 0 and s['floor']['reflectance'] > 0:
        # MuJoCo renders only the first reflective geom as a mirror.
        fail('window.enabled', 'cannot be combined with floor.reflectance > 0 (MuJoCo renders '
             'only one mirror); set floor.reflectance: 0')
    glare = s['glare']
    low, high = glare['blink_period_s']
    if glare['count'] < 0:
        fail('glare.count', 'must be >= 0')
    if not 0 < low <= high:
        fail('glare.blink_period_s', 'must be [low, high] with 0 < low <= high')
    if not 0.0 < glare['duty'] <= 1.0:
        fail('glare.duty', 'must be in (0, 1]')
    for kind in s['occluders']['kinds']:
        if kind not in OCCLUDER_KINDS:
            fail('occluders.kinds', f'has unknown kind {kind!r}; allowed: {list(OCCLUDER_KINDS)}')
    det = s['detector']
    if not 0.0 <= det['miss_prob'] < 1.0:
        fail('detector.miss_prob', 'must be in [0, 1)')
    if not 0.0 <= det['edge_flicker_rate'] <= 1.0:
        fail('detector.edge_flicker_rate', 'must be in [0, 1]')
    low, high = det['lingering_frames']
    if not 1 <= low <= high:
        fail('detector.lingering_frames', 'must be [low, high] with 1 <= low <= high')
    for key in ('false_positives', 'min_area_px', 'threshold'):
        if det[key] < 0:
            fail(f'detector.{key}', 'must be >= 0')
    if det['jitter_px'] < 0:
        fail('detector.jitter_px', 'must be >= 0')


def validate_scenario(raw: Optional[Dict[str, Any]], name: str = '') -> Dict[str, Any]:
    """Return the scenario merged over the defaults; raise ``ScenarioError`` if invalid."""
    scenario = _check(raw or {}, DEFAULTS, ())
    if not scenario['name']:
        scenario['name'] = name or 'custom'
    _semantics(scenario)
    return scenario


def load_scenario(name_or_path: str, seed: Optional[int] = None,
                  overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """
    Load a preset by name (``config/scenarios/<name>.yaml``) or a YAML file by path.

    ``seed`` replaces the file's seed; ``overrides`` is a nested dict merged over the file.
    """
    path = Path(name_or_path)
    if not (path.suffix in ('.yaml', '.yml') and path.is_file()):
        found = [d / f'{name_or_path}.yaml' for d in preset_dirs()
                 if (d / f'{name_or_path}.yaml').is_file()]
        if not found:
            raise ScenarioError(f'no scenario file or preset named {name_or_path!r}; '
                                f'presets: {list_presets()}')
        path = found[0]
    try:
        with open(path, encoding='utf-8') as stream:
            raw = yaml.safe_load(stream) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ScenarioError(_yaml_error(path, error)) from None
    if not isinstance(raw, dict):
        raise ScenarioError(f'{path}: a scenario must be a YAML mapping')
    raw = _deep_merge(raw, overrides or {})
    if seed is not None:
        raw['seed'] = int(seed)
    try:
        return validate_scenario(raw, name=path.stem)
    except ScenarioError as error:
        raise ScenarioError(f'{path}: {error}') from None


def _deep_merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
