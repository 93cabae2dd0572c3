"""
Draw one composite scene from a preset and a seed.

The rig, the objects and their 3D motion, the window pane, flares and occluders. Everything
random comes from ``numpy.random.default_rng([seed, stream])``, so a preset and a seed give the
same scene.

All 3D quantities are in the left camera's (raw) optical frame: x right, y down, z forward,
metres. "Up" is -y (the plates' cameras are roughly level).
"""

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Optional

import cv2
import numpy as np

from persistence_ros.calibration import UNDISTORT_CRITERIA
from persistence_ros.composite.plates import (crop_plate, load_plate, Plate, plate_crop_window,
                                              texture_images)
from persistence_ros.composite.presets import ASPECTS
from persistence_ros.composite.shapes import bounding_radius

GRAVITY = np.array([0.0, 9.81, 0.0])  # +y is down in the optical frame
STREAMS = {'rig': 1, 'objects': 2, 'window': 3, 'glare': 4, 'occluders': 5, 'render': 6,
           'detector': 7, 'noise': 8}


def scene_rng(seed: int, stream: str) -> np.random.Generator:
    """Return the generator of one named random stream of a scene."""
    return np.random.default_rng([int(seed), STREAMS[stream]])


@dataclass
class Body:
    """A shape with a texture and a pose per frame (left optical frame)."""

    id: str
    shape: str
    size: List[float]
    colour: np.ndarray                 # [3] in [0, 1]
    texture: Optional[np.ndarray]      # [h, w, 3] uint8 or None
    texture_name: str
    positions: np.ndarray              # [F, 3]
    rotations: np.ndarray              # [F, 3, 3] shape frame -> left frame
    motion: str
    specular: float = 0.4
    shininess: float = 24.0

    @property
    def radius(self) -> float:
        """Return the bounding radius of the shape."""
        return bounding_radius(self.shape, self.size)


@dataclass
class Pane:
    """A window pane: a 3D rectangle that mirrors what is in front of it."""

    centre: np.ndarray
    normal: np.ndarray       # unit, towards the camera side
    axis_u: np.ndarray       # unit, along the pane's width
    axis_v: np.ndarray       # unit, along the pane's height
    half_size: np.ndarray    # [half width, half height] metres
    reflectance: float
    tint: np.ndarray         # [3] multiplier of the mirrored light

    def reflect(self, points: np.ndarray) -> np.ndarray:
        """Return the mirror images of points ``[..., 3]`` in the pane's plane."""
        points = np.asarray(points, dtype=np.float64)
        dist = (points - self.centre) @ self.normal
        return points - 2.0 * dist[..., None] * self.normal

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Return the distance of points from the pane plane (> 0 on the camera side)."""
        return (np.asarray(points, dtype=np.float64) - self.centre) @ self.normal

    def to_dict(self) -> dict:
        """Return the pane for truth.json (left optical frame)."""
        return {'centre': [float(v) for v in self.centre],
                'normal': [float(v) for v in self.normal],
                'axis_u': [float(v) for v in self.axis_u],
                'axis_v': [float(v) for v in self.axis_v],
                'half_size_m': [float(v) for v in self.half_size],
                'reflectance': float(self.reflectance)}


@dataclass
class Flare:
    """A blinking glare flare: at a 3D point (both views) or at a pixel of one view."""

    id: str
    position: Optional[np.ndarray]    # left optical frame, for a stereo flare
    camera: Optional[str]             # the one camera of a mono flare
    pixel: Optional[np.ndarray]       # its pixel there
    on: np.ndarray                    # [F] bool
    strength: np.ndarray              # [F] peak added level (8-bit)
    radius_px: float
    colour: np.ndarray


@dataclass
class CompositeScene:
    """Everything random about one composite scene."""

    preset: dict
    seed: int
    plate: Plate
    crop: Dict[str, object]
    fps: float
    stamps_ns: np.ndarray
    bodies: List[Body]
    occluders: List[Body]
    pane: Optional[Pane]
    flares: List[Flare]
    light: np.ndarray                 # unit, towards the light, left frame
    ambient: float
    gain: float                       # brightness of the composited objects
    noise_std: float
    jpeg_quality: int
    median_depth: float
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        """Return the number of frames."""
        return len(self.stamps_ns)


def frame_stamps_ns(n_frames: int, fps: float) -> np.ndarray:
    """Return the frame stamps: 1 s plus ``i / fps``, integer nanoseconds."""
    return np.array([1_000_000_000 + int(round(i * 1e9 / fps)) for i in range(n_frames)],
                    dtype=np.int64)


def _uniform(rng: np.random.Generator, pair) -> float:
    return float(rng.uniform(pair[0], pair[1])) if pair[1] > pair[0] else float(pair[0])


def _draw_rig(preset: dict, rng: np.random.Generator):
    rig = preset['rig']
    name = str(rng.choice(rig['plates']))
    plate = load_plate(name)
    aspect_name = str(rng.choice(rig['aspects']))
    aspect = ASPECTS[aspect_name]
    x0, y0, w, h = plate_crop_window(plate, aspect, _uniform(rng, rig['crop_fraction']), rng)
    out_w = int(round(_uniform(rng, rig['width']) / 8.0)) * 8
    out_h = int(round(out_w / aspect / 2.0)) * 2
    h = int(round(w * out_h / out_w))  # the crop gets the output's exact aspect
    h = min(h, plate.left.height - y0)
    w = int(round(h * out_w / out_h))
    cropped = crop_plate(plate, x0, y0, w, h, out_w, out_h)
    crop = {'plate': name, 'x0': x0, 'y0': y0, 'width': w, 'height': h,
            'aspect': aspect_name, 'depth_source': plate.depth_source}
    return cropped, crop


def back_project(plate: Plate, pixel, depth: float) -> np.ndarray:
    """Return the left-frame point at ``depth`` seen at raw left ``pixel``."""
    c = plate.left.calibration
    norm = cv2.undistortPointsIter(np.array([[pixel]], dtype=np.float64), c.K, c.D, None, None,
                                   UNDISTORT_CRITERIA).reshape(2)
    return np.array([norm[0], norm[1], 1.0]) * depth


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Return rotation matrices ``[N, 3, 3]`` about one unit axis by angles ``[N]``."""
    rotvecs = axis[None, :] * np.asarray(angle)[:, None]
    return np.stack([cv2.Rodrigues(v)[0] for v in rotvecs])


