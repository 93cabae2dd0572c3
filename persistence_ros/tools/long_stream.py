"""
A long synthetic stereo stream, generated frame by frame (does a frame cost more as tracks age).

``bench age`` (``persistence-ros bench age``) runs ``StereoPipeline`` over it.  MuJoCo scenes
of 10 000 frames would take an hour to render and gigabytes to store, so this stream draws
its own: ``objects`` spheres circling slowly in front of an ideal rectified rig (they never
leave the view, so their tracks live as long as the stream), drawn as shaded discs of
distinct colours on a fixed textured background, with the detector's boxes (the projected
spheres, 0.3 px of jitter) in both cameras.  Nothing is stored: memory stays that of the
pipeline.
"""

import math
from typing import Iterator

import cv2
import numpy as np

from persistence_ros.calibration import CameraCalibration, StereoCalibration
from persistence_ros.detections import Detection, DetectionFrame
from persistence_ros.offline_runner import StereoFrame

FOVY_DEG = 60.0
BASELINE_M = 0.12
CAMERA_HEIGHT_M = 1.2
# the floor, 1.2 m below the optical centre (y down): n = (0, -1, 0), n.X + d = 0
GROUND_PLANE = [0.0, -1.0, 0.0, CAMERA_HEIGHT_M]


def rig(width: int = 640, height: int = 480) -> StereoCalibration:
    """Return an ideal rectified rig: square pixels, ``FOVY_DEG``, ``BASELINE_M``."""
    f = 0.5 * height / math.tan(math.radians(FOVY_DEG) / 2.0)
    k = [f, 0.0, width / 2.0 - 0.5, 0.0, f, height / 2.0 - 0.5, 0.0, 0.0, 1.0]
    cameras = [CameraCalibration(width, height, k, [], P=k[:3] + [tx] + k[3:6] + [0.0]
                                 + k[6:] + [0.0], frame_id=name)
               for tx, name in ((0.0, 'left_optical'), (-f * BASELINE_M, 'right_optical'))]
    return StereoCalibration(*cameras)


def stream(frames: int, objects: int = 32, width: int = 640, height: int = 480,
           fps: float = 30.0, seed: int = 0) -> Iterator[StereoFrame]:
    """Yield ``frames`` synchronized stereo frames of ``objects`` circling spheres."""
    calibration = rig(width, height)
    f = float(calibration.left.P[0, 0])
    cx, cy = float(calibration.left.P[0, 2]), float(calibration.left.P[1, 2])
    rng = np.random.default_rng(seed)
    # Objects on a grid of the view (so they rarely occlude each other), each on its own
    # small circle; depth 2.5-4.5 m, radius 0.08-0.12 m.
    cols = max(1, int(math.ceil(math.sqrt(objects * width / height))))
    rows = int(math.ceil(objects / cols))
    depth = rng.uniform(2.5, 4.5, objects)
    grid_x = (np.arange(objects) % cols + 0.5) / cols * 2.0 - 1.0
    grid_y = (np.arange(objects) // cols + 0.5) / rows * 2.0 - 1.0
    centre = np.stack([grid_x * 0.8 * depth * (width / 2.0) / f,
                       grid_y * 0.8 * depth * (height / 2.0) / f, depth], axis=1)
    radius = rng.uniform(0.08, 0.12, objects)
    orbit = 0.15 * depth * (width / cols / 2.0) / f
    speed = rng.uniform(0.2, 0.5, objects) * rng.choice([-1.0, 1.0], objects)  # rad/s
    phase = rng.uniform(0.0, 2.0 * math.pi, objects)
    colours = [tuple(int(c) for c in cv2.cvtColor(np.uint8([[[int(180 * k / objects), 200,
                                                             230]]]), cv2.COLOR_HSV2RGB)[0, 0])
               for k in range(objects)]
    coarse = rng.integers(40, 140, (height // 40 + 1, width // 40 + 1, 3), dtype=np.uint8)
    background = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    period_ns = int(round(1e9 / fps))
    for k in range(frames):
        t = k / fps
        angle = phase + speed * t
        points = centre + np.stack([orbit * np.cos(angle), 0.5 * orbit * np.sin(angle),
                                    np.zeros(objects)], axis=1)
        stamp = 1_000_000_000 + k * period_ns
        sides = []
        for side, shift in (('left', 0.0), ('right', -f * BASELINE_M)):
            image = background.copy()
            dets = []
            u = f * points[:, 0] / points[:, 2] + cx + shift / points[:, 2]
            v = f * points[:, 1] / points[:, 2] + cy
            size = 2.0 * f * radius / points[:, 2]
            for i in np.argsort(-points[:, 2]):  # far first: near discs drawn over them
                cv2.circle(image, (int(round(u[i])), int(round(v[i]))),
                           max(1, int(round(size[i] / 2.0))), colours[i], -1, cv2.LINE_AA)
            jitter = rng.normal(0.0, 0.3, (objects, 4))
            for i in range(objects):
                dets.append(Detection(float(u[i] + jitter[i, 0]), float(v[i] + jitter[i, 1]),
                                      float(size[i] + jitter[i, 2]),
                                      float(size[i] + jitter[i, 3]), 0.9, 'sphere',
                                      f'{side[0]}{k}-{i}'))
            sides.append((DetectionFrame(stamp, calibration.left.frame_id if side == 'left'
                                         else calibration.right.frame_id, dets), image))
        yield StereoFrame(stamp, sides[0][0], sides[1][0], sides[0][1], sides[1][1])
