"""
Analytic ray casting of the composited shapes: sphere, box, capsule and a capsule "person".

Written here (a few closed-form intersections in numpy) rather than through a renderer so
that the compositor shares nothing with the MuJoCo simulator's rasteriser: every sample ray
of a pixel is intersected with the shape in the shape's own frame, which gives exact depth
(for occlusion against the photograph), the normal (for shading) and surface coordinates
(for textures from real photographs).
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

SHAPES = ('sphere', 'box', 'capsule', 'person')


@dataclass
class Hit:
    """Ray hits: ``t`` (inf = miss), unit normal and surface ``uv`` in [0, 1], per ray."""

    t: np.ndarray        # [N]
    normal: np.ndarray   # [N, 3] in the shape frame
    uv: np.ndarray       # [N, 2]


def _sphere(origin: np.ndarray, direction: np.ndarray, centre: np.ndarray, radius: float
            ) -> np.ndarray:
    """Return the nearest positive ray parameter of a sphere hit, inf where missed."""
    oc = origin - centre
    a = np.einsum('ij,ij->i', direction, direction)
    b = np.einsum('ij,ij->i', oc, direction)
    c = np.einsum('ij,ij->i', oc, oc) - radius * radius
    disc = b * b - a * c
    root = np.sqrt(np.maximum(disc, 0.0))
    t_near = (-b - root) / a
    t_far = (-b + root) / a
    t = np.where(t_near > 1e-9, t_near, t_far)
    return np.where((disc >= 0.0) & (t > 1e-9), t, np.inf)


def _box(origin: np.ndarray, direction: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Return the slab-method entry parameter of an axis-aligned box at the origin."""
    with np.errstate(divide='ignore', invalid='ignore'):
        inv = 1.0 / direction
        t1 = (-half - origin) * inv
        t2 = (half - origin) * inv
    t_min = np.nanmax(np.minimum(t1, t2), axis=1)
    t_max = np.nanmin(np.maximum(t1, t2), axis=1)
    t = np.where(t_min > 1e-9, t_min, t_max)
    return np.where((t_max >= t_min) & (t > 1e-9), t, np.inf)


def _capsule(origin: np.ndarray, direction: np.ndarray, radius: float, half_length: float
             ) -> np.ndarray:
    """Return the nearest hit of a capsule along z (segment +-half_length, radius)."""
    ox, oy, dx, dy = origin[:, 0], origin[:, 1], direction[:, 0], direction[:, 1]
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - radius * radius
    disc = b * b - a * c
    with np.errstate(divide='ignore', invalid='ignore'):
        t_cyl = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    z = origin[:, 2] + t_cyl * direction[:, 2]
    t_cyl = np.where((disc >= 0.0) & (a > 1e-12) & (t_cyl > 1e-9)
                     & (np.abs(z) <= half_length), t_cyl, np.inf)
    caps = [_sphere(origin, direction, np.array([0.0, 0.0, s * half_length]), radius)
            for s in (-1.0, 1.0)]
    return np.minimum(t_cyl, np.minimum(*caps))


def intersect(shape: str, size: np.ndarray, origin: np.ndarray, direction: np.ndarray
              ) -> Hit:
    """
    Intersect rays (shape frame: ``origin`` and ``direction`` ``[N, 3]``) with a shape.

    Sizes: sphere ``[r]``; box ``[hx, hy, hz]`` (half extents); capsule ``[r, half_length]``
    along the shape's z; person ``[r, half_length, head_r]`` (a capsule body along z plus a
    head sphere above it, z pointing up the body).
    """
    n = len(origin)
    if shape == 'sphere':
        t = _sphere(origin, direction, np.zeros(3), size[0])
    elif shape == 'box':
        t = _box(origin, direction, np.asarray(size[:3], dtype=np.float64))
    elif shape == 'capsule':
        t = _capsule(origin, direction, size[0], size[1])
    elif shape == 'person':
        head_z = size[1] + size[0] + 0.9 * size[2]
        t = np.minimum(_capsule(origin, direction, size[0], size[1]),
                       _sphere(origin, direction, np.array([0.0, 0.0, head_z]), size[2]))
    else:
        raise ValueError(f'unknown shape {shape!r}; shapes: {SHAPES}')
    hit = np.isfinite(t)
    normal = np.zeros((n, 3))
    uv = np.zeros((n, 2))
    if hit.any():
        p = origin[hit] + t[hit, None] * direction[hit]
        normal[hit], uv[hit] = _surface(shape, size, p)
    return Hit(t, normal, uv)


