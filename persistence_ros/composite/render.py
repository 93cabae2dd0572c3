"""
Composite one frame of a scene onto both photographs.

Per camera, in this order: the photograph (with the static occluders already drawn in and
the window pane's glass darkening what lies behind it), the mirror images in the pane, the
flares, then the objects from far to near. Every object sample ray is depth-tested against
the photograph's per-pixel depth, so the photo's own foreground hides objects behind it.
Then the sensor: a global exposure gain, signal-dependent noise and optionally a JPEG round
trip. Each drawn element's pixels are recorded (``owner``) for the detector and the truth.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from persistence_ros.composite.plates import SUPERSAMPLE, View
from persistence_ros.composite.scene import Body, CompositeScene, Flare, Pane, scene_rng
from persistence_ros.composite.shapes import intersect, local_bounds, sample_texture, shade

S = SUPERSAMPLE
OWNER_COVERAGE = 0.5   # a pixel belongs to a layer whose sample coverage reaches this
GLARE_LEVEL = 30.0     # added 8-bit level from which a flare pixel counts as the flare's


@dataclass
class Element:
    """One drawn thing a detector can see: an object, a mirror image or a flare."""

    kind: str                    # 'object' | 'reflection' | 'glare'
    object_id: Optional[str]     # the object (also of a reflection), None for a flare
    source: str                  # one id per ground-truth 2D track: obj3, refl:obj3, glare1
    drawn_px: int = 0            # pixels owned when drawn (before nearer layers)
    full_px: int = 0             # pixels it would cover without the photograph's foreground


@dataclass
class CameraFrame:
    """One composited image with what was drawn where."""

    image: np.ndarray                      # [H, W, 3] uint8: what the bag carries
    clean: np.ndarray                      # [H, W, 3] float32 before the sensor model
    owner: np.ndarray                      # [H, W] int16 index into elements, -1: photo
    elements: List[Element] = field(default_factory=list)
    contrast: Dict[int, float] = field(default_factory=dict)  # mean max-channel change

    def mask(self, index: int) -> np.ndarray:
        """Return the pixels owned by element ``index``."""
        return self.owner == index


def screen_box(view: View, points_cam: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """
    Return the pixel block ``(x0, y0, x1, y1)`` holding the image of a convex body, or None.

    ``points_cam``: the corners of a box around the body, in the camera frame (the image of
    a convex body in front of the camera lies in the hull of its corners' images).
    """
    if points_cam[:, 2].min() < 0.05:
        return None  # too close to or behind the camera
    pixels = view.project(points_cam)
    x0 = max(int(np.floor(pixels[:, 0].min())) - 2, 0)
    y0 = max(int(np.floor(pixels[:, 1].min())) - 2, 0)
    x1 = min(int(np.ceil(pixels[:, 0].max())) + 3, view.width)
    y1 = min(int(np.ceil(pixels[:, 1].max())) + 3, view.height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def body_corners(body: Body, frame: int) -> np.ndarray:
    """Return the 8 corners of the body's bounding box, in the left optical frame."""
    low, high = local_bounds(body.shape, body.size)
    corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1])
                        for z in (low[2], high[2])])
    return corners @ body.rotations[frame].T + body.positions[frame]


def _intersect_boxes(a, b):
    if a is None or b is None:
        return None
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


@dataclass
class Layer:
    """One ray-cast body in one view: its pixel block and per-pixel results."""

    box: Tuple[int, int, int, int]   # x0, y0, x1, y1
    coverage: np.ndarray             # [h, w] share of visible samples
    colour: np.ndarray               # [h, w, 3] premultiplied 0-255
    depth: np.ndarray                # [h, w] depth (mirror images: path length)
    full: np.ndarray                 # [h, w] coverage without the photograph's foreground


@dataclass
class _Pane:
    """The pane in one camera's frame."""

    centre: np.ndarray
    normal: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray
    half: np.ndarray

    def hit(self, rays: np.ndarray) -> np.ndarray:
        """Return the ray parameter of the pane hit per ray from the camera, inf if missed."""
        with np.errstate(divide='ignore', invalid='ignore'):
            t = (self.centre @ self.normal) / (rays @ self.normal)
        points = rays * t[:, None] - self.centre
        inside = (np.abs(points @ self.axis_u) <= self.half[0]) & (
            np.abs(points @ self.axis_v) <= self.half[1])
        return np.where(inside & (t > 0), t, np.inf)


