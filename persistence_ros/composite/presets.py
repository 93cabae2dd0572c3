"""
Composite scene presets: YAML schema with defaults, validation and the preset library.

Every key is optional and defaults to :data:`DEFAULTS`; unknown keys and wrong types fail with
a ``ScenarioError`` naming the key path (the same checks as the MuJoCo scenarios,
``simulation.scenario``). A ``[low, high]`` pair is a range the seed draws from per scene.
Lengths and speeds of objects and the window are in units of the plate's median background
depth (``D``), so one preset suits a table-top photo and a room alike. See docs/composite.md.
"""

from pathlib import Path
from typing import Any, Dict, List, Optional

from persistence_ros.composite.plates import PLATES
from persistence_ros.composite.shapes import SHAPES
from persistence_ros.simulation.scenario import _check, config_dirs, read_preset, ScenarioError

MOTIONS = ('static', 'linear', 'curved', 'thrown')
KINDS = ('object', 'reflection', 'glare', 'false_positive')
ASPECTS = {'4:3': 4.0 / 3.0, '16:9': 16.0 / 9.0, '3:2': 1.5, '5:4': 1.25}

DEFAULTS: Dict[str, Any] = {
    'name': '',
    'seed': 0,
    'duration_s': 5.0,
    'fps': [10.0, 60.0],              # frame rate, drawn per scene
    'rig': {
        'plates': list(PLATES),       # real stereo photographs to draw from
        'width': [320, 960],          # output image width (px), drawn; height from the aspect
        'aspects': ['4:3', '16:9'],
        'crop_fraction': [0.6, 1.0],  # share of the plate's widest window of that aspect
        'noise_std': [1.0, 4.0],      # sensor noise (8-bit levels), drawn per scene
        'jpeg_quality': [0, 0],       # JPEG round trip quality range; 0 (either end): off
        'exposure_flicker': 0.01,     # std of the per-frame global gain
    },
    'objects': {
        'count': [2, 4],
        'shapes': list(SHAPES),
        'motions': list(MOTIONS),
        'textured': 0.5,              # probability that an object wears a photo texture
        'size': [0.015, 0.045],       # radius (x D)
        'depth': [0.45, 0.95],        # depth at the reference time (x D; x pane depth with one)
        'speed': [0.1, 1.0],          # D per second
        'specular': [0.1, 0.8],
    },
    'window': {
        'enabled': False,
        'reflectance': [0.25, 0.6],
        'depth': [0.9, 1.15],         # pane depth (x D)
        'yaw_deg': [-30.0, 30.0],     # rotation about the camera's vertical axis
        'coverage': [0.8, 1.3],       # pane size relative to the view at its depth
    },
    'glare': {
        'count': 0,
        'stereo_fraction': 0.5,       # share of flares at a 3D point (in both views)
        'blink_period_s': [0.3, 1.2],
        'duty': [0.2, 0.6],
        'radius_px': [3.0, 10.0],     # at 640 px width, scaled with the image
    },
    'occluders': {'count': 0},
    'detector': {
        'jitter': 0.02,               # std of box centre / log-size noise (x box size)
        'miss_prob': 0.03,
        'min_area_px': 12,
        'min_contrast': 6.0,          # mean |change| (8-bit) where detection is 50 % likely
        'nms_iou': 0.7,
        'scores': {                   # Beta(a, b) of each kind's per-track base score
            'object': [6.0, 2.0],
            'reflection': [4.0, 2.5],
            'glare': [3.0, 2.5],
            'false_positive': [2.5, 3.0],
        },
        'false_positives': 0,         # lingering episodes per camera
        'lingering_frames': [3, 30],
        'stereo_clutter': 0,          # episodes on the photo's own structure, in both views
        'cluster_rate_hz': 0.0,       # bursts of 2-4 boxes for 1-3 frames, per camera
    },
}


def preset_dirs() -> List[Path]:
    """Return the directories searched for composite preset ``<name>.yaml`` files."""
    return config_dirs('composite')


def list_presets() -> List[str]:
    """Return the names of the composite presets."""
    return sorted({p.stem for d in preset_dirs() for p in d.glob('*.yaml')})


