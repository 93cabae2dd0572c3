"""
What a real camera does to the rendered image: lens distortion, then the sensor's looks.

``Lens``: MuJoCo renders a pinhole image; a rig with distortion ``D`` (plumb_bob, the
``CameraInfo.d`` the bag carries) gets its delivered image by resampling a slightly larger
pinhole render (the *canvas*, ``pad`` pixels more on each side so the wider field of a barrel
lens is covered) at the undistorted position of every delivered pixel. Those positions are
``CameraCalibration.rectify_points`` of the pixel grid, the function the pipeline undistorts
detections with, so the delivered image has exactly the distortion ``D`` says. RGB is resampled
bilinearly, the segmentation (geom ids) with the nearest pixel so truth boxes stay exact.

``Looks`` (scenario ``looks``): exposure and white-balance gains, vignetting, gamma, bloom
around near-saturated pixels, read and shot noise, JPEG compression; all after rendering and
before the detector sees the image. Motion blur is rendered (``scene.SceneRenderer``: the mean
of renders over the shutter time), not faked here. With the default settings both are the
identity and the image is returned unchanged (the presets' bags stay byte-identical).
"""

import math
from typing import Optional, Tuple

import cv2
import numpy as np

from persistence_ros.calibration import CameraCalibration

IDENTITY_LOOKS = {'exposure': 1.0, 'gamma': 1.0, 'white_balance': [1.0, 1.0, 1.0],
                  'vignetting': 0.0, 'bloom': 0.0, 'noise_std': 0.0, 'shot_noise': 0.0,
                  'jpeg_quality': 0}
BLOOM_LEVEL = 0.85  # signal above this (of full scale) glows
BLOOM_SIGMA = 0.01  # glow radius as a fraction of the image diagonal


class Lens:
    """Maps a pinhole canvas render to the distorted image of a ``width`` x ``height`` rig."""

    def __init__(self, K: np.ndarray, D, width: int, height: int):
        self.K = np.asarray(K, dtype=np.float64)
        self.D = np.asarray(D, dtype=np.float64).reshape(-1)
        self.width, self.height = int(width), int(height)
        self.distorted = bool(np.any(self.D))
        self.pad = (0, 0)
        self._maps = None
        if not self.distorted:
            return
        camera = CameraCalibration(self.width, self.height, self.K, self.D)
        xs, ys = np.meshgrid(np.arange(self.width, dtype=np.float64),
                             np.arange(self.height, dtype=np.float64))
        pinhole = camera.rectify_points(np.stack([xs.ravel(), ys.ravel()], axis=1))
        pad_x = int(math.ceil(max(0.0, -pinhole[:, 0].min(),
                                  pinhole[:, 0].max() - (self.width - 1)))) + 2
        pad_y = int(math.ceil(max(0.0, -pinhole[:, 1].min(),
                                  pinhole[:, 1].max() - (self.height - 1)))) + 2
        self.pad = (pad_x, pad_y)
        map_x = (pinhole[:, 0] + pad_x).reshape(self.height, self.width).astype(np.float32)
        map_y = (pinhole[:, 1] + pad_y).reshape(self.height, self.width).astype(np.float32)
        self._maps = (map_x, map_y)

    @property
    def canvas(self) -> Tuple[int, int]:
        """Return the (width, height) of the pinhole render."""
        return self.width + 2 * self.pad[0], self.height + 2 * self.pad[1]

    def canvas_fovy_deg(self, fovy_deg: float) -> float:
        """Return the vertical field of view of the canvas (same focal length)."""
        if not self.pad[1]:
            return fovy_deg
        return math.degrees(2.0 * math.atan((0.5 * self.canvas[1]) / float(self.K[1, 1])))

    def rgb(self, canvas: np.ndarray) -> np.ndarray:
        """Return the delivered image of a canvas render (bilinear)."""
        if self._maps is None:
            return canvas
        return cv2.remap(canvas, *self._maps, interpolation=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)

    def ids(self, canvas: np.ndarray) -> np.ndarray:
        """Return the delivered segmentation (geom ids, -1: none) of a canvas (nearest)."""
        if self._maps is None:
            return canvas
        out = cv2.remap(canvas.astype(np.float32), *self._maps, interpolation=cv2.INTER_NEAREST,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)
        return np.rint(out).astype(np.int32)

    def distort_points(self, optical: np.ndarray) -> np.ndarray:
        """Return the delivered pixels ``[N, 2]`` of camera-frame points (``z`` > 0)."""
        optical = np.asarray(optical, dtype=np.float64).reshape(-1, 3)
        pixels, _ = cv2.projectPoints(optical, np.zeros(3), np.zeros(3), self.K, self.D)
        return pixels.reshape(-1, 2)


class Looks:
    """The sensor's rendering of one rig (scenario ``looks``); ``apply`` per image."""

    def __init__(self, cfg: dict, width: int, height: int, K: np.ndarray):
        self.cfg = cfg
        self.identity = all(cfg[key] == value for key, value in IDENTITY_LOOKS.items())
        self.gains = (float(cfg['exposure'])
                      * np.asarray(cfg['white_balance'], dtype=np.float32)).astype(np.float32)
        self.vignette: Optional[np.ndarray] = None
        if cfg['vignetting'] > 0:
            xs, ys = np.meshgrid(np.arange(width, dtype=np.float32) - np.float32(K[0, 2]),
                                 np.arange(height, dtype=np.float32) - np.float32(K[1, 2]))
            radius2 = (xs ** 2 + ys ** 2) / np.float32(0.25 * (width ** 2 + height ** 2))
            self.vignette = (1.0 - np.float32(cfg['vignetting']) * radius2)[..., None]
        self.bloom_sigma = BLOOM_SIGMA * math.hypot(width, height)

    def _glow(self, x: np.ndarray) -> np.ndarray:
        """Return the blurred excess over ``BLOOM_LEVEL`` (computed at a quarter size)."""
        height, width = x.shape[:2]
        small = cv2.resize(np.maximum(x - np.float32(BLOOM_LEVEL), 0.0),
                           (max(1, width // 4), max(1, height // 4)),
                           interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), max(0.5, self.bloom_sigma / 4.0))
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)

    def apply(self, rgb: np.ndarray, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """
        Return the delivered uint8 image of a rendered one.

        ``rng`` draws the sensor noise; None leaves it out (the detector's background model:
        the mean image of the static scene).
        """
        if self.identity:
            return rgb
        x = rgb.astype(np.float32) * np.float32(1.0 / 255.0) * self.gains
        if self.vignette is not None:
            x *= self.vignette
        if self.cfg['bloom'] > 0:
            x += np.float32(4.0 * self.cfg['bloom']) * self._glow(x)
        np.clip(x, 0.0, 1.0, out=x)
        if self.cfg['gamma'] != 1.0:
            x **= np.float32(self.cfg['gamma'])
        x *= np.float32(255.0)
        if rng is not None and (self.cfg['noise_std'] > 0 or self.cfg['shot_noise'] > 0):
            variance = np.float32(self.cfg['noise_std'] ** 2) + np.float32(
                self.cfg['shot_noise']) * x
            x += np.sqrt(variance) * rng.standard_normal(x.shape, dtype=np.float32)
        out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        quality = int(self.cfg['jpeg_quality'])
        if quality > 0:
            ok, data = cv2.imencode('.jpg', cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise RuntimeError(f'JPEG encoding at quality {quality} failed')
            out = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return out
