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

from persistence_ros.simulation import textures  # noqa: E402
from persistence_ros.simulation.looks import Lens, Looks  # noqa: E402
from persistence_ros.simulation.randomize import draw_scenario, is_randomized  # noqa: E402

HIDDEN = np.array([0.0, 0.0, -500.0])  # beyond the far clip (and its floor mirror image too)
GRAVITY = 9.81
RESTITUTION = 0.75
WALK_MAX_MPS = 2.5
# projections of a distorted rig are kept within this many image-corner radii (normalized)
MAX_PROJECTED_RADIUS = 1.5
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
    texture: str = ''      # photo texture (textures.py name), '' plain

    @property
    def geom_type(self) -> str:
        """Return the MuJoCo geom type (a person is a standing capsule)."""
        return 'capsule' if self.shape == 'person' else self.shape


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
    randomized: bool = False  # ``scenario`` was drawn from a randomize section


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
    if kind == 'walk':  # a person: horizontal, on the floor, at most a run
        centre[2] = half_height
        vel = min(speed, WALK_MAX_MPS) * np.array([np.cos(heading), np.sin(heading), 0.0])
        pos = centre + vel * (times - t_ref)[:, None]
    elif kind == 'linear':
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
    """
    Draw a scene (objects, trajectories, glare, occluders) from a validated scenario.

    A scenario with an enabled ``randomize`` section is drawn first (``draw_scenario``);
    ``SceneSpec.scenario`` is then the drawn, concrete scenario.
    """
    randomized = is_randomized(scenario)
    scenario = draw_scenario(scenario)
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
        elif shape == 'person':  # radius, half length of the cylinder part: 1.1-1.8 m tall
            size = [layout_rng.uniform(0.15, 0.25), layout_rng.uniform(0.4, 0.65)]
            kind = 'walk'
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
    _dress(objects, ocfg, seed)
    return SceneSpec(scenario, n_frames, frame_stamps_ns(n_frames, scenario['fps']), objects,
                     glares, occluders, mirror, randomized=randomized)


def _dress(objects: List[ObjectSpec], ocfg: dict, seed: int) -> None:
    """Give a share ``objects.textured`` of the objects a photo texture (own stream)."""
    if ocfg['textured'] <= 0 or not objects:
        return
    rng = np.random.default_rng([seed, 7])
    names = ocfg['textures'] or list(textures.pool('train', 'object'))
    for obj in objects:
        if rng.random() < ocfg['textured']:
            obj.texture = str(rng.choice(names))


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


def _material(name: str, rgba, texture: str = '', extra: str = '') -> str:
    """Return a material line; ``texture`` names a texture asset ('' none)."""
    tex = f' texture="{texture}"' if texture else ''
    return f'    <material name="{name}" rgba="{_fmt(rgba)}"{tex}{extra}/>'


def _surface_texture(name: str, photo: str, metres: float) -> Tuple[List[str], str]:
    """Return (texture asset lines, material attributes) of a tiled photo, or ([], '')."""
    if not photo:
        return [], ''
    repeat = 1.0 / metres
    return ([f'    <texture name="{name}" type="2d" file="{textures.asset_file(photo)}"/>'],
            f' texuniform="true" texrepeat="{repeat:.6g} {repeat:.6g}"')


