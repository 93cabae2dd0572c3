"""MuJoCo scene of a scenario: layout, kinematic trajectories, MJCF, stereo rendering."""

import colorsys
from dataclasses import dataclass, field
import importlib.util
import os
from typing import Dict, List, Optional, Tuple

os.environ.setdefault('MUJOCO_GL', 'egl')  # before mujoco is imported; egl or osmesa both work
# Triton (pulled in by torch._dynamo, e.g. through vector-quantize-pytorch) and Mesa's CPU GL
# each bring their own LLVM: importing triton after a GL context exists segfaults (seen here
# with torch 2.14.1 and MuJoCo EGL), importing it first works. So load it first.
if importlib.util.find_spec('triton') is not None:
    import triton  # noqa: E402,F401

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

HIDDEN = np.array([0.0, 0.0, -500.0])  # beyond the far clip (and its floor mirror image too)
GRAVITY = 9.81
RESTITUTION = 0.75
OPTICAL_FROM_MUJOCO = np.diag([1.0, -1.0, -1.0])  # MuJoCo camera (-z forward, y up) -> optical


@dataclass
class ObjectSpec:
    """One kinematic object: shape, MuJoCo size, colour and world positions per frame."""

    id: str
    shape: str
    size: List[float]
    rgba: List[float]
    trajectory: str
    positions: np.ndarray  # [F, 3] world metres of the body centre


@dataclass
class GlareSpec:
    """One blinking emissive patch: world position and on/off per frame."""

    id: str
    position: np.ndarray
    on: np.ndarray  # [F] bool
    radius: float


@dataclass
class Mirror:
    """The scene's mirror (floor or window pane): plane point, unit normal and geom name."""

    kind: str  # 'floor' | 'window'
    point: np.ndarray
    normal: np.ndarray
    geom: str

    def reflect(self, points: np.ndarray) -> np.ndarray:
        """Return the mirror images of world points ``[..., 3]``."""
        points = np.asarray(points, dtype=np.float64)
        dist = (points - self.point) @ self.normal
        return points - 2.0 * dist[..., None] * self.normal


@dataclass
class SceneSpec:
    """Everything random about one scene, drawn from the scenario and seed."""

    scenario: dict
    n_frames: int
    stamps_ns: np.ndarray
    objects: List[ObjectSpec]
    glares: List[GlareSpec]
    occluders: List[dict]
    mirror: Optional[Mirror]
    extra: Dict[str, object] = field(default_factory=dict)


def frame_stamps_ns(n_frames: int, fps: float) -> np.ndarray:
    """Return the render stamps: 1 s plus ``i / fps``, integer nanoseconds."""
    return np.array([1_000_000_000 + int(round(i * 1e9 / fps)) for i in range(n_frames)],
                    dtype=np.int64)


def _half_height(shape: str, size: List[float]) -> float:
    if shape == 'sphere':
        return size[0]
    if shape == 'box':
        return size[2]
    if shape == 'capsule':
        return size[0] + size[1]
    return size[1]  # cylinder


def _ballistic(p0: np.ndarray, v0: np.ndarray, times: np.ndarray, floor_z: float) -> np.ndarray:
    # Own integrator (exact per sub-step) because the objects are kinematic: no physics engine.
    out = np.empty((len(times), 3))
    p, v, t = p0.astype(np.float64).copy(), v0.astype(np.float64).copy(), 0.0
    for i, target in enumerate(times):
        while t < target - 1e-12:
            dt = min(0.002, target - t)
            p[:2] += v[:2] * dt
            if p[2] <= floor_z + 1e-9 and abs(v[2]) < 1e-9:
                p[2] = floor_z  # rolling on the floor
            else:
                p[2] += v[2] * dt - 0.5 * GRAVITY * dt * dt
                v[2] -= GRAVITY * dt
                if p[2] < floor_z:
                    p[2] = 2.0 * floor_z - p[2]
                    v[2] = -v[2] * RESTITUTION
                    if v[2] < 0.4:
                        p[2], v[2] = floor_z, 0.0
            t += dt
        out[i] = p
    return out