UPRIGHT = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # shape z -> -y (up)


@lru_cache(maxsize=1)
def _textures():
    return texture_images()


def _texture_patch(rng: np.random.Generator):
    textures = _textures()
    name, image = textures[int(rng.integers(len(textures)))]
    height, width = image.shape[:2]
    size = int(rng.integers(min(48, height, width), min(height, width, 256) + 1))
    y0 = int(rng.integers(0, height - size + 1))
    x0 = int(rng.integers(0, width - size + 1))
    return name, cv2.resize(image[y0:y0 + size, x0:x0 + size], (192, 192),
                            interpolation=cv2.INTER_AREA)


def _draw_body(index: int, cfg: dict, rng: np.random.Generator, plate: Plate, times: np.ndarray,
               depth_scale: float, median: float, max_depth: Optional[float]) -> Body:
    shape = str(rng.choice(cfg['shapes']))
    motion = str(rng.choice(cfg['motions']))
    if shape == 'person' and motion == 'thrown':
        motion = 'linear'  # people walk
    r = _uniform(rng, cfg['size']) * median
    if shape == 'sphere':
        size = [r]
    elif shape == 'box':
        size = [r, r * rng.uniform(0.5, 1.3), r * rng.uniform(0.5, 1.3)]
    elif shape == 'capsule':
        size = [0.6 * r, r * rng.uniform(0.6, 1.4)]
    else:  # person: body capsule and head, about 3.5 r tall
        size = [0.45 * r, 0.9 * r, 0.35 * r]
    hue = (index * 0.618034 + rng.uniform(0.0, 0.2)) % 1.0
    hsv = np.uint8([[[int(hue * 179), int(rng.uniform(120, 255)), int(rng.uniform(140, 255))]]])
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] / 255.0
    texture, texture_name = None, ''
    if rng.random() < cfg['textured']:
        texture_name, texture = _texture_patch(rng)
    duration = float(times[-1]) if len(times) > 1 else 1.0
    t_ref = rng.uniform(0.15, 0.85) * duration
    width, height = plate.left.width, plate.left.height
    pixel = rng.uniform([0.1 * width, 0.15 * height], [0.9 * width, 0.85 * height])
    depth = _uniform(rng, cfg['depth']) * depth_scale
    centre = back_project(plate, pixel, depth)
    speed = _uniform(rng, cfg['speed']) * median
    heading = rng.uniform(0.0, 2.0 * np.pi)
    dt = (times - t_ref)[:, None]
    if motion == 'static' or speed == 0.0:
        positions = np.repeat(centre[None, :], len(times), axis=0)
        motion = 'static'
    elif motion == 'linear':
        direction = np.array([np.cos(heading), rng.uniform(-0.3, 0.3), np.sin(heading) * 0.6])
        positions = centre + speed * direction / np.linalg.norm(direction) * dt
    elif motion == 'curved':
        radius = rng.uniform(0.15, 0.5) * median
        omega = speed / radius * rng.choice([-1.0, 1.0])
        angle = heading + omega * (times - t_ref)
        positions = centre + np.stack([radius * (np.cos(angle) - np.cos(heading)),
                                       rng.uniform(-0.1, 0.1) * radius * np.sin(2 * angle),
                                       radius * (np.sin(angle) - np.sin(heading))], axis=1)
    else:  # thrown: constant horizontal velocity plus gravity, an arc through the reference
        v0 = np.array([speed * np.cos(heading), -rng.uniform(1.0, 3.5),
                       0.4 * speed * np.sin(heading)])
        positions = centre + v0 * dt + 0.5 * GRAVITY * dt ** 2
    near = max(0.2 * depth_scale, 4.0 * r)
    far = max_depth if max_depth is not None else 2.0 * median
    positions[:, 2] = np.clip(positions[:, 2], near, far - 1.2 * bounding_radius(shape, size))
    base = UPRIGHT if shape == 'person' else _rotation(rng)
    spin = rng.uniform(-2.0, 2.0) if shape != 'person' else 0.0
    spin_axis = rng.normal(size=3) if shape != 'person' else np.array([0.0, -1.0, 0.0])
    spin_axis /= np.linalg.norm(spin_axis)
    rotations = _axis_angle(spin_axis, spin * times) @ base
    specular = _uniform(rng, cfg['specular'])
    return Body(f'obj{index}', shape, [float(v) for v in size], colour, texture, texture_name,
                positions, rotations, motion, specular, float(rng.uniform(8.0, 64.0)))


