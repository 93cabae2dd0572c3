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
from typing import Any, Callable, Dict, List, Optional

import yaml

SHAPES = ('sphere', 'box', 'capsule', 'cylinder')  # the default draw (today's presets)
OBJECT_SHAPES = SHAPES + ('person',)  # 'person': a standing capsule that walks on the floor
TRAJECTORIES = ('linear', 'circular', 'helical', 'parabolic')
OCCLUDER_KINDS = ('pillar', 'box')
ASPECTS = {'4:3': 0.75, '16:9': 0.5625}  # height / width
REFLECTIONS = ('none', 'floor', 'window', 'mirror')

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
        # plumb_bob k1 k2 p1 p2 k3 of the delivered images (CameraInfo.d); 0: pinhole
        'distortion': [0.0, 0.0, 0.0, 0.0, 0.0],
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
        'textured': 0.0,      # share of objects wearing a photo texture
        'textures': [],       # their photos (textures.py names); empty: the 'train' pool
    },
    'floor': {'reflectance': 0.0, 'rgba': [0.45, 0.45, 0.47, 1.0],
              'texture': '',          # photo (textures.py name); '' plain
              'texture_m': 2.0,       # metres per texture repeat
              'specular': 0.5, 'shininess': 0.5},  # MuJoCo's defaults; higher: glossy
    'walls': {
        'rgba': [0.55, 0.52, 0.48, 1.0],
        'texture': '',          # photo on the back wall (the background)
        'texture_m': 4.0,
        'height_m': 4.0,        # back and side walls
        'side_x_m': 0.0,        # side walls at x = +-side_x_m; 0: none
        'side_texture': '',
    },
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
    'light': {'ambient': 0.35, 'diffuse': 0.45, 'sun': 0.5, 'sun_dir': [0.0, 0.2, -1.0]},
    'occluders': {'count': 0, 'kinds': list(OCCLUDER_KINDS)},
    'looks': {                    # after rendering, before the detector (looks.py)
        'exposure': 1.0,          # gain
        'gamma': 1.0,             # output = input ** gamma
        'white_balance': [1.0, 1.0, 1.0],  # R, G, B gains
        'vignetting': 0.0,        # brightness lost at the image corner
        'bloom': 0.0,             # glow added around near-saturated pixels
        'noise_std': 0.0,         # read noise, digital numbers
        'shot_noise': 0.0,        # variance per digital number of signal
        'blur_subframes': 1,      # > 1: motion blur, the mean of renders over the shutter
        'shutter': 0.5,           # shutter time as a fraction of the frame interval
        'jpeg_quality': 0,        # 1-100: JPEG-compress every image; 0: off
    },
    'detector': {
        'threshold': 10,          # |image - background| (max over channels) to count a pixel
        'min_area_px': 6,
        'smooth_px': 0.0,         # Gaussian sigma applied before differencing; 0: none
        'jitter_px': 0.5,         # std of centre and size noise
        'jitter_rel': 0.0,        # plus this fraction of the box side
        'miss_prob': 0.02,
        'score_gain': 1.0,        # score -> gain * score + bias + N(0, score_noise), clipped
        'score_bias': 0.0,
        'score_noise': 0.0,
        'false_positives': 0,     # lingering false-positive episodes per camera per scene
        'stereo_false_positives': 0,  # episodes seen by both cameras (they pair in stereo)
        'lingering_frames': [5, 30],
        'fp_score': [0.25, 0.85],  # score range of an episode
        'fp_cluster': [1, 1],     # boxes per episode (a cluster), range
        'fp_spread': 1.5,         # cluster members within this many box sides of the centre
        'edge_flicker_rate': 0.0,  # probability per frame and camera of a flicker box at an edge
    },
    # Per-scene draws from the scene seed (randomize.py); a section with enabled: false draws
    # nothing. Every [low, high] pair is a range.
    'randomize': {
        'rig': {
            'enabled': False,
            'width_px': [320, 1280],      # log-uniform, rounded to a multiple of 16
            'aspects': list(ASPECTS),
            'fovy_deg': [40.0, 100.0],
            'baseline_m': [0.05, 0.5],    # log-uniform
            'fps': [10.0, 60.0],          # log-uniform
            'height_m': [0.4, 2.2],       # left camera above the floor
            'distance_m': [1.0, 2.5],     # camera y = -distance (objects live at y 0.8-3.5)
            # a lens narrower than this stands back (randomize.step_back) ...
            'step_back_fovy_deg': 40.0,
            'max_step_back': 4.5,         # ... at most this many times the drawn distance
            'aim_height_m': [0.2, 1.2],   # the optical axis passes this high ...
            'aim_distance_m': [2.5, 4.5],  # ... this far ahead (sets the pitch)
            'pitch_jitter_deg': 4.0,
            'yaw_deg': [-15.0, 15.0],
            'distortion_prob': 0.6,
            # radial displacement at the image corner, relative (k1 = value / r_corner^2)
            'corner_distortion': [-0.06, 0.03],
            'tangential': 0.0005,         # |p1|, |p2| at most
            'holdout': [],                # presets whose rigs are never drawn (redrawn)
            'holdout_margin': [0.2, 0.3, 0.35],  # relative width, fps, baseline margins
        },
        'looks': {
            'enabled': False,
            'exposure': [0.6, 1.5],
            'gamma': [0.8, 1.25],
            'white_balance': [0.8, 1.25],   # R and B gains (G = 1)
            'vignetting': [0.0, 0.4],
            'bloom_prob': 0.3,
            'bloom': [0.2, 0.8],
            'noise_std': [0.0, 5.0],
            'shot_noise': [0.0, 0.4],
            'blur_prob': 0.2,
            'blur_subframes': [2, 3],
            'shutter': [0.3, 1.0],
            'jpeg_prob': 0.5,
            'jpeg_quality': [35, 95],
            'light': [0.6, 1.4],            # headlight and sun intensity factor
            'texture_prob': 0.8,            # per surface (floor, back wall, side walls)
            'textures': 'train',            # texture pool (textures.py)
            'side_walls_prob': 0.4,
        },
        'content': {
            'enabled': False,
            'duration_s': [3.0, 5.0],
            'objects': [1, 6],
            'shapes': list(OBJECT_SHAPES),
            'size_m': [0.04, 0.35],         # per scene a sub-range of this
            'speed_mps': [0.0, 6.0],        # per scene a sub-range of this
            'textured': [0.0, 0.7],
            'specular': [0.0, 1.0],
            'occluders': [0, 3],
            'glare': [0, 4],
            'glare_size_m': [0.02, 0.08],
            'reflection_probs': [0.2, 0.3, 0.3, 0.2],  # none, floor, window, mirror
            'floor_reflectance': [0.05, 0.6],
            'window_reflectance': [0.3, 0.8],
            'mirror_reflectance': [0.75, 0.95],
            'floor_specular': [0.0, 1.0],
        },
        'detector': {
            'enabled': False,
            'threshold': [8, 16],
            'min_area_px': [4, 12],
            'jitter_px': [0.2, 1.5],
            'jitter_rel': [0.0, 0.05],
            'miss_prob': [0.0, 0.15],
            'score_gain': [0.6, 1.3],
            'score_bias': [-0.2, 0.2],
            'score_noise': [0.0, 0.1],
            'false_positives': [0, 12],
            'stereo_false_positives': [0, 6],
            'lingering_s': [0.1, 2.0],      # episode length, seconds (frames follow the fps)
            'fp_cluster_max': 3,
            'edge_flicker_rate': [0.0, 0.1],
        },
    },
}