def _assets(spec: SceneSpec) -> List[str]:
    """Return the asset lines: materials (and photo textures) of every surface and object."""
    sc = spec.scenario
    win, floor, walls = sc['window'], sc['floor'], sc['walls']
    floor_refl = floor['reflectance'] if spec.mirror is not None and \
        spec.mirror.kind == 'floor' else 0.0
    lines, floor_tex = _surface_texture('tex_floor', floor['texture'], floor['texture_m'])
    gloss = '' if (floor['specular'], floor['shininess']) == (0.5, 0.5) else \
        f' specular="{floor["specular"]:.6g}" shininess="{floor["shininess"]:.6g}"'
    lines.append(f'    <material name="floor" rgba="{_fmt(floor["rgba"])}" '
                 f'reflectance="{floor_refl}"' + (' texture="tex_floor"' if floor_tex else '')
                 + floor_tex + gloss + '/>')
    wall_lines, wall_tex = _surface_texture('tex_wall', walls['texture'], walls['texture_m'])
    lines += wall_lines
    lines.append(_material('wall', walls['rgba'], 'tex_wall' if wall_tex else '', wall_tex))
    if walls['side_x_m'] > 0:
        side_lines, side_tex = _surface_texture('tex_side', walls['side_texture'],
                                                walls['texture_m'])
        lines += side_lines
        lines.append(_material('side_wall', walls['rgba'], 'tex_side' if side_tex else '',
                               side_tex))
    if win['enabled']:
        refl = win['reflectance'] if spec.mirror is not None and \
            spec.mirror.kind == 'window' else 0.0
        lines.append(f'    <material name="window" rgba="{_fmt(win["rgba"])}" '
                     f'reflectance="{refl}"/>')
    for obj in spec.objects:
        tex = ''
        if obj.texture:
            lines.append(f'    <texture name="tex_{obj.id}" type="cube" '
                         f'file="{textures.asset_file(obj.texture, square=True)}"/>')
            tex = f' texture="tex_{obj.id}"'
        lines.append(f'    <material name="m_{obj.id}" rgba="{_fmt(obj.rgba)}"{tex} '
                     f'specular="{sc["objects"]["specular"]}" shininess="0.8"/>')
    lines.append('    <material name="glare" rgba="1 0.97 0.85 1" emission="1" specular="1"/>')
    return lines


def _walls(walls: dict) -> List[str]:
    """
    Return the wall geoms: the back wall (the background) and optional side walls.

    A plain wall is a box; a photo-textured wall is a vertical plane facing the scene,
    because MuJoCo maps a 2D texture on a box through its xy coordinates (a photo on a
    vertical face is smeared into streaks) and on a plane in the plane's own axes.
    """
    half = 0.5 * walls['height_m']
    lines = []
    if walls['texture']:
        lines.append(f'    <geom name="back_wall" type="plane" pos="0 7.95 {half:.6g}" '
                     f'xyaxes="1 0 0 0 0 1" size="12 {half:.6g} 0.1" material="wall"/>')
    else:
        lines.append(f'    <geom name="back_wall" type="box" pos="0 8 {half:.6g}" '
                     f'size="12 0.05 {half:.6g}" material="wall"/>')
    side_x = walls['side_x_m']
    for name, sign in (('side_wall_left', -1.0), ('side_wall_right', 1.0)):
        if side_x <= 0:
            break
        x = sign * side_x
        if walls['side_texture']:  # x axis along the wall, y up: the normal faces the scene
            lines.append(f'    <geom name="{name}" type="plane" pos="{x:.6g} 2 {half:.6g}" '
                         f'xyaxes="0 {-sign:.6g} 0 0 0 1" size="10 {half:.6g} 0.1" '
                         'material="side_wall"/>')
        else:
            lines.append(f'    <geom name="{name}" type="box" pos="{x:.6g} 2 {half:.6g}" '
                         f'size="0.05 10 {half:.6g}" material="side_wall"/>')
    return lines


def texture_assets(spec: SceneSpec) -> Dict[str, bytes]:
    """Return the MuJoCo assets (PNG bytes by file name) of the scene's photo textures."""
    sc = spec.scenario
    names = {sc['floor']['texture'], sc['walls']['texture'],
             sc['walls']['side_texture'] if sc['walls']['side_x_m'] > 0 else ''}
    assets = {textures.asset_file(n): textures.png_bytes(n) for n in sorted(names) if n}
    for name in sorted({obj.texture for obj in spec.objects if obj.texture}):
        assets[textures.asset_file(name, square=True)] = textures.png_bytes(name, square=True)
    return assets