def _trajectory(kind: str, rng: np.random.Generator, cfg: dict, times: np.ndarray,
                half_height: float) -> np.ndarray:
    duration = float(times[-1]) if len(times) > 1 else 1.0
    low, high = np.array(cfg['region_min']), np.array(cfg['region_max'])
    centre = rng.uniform(low, high)
    centre[2] = max(centre[2], half_height + 0.02)
    speed = rng.uniform(*cfg['speed_range_mps'])
    t_ref = rng.uniform(0.2, 0.8) * duration
    heading = rng.uniform(0.0, 2.0 * np.pi)
    if kind == 'linear':
        vel = speed * np.array([np.cos(heading), np.sin(heading), rng.uniform(-0.15, 0.15)])
        pos = centre + vel * (times - t_ref)[:, None]
    elif kind in ('circular', 'helical'):
        radius = rng.uniform(0.3, 1.2)
        omega = speed / radius * rng.choice([-1.0, 1.0])
        angle = heading + omega * (times - t_ref)
        pos = np.stack([centre[0] + radius * np.cos(angle), centre[1] + radius * np.sin(angle),
                        np.full_like(times, centre[2])], axis=1)
        if kind == 'helical':
            climb = rng.uniform(0.1, 0.35) * rng.choice([-1.0, 1.0])
            pos[:, 2] = centre[2] + climb * (times - t_ref)
    else:  # parabolic: thrown through the reference point region, bouncing on the floor
        vel_h = speed * np.array([np.cos(heading), np.sin(heading)])
        p0 = np.array([centre[0] - vel_h[0] * t_ref, centre[1] - vel_h[1] * t_ref,
                       rng.uniform(0.6, 1.6)])
        v0 = np.array([vel_h[0], vel_h[1], rng.uniform(0.0, 2.5)])
        pos = _ballistic(p0, v0, times, half_height)
    pos[:, 2] = np.clip(pos[:, 2], half_height, 3.0)
    return pos


def build_scene(scenario: dict) -> SceneSpec:
    """Draw a scene (objects, trajectories, glare, occluders) from a validated scenario."""
    seed = int(scenario['seed'])
    layout_rng = np.random.default_rng([seed, 1])
    n_frames = max(1, int(round(scenario['duration_s'] * scenario['fps'])))
    times = np.arange(n_frames) / scenario['fps']
    ocfg = scenario['objects']
    objects = []
    for i in range(ocfg['count']):
        shape = str(layout_rng.choice(ocfg['shapes']))
        kind = str(layout_rng.choice(ocfg['trajectories']))
        s = layout_rng.uniform(*ocfg['size_range_m'])
        if shape == 'sphere':
            size = [s]
        elif shape == 'box':
            size = [s, s * layout_rng.uniform(0.6, 1.2), s * layout_rng.uniform(0.6, 1.2)]
        elif shape == 'capsule':
            size = [0.6 * s, s]
        else:
            size = [0.7 * s, s]
        hue = (i * 0.618034 + layout_rng.uniform(0, 0.15)) % 1.0
        rgb = colorsys.hsv_to_rgb(hue, layout_rng.uniform(0.7, 1.0), layout_rng.uniform(0.7, 1.0))
        positions = _trajectory(kind, layout_rng, ocfg, times, _half_height(shape, size))
        objects.append(ObjectSpec(f'obj{i}', shape, [float(v) for v in size],
                                  [float(c) for c in rgb] + [1.0], kind, positions))
    gcfg = scenario['glare']
    glares = []
    for i in range(gcfg['count']):
        pos = layout_rng.uniform(ocfg['region_min'], ocfg['region_max'])
        pos[2] = layout_rng.uniform(0.3, 1.8)
        period = layout_rng.uniform(*gcfg['blink_period_s'])
        phase = layout_rng.uniform(0.0, 1.0)
        on = ((times / period + phase) % 1.0) < gcfg['duty']
        glares.append(GlareSpec(f'glare{i}', pos, on, float(gcfg['size_m'])))
    occluders = []
    for i in range(scenario['occluders']['count']):
        kind = str(layout_rng.choice(scenario['occluders']['kinds']))
        x, y = layout_rng.uniform(-1.2, 1.2), layout_rng.uniform(0.4, 2.0)
        grey = layout_rng.uniform(0.3, 0.6)
        rgba = [grey, grey * 0.9, grey * 0.8, 1.0]
        if kind == 'pillar':
            radius, half = layout_rng.uniform(0.08, 0.16), 1.3
            occluders.append({'id': f'occ{i}', 'type': 'cylinder', 'pos': [x, y, half],
                              'size': [radius, half], 'rgba': rgba})
        else:
            half = layout_rng.uniform(0.15, 0.35, size=3)
            occluders.append({'id': f'occ{i}', 'type': 'box', 'pos': [x, y, half[2]],
                              'size': list(half), 'rgba': rgba})
    mirror = None
    win = scenario['window']
    if scenario['floor']['reflectance'] > 0:
        mirror = Mirror('floor', np.zeros(3), np.array([0.0, 0.0, 1.0]), 'floor')
    elif win['enabled'] and win['reflectance'] > 0:
        yaw = np.radians(win['yaw_deg'])
        normal = np.array([np.sin(yaw), -np.cos(yaw), 0.0])  # yaw 0: faces -y (the camera)
        mirror = Mirror('window', np.array(win['center'], dtype=np.float64), normal, 'window')
    return SceneSpec(scenario, n_frames, frame_stamps_ns(n_frames, scenario['fps']), objects,
                     glares, occluders, mirror)