NULLABLE = {('rig', 'focal_px')}


class ScenarioError(ValueError):
    """A scenario file has a bad key or value."""


def config_dirs(section: str) -> List[Path]:
    """Return the directories searched for ``config/<section>/<name>.yaml`` preset files."""
    dirs = [Path(__file__).resolve().parents[2] / 'config' / section]
    try:  # an installed package: share/persistence_ros/config/<section> (no rclpy needed)
        from ament_index_python.packages import get_package_share_directory
        dirs.append(Path(get_package_share_directory('persistence_ros')) / 'config' / section)
    except Exception:  # noqa: B902 - not installed
        pass
    dirs.append(Path(sys.prefix) / 'share' / 'persistence_ros' / 'config' / section)
    return dirs


def preset_dirs() -> List[Path]:
    """Return the directories searched for the simulator's preset ``<name>.yaml`` files."""
    return config_dirs('scenarios')


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
        if shape not in OBJECT_SHAPES:
            fail('objects.shapes',
                 f'has unknown shape {shape!r}; allowed: {list(OBJECT_SHAPES)}')
    for kind in objects['trajectories']:
        if kind not in TRAJECTORIES:
            fail('objects.trajectories',
                 f'has unknown trajectory {kind!r}; allowed: {list(TRAJECTORIES)}')
    if objects['count'] and not (objects['shapes'] and objects['trajectories']):
        fail('objects', 'needs at least one shape and one trajectory')
    low, high = objects['size_range_m']
    if not 0 < low <= high:
        fail('objects.size_range_m', 'must be [low, high] with 0 < low <= high')
    low, high = objects['speed_range_mps']
    if not 0 <= low <= high:
        fail('objects.speed_range_mps', 'must be [low, high] with 0 <= low <= high')
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
    for key in ('false_positives', 'stereo_false_positives', 'min_area_px', 'threshold'):
        if det[key] < 0:
            fail(f'detector.{key}', 'must be >= 0')
    if det['jitter_px'] < 0:
        fail('detector.jitter_px', 'must be >= 0')
    _check_rig_extras(s, fail)
    _check_surfaces(s, fail)
    _check_looks(s['looks'], fail)
    _check_detector_extras(det, fail)
    _check_randomize(s['randomize'], fail)