def make_mjcf(spec: SceneSpec, canvas: Optional[Tuple[int, int]] = None,
              fovy_deg: Optional[float] = None) -> str:
    """
    Return the MJCF XML of the scene (objects and glare patches are mocap bodies).

    ``canvas`` (width, height) and ``fovy_deg``: the pinhole render of a distorted rig
    (``looks.Lens``), larger than the delivered image; default: the rig's own.
    """
    sc = spec.scenario
    rig, win, light = sc['rig'], sc['window'], sc['light']
    right, up, _ = camera_axes(rig['position'], rig['look_at'])
    left_pos = np.asarray(rig['position'], float)
    right_pos = left_pos + rig['baseline_m'] * right
    fovy = rig_fovy_deg(rig) if fovy_deg is None else fovy_deg
    width, height = canvas if canvas is not None else (rig['width'], rig['height'])
    offw, offh = max(640, width), max(480, height)
    ambient, diffuse, sun = ([v] * 3 for v in (light['ambient'], light['diffuse'], light['sun']))
    lines = [
        '<mujoco model="persistence_ros_scene">',
        f'  <visual><global offwidth="{offw}" offheight="{offh}"/>'
        '<map znear="0.002" zfar="10"/><quality shadowsize="0"/>'
        f'<headlight ambient="{_fmt(ambient)}" diffuse="{_fmt(diffuse)}" '
        'specular="0.1 0.1 0.1"/>'
        '</visual>',
        '  <statistic extent="10" center="0 2 1"/>',
        '  <asset>',
    ] + _assets(spec)
    lines += ['  </asset>', '  <worldbody>',
              f'    <light name="sun" pos="0 1 6" dir="{_fmt(light["sun_dir"])}" '
              f'castshadow="false" diffuse="{_fmt(sun)}" specular="0.4 0.4 0.4"/>',
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
    lines += _walls(sc['walls'])
    for occ in spec.occluders:
        lines.append(f'    <geom name="{occ["id"]}" type="{occ["type"]}" pos="{_fmt(occ["pos"])}" '
                     f'size="{_fmt(occ["size"])}" rgba="{_fmt(occ["rgba"])}"/>')
    for obj in spec.objects:
        lines.append(f'    <body name="{obj.id}" mocap="true" pos="{_fmt(HIDDEN)}">'
                     f'<geom name="{obj.id}" type="{obj.geom_type}" size="{_fmt(obj.size)}" '
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


def _intrinsics(f: float, width: int, height: int) -> np.ndarray:
    """Return K of square pixels, principal point at the image centre (OpenCV convention)."""
    return np.array([[f, 0.0, 0.5 * width - 0.5], [0.0, f, 0.5 * height - 0.5],
                     [0.0, 0.0, 1.0]])


@dataclass
class StereoFrame:
    """One rendered stereo frame: RGB images and per-pixel geom ids (-1: none)."""

    rgb: Dict[str, np.ndarray]
    geom_ids: Dict[str, np.ndarray]


class SceneRenderer:
    """
    Render a :class:`SceneSpec` with its calibrated stereo rig (offscreen, CPU).

    Images are what the rig delivers: the pinhole render (the mean over the shutter time with
    ``looks.blur_subframes`` > 1), distorted by the lens (``rig.distortion``, ``looks.Lens``),
    then the sensor's looks (``looks.Looks``, noise from the stream ``[seed, 6, frame,
    camera]``). ``backgrounds`` (the detector's reference) go through the same steps without
    the noise. Segmentations are distorted like the images.
    """

    CAMERAS = ('left', 'right')

    def __init__(self, spec: SceneSpec):
        self.spec = spec
        rig = spec.scenario['rig']
        self.width, self.height = int(rig['width']), int(rig['height'])
        self.D = np.asarray(rig['distortion'], dtype=np.float64)
        fovy = rig_fovy_deg(rig)
        f = 0.5 * self.height / np.tan(0.5 * np.radians(fovy))
        self.lens = Lens(_intrinsics(f, self.width, self.height), self.D, self.width,
                         self.height)
        xml = (make_mjcf(spec, self.lens.canvas, self.lens.canvas_fovy_deg(fovy))
               if self.lens.distorted else make_mjcf(spec))
        self.model = mujoco.MjModel.from_xml_string(xml, texture_assets(spec))
        self.data = mujoco.MjData(self.model)
        canvas_w, canvas_h = self.lens.canvas
        self.renderer = mujoco.Renderer(self.model, canvas_h, canvas_w)
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
        self._calibrate()
        self.looks = Looks(spec.scenario['looks'], self.width, self.height, self.K)
        self.backgrounds = {cam: self.looks.apply(self.lens.rgb(self._render_rgb(cam)))
                            for cam in self.CAMERAS}

    def _calibrate(self) -> None:
        if self.lens.distorted:  # the lens maps were made with these intrinsics
            self.K = self.lens.K
        else:  # from the camera's fovy as MuJoCo parsed it
            fovy = np.radians(self.model.cam_fovy[0])
            self.K = _intrinsics(0.5 * self.height / np.tan(0.5 * fovy), self.width,
                                 self.height)
        f = float(self.K[0, 0])
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
        """
        Return pixels ``[N, 2]`` and depths ``[N]`` of world points in ``camera``.

        With lens distortion, pixels of the delivered (distorted) image; points behind the
        camera or far outside the field of view (where the radial polynomial could fold back
        into the image) get NaN pixels.
        """
        optical = self.world_to_optical(points, camera)
        if self.lens.distorted:
            depth = optical[:, 2]
            pixels = np.full((len(optical), 2), np.nan)
            with np.errstate(divide='ignore', invalid='ignore'):
                radius = np.hypot(optical[:, 0], optical[:, 1]) / depth
            corner = np.hypot(0.5 * self.width, 0.5 * self.height) / self.focal
            inside = (depth > 1e-9) & (radius <= MAX_PROJECTED_RADIUS * corner)
            if inside.any():
                pixels[inside] = self.lens.distort_points(optical[inside])
            return pixels, depth
        uvw = optical @ self.K.T
        depth = optical[:, 2]
        with np.errstate(divide='ignore', invalid='ignore'):
            pixels = uvw[:, :2] / uvw[:, 2:3]
        return pixels, depth

    def _set_frame(self, frame: Optional[int], offset: float = 0.0) -> None:
        """Place the bodies at ``frame`` (None: all hidden), ``offset`` frames later."""
        for obj in self.spec.objects:
            if frame is None:
                pos = HIDDEN
            elif offset == 0.0:
                pos = obj.positions[frame]
            else:  # within the shutter time: linear between the frames' positions
                t = float(np.clip(frame + offset, 0.0, len(obj.positions) - 1.0))
                i0 = int(np.floor(t))
                i1 = min(i0 + 1, len(obj.positions) - 1)
                pos = (1.0 - (t - i0)) * obj.positions[i0] + (t - i0) * obj.positions[i1]
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

    def _render_blurred(self, frame: int, subframes: int) -> Dict[str, np.ndarray]:
        """Return the mean of ``subframes`` renders spread over the shutter time."""
        shutter = float(self.spec.scenario['looks']['shutter'])
        sums: Dict[str, np.ndarray] = {}
        for k in range(subframes):
            self._set_frame(frame, shutter * (k / (subframes - 1.0) - 0.5))
            for cam in self.CAMERAS:
                image = self._render_rgb(cam).astype(np.float32)
                sums[cam] = image if k == 0 else sums[cam] + image
        return {cam: np.rint(sums[cam] / subframes).astype(np.uint8) for cam in self.CAMERAS}

    def render(self, frame: int) -> StereoFrame:
        """Render frame ``frame`` in both cameras (RGB and geom-id segmentation)."""
        subframes = int(self.spec.scenario['looks']['blur_subframes'])
        blurred = self._render_blurred(frame, subframes) if subframes > 1 else None
        self._set_frame(frame)
        rgb, ids = {}, {}
        for i, cam in enumerate(self.CAMERAS):
            canvas = blurred[cam] if blurred is not None else self._render_rgb(cam)
            rng = None if self.looks.identity else np.random.default_rng(
                [int(self.spec.scenario['seed']), 6, frame, i])
            rgb[cam] = self.looks.apply(self.lens.rgb(canvas), rng)
            ids[cam] = self.lens.ids(self._render_geom_ids(cam))
        return StereoFrame(rgb, ids)

    def close(self) -> None:
        """Free the GL context (needed under osmesa to avoid noise at exit)."""
        self.renderer.close()
