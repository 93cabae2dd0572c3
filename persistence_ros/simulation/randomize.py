"""
Per-scene draws of a scenario's ``randomize`` section: rig, content, looks and detector.

``draw_scenario(scenario)`` returns the concrete scenario of the scenario's seed: every enabled
section replaces the keys it draws (the rig and frame rate, the objects and reflections, the
looks and textures, the detector's behaviour) and is then disabled, so the result is an
ordinary scenario (validated again) and drawing it twice changes nothing. Each section has its
own random stream ``numpy.random.default_rng([seed, 10 + k])``, independent of the layout's
streams, so a scenario without ``randomize`` renders exactly as before.

Held-out rigs: ``randomize.rig.holdout`` names presets whose rigs the draw never returns. A
candidate rig is *near* a held-out rig when it has the same aspect ratio and its width, frame
rate and baseline are each within the relative ``holdout_margin`` of the held-out rig's; such
a candidate is drawn again (``near_holdout``). The ranges of docs/simulator.md say which
combinations this removes.
"""

import copy
from functools import lru_cache
import math
from typing import Dict, List, Sequence

import numpy as np

from persistence_ros.simulation import textures
from persistence_ros.simulation.scenario import (ASPECTS, load_scenario, REFLECTIONS,
                                                 ScenarioError, TRAJECTORIES, validate_scenario)

STREAMS = {'rig': 10, 'content': 11, 'looks': 12, 'detector': 13, 'tune': 14}
NOISY = 1.5            # sensor noise (digital numbers) a tuned detector smooths away
THRESHOLD_SIGMAS = 5.0  # a tuned detector's threshold, in remaining noise sigmas
MAX_TRIES = 1000
# the keys each section draws, for overrides that would be silently replaced by a draw
DRAWN_KEYS = {'rig': ('fps', 'rig'), 'content': ('duration_s', 'objects'), 'looks': (),
              'detector': ('detector',)}


def is_randomized(scenario: dict) -> bool:
    """Return True if any ``randomize`` section of a validated scenario is enabled."""
    return any(section['enabled'] for section in scenario['randomize'].values())


def conflicts(scenario: dict, overrides: dict) -> List[str]:
    """Return the override keys that an enabled randomize section of ``scenario`` draws."""
    out = []
    for name, keys in DRAWN_KEYS.items():
        if scenario['randomize'][name]['enabled']:
            out += [f'{key} (randomize.{name})' for key in keys if key in overrides]
    return out


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _sub_range(rng: np.random.Generator, low: float, high: float, log: bool = False) -> list:
    """Return a random sorted [a, b] within [low, high]."""
    draw = _log_uniform if log else (lambda r, a, b: float(r.uniform(a, b)))
    return sorted([draw(rng, low, high), draw(rng, low, high)])


def focal_px(height: int, fovy_deg: float) -> float:
    """Return the focal length in pixels of a vertical field of view."""
    return 0.5 * height / math.tan(math.radians(0.5 * fovy_deg))


def corner_radius(width: int, height: int, fovy_deg: float) -> float:
    """Return the normalized (undistorted) radius of the image corner."""
    return math.hypot(0.5 * width, 0.5 * height) / focal_px(height, fovy_deg)


def rig_key(scenario: dict) -> Dict[str, float]:
    """Return what held-out checks compare: width, height, fps and baseline of a scenario."""
    rig = scenario['rig']
    return {'width': float(rig['width']), 'height': float(rig['height']),
            'fps': float(scenario['fps']), 'baseline_m': float(rig['baseline_m'])}


def near_holdout(candidate: Dict[str, float], holdout: Dict[str, float],
                 margin: Sequence[float]) -> bool:
    """
    Return True if a rig is near a held-out rig (``rig_key`` dicts).

    Near: the same aspect ratio (within 1 %) and width, fps and baseline each within the
    relative ``margin`` (three numbers) of the held-out rig's.
    """
    aspect = candidate['height'] / candidate['width']
    if abs(aspect / (holdout['height'] / holdout['width']) - 1.0) > 0.01:
        return False
    return all(abs(candidate[key] / holdout[key] - 1.0) <= m
               for key, m in zip(('width', 'fps', 'baseline_m'), margin))