def _draw_pane(cfg: dict, rng: np.random.Generator, plate: Plate, median: float) -> Pane:
    depth = _uniform(rng, cfg['depth']) * median
    yaw = np.radians(_uniform(rng, cfg['yaw_deg']))
    normal = np.array([np.sin(yaw), 0.0, -np.cos(yaw)])
    axis_u = np.array([np.cos(yaw), 0.0, np.sin(yaw)])
    axis_v = np.array([0.0, 1.0, 0.0])
    k = plate.left.calibration.K
    half_w = depth * 0.5 * plate.left.width / k[0, 0] * _uniform(rng, cfg['coverage'])
    half_h = depth * 0.5 * plate.left.height / k[1, 1] * _uniform(rng, cfg['coverage'])
    centre = np.array([rng.uniform(-0.2, 0.2) * half_w, rng.uniform(-0.2, 0.2) * half_h, depth])
    tint = np.clip(np.array([0.9, 0.97, 1.0]) + rng.normal(0.0, 0.04, size=3), 0.7, 1.1)
    return Pane(centre, normal, axis_u, axis_v, np.array([half_w, half_h]),
                _uniform(rng, cfg['reflectance']), tint)


def _draw_flares(cfg: dict, rng: np.random.Generator, plate: Plate, times: np.ndarray
                 ) -> List[Flare]:
    flares = []
    scale = plate.left.width / 640.0
    grey = plate.left.image.mean(axis=2)
    bright = np.argwhere(grey >= np.percentile(grey, 80))
    for i in range(int(cfg['count'])):
        period = _uniform(rng, cfg['blink_period_s'])
        duty = _uniform(rng, cfg['duty'])
        phase = rng.uniform(0.0, 1.0)
        on = ((times / period + phase) % 1.0) < duty
        peak = rng.uniform(120.0, 255.0)
        strength = peak * np.clip(1.0 + 0.15 * rng.normal(size=len(times)), 0.5, 1.3)
        radius = _uniform(rng, cfg['radius_px']) * scale
        colour = np.clip(np.array([1.0, 0.96, 0.85]) + rng.normal(0.0, 0.05, size=3), 0.6, 1.0)
        row, col = bright[int(rng.integers(len(bright)))]
        if rng.random() < cfg['stereo_fraction']:
            depth = float(plate.left.depth[row, col]) * 0.995  # a glint on the photo's surface
            position = back_project(plate, (col, row), depth)
            flares.append(Flare(f'glare{i}', position, None, None, on, strength, radius, colour))
        else:
            camera = str(rng.choice(['left', 'right']))
            pixel = np.array([col, row], dtype=np.float64) + rng.normal(0.0, 2.0, size=2)
            flares.append(Flare(f'glare{i}', None, camera, pixel, on, strength, radius, colour))
    return flares


