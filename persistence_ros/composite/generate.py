"""Generate one composite scene: composite, detect, label, write the rosbag2 and truth.json."""

from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from persistence_ros import __version__
from persistence_ros.composite.detector import CompositeDetector
from persistence_ros.composite.render import Compositor
from persistence_ros.composite.scene import build_scene, CompositeScene
from persistence_ros.simulation.detector import mask_box
from persistence_ros.simulation.scene_writer import (CAMERAS, FRAME_IDS, round_list,
                                                     SceneWriter, SCHEMA_VERSION)

SOURCE = 'composite'


def calibrations(scene: CompositeScene) -> dict:
    """Return the CameraCalibration of both cameras, with the bag's frame ids."""
    return {cam: replace(view.calibration, frame_id=FRAME_IDS[cam])
            for cam, view in scene.plate.views().items()}


def _truth_header(scene: CompositeScene, calib: dict) -> dict:
    plate = scene.plate
    left_T_right = np.linalg.inv(plate.right.cam_T_left)
    return {
        'schema_version': SCHEMA_VERSION, 'source': SOURCE,
        'scenario': scene.preset['name'], 'seed': scene.seed, 'fps': float(scene.fps),
        'package_version': __version__,
        'frames': [{'index': i, 'stamp_ns': int(s)} for i, s in enumerate(scene.stamps_ns)],
        'rig': {'baseline_m': round(plate.baseline_m, 9),
                'world_T_left_optical': [round_list(row, 9) for row in np.eye(4)],
                'left_optical_T_right_optical': [round_list(row, 9) for row in left_T_right],
                'left': calib['left'].to_dict(), 'right': calib['right'].to_dict()},
        'composite': {'plate': scene.crop, 'median_depth_m': round(scene.median_depth, 4),
                      'noise_std': round(scene.noise_std, 3), 'jpeg_quality': scene.jpeg_quality,
                      'pane': scene.pane.to_dict() if scene.pane is not None else None,
                      'flares': [{'id': f.id, 'stereo': f.position is not None,
                                  'camera': f.camera,
                                  'position_left_optical': (None if f.position is None
                                                            else round_list(f.position, 6))}
                                 for f in scene.flares],
                      'occluders': len(scene.occluders)},
        'objects': {b.id: {'shape': b.shape, 'size_m': round_list(b.size, 6),
                           'rgba': round_list(list(b.colour) + [1.0], 6),
                           'trajectory': b.motion, 'texture': b.texture_name, 'states': []}
                    for b in scene.bodies},
        'detections': {},
        'gt_boxes': {cam: {} for cam in CAMERAS},
    }


def generate_composite_scene(preset: dict, out_dir, overwrite: bool = False,
                             progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """
    Composite ``preset`` (validated, with its seed) into the scene directory ``out_dir``.

    Writes the rosbag2 (``/stereo/{left,right}/{image_raw,camera_info,detections}``),
    ``truth.json`` (the schema of ``simulation.generate``, plus a ``composite`` section; no
    ground plane: none is defined) and ``sources.json``; returns the truth dict. An existing
    ``out_dir`` is replaced only with ``overwrite`` and only if it is a scene.
    """
    scene = build_scene(preset)
    compositor = Compositor(scene)
    detector = CompositeDetector(scene)
    calib = calibrations(scene)
    truth = _truth_header(scene, calib)
    with SceneWriter(Path(out_dir), calib, overwrite=overwrite) as writer:
        for frame in range(scene.n_frames):
            stamp_ns = int(scene.stamps_ns[frame])
            rendered = compositor.render(frame)
            visible = {}
            for cam in CAMERAS:
                shot = rendered[cam]
                boxes = []
                for index, element in enumerate(shot.elements):
                    if element.kind != 'object':
                        continue
                    mask = shot.mask(index)
                    visible[(element.object_id, cam)] = bool(mask.any())
                    if mask.any():
                        boxes.append({'object_id': element.object_id,
                                      'box': round_list(mask_box(mask))})
                truth['gt_boxes'][cam][str(frame)] = boxes
                writer.write_camera(cam, frame, stamp_ns, shot.image,
                                    detector.detect(cam, frame, shot))
            for body in scene.bodies:
                position = round_list(body.positions[frame], 6)
                truth['objects'][body.id]['states'].append({
                    'frame': frame, 'stamp_ns': stamp_ns, 'world': position,
                    'left_optical': position,
                    'visible_left': visible.get((body.id, 'left'), False),
                    'visible_right': visible.get((body.id, 'right'), False)})
            if progress is not None:
                progress(frame + 1, scene.n_frames)
        return writer.finish(truth)