def _at_least(section: dict, prefix: str, keys, low: float, fail) -> None:
    for key in keys:
        if section[key] < low:
            fail(f'{prefix}.{key}', f'must be >= {low:g}')


def _within(section: dict, prefix: str, keys, low: float, high: float, fail) -> None:
    for key in keys:
        if not low <= section[key] <= high:
            fail(f'{prefix}.{key}', f'must be in [{low:g}, {high:g}]')


def _check_texture(key: str, name: str, fail) -> None:
    from persistence_ros.simulation.textures import check_name, TextureError
    if name:
        try:
            check_name(name)
        except TextureError as error:
            fail(key, str(error))


def _check_rig_extras(s: Dict[str, Any], fail) -> None:
    k1, k2, p1, p2, k3 = s['rig']['distortion']
    if max(abs(k1), abs(k2), abs(k3)) > 1.0 or max(abs(p1), abs(p2)) > 0.05:
        fail('rig.distortion', 'must be mild: |k1|, |k2|, |k3| <= 1 and |p1|, |p2| <= 0.05')


def _check_surfaces(s: Dict[str, Any], fail) -> None:
    objects = s['objects']
    _within(objects, 'objects', ('textured',), 0.0, 1.0, fail)
    for name in objects['textures']:
        _check_texture('objects.textures', name, fail)
    _check_texture('floor.texture', s['floor']['texture'], fail)
    _within(s['floor'], 'floor', ('specular', 'shininess'), 0.0, 1.0, fail)
    _check_texture('walls.texture', s['walls']['texture'], fail)
    _check_texture('walls.side_texture', s['walls']['side_texture'], fail)
    for section, prefix in ((s['floor'], 'floor'), (s['walls'], 'walls')):
        if section['texture_m'] <= 0:
            fail(f'{prefix}.texture_m', 'must be > 0')
    _at_least(s['walls'], 'walls', ('side_x_m',), 0.0, fail)
    if s['walls']['height_m'] <= 0:
        fail('walls.height_m', 'must be > 0')
    _at_least(s['light'], 'light', ('ambient', 'diffuse', 'sun'), 0.0, fail)
    if not any(s['light']['sun_dir']):
        fail('light.sun_dir', 'must not be zero')


def _check_looks(looks: Dict[str, Any], fail) -> None:
    for key in ('exposure', 'gamma'):
        if looks[key] <= 0:
            fail(f'looks.{key}', 'must be > 0')
    if min(looks['white_balance']) <= 0:
        fail('looks.white_balance', 'must be three gains > 0')
    _within(looks, 'looks', ('vignetting',), 0.0, 0.95, fail)
    _at_least(looks, 'looks', ('bloom', 'noise_std', 'shot_noise'), 0.0, fail)
    _within(looks, 'looks', ('blur_subframes',), 1, 16, fail)
    if not 0.0 < looks['shutter'] <= 1.0:
        fail('looks.shutter', 'must be in (0, 1]')
    _within(looks, 'looks', ('jpeg_quality',), 0, 100, fail)