class Compositor:
    """Render the frames of a :class:`CompositeScene` (both cameras)."""

    def __init__(self, scene: CompositeScene):
        self.scene = scene
        self.views = scene.plate.views()
        self.rng = scene_rng(scene.seed, 'noise')
        self.mono = bool(np.array_equal(scene.plate.left.image[..., 0],
                                        scene.plate.left.image[..., 1]))
        self.base: Dict[str, np.ndarray] = {}
        self.depth: Dict[str, np.ndarray] = {}
        self.panes: Dict[str, _Pane] = {}
        self.pane_box: Dict[str, Optional[tuple]] = {}
        for cam, view in self.views.items():
            image = view.image.astype(np.float32)
            depth = view.depth.astype(np.float64).copy()
            for occluder in scene.occluders:  # static: drawn once into the photograph
                layer = self._cast(view, occluder, 0, depth, None)
                if layer is not None:
                    self._blend(image, layer.box, layer.coverage, layer.colour)
                    x0, y0, x1, y1 = layer.box
                    near = layer.coverage >= OWNER_COVERAGE
                    block = depth[y0:y1, x0:x1]
                    block[near] = np.minimum(block[near], layer.depth[near])
            if scene.pane is not None:
                pane = self._pane_in(view, scene.pane)
                self.panes[cam] = pane
                rays = view.centre_rays(0, 0, view.width, view.height)
                t = pane.hit(rays).reshape(view.height, view.width)
                glass = t < depth
                transmit = 1.0 - 0.35 * scene.pane.reflectance
                image[glass] *= transmit * scene.pane.tint.astype(np.float32)
                ys, xs = np.nonzero(glass)
                self.pane_box[cam] = ((int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                                       int(ys.max()) + 1) if len(xs) else None)
            self.base[cam] = image
            self.depth[cam] = depth

    def _pane_in(self, view: View, pane: Pane) -> _Pane:
        return _Pane(view.to_camera(pane.centre)[0], view.rotate(pane.normal)[0],
                     view.rotate(pane.axis_u)[0], view.rotate(pane.axis_v)[0], pane.half_size)

    def _trace(self, view: View, body: Body, frame: int, rays: np.ndarray, bg: np.ndarray,
               pane: Optional[_Pane]):
        """
        Trace rays ``[N, 3]`` (camera frame, from the camera) to one body or its mirror image.

        Returns ``(visible, colour 0-255, depth, hit)`` per ray; ``hit`` ignores the photo.
        """
        rotation = view.cam_T_left[:3, :3] @ body.rotations[frame]
        centre = view.to_camera(body.positions[frame])[0]
        if pane is None:
            origins, directions = np.zeros_like(rays), rays
            allowed = np.ones(len(rays), bool)
        else:
            t_pane = pane.hit(rays)
            allowed = t_pane < bg
            origins = rays * np.where(allowed, t_pane, 0.0)[:, None]
            directions = rays - 2.0 * (rays @ pane.normal)[:, None] * pane.normal
        hit = intersect(body.shape, body.size, (origins - centre) @ rotation,
                        directions @ rotation)
        t = hit.t
        if pane is None:
            z = t  # rays have z = 1 in the camera frame: the ray parameter is the depth
            visible = np.isfinite(t) & (t < bg)
        else:
            z = np.where(allowed, t_pane, np.inf) + t  # path length: the mirror image's depth
            visible = allowed & np.isfinite(t)
        colour = np.zeros((len(rays), 3))
        if visible.any():
            light = view.rotate(self.scene.light)[0]
            normal = hit.normal[visible] @ rotation.T
            view_dir = directions[visible] / np.linalg.norm(directions[visible], axis=1,
                                                            keepdims=True)
            albedo = sample_texture(body.texture, hit.uv[visible], body.colour)
            colour[visible] = 255.0 * self.scene.gain * shade(
                albedo, normal, view_dir, light, self.scene.ambient, body.specular,
                body.shininess)
        return visible, colour, np.where(visible, z, np.inf), np.isfinite(t) & allowed

    def _cast(self, view: View, body: Body, frame: int, depth: np.ndarray,
              pane: Optional[_Pane]) -> Optional[Layer]:
        """
        Ray-cast one body (directly, or its mirror image in ``pane``) in one view.

        One ray per pixel centre, then ``S x S`` rays in the pixels at an edge (where the
        centre rays of neighbours disagree: the body's outline or the photo's occlusion
        edges) for antialiased coverage. Returns a :class:`Layer`, or None if nothing shows.
        """
        corners = view.to_camera(body_corners(body, frame))
        if pane is None:
            box = screen_box(view, corners)
        else:
            mirrored = corners - 2.0 * ((corners - pane.centre) @ pane.normal)[:, None] \
                * pane.normal
            box = _intersect_boxes(screen_box(view, mirrored), self.pane_box.get(view.name))
        if box is None:
            return None
        x0, y0, x1, y1 = box
        h, w = y1 - y0, x1 - x0
        bg = depth[y0:y1, x0:x1]
        visible, colour, z, hit = self._trace(view, body, frame, view.centre_rays(x0, y0, x1, y1),
                                              bg.reshape(-1), pane)
        visible = visible.reshape(h, w)
        if not visible.any():
            return None
        coverage = visible.astype(np.float32)
        colour = colour.reshape(h, w, 3)
        z = z.reshape(h, w)
        full = hit.reshape(h, w).astype(np.float32)
        kernel = np.ones((3, 3), np.uint8)
        as_u8 = visible.astype(np.uint8)
        edge = cv2.dilate(as_u8, kernel) != cv2.erode(as_u8, kernel)
        rows, cols = np.nonzero(edge)
        if len(rows):
            samples = view.rays(x0, y0, x1, y1).reshape(h, S, w, S, 3)
            rays = samples[rows, :, cols].reshape(-1, 3)   # [E, S, S, 3] -> [E*S*S, 3]
            bg_s = np.repeat(bg[rows, cols], S * S)
            vis_s, col_s, z_s, _ = self._trace(view, body, frame, rays, bg_s, pane)
            vis_s = vis_s.reshape(-1, S * S)
            coverage[rows, cols] = vis_s.mean(axis=1)
            colour[rows, cols] = col_s.reshape(-1, S * S, 3).sum(axis=1) / (S * S)
            z_s = np.where(vis_s, z_s.reshape(-1, S * S), np.inf)
            z[rows, cols] = z_s.min(axis=1)
        return Layer(box, coverage, colour * np.where(edge, 1.0, coverage)[..., None], z,
                     full if pane is None else coverage)

    @staticmethod
    def _blend(image: np.ndarray, box, coverage: np.ndarray, colour: np.ndarray,
               opacity: float = 1.0, tint: Optional[np.ndarray] = None) -> None:
        x0, y0, x1, y1 = box
        alpha = (opacity * coverage)[..., None]
        add = opacity * colour * (tint if tint is not None else 1.0)
        image[y0:y1, x0:x1] = image[y0:y1, x0:x1] * (1.0 - alpha) + add

    def _flare(self, image: np.ndarray, view: View, flare: Flare, frame: int,
               depth: np.ndarray) -> Optional[np.ndarray]:
        """Add a flare to ``image``; return the mask of its pixels (or None if not seen)."""
        if not flare.on[frame]:
            return None
        if flare.position is not None:
            point = view.to_camera(flare.position)[0]
            if point[2] <= 0.05:
                return None
            pixel = view.project(point[None])[0]
            col, row = int(round(pixel[0])), int(round(pixel[1]))
            if not (0 <= col < view.width and 0 <= row < view.height):
                return None
            if depth[row, col] < 0.97 * point[2]:
                return None  # the photo's foreground hides it from this camera
        elif flare.camera == view.name:
            pixel = flare.pixel
        else:
            return None
        sigma = flare.radius_px
        reach = int(np.ceil(6.0 * sigma))
        x0, x1 = max(int(pixel[0]) - reach, 0), min(int(pixel[0]) + reach + 1, view.width)
        y0, y1 = max(int(pixel[1]) - reach, 0), min(int(pixel[1]) + reach + 1, view.height)
        if x1 <= x0 or y1 <= y0:
            return None
        dx = np.arange(x0, x1)[None, :] - pixel[0]
        dy = np.arange(y0, y1)[:, None] - pixel[1]
        r2 = (dx * dx + dy * dy) / (sigma * sigma)
        streak = (np.exp(-np.abs(dx) / (2.5 * sigma) - (dy / (0.35 * sigma)) ** 2)
                  + np.exp(-np.abs(dy) / (2.5 * sigma) - (dx / (0.35 * sigma)) ** 2))
        profile = np.exp(-0.5 * r2) + 0.2 * np.exp(-r2 / 18.0) + 0.35 * streak
        added = flare.strength[frame] * profile[..., None] * flare.colour
        image[y0:y1, x0:x1] += added.astype(np.float32)
        mask = np.zeros(depth.shape, bool)
        mask[y0:y1, x0:x1] = added.max(axis=2) >= GLARE_LEVEL
        return mask

    def render(self, frame: int, sensor: bool = True) -> Dict[str, CameraFrame]:
        """Return both cameras' frame ``frame`` (``sensor=False``: no noise, gain or JPEG)."""
        gain = 1.0
        flicker = self.scene.preset['rig']['exposure_flicker']
        if sensor and flicker > 0:
            gain = float(np.clip(1.0 + flicker * self.rng.standard_normal(), 0.7, 1.3))
        return {cam: self._render_camera(view, frame, gain, sensor)
                for cam, view in self.views.items()}

    def _render_camera(self, view: View, frame: int, gain: float, sensor: bool) -> CameraFrame:
        scene = self.scene
        cam = view.name
        image = self.base[cam].copy()
        depth = self.depth[cam]
        owner = np.full(depth.shape, -1, np.int16)
        elements: List[Element] = []

        def own(index: int, box, coverage: np.ndarray) -> int:
            x0, y0, x1, y1 = box
            mine = coverage >= OWNER_COVERAGE
            owner[y0:y1, x0:x1][mine] = index
            return int(mine.sum())

        order = sorted(scene.bodies, key=lambda b: -view.to_camera(b.positions[frame])[0, 2])
        pane = self.panes.get(cam)
        if pane is not None:
            for body in order:
                layer = self._cast(view, body, frame, depth, pane)
                if layer is None:
                    continue
                self._blend(image, layer.box, layer.coverage, layer.colour,
                            scene.pane.reflectance, scene.pane.tint)
                elements.append(Element('reflection', body.id, f'refl:{body.id}'))
                drawn = own(len(elements) - 1, layer.box, layer.coverage)
                elements[-1].drawn_px = elements[-1].full_px = drawn
        for flare in scene.flares:
            mask = self._flare(image, view, flare, frame, depth)
            if mask is None or not mask.any():
                continue
            elements.append(Element('glare', None, flare.id))
            owner[mask] = len(elements) - 1
            elements[-1].drawn_px = elements[-1].full_px = int(mask.sum())
        for body in order:
            layer = self._cast(view, body, frame, depth, None)
            if layer is None:
                continue
            self._blend(image, layer.box, layer.coverage, layer.colour)
            elements.append(Element('object', body.id, body.id))
            elements[-1].drawn_px = own(len(elements) - 1, layer.box, layer.coverage)
            elements[-1].full_px = int((layer.full >= OWNER_COVERAGE).sum())
        if self.mono:
            image[:] = image.mean(axis=2, keepdims=True)
        clean = image
        base = self.base[cam]
        change = np.abs(clean - base).max(axis=2)
        drawn = owner >= 0
        n = len(elements)
        sums = np.bincount(owner[drawn], weights=change[drawn], minlength=n)
        counts = np.bincount(owner[drawn], minlength=n)
        contrast = {i: float(sums[i] / counts[i]) if counts[i] else 0.0 for i in range(n)}
        out = self._sensor(clean, gain) if sensor else np.clip(clean, 0, 255).astype(np.uint8)
        return CameraFrame(out, clean, owner, elements, contrast)

    def _sensor(self, clean: np.ndarray, gain: float) -> np.ndarray:
        scene = self.scene
        image = clean * gain
        if scene.noise_std > 0:
            sigma = scene.noise_std * np.sqrt(0.25 + np.clip(image, 0, 255) / 170.0)
            noise = self.rng.standard_normal(image.shape[:2] + (1,), dtype=np.float32)
            if not self.mono:  # colour sensors: a shared part plus per-channel noise
                noise = 0.6 * noise + 0.8 * self.rng.standard_normal(image.shape,
                                                                     dtype=np.float32)
            image = image + sigma * noise
        out = np.clip(image, 0, 255).astype(np.uint8)
        if scene.jpeg_quality > 0:
            ok, data = cv2.imencode('.jpg', out[..., ::-1],
                                    [cv2.IMWRITE_JPEG_QUALITY, int(scene.jpeg_quality)])
            if ok:
                out = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
        return np.ascontiguousarray(out)