def holdout_rigs(names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Return the ``rig_key`` of each held-out preset (its own rig, never a drawn one)."""
    return {name: dict(_holdout_rig(name)) for name in names}


@lru_cache(maxsize=None)
def _holdout_rig(name: str) -> tuple:
    """Return a preset's ``rig_key`` items (presets are read once per process)."""
    return tuple(rig_key(load_scenario(name)).items())


def _rig_candidate(cfg: dict, rng: np.random.Generator) -> dict:
    aspect = str(rng.choice(cfg['aspects']))
    low, high = cfg['width_px']
    width = int(np.clip(round(_log_uniform(rng, low, high) / 16.0) * 16, low, high))
    height = int(round(width * ASPECTS[aspect] / 2.0)) * 2
    fovy = float(rng.uniform(*cfg['fovy_deg']))
    return {'width': width, 'height': height, 'fovy_deg': fovy,
            'baseline_m': _log_uniform(rng, *cfg['baseline_m']),
            'fps': round(_log_uniform(rng, *cfg['fps']), 2)}


def step_back(cfg: dict, fovy_deg: float) -> float:
    """
    Return how much further back a narrow lens stands (1 at or above ``step_back_fovy_deg``).

    A rig with a narrower field of view than ``step_back_fovy_deg`` stands back by the ratio of
    the half-angle tangents, so that it frames about what a lens of that angle frames from the
    drawn distance, at most ``max_step_back`` times the drawn distance.
    """
    if fovy_deg >= cfg['step_back_fovy_deg']:
        return 1.0
    ratio = (math.tan(math.radians(0.5 * cfg['step_back_fovy_deg']))
             / math.tan(math.radians(0.5 * fovy_deg)))
    return min(ratio, cfg['max_step_back'])


def _pose(cfg: dict, rng: np.random.Generator, fovy_deg: float) -> dict:
    """Return the left camera's position and look-at point (height, pitch and yaw drawn)."""
    height = float(rng.uniform(*cfg['height_m']))
    distance = rng.uniform(*cfg['distance_m'])
    back = (step_back(cfg, fovy_deg) - 1.0) * distance  # 0 unless the lens is narrow
    position = np.array([rng.uniform(-0.5, 0.5), -(distance + back), height])
    yaw = math.radians(rng.uniform(*cfg['yaw_deg']))
    aim_height = rng.uniform(*cfg['aim_height_m'])
    aim_distance = rng.uniform(*cfg['aim_distance_m']) + back  # the same aim point
    pitch = math.atan2(aim_height - height, aim_distance) + math.radians(
        rng.uniform(-cfg['pitch_jitter_deg'], cfg['pitch_jitter_deg']))
    forward = np.array([math.cos(pitch) * math.sin(yaw), math.cos(pitch) * math.cos(yaw),
                        math.sin(pitch)])
    return {'position': [float(v) for v in position],
            'look_at': [float(v) for v in position + forward],
            'pitch_deg': math.degrees(pitch), 'yaw_deg': math.degrees(yaw)}


def _distortion(cfg: dict, rig: dict, rng: np.random.Generator) -> List[float]:
    if rng.random() >= cfg['distortion_prob']:
        return [0.0] * 5
    corner = float(rng.uniform(*cfg['corner_distortion']))
    k1 = corner / corner_radius(rig['width'], rig['height'], rig['fovy_deg']) ** 2
    p1, p2 = rng.uniform(-cfg['tangential'], cfg['tangential'], size=2)
    return [float(k1), 0.0, float(p1), float(p2), 0.0]


def _draw_rig(out: dict, cfg: dict, rng: np.random.Generator) -> None:
    held = holdout_rigs(cfg['holdout'])
    for _ in range(MAX_TRIES):
        rig = _rig_candidate(cfg, rng)
        key = {'width': rig['width'], 'height': rig['height'], 'fps': rig['fps'],
               'baseline_m': rig['baseline_m']}
        if not any(near_holdout(key, h, cfg['holdout_margin']) for h in held.values()):
            break
    else:
        raise ScenarioError(f'randomize.rig: no rig outside the held-out rigs {sorted(held)} '
                            f'in {MAX_TRIES} draws; widen the ranges or the margins')
    pose = _pose(cfg, rng, rig['fovy_deg'])
    out['fps'] = rig.pop('fps')
    out['rig'].update(rig, focal_px=None, position=pose['position'], look_at=pose['look_at'],
                      distortion=_distortion(cfg, rig, rng))


def _skewed(rng: np.random.Generator, low: float, high: float) -> float:
    """Return a draw in [low, high] with more mass at the low end (u**2)."""
    return float(low + (high - low) * rng.random() ** 2)


def _reflection(out: dict, cfg: dict, rng: np.random.Generator) -> str:
    probs = np.asarray(cfg['reflection_probs'], dtype=np.float64)
    kind = str(rng.choice(REFLECTIONS, p=probs / probs.sum()))
    out['floor']['reflectance'] = 0.0
    out['window']['enabled'] = False
    if kind == 'floor':
        out['floor']['reflectance'] = float(rng.uniform(*cfg['floor_reflectance']))
    elif kind == 'window':  # a tinted pane behind the objects
        size = [float(rng.uniform(3.0, 6.0)), float(rng.uniform(1.6, 2.4))]
        out['window'].update(
            enabled=True, size_m=size, yaw_deg=float(rng.uniform(-25.0, 25.0)),
            center=[float(rng.uniform(-0.5, 0.5)), float(rng.uniform(3.0, 5.0)),
                    0.5 * size[1] + float(rng.uniform(0.0, 0.3))],
            reflectance=float(rng.uniform(*cfg['window_reflectance'])),
            rgba=[float(v) for v in rng.uniform(0.15, 0.4, size=3)] + [1.0])
    elif kind == 'mirror':  # a bright mirror at one side, turned towards the scene
        side = float(rng.choice([-1.0, 1.0]))
        size = [float(rng.uniform(1.0, 2.5)), float(rng.uniform(1.5, 2.2))]
        grey = float(rng.uniform(0.6, 0.85))
        out['window'].update(
            enabled=True, size_m=size, yaw_deg=-side * float(rng.uniform(50.0, 80.0)),
            center=[side * float(rng.uniform(1.6, 2.6)), float(rng.uniform(1.0, 3.5)),
                    0.5 * size[1] + float(rng.uniform(0.0, 0.2))],
            reflectance=float(rng.uniform(*cfg['mirror_reflectance'])),
            rgba=[grey, grey, grey, 1.0])
    return kind


def _draw_content(out: dict, cfg: dict, rng: np.random.Generator) -> None:
    out['duration_s'] = float(rng.uniform(*cfg['duration_s']))
    objects = out['objects']
    objects['count'] = int(rng.integers(cfg['objects'][0], cfg['objects'][1] + 1))
    objects['shapes'] = list(cfg['shapes'])
    objects['trajectories'] = list(TRAJECTORIES)
    objects['size_range_m'] = _sub_range(rng, *cfg['size_m'], log=True)
    objects['speed_range_mps'] = sorted([_skewed(rng, *cfg['speed_mps']),
                                         _skewed(rng, *cfg['speed_mps'])])
    objects['textured'] = float(rng.uniform(*cfg['textured']))
    objects['specular'] = float(rng.uniform(*cfg['specular']))
    out['occluders']['count'] = int(rng.integers(cfg['occluders'][0], cfg['occluders'][1] + 1))
    out['glare']['count'] = int(rng.integers(cfg['glare'][0], cfg['glare'][1] + 1))
    out['glare']['size_m'] = float(rng.uniform(*cfg['glare_size_m']))
    out['floor']['specular'] = float(rng.uniform(*cfg['floor_specular']))
    out['floor']['shininess'] = float(rng.uniform(0.2, 1.0))
    _reflection(out, cfg, rng)


def _draw_looks(out: dict, cfg: dict, rng: np.random.Generator) -> None:
    looks = out['looks']
    looks['exposure'] = _log_uniform(rng, *cfg['exposure'])
    looks['gamma'] = _log_uniform(rng, *cfg['gamma'])
    red, blue = (_log_uniform(rng, *cfg['white_balance']) for _ in range(2))
    looks['white_balance'] = [red, 1.0, blue]
    looks['vignetting'] = float(rng.uniform(*cfg['vignetting']))
    looks['bloom'] = float(rng.uniform(*cfg['bloom'])) if rng.random() < cfg['bloom_prob'] \
        else 0.0
    looks['noise_std'] = float(rng.uniform(*cfg['noise_std']))
    looks['shot_noise'] = float(rng.uniform(*cfg['shot_noise']))
    blur = rng.random() < cfg['blur_prob']
    looks['blur_subframes'] = int(rng.integers(cfg['blur_subframes'][0],
                                               cfg['blur_subframes'][1] + 1)) if blur else 1
    looks['shutter'] = float(rng.uniform(*cfg['shutter']))
    jpeg = rng.random() < cfg['jpeg_prob']
    looks['jpeg_quality'] = int(rng.integers(cfg['jpeg_quality'][0],
                                             cfg['jpeg_quality'][1] + 1)) if jpeg else 0
    light = out['light']
    light['ambient'] = 0.35 * float(rng.uniform(*cfg['light']))
    light['diffuse'] = 0.45 * float(rng.uniform(*cfg['light']))
    light['sun'] = 0.5 * float(rng.uniform(*cfg['light']))
    light['sun_dir'] = [float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.5, 0.5)), -1.0]
    pool = cfg['textures']
    floor, walls = out['floor'], out['walls']
    if rng.random() < cfg['texture_prob']:
        floor['texture'] = str(rng.choice(textures.pool(pool, 'floor')))
        floor['texture_m'] = float(rng.uniform(1.0, 4.0))
        floor['rgba'] = [float(rng.uniform(0.7, 1.0))] * 3 + [1.0]
    if rng.random() < cfg['texture_prob']:
        walls['texture'] = str(rng.choice(textures.pool(pool, 'wall')))
        walls['texture_m'] = float(rng.uniform(3.0, 8.0))
        walls['rgba'] = [float(rng.uniform(0.7, 1.0))] * 3 + [1.0]
    walls['height_m'] = float(rng.uniform(4.0, 12.0))
    if rng.random() < cfg['side_walls_prob']:
        walls['side_x_m'] = float(rng.uniform(3.0, 5.0))
        if rng.random() < cfg['texture_prob']:
            walls['side_texture'] = str(rng.choice(textures.pool(pool, 'wall')))
    out['objects']['textures'] = list(textures.pool(pool, 'object'))