def _check_detector_extras(det: Dict[str, Any], fail) -> None:
    _at_least(det, 'detector', ('smooth_px', 'jitter_rel', 'score_noise', 'fp_spread'), 0.0,
              fail)
    if det['score_gain'] <= 0:
        fail('detector.score_gain', 'must be > 0')
    low, high = det['fp_score']
    if not 0.0 <= low <= high <= 1.0:
        fail('detector.fp_score', 'must be [low, high] with 0 <= low <= high <= 1')
    low, high = det['fp_cluster']
    if not 1 <= low <= high:
        fail('detector.fp_cluster', 'must be [low, high] with 1 <= low <= high')


def _ranges(section: Dict[str, Any], default: Dict[str, Any], prefix: str, fail) -> None:
    """Check every [low, high] pair of a randomize section (its default has two numbers)."""
    for key, value in section.items():
        ref = default[key]
        if isinstance(ref, list) and len(ref) == 2 and isinstance(ref[0], (int, float)) \
                and not isinstance(ref[0], bool) and value[0] > value[1]:
            fail(f'{prefix}.{key}', 'must be [low, high] with low <= high')


def _check_randomize(r: Dict[str, Any], fail) -> None:
    for name, section in r.items():
        _ranges(section, DEFAULTS['randomize'][name], f'randomize.{name}', fail)
    rig, looks, content, det = r['rig'], r['looks'], r['content'], r['detector']
    if rig['width_px'][0] < 64:
        fail('randomize.rig.width_px', 'must be >= 64')
    if not rig['aspects'] or any(a not in ASPECTS for a in rig['aspects']):
        fail('randomize.rig.aspects', f'must name aspects of {list(ASPECTS)}')
    if not (1.0 < rig['fovy_deg'][0] and rig['fovy_deg'][1] < 170.0):
        fail('randomize.rig.fovy_deg', 'must lie in (1, 170)')
    for key in ('baseline_m', 'fps', 'height_m', 'aim_distance_m'):
        if rig[key][0] <= 0:
            fail(f'randomize.rig.{key}', 'must be > 0')
    if not 1.0 < rig['step_back_fovy_deg'] < 170.0:
        fail('randomize.rig.step_back_fovy_deg', 'must lie in (1, 170)')
    _within(rig, 'randomize.rig', ('max_step_back',), 1.0, 10.0, fail)
    if min(rig['holdout_margin']) < 0:
        fail('randomize.rig.holdout_margin', 'must be >= 0')
    for name in rig['holdout']:
        if name not in list_presets():
            fail('randomize.rig.holdout', f'names no preset {name!r}; presets: {list_presets()}')
    if not (-0.2 <= rig['corner_distortion'][0] and rig['corner_distortion'][1] <= 0.2):
        fail('randomize.rig.corner_distortion', 'must lie in [-0.2, 0.2] (mild)')
    _within(rig, 'randomize.rig', ('distortion_prob',), 0.0, 1.0, fail)
    _within(looks, 'randomize.looks', ('bloom_prob', 'blur_prob', 'jpeg_prob', 'texture_prob',
                                       'side_walls_prob'), 0.0, 1.0, fail)
    if looks['exposure'][0] <= 0 or looks['gamma'][0] <= 0 or looks['white_balance'][0] <= 0 \
            or looks['light'][0] < 0:
        fail('randomize.looks', 'exposure, gamma, white_balance must be > 0 and light >= 0')
    if looks['blur_subframes'][0] < 1 or not 0 < looks['shutter'][0] <= looks['shutter'][1] <= 1:
        fail('randomize.looks.blur_subframes', 'must be >= 1 (and shutter in (0, 1])')
    if not (1 <= looks['jpeg_quality'][0] and looks['jpeg_quality'][1] <= 100):
        fail('randomize.looks.jpeg_quality', 'must lie in [1, 100]')
    from persistence_ros.simulation.textures import POOLS
    if looks['textures'] not in POOLS:
        fail('randomize.looks.textures', f'must be one of {sorted(POOLS)}')
    if content['objects'][0] < 0 or content['size_m'][0] <= 0 or content['speed_mps'][0] < 0:
        fail('randomize.content', 'objects >= 0, size_m > 0 and speed_mps >= 0')
    for shape in content['shapes']:
        if shape not in OBJECT_SHAPES:
            fail('randomize.content.shapes',
                 f'has unknown shape {shape!r}; allowed: {list(OBJECT_SHAPES)}')
    if content['objects'][1] > 0 and not content['shapes']:
        fail('randomize.content.shapes', 'must name at least one shape')
    probs = content['reflection_probs']
    if min(probs) < 0 or sum(probs) <= 0:
        fail('randomize.content.reflection_probs',
             f'must be {len(REFLECTIONS)} weights >= 0 ({", ".join(REFLECTIONS)}), not all 0')
    for key in ('floor_reflectance', 'window_reflectance', 'mirror_reflectance',
                'floor_specular', 'textured', 'specular'):
        if not (0.0 <= content[key][0] and content[key][1] <= 1.0):
            fail(f'randomize.content.{key}', 'must lie in [0, 1]')
    if content['duration_s'][0] <= 0 or content['occluders'][0] < 0 or content['glare'][0] < 0:
        fail('randomize.content', 'duration_s > 0, occluders >= 0 and glare >= 0')
    if det['threshold'][0] < 0 or det['min_area_px'][0] < 0 or det['false_positives'][0] < 0:
        fail('randomize.detector', 'threshold, min_area_px and false_positives must be >= 0')
    if not (0.0 <= det['miss_prob'][0] and det['miss_prob'][1] < 1.0):
        fail('randomize.detector.miss_prob', 'must lie in [0, 1)')
    if det['lingering_s'][0] <= 0 or det['fp_cluster_max'] < 1:
        fail('randomize.detector', 'lingering_s must be > 0 and fp_cluster_max >= 1')
    if det['score_gain'][0] <= 0:
        fail('randomize.detector.score_gain', 'must be > 0')