def _semantics(p: Dict[str, Any]) -> None:
    def fail(key, why):
        raise ScenarioError(f'preset key {key!r} {why}')

    def check_range(key, value, low=None, high=None):
        if not value[0] <= value[1]:
            fail(key, f'must be [low, high] with low <= high, got {value}')
        if low is not None and value[0] < low:
            fail(key, f'must be >= {low}')
        if high is not None and value[1] > high:
            fail(key, f'must be <= {high}')

    if p['duration_s'] <= 0:
        fail('duration_s', 'must be > 0')
    check_range('fps', p['fps'], 1.0, 240.0)
    rig = p['rig']
    for name in rig['plates']:
        if name not in PLATES:
            fail('rig.plates', f'has unknown plate {name!r}; plates: {list(PLATES)}')
    if not rig['plates']:
        fail('rig.plates', 'needs at least one plate')
    for aspect in rig['aspects']:
        if aspect not in ASPECTS:
            fail('rig.aspects', f'has unknown aspect {aspect!r}; allowed: {list(ASPECTS)}')
    if not rig['aspects']:
        fail('rig.aspects', 'needs at least one aspect')
    check_range('rig.width', rig['width'], 64, 4096)
    check_range('rig.crop_fraction', rig['crop_fraction'], 0.05, 1.0)
    check_range('rig.noise_std', rig['noise_std'], 0.0, 64.0)
    check_range('rig.jpeg_quality', rig['jpeg_quality'], 0, 100)
    if not 0.0 <= rig['exposure_flicker'] <= 0.5:
        fail('rig.exposure_flicker', 'must be in [0, 0.5]')
    obj = p['objects']
    check_range('objects.count', obj['count'], 0)
    for shape in obj['shapes']:
        if shape not in SHAPES:
            fail('objects.shapes', f'has unknown shape {shape!r}; allowed: {list(SHAPES)}')
    for motion in obj['motions']:
        if motion not in MOTIONS:
            fail('objects.motions', f'has unknown motion {motion!r}; allowed: {list(MOTIONS)}')
    if obj['count'][1] > 0 and not (obj['shapes'] and obj['motions']):
        fail('objects', 'needs at least one shape and one motion')
    if not 0.0 <= obj['textured'] <= 1.0:
        fail('objects.textured', 'must be in [0, 1]')
    check_range('objects.size', obj['size'], 1e-4, 1.0)
    check_range('objects.depth', obj['depth'], 0.05, 5.0)
    check_range('objects.speed', obj['speed'], 0.0, 50.0)
    check_range('objects.specular', obj['specular'], 0.0, 2.0)
    win = p['window']
    check_range('window.reflectance', win['reflectance'], 0.0, 1.0)
    check_range('window.depth', win['depth'], 0.1, 10.0)
    check_range('window.yaw_deg', win['yaw_deg'], -80.0, 80.0)
    check_range('window.coverage', win['coverage'], 0.05, 10.0)
    glare = p['glare']
    if glare['count'] < 0:
        fail('glare.count', 'must be >= 0')
    if not 0.0 <= glare['stereo_fraction'] <= 1.0:
        fail('glare.stereo_fraction', 'must be in [0, 1]')
    check_range('glare.blink_period_s', glare['blink_period_s'], 1e-3)
    check_range('glare.duty', glare['duty'], 1e-3, 1.0)
    check_range('glare.radius_px', glare['radius_px'], 0.5, 200.0)
    if p['occluders']['count'] < 0:
        fail('occluders.count', 'must be >= 0')
    det = p['detector']
    if not 0.0 <= det['miss_prob'] < 1.0:
        fail('detector.miss_prob', 'must be in [0, 1)')
    for key in ('jitter', 'min_area_px', 'min_contrast', 'false_positives', 'stereo_clutter',
                'cluster_rate_hz'):
        if det[key] < 0:
            fail(f'detector.{key}', 'must be >= 0')
    if not 0.0 < det['nms_iou'] <= 1.0:
        fail('detector.nms_iou', 'must be in (0, 1]')
    check_range('detector.lingering_frames', det['lingering_frames'], 1)
    for kind, (a, b) in det['scores'].items():
        if a <= 0 or b <= 0:
            fail(f'detector.scores.{kind}', 'Beta parameters must be > 0')


def validate_preset(raw: Optional[Dict[str, Any]], name: str = '') -> Dict[str, Any]:
    """Return the preset merged over the defaults; raise ``ScenarioError`` if invalid."""
    preset = _check(raw or {}, DEFAULTS, ())
    if not preset['name']:
        preset['name'] = name or 'composite'
    _semantics(preset)
    return preset


def load_preset(name_or_path: str, seed: Optional[int] = None,
                overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """
    Load a preset by name (``config/composite/<name>.yaml``) or a YAML file by path.

    ``seed`` replaces the file's seed; ``overrides`` is a nested dict merged over the file.
    """
    return read_preset(name_or_path, seed, overrides, preset_dirs(), validate_preset,
                       list_presets, 'composite preset')
