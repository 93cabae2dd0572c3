"""
Photo textures for the simulator: real photographs that installed packages ship.

A texture is named ``<source>:<name>``: ``opencv:<file stem>`` is a photograph of Debian's
``opencv-doc`` sample data (``/usr/share/doc/opencv-doc/examples/data``, installed by
scripts/install-system-deps.sh); ``skimage:<name>`` is an image of scikit-image's
``skimage.data`` module (bundled in its wheel, nothing downloaded). ``POOLS`` splits them into
the photographs training scenes draw from and the ones kept for held-out scenes, so a held-out
scene never shows a floor, wall or object photo that a training scene showed. The stereo
photographs (``aloe``, ``left``/``right``, ``motorcycle``) are left out: the second, 2D
compositing scene source uses them as backgrounds.
"""

from functools import lru_cache
from pathlib import Path
from typing import Dict, Tuple

import cv2
import numpy as np

OPENCV_DATA = Path('/usr/share/doc/opencv-doc/examples/data')
MAX_SIDE = 512  # textures are resized so their larger side is at most this (render cost)

# what each photograph suits: floors (ground-like), walls/backgrounds, objects
POOLS: Dict[str, Dict[str, Tuple[str, ...]]] = {
    'train': {
        'floor': ('skimage:brick', 'skimage:grass', 'opencv:aero1', 'opencv:board',
                  'opencv:stuff', 'opencv:building'),
        'wall': ('opencv:building', 'opencv:home', 'opencv:box_in_scene', 'opencv:basketball1',
                 'opencv:rubberwhale1', 'opencv:starry_night', 'opencv:squirrel_cls',
                 'skimage:brick', 'skimage:coffee', 'skimage:chelsea', 'skimage:rocket'),
        'object': ('opencv:baboon', 'opencv:fruits', 'opencv:orange', 'opencv:apple',
                   'opencv:smarties', 'opencv:butterfly', 'skimage:astronaut',
                   'skimage:coffee'),
    },
    'heldout': {
        'floor': ('skimage:gravel', 'opencv:aero3'),
        'wall': ('opencv:leuvenA', 'opencv:messi5', 'opencv:ela_original'),
        'object': ('opencv:graf1', 'opencv:HappyFish'),
    },
}
USES = ('floor', 'wall', 'object')


class TextureError(ValueError):
    """A texture name that does not resolve to an installed photograph."""


def pool(name: str, use: str) -> Tuple[str, ...]:
    """Return the texture names of pool ``name`` ('train' or 'heldout') for ``use``."""
    if name not in POOLS:
        raise TextureError(f'unknown texture pool {name!r}; pools: {sorted(POOLS)}')
    if use not in USES:
        raise TextureError(f'unknown texture use {use!r}; uses: {list(USES)}')
    return POOLS[name][use]


def check_name(name: str) -> None:
    """Raise ``TextureError`` unless ``name`` has the form ``opencv:<stem>``/``skimage:<name>``."""
    source, _, stem = str(name).partition(':')
    if source not in ('opencv', 'skimage') or not stem or '/' in stem or stem.startswith('.'):
        raise TextureError(f'texture {name!r} must be opencv:<file stem> (opencv-doc sample '
                           'data) or skimage:<name> (skimage.data)')


def _load_rgb(name: str) -> np.ndarray:
    check_name(name)
    source, _, stem = name.partition(':')
    if source == 'opencv':
        files = sorted(OPENCV_DATA.glob(f'{stem}.jpg')) + sorted(OPENCV_DATA.glob(f'{stem}.png'))
        if not files:
            raise TextureError(f'texture {name!r}: no {stem}.jpg/.png in {OPENCV_DATA} '
                               '(install Debian opencv-doc: scripts/install-system-deps.sh)')
        bgr = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise TextureError(f'texture {name!r}: {files[0]} is not a readable image')
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    try:
        import skimage.data
    except ImportError:
        raise TextureError(f'texture {name!r} needs scikit-image (requirements.txt)') from None
    loader = getattr(skimage.data, stem, None)
    if loader is None or not callable(loader):
        raise TextureError(f'texture {name!r}: skimage.data has no image {stem!r}')
    image = np.asarray(loader())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


@lru_cache(maxsize=64)
def png_bytes(name: str, square: bool = False) -> bytes:
    """
    Return a photograph as PNG bytes (larger side at most ``MAX_SIDE``) for MuJoCo.

    ``square``: the centre square only (MuJoCo cube textures, on objects, must be square).
    """
    rgb = _load_rgb(name)
    if square:
        side = min(rgb.shape[:2])
        top, left = (rgb.shape[0] - side) // 2, (rgb.shape[1] - side) // 2
        rgb = rgb[top:top + side, left:left + side]
    scale = MAX_SIDE / float(max(rgb.shape[:2]))
    if scale < 1.0:
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise TextureError(f'texture {name!r}: PNG encoding failed')
    return encoded.tobytes()


def asset_file(name: str, square: bool = False) -> str:
    """Return the MuJoCo asset file name of a texture (``opencv_building.png``)."""
    check_name(name)
    return name.replace(':', '_') + ('_square' if square else '') + '.png'