def effective_noise(looks: dict, smooth_px: float) -> float:
    """
    Return the std (digital numbers) of a pixel's sensor noise at mid-grey after smoothing.

    A Gaussian of sigma s >= ~0.5 px divides white noise by about ``2 sqrt(pi) s``.
    """
    sigma = math.sqrt(looks['noise_std'] ** 2 + looks['shot_noise'] * 128.0)
    return sigma / max(1.0, 2.0 * math.sqrt(math.pi) * smooth_px) if smooth_px > 0 else sigma


def _draw_detector(out: dict, cfg: dict, rng: np.random.Generator) -> None:
    det = out['detector']
    det['threshold'] = int(rng.integers(cfg['threshold'][0], cfg['threshold'][1] + 1))
    det['min_area_px'] = int(rng.integers(cfg['min_area_px'][0], cfg['min_area_px'][1] + 1))
    for key in ('jitter_px', 'jitter_rel', 'miss_prob', 'score_gain', 'score_bias',
                'score_noise', 'edge_flicker_rate'):
        det[key] = float(rng.uniform(*cfg[key]))
    for key in ('false_positives', 'stereo_false_positives'):
        det[key] = int(rng.integers(cfg[key][0], cfg[key][1] + 1))
    # episodes last a drawn time, so their length in frames follows the frame rate
    seconds = _sub_range(rng, *cfg['lingering_s'])
    det['lingering_frames'] = [max(1, round(s * out['fps'])) for s in seconds]
    det['fp_cluster'] = [1, int(rng.integers(1, cfg['fp_cluster_max'] + 1))]