def _surface(shape: str, size, p: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Return unit normals and surface coordinates of points ``p`` on a shape."""
    if shape == 'sphere':
        normal = p / size[0]
        return normal, _spherical_uv(normal)
    if shape == 'box':
        half = np.asarray(size[:3], dtype=np.float64)
        rel = p / half
        axis = np.argmax(np.abs(rel), axis=1)
        normal = np.zeros_like(p)
        normal[np.arange(len(p)), axis] = np.sign(rel[np.arange(len(p)), axis])
        others = np.array([[1, 2], [0, 2], [0, 1]])[axis]
        uv = 0.5 * (np.take_along_axis(rel, others, axis=1) + 1.0)
        # each face gets its own part of the texture (a 3x2 atlas)
        face = axis * 2 + (normal[np.arange(len(p)), axis] > 0)
        uv = np.stack([(face % 3 + uv[:, 0]) / 3.0, (face // 3 + uv[:, 1]) / 2.0], axis=1)
        return normal, np.clip(uv, 0.0, 1.0)
    radius, half_length = size[0], size[1]
    axis_point = np.zeros_like(p)
    axis_point[:, 2] = np.clip(p[:, 2], -half_length, half_length)
    normal = p - axis_point
    if shape == 'person':
        head = np.array([0.0, 0.0, half_length + radius + 0.9 * size[2]])
        on_head = np.linalg.norm(p - head, axis=1) <= size[2] * (1 + 1e-6)
        normal[on_head] = p[on_head] - head
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    top = half_length + radius + (1.8 * size[2] if shape == 'person' else 0.0)
    v = np.clip((top - p[:, 2]) / (top + half_length + radius), 0.0, 1.0)
    u = (np.arctan2(p[:, 1], p[:, 0]) / (2 * np.pi)) % 1.0
    return normal, np.stack([u, v], axis=1)


def _spherical_uv(normal: np.ndarray) -> np.ndarray:
    u = (np.arctan2(normal[:, 0], normal[:, 2]) / (2 * np.pi)) % 1.0
    v = np.arccos(np.clip(-normal[:, 1], -1.0, 1.0)) / np.pi
    return np.stack([u, v], axis=1)


def bounding_radius(shape: str, size) -> float:
    """Return the radius of a sphere around the shape's origin that holds the whole shape."""
    if shape == 'sphere':
        return float(size[0])
    if shape == 'box':
        return float(np.linalg.norm(size[:3]))
    if shape == 'capsule':
        return float(size[0] + size[1])
    return float(size[1] + size[0] + 1.9 * size[2])


def local_bounds(shape: str, size) -> np.ndarray:
    """Return ``[min xyz, max xyz]`` (2x3) of the shape in its own frame."""
    if shape == 'sphere':
        half = np.full(3, size[0])
    elif shape == 'box':
        half = np.asarray(size[:3], dtype=np.float64)
    elif shape == 'capsule':
        half = np.array([size[0], size[0], size[0] + size[1]])
    else:
        side = max(size[0], size[2])
        low = np.array([-side, -side, -(size[0] + size[1])])
        high = np.array([side, side, size[1] + size[0] + 1.9 * size[2]])
        return np.stack([low, high])
    return np.stack([-half, half])


def sample_texture(texture: Optional[np.ndarray], uv: np.ndarray, colour: np.ndarray
                   ) -> np.ndarray:
    """Return albedo ``[N, 3]`` in [0, 1]: the texture at ``uv`` tinted, or the flat colour."""
    if texture is None:
        return np.broadcast_to(colour, (len(uv), 3)).astype(np.float64)
    height, width = texture.shape[:2]
    cols = np.clip((uv[:, 0] * (width - 1)).astype(np.int64), 0, width - 1)
    rows = np.clip((uv[:, 1] * (height - 1)).astype(np.int64), 0, height - 1)
    return texture[rows, cols].astype(np.float64) / 255.0 * (0.6 + 0.4 * colour)


def shade(albedo: np.ndarray, normal: np.ndarray, view_dir: np.ndarray, light: np.ndarray,
          ambient: float, specular: float, shininess: float) -> np.ndarray:
    """
    Return linear RGB in [0, ~1.5] of Lambert + Blinn-Phong shading.

    ``normal``, ``view_dir`` (from the camera towards the surface) and ``light`` (towards the
    light) are unit vectors in one frame.
    """
    diffuse = np.clip(normal @ light, 0.0, None)
    half = light[None, :] - view_dir
    half /= np.maximum(np.linalg.norm(half, axis=1, keepdims=True), 1e-12)
    spec = np.clip(np.einsum('ij,ij->i', normal, half), 0.0, None) ** shininess
    return albedo * (ambient + (1.0 - ambient) * diffuse[:, None]) + specular * spec[:, None]