def _draw_occluders(count: int, rng: np.random.Generator, plate: Plate, median: float,
                    n_frames: int) -> List[Body]:
    out = []
    width = plate.left.width
    for i in range(count):
        depth = rng.uniform(0.3, 0.6) * median
        pixel = (rng.uniform(0.1, 0.9) * width, rng.uniform(0.3, 0.7) * plate.left.height)
        centre = back_project(plate, pixel, depth)
        half = np.array([rng.uniform(0.006, 0.02) * median, rng.uniform(0.4, 1.0) * median,
                         rng.uniform(0.006, 0.02) * median])
        name, texture = _texture_patch(rng)
        grey = rng.uniform(0.6, 1.0)
        out.append(Body(f'occ{i}', 'box', [float(v) for v in half], np.full(3, grey), texture,
                        name, np.repeat(centre[None, :], n_frames, axis=0),
                        np.repeat(np.eye(3)[None], n_frames, axis=0), 'static', 0.1, 8.0))
    return out


def build_scene(preset: dict) -> CompositeScene:
    """Draw a composite scene from a validated preset (its ``seed`` decides everything)."""
    seed = int(preset['seed'])
    rig_rng = scene_rng(seed, 'rig')
    plate, crop = _draw_rig(preset, rig_rng)
    fps = round(_uniform(rig_rng, preset['fps']), 3)
    n_frames = max(2, int(round(preset['duration_s'] * fps)))
    stamps = frame_stamps_ns(n_frames, fps)
    times = (stamps - stamps[0]) / 1e9
    noise_std = _uniform(rig_rng, preset['rig']['noise_std'])
    quality = preset['rig']['jpeg_quality']
    jpeg = 0 if min(quality) == 0 else int(rig_rng.integers(quality[0], quality[1] + 1))
    median = float(np.median(plate.left.depth))
    pane = None
    if preset['window']['enabled']:
        pane = _draw_pane(preset['window'], scene_rng(seed, 'window'), plate, median)
    obj_rng = scene_rng(seed, 'objects')
    count = int(obj_rng.integers(preset['objects']['count'][0],
                                 preset['objects']['count'][1] + 1))
    depth_scale = float(pane.centre[2]) if pane is not None else median
    max_depth = float(pane.centre[2]) * 0.97 if pane is not None else None
    bodies = [_draw_body(i, preset['objects'], obj_rng, plate, times, depth_scale, median,
                         max_depth) for i in range(count)]
    if pane is not None:  # every object stays on the camera side of the pane
        for body in bodies:
            dist = pane.signed_distance(body.positions) - 1.2 * body.radius
            body.positions -= np.minimum(dist, 0.0)[:, None] * pane.normal
    flares = _draw_flares(preset['glare'], scene_rng(seed, 'glare'), plate, times)
    occluders = _draw_occluders(int(preset['occluders']['count']), scene_rng(seed, 'occluders'),
                                plate, median, n_frames)
    light_rng = scene_rng(seed, 'render')
    light = np.array([rig_rng.uniform(-1.0, 1.0), -rig_rng.uniform(0.6, 1.6),
                      -rig_rng.uniform(0.2, 1.0)])
    light /= np.linalg.norm(light)
    gain = float(np.clip(plate.left.image.mean() / 110.0, 0.55, 1.4))
    return CompositeScene(preset, seed, plate, crop, fps, stamps, bodies, occluders, pane,
                          flares, light, float(light_rng.uniform(0.3, 0.55)), gain, noise_std,
                          jpeg, median)