def _fmt(values) -> str:
    return ' '.join(f'{float(v):.6g}' for v in values)


def camera_axes(position, look_at) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return MuJoCo camera x (right), y (up) and forward unit axes in the world."""
    forward = np.asarray(look_at, float) - np.asarray(position, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-6:
        raise ValueError('rig.look_at must not be straight above or below rig.position')
    right /= np.linalg.norm(right)
    return right, np.cross(right, forward), forward


def rig_fovy_deg(rig: dict) -> float:
    """Return the vertical field of view in degrees (from ``focal_px`` when it is set)."""
    if rig.get('focal_px'):
        return float(np.degrees(2.0 * np.arctan(0.5 * rig['height'] / rig['focal_px'])))
    return float(rig['fovy_deg'])


def make_mjcf(spec: SceneSpec) -> str:
    """Return the MJCF XML of the scene (objects and glare patches are mocap bodies)."""
    sc = spec.scenario
    rig, win, floor = sc['rig'], sc['window'], sc['floor']
    right, up, _ = camera_axes(rig['position'], rig['look_at'])
    left_pos = np.asarray(rig['position'], float)
    right_pos = left_pos + rig['baseline_m'] * right
    fovy = rig_fovy_deg(rig)
    offw, offh = max(640, rig['width']), max(480, rig['height'])
    floor_refl = floor['reflectance'] if spec.mirror is not None and \
        spec.mirror.kind == 'floor' else 0.0
    lines = [
        '<mujoco model="persistence_ros_scene">',
        f'  <visual><global offwidth="{offw}" offheight="{offh}"/>'
        '<map znear="0.002" zfar="10"/><quality shadowsize="0"/>'
        '<headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0.1 0.1 0.1"/>'
        '</visual>',
        '  <statistic extent="10" center="0 2 1"/>',
        '  <asset>',
        f'    <material name="floor" rgba="{_fmt(floor["rgba"])}" reflectance="{floor_refl}"/>',
        '    <material name="wall" rgba="0.55 0.52 0.48 1"/>',
    ]
    if win['enabled']:
        refl = win['reflectance'] if spec.mirror is not None and \
            spec.mirror.kind == 'window' else 0.0
        lines.append(f'    <material name="window" rgba="{_fmt(win["rgba"])}" '
                     f'reflectance="{refl}"/>')
    for obj in spec.objects:
        lines.append(f'    <material name="m_{obj.id}" rgba="{_fmt(obj.rgba)}" '
                     f'specular="{sc["objects"]["specular"]}" shininess="0.8"/>')
    lines.append('    <material name="glare" rgba="1 0.97 0.85 1" emission="1" specular="1"/>')
    lines += ['  </asset>', '  <worldbody>',
              '    <light name="sun" pos="0 1 6" dir="0 0.2 -1" castshadow="false" '
              'diffuse="0.5 0.5 0.5" specular="0.4 0.4 0.4"/>',
              # floor first: with floor reflectance it is the first (only) mirror
              '    <geom name="floor" type="plane" size="12 12 0.1" material="floor"/>']
    if win['enabled']:
        yaw = np.radians(win['yaw_deg'])
        # a box's local +z is its mirror face: x along the pane, y up, z = the pane normal
        axes = _fmt([np.cos(yaw), np.sin(yaw), 0.0, 0.0, 0.0, 1.0])
        lines.append(f'    <body name="window_body" pos="{_fmt(win["center"])}" '
                     f'xyaxes="{axes}"><geom name="window" type="box" '
                     f'size="{0.5 * win["size_m"][0]:.6g} {0.5 * win["size_m"][1]:.6g} 0.01" '
                     'material="window"/></body>')
    lines.append('    <geom name="back_wall" type="box" pos="0 8 2" size="12 0.05 2" '
                 'material="wall"/>')
    for occ in spec.occluders:
        lines.append(f'    <geom name="{occ["id"]}" type="{occ["type"]}" pos="{_fmt(occ["pos"])}" '
                     f'size="{_fmt(occ["size"])}" rgba="{_fmt(occ["rgba"])}"/>')
    for obj in spec.objects:
        lines.append(f'    <body name="{obj.id}" mocap="true" pos="{_fmt(HIDDEN)}">'
                     f'<geom name="{obj.id}" type="{obj.shape}" size="{_fmt(obj.size)}" '
                     f'material="m_{obj.id}" contype="0" conaffinity="0"/></body>')
    for glare in spec.glares:
        lines.append(f'    <body name="{glare.id}" mocap="true" pos="{_fmt(HIDDEN)}">'
                     f'<geom name="{glare.id}" type="sphere" size="{glare.radius:.6g}" '
                     'material="glare" contype="0" conaffinity="0"/></body>')
    xyaxes = _fmt(list(right) + list(up))
    lines += [f'    <camera name="left" pos="{_fmt(left_pos)}" xyaxes="{xyaxes}" '
              f'fovy="{fovy:.9g}"/>',
              f'    <camera name="right" pos="{_fmt(right_pos)}" xyaxes="{xyaxes}" '
              f'fovy="{fovy:.9g}"/>',
              '  </worldbody>', '</mujoco>']
    return '\n'.join(lines) + '\n'


@dataclass
class StereoFrame:
    """One rendered stereo frame: RGB images and per-pixel geom ids (-1: none)."""

    rgb: Dict[str, np.ndarray]
    geom_ids: Dict[str, np.ndarray]


class SceneRenderer:
    """Render a :class:`SceneSpec` with its calibrated stereo rig (offscreen, CPU)."""

    CAMERAS = ('left', 'right')

    def __init__(self, spec: SceneSpec):
        self.spec = spec
        rig = spec.scenario['rig']
        self.width, self.height = int(rig['width']), int(rig['height'])
        self.model = mujoco.MjModel.from_xml_string(make_mjcf(spec))
        self.data = mujoco.MjData(self.model)
        self.renderer = mujoco.Renderer(self.model, self.height, self.width)
        self._mocap = {}
        for name in [o.id for o in spec.objects] + [g.id for g in spec.glares]:
            body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)
            self._mocap[name] = int(self.model.body_mocapid[body])
        self.geom_ids = {}
        names = [o.id for o in spec.objects] + [g.id for g in spec.glares]
        for name in names + ['floor', 'window']:
            gid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, name)
            if gid >= 0:
                self.geom_ids[name] = gid
        self._set_frame(None)
        self.backgrounds = {cam: self._render_rgb(cam) for cam in self.CAMERAS}
        self._calibrate()

    def _calibrate(self) -> None:
        fovy = np.radians(self.model.cam_fovy[0])
        f = 0.5 * self.height / np.tan(0.5 * fovy)
        self.K = np.array([[f, 0.0, 0.5 * self.width - 0.5], [0.0, f, 0.5 * self.height - 0.5],
                           [0.0, 0.0, 1.0]])
        self.world_T_optical = {}
        for cam in self.CAMERAS:
            cid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, cam)
            xmat = self.data.cam_xmat[cid].reshape(3, 3)
            transform = np.eye(4)
            transform[:3, :3] = xmat @ OPTICAL_FROM_MUJOCO  # optical axes in the world
            transform[:3, 3] = self.data.cam_xpos[cid]
            self.world_T_optical[cam] = transform
        self.baseline = float(np.linalg.norm(self.world_T_optical['right'][:3, 3]
                                             - self.world_T_optical['left'][:3, 3]))
        self.P = {'left': np.hstack([self.K, np.zeros((3, 1))]),
                  'right': np.hstack([self.K, np.array([[-f * self.baseline], [0.0], [0.0]])])}

    @property
    def focal(self) -> float:
        """Return the focal length in pixels."""
        return float(self.K[0, 0])

    def world_to_optical(self, points: np.ndarray, camera: str = 'left') -> np.ndarray:
        """Return world points ``[N, 3]`` in the optical frame of ``camera``."""
        inv = np.linalg.inv(self.world_T_optical[camera])
        points = np.atleast_2d(points)
        return points @ inv[:3, :3].T + inv[:3, 3]

    def project(self, points: np.ndarray, camera: str) -> Tuple[np.ndarray, np.ndarray]:
        """Return pixels ``[N, 2]`` and depths ``[N]`` of world points in ``camera``."""
        optical = self.world_to_optical(points, camera)
        uvw = optical @ self.K.T
        depth = optical[:, 2]
        with np.errstate(divide='ignore', invalid='ignore'):
            pixels = uvw[:, :2] / uvw[:, 2:3]
        return pixels, depth

    def _set_frame(self, frame: Optional[int]) -> None:
        for obj in self.spec.objects:
            pos = HIDDEN if frame is None else obj.positions[frame]
            self.data.mocap_pos[self._mocap[obj.id]] = pos
        for glare in self.spec.glares:
            on = frame is not None and glare.on[frame]
            self.data.mocap_pos[self._mocap[glare.id]] = glare.position if on else HIDDEN
        mujoco.mj_forward(self.model, self.data)

    def _render_rgb(self, camera: str) -> np.ndarray:
        self.renderer.update_scene(self.data, camera=camera)
        return self.renderer.render().copy()

    def _render_geom_ids(self, camera: str) -> np.ndarray:
        self.renderer.enable_segmentation_rendering()
        try:
            self.renderer.update_scene(self.data, camera=camera)
            seg = self.renderer.render()
        finally:
            self.renderer.disable_segmentation_rendering()
        ids = seg[..., 0].astype(np.int32)
        ids[seg[..., 1] != int(mujoco.mjtObj.mjOBJ_GEOM)] = -1
        return ids

    def render(self, frame: int) -> StereoFrame:
        """Render frame ``frame`` in both cameras (RGB and geom-id segmentation)."""
        self._set_frame(frame)
        rgb, ids = {}, {}
        for cam in self.CAMERAS:
            rgb[cam] = self._render_rgb(cam)
            ids[cam] = self._render_geom_ids(cam)
        return StereoFrame(rgb, ids)

    def close(self) -> None:
        """Free the GL context (needed under osmesa to avoid noise at exit)."""
        self.renderer.close()