def _tune_detector(out: dict, rng: np.random.Generator) -> None:
    """
    Tune the detector to the drawn camera, as one would tune a detector to a real camera.

    With noticeable sensor noise (> ``NOISY`` digital numbers) both images are smoothed
    (sigma 1-2 px) and the threshold is kept at least ``THRESHOLD_SIGMAS`` times the noise
    left after smoothing; otherwise the scenario's detector is kept.
    """
    det = out['detector']
    if effective_noise(out['looks'], 0.0) > NOISY:
        det['smooth_px'] = max(det['smooth_px'], float(rng.uniform(1.0, 2.0)))
    floor = math.ceil(THRESHOLD_SIGMAS * effective_noise(out['looks'], det['smooth_px']))
    det['threshold'] = max(det['threshold'], floor)


def draw_scenario(scenario: dict) -> dict:
    """
    Return the concrete scenario of ``scenario``'s seed (itself when nothing is randomized).

    Sections are drawn in the order rig, content, looks, detector (false-positive episodes
    last a drawn time, so their frames follow the frame rate); with drawn looks or detector,
    the detector is then tuned to the sensor noise (``_tune_detector``).
    """
    if not is_randomized(scenario):
        return scenario
    out = copy.deepcopy(scenario)
    seed = int(scenario['seed'])
    draws = {'rig': _draw_rig, 'content': _draw_content, 'looks': _draw_looks,
             'detector': _draw_detector}
    for name, draw in draws.items():
        cfg = scenario['randomize'][name]
        if cfg['enabled']:
            draw(out, cfg, np.random.default_rng([seed, STREAMS[name]]))
        out['randomize'][name]['enabled'] = False
    if scenario['randomize']['looks']['enabled'] or scenario['randomize']['detector']['enabled']:
        _tune_detector(out, np.random.default_rng([seed, STREAMS['tune']]))
    try:
        return validate_scenario(out)
    except ScenarioError as error:  # a draw outside what the schema allows: a bad range
        raise ScenarioError(f'randomize of {scenario["name"]!r} (seed {seed}) drew an invalid '
                            f'scenario: {error}') from None