def validate_scenario(raw: Optional[Dict[str, Any]], name: str = '') -> Dict[str, Any]:
    """Return the scenario merged over the defaults; raise ``ScenarioError`` if invalid."""
    scenario = _check(raw or {}, DEFAULTS, ())
    if not scenario['name']:
        scenario['name'] = name or 'custom'
    _semantics(scenario)
    return scenario


def read_preset(name_or_path: str, seed: Optional[int], overrides: Optional[Dict[str, Any]],
                dirs: List[Path], validate: Callable[..., Dict[str, Any]],
                names: Callable[[], List[str]], what: str) -> Dict[str, Any]:
    """
    Load a preset ``<name>.yaml`` found in ``dirs``, or a YAML file by path, and validate it.

    ``seed`` replaces the file's seed; ``overrides`` is a nested dict merged over the file;
    ``validate(raw, name=...)`` checks and completes it; ``what`` names it in errors
    (``scenario``, ``composite preset``).  Errors are ``ScenarioError`` naming the file.
    """
    path = Path(name_or_path)
    if not (path.suffix in ('.yaml', '.yml') and path.is_file()):
        found = [d / f'{name_or_path}.yaml' for d in dirs
                 if (d / f'{name_or_path}.yaml').is_file()]
        if not found:
            raise ScenarioError(f'no {what} file or preset named {name_or_path!r}; '
                                f'presets: {names()}')
        path = found[0]
    try:
        with open(path, encoding='utf-8') as stream:
            raw = yaml.safe_load(stream) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ScenarioError(_yaml_error(path, error)) from None
    if not isinstance(raw, dict):
        raise ScenarioError(f'{path}: a {what} must be a YAML mapping')
    raw = _deep_merge(raw, overrides or {})
    if seed is not None:
        raw['seed'] = int(seed)
    try:
        return validate(raw, name=path.stem)
    except ScenarioError as error:
        raise ScenarioError(f'{path}: {error}') from None


def load_scenario(name_or_path: str, seed: Optional[int] = None,
                  overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """
    Load a preset by name (``config/scenarios/<name>.yaml``) or a YAML file by path.

    ``seed`` replaces the file's seed; ``overrides`` is a nested dict merged over the file.
    """
    return read_preset(name_or_path, seed, overrides, preset_dirs(), validate_scenario,
                       list_presets, 'scenario')


def _deep_merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
