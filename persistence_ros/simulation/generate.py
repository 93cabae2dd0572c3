"""
Generate one scene: render, detect, label, write the rosbag2 and ``truth.json``.

``SceneSimulation`` is the frame loop (render, detect, label; the truth grows frame by frame);
``generate_scene`` writes its frames to a bag, ``simulated_scene`` hands them out in memory
(``SceneSimulation.recorded``: exactly what ``read_stereo_bag`` would read from that bag) for
data sets that need no bag.
"""

from contextlib import contextmanager
from dataclasses import dataclass
import json
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from persistence_ros import __version__, bag_io
from persistence_ros.calibration import (calibration_from_camera_info, CameraCalibration,
                                         StereoCalibration)
from persistence_ros.detections import detection_frame_from_msg
from persistence_ros.offline_runner import StereoFrame
from persistence_ros.simulation.detector import BlobDetector, mask_box
from persistence_ros.simulation.noise import NoiseModel
from persistence_ros.simulation.scene import build_scene, SceneRenderer
from persistence_ros.simulation.scene_writer import (  # noqa: F401 - re-exported names
    BAG_METADATA_FILE, CAMERAS, FRAME_IDS, remove_scene_files as _remove_files,
    round_list as _r, scene_files, SCHEMA_VERSION, SOURCES_FILE, TOPICS, TRUTH_FILE)

OBJECT_FRACTION = 0.3  # share of a blob's pixels on an object / glare geom to label it so


def _label_blob(blob, labels, geom_ids, renderer, mirror_pixels, glare_mirror_pixels) -> tuple:
    """Return (kind, object_id, source) of a detector blob from the segmentation render."""
    ids = geom_ids[labels == blob.label]
    counts: Dict[str, int] = {}
    for name, gid in renderer.geom_ids.items():
        counts[name] = int(np.count_nonzero(ids == gid))
    objects = [(counts[o.id], o.id) for o in renderer.spec.objects if counts[o.id] > 0]
    if objects and max(objects)[0] >= OBJECT_FRACTION * blob.area:
        oid = max(objects)[1]
        return 'object', oid, oid
    glares = [(counts[g.id], g.id) for g in renderer.spec.glares if counts[g.id] > 0]
    if glares and max(glares)[0] >= OBJECT_FRACTION * blob.area:
        return 'glare', None, max(glares)[1]
    cx, cy, w, h = blob.box
    margin_x, margin_y = max(4.0, 0.5 * w), max(4.0, 0.5 * h)

    def nearest(pixels: Dict[str, np.ndarray]) -> Optional[str]:
        best, best_d = None, np.inf
        for source, (u, v) in pixels.items():
            if abs(u - cx) <= 0.5 * w + margin_x and abs(v - cy) <= 0.5 * h + margin_y:
                d = np.hypot(u - cx, v - cy)
                if d < best_d:
                    best, best_d = source, d
        return best
    oid = nearest(mirror_pixels)
    if oid is not None:
        return 'reflection', oid, f'refl:{oid}'
    gid = nearest(glare_mirror_pixels)
    if gid is not None:
        return 'glare', None, f'refl:{gid}'
    if objects:  # a sliver of an object (below OBJECT_FRACTION) and nothing else
        oid = max(objects)[1]
        return 'object', oid, oid
    if glares:
        return 'glare', None, max(glares)[1]
    return 'false_positive', None, None


def _mirror_pixels(renderer, positions: Dict[str, np.ndarray], camera: str,
                   geom_ids: np.ndarray) -> Dict[str, np.ndarray]:
    """Return pixels of mirror images that are seen through the mirror geom in ``camera``."""
    mirror = renderer.spec.mirror
    if mirror is None or not positions:
        return {}
    names = list(positions)
    images = mirror.reflect(np.array([positions[n] for n in names]))
    pixels, depth = renderer.project(images, camera)
    mirror_gid = renderer.geom_ids.get(mirror.geom, -2)
    out = {}
    for name, (u, v), z in zip(names, pixels, depth):
        if z <= 0 or not (0 <= u < renderer.width and 0 <= v < renderer.height):
            continue
        # pixel centres are at integer coordinates: the nearest pixel, clipped at the border
        row = min(int(round(v)), renderer.height - 1)
        col = min(int(round(u)), renderer.width - 1)
        if geom_ids[row, col] == mirror_gid:
            out[name] = np.array([u, v])
    return out


def calibrations(renderer) -> Dict[str, CameraCalibration]:
    """
    Return the CameraCalibration of both simulated cameras.

    Rectified (``R = I``, ``P = K [I | t]``); ``D`` is the rig's lens distortion (zero for a
    pinhole rig), the distortion the delivered images have.
    """
    return {cam: CameraCalibration(
        width=renderer.width, height=renderer.height, K=renderer.K, D=renderer.D, R=np.eye(3),
        P=renderer.P[cam], distortion_model='plumb_bob', camera_name=f'stereo_{cam}',
        frame_id=FRAME_IDS[cam]) for cam in ('left', 'right')}


def generate_scene(scenario: dict, out_dir, overwrite: bool = False,
                   progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """
    Render ``scenario`` into the rosbag2 directory ``out_dir`` with ``truth.json`` inside.

    Returns the truth dict. ``progress(done, total)`` is called after each frame. An existing
    non-empty ``out_dir`` is replaced only with ``overwrite`` and only when it is a scene this
    package wrote (``scene_files``); a failed render removes the partial scene it wrote.
    """
    out_dir = Path(out_dir)
    files = scene_files(out_dir)
    if files and not overwrite:
        raise FileExistsError(f'{out_dir} exists and is not empty (use overwrite)')
    if out_dir.exists():
        _remove_files(out_dir, files)
    spec = build_scene(scenario)
    renderer = SceneRenderer(spec)
    try:
        return _generate(spec, renderer, out_dir, progress)
    except BaseException:
        if out_dir.is_dir():  # created by this call: remove the scene files it wrote
            try:
                _remove_files(out_dir)
            except OSError:
                pass
        raise
    finally:
        renderer.close()


def _truth_header(spec, renderer, calib: Dict[str, CameraCalibration]) -> dict:
    """Return truth.json's dict before any frame: scenario, frames, rig, objects (no states)."""
    scenario = spec.scenario
    world_T_left = renderer.world_T_optical['left']
    left_T_world = np.linalg.inv(world_T_left)
    left_T_right = left_T_world @ renderer.world_T_optical['right']
    normal = world_T_left[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    plane = list(normal) + [float(world_T_left[2, 3])]
    return {
        'schema_version': SCHEMA_VERSION, 'scenario': scenario['name'],
        'seed': int(scenario['seed']), 'fps': float(scenario['fps']),
        'package_version': __version__,
        'frames': [{'index': i, 'stamp_ns': int(s)} for i, s in enumerate(spec.stamps_ns)],
        'rig': {'baseline_m': round(renderer.baseline, 9),
                'world_T_left_optical': [_r(row, 9) for row in world_T_left],
                'left_optical_T_right_optical': [_r(row, 9) for row in left_T_right],
                'ground_plane_left_optical': _r(plane, 9),
                'left': calib['left'].to_dict(), 'right': calib['right'].to_dict()},
        'objects': {o.id: {'shape': o.shape, 'size_m': _r(o.size, 6), 'rgba': _r(o.rgba, 6),
                           'trajectory': o.trajectory, 'states': []} for o in spec.objects},
        'detections': {},
        'gt_boxes': {cam: {} for cam in CAMERAS},
    } | ({'drawn': {k: v for k, v in scenario.items() if k != 'randomize'}}
         if spec.randomized else {})


def _gt_boxes(spec, renderer, geom_ids: np.ndarray) -> Tuple[List[dict], Dict[str, bool]]:
    """Return the ground-truth boxes of the objects seen in one segmentation and who is seen."""
    boxes, visible = [], {}
    for obj in spec.objects:
        mask = geom_ids == renderer.geom_ids[obj.id]
        visible[obj.id] = bool(mask.any())
        if visible[obj.id]:
            boxes.append({'object_id': obj.id, 'box': _r(mask_box(mask))})
    return boxes, visible


def _detect(spec, renderer, frame: int, camera: str, rgb: np.ndarray, geom_ids: np.ndarray,
            detector: BlobDetector, noise: NoiseModel,
            hallucinated: Optional[List[dict]] = None) -> List[dict]:
    """
    Return one image's detections: blobs labelled from the segmentation, then the noise.

    ``hallucinated``: stereo false positives of this image (``StereoFalsePositives``), seen
    by the noise model like detected blobs. Sorted by box centre (x, then y), as the
    detection ids number them.
    """
    positions = {o.id: o.positions[frame] for o in spec.objects}
    glare_on = {g.id: g.position for g in spec.glares if g.on[frame]}
    mirror_px = _mirror_pixels(renderer, positions, camera, geom_ids)
    glare_px = _mirror_pixels(renderer, glare_on, camera, geom_ids)
    blobs, labels = detector.detect(rgb)
    raw = []
    for blob in blobs:
        kind, oid, source = _label_blob(blob, labels, geom_ids, renderer, mirror_px, glare_px)
        raw.append({'box': blob.box, 'score': blob.score, 'kind': kind, 'object_id': oid,
                    'source': source})
    dets = noise.apply(frame, raw + list(hallucinated or []))
    dets.sort(key=lambda d: (round(d['box'][0], 3), round(d['box'][1], 3)))
    return dets


def _name_detections(dets: List[dict], camera: str, frame: int, stamp_ns: int, truth: dict,
                     sources: Dict[str, str]) -> None:
    """Give ``dets`` their ids and rounded boxes/scores; add them to ``truth`` and ``sources``."""
    prefix = camera[0].upper()
    for k, det in enumerate(dets):
        det_id = f'{prefix}{frame:06d}-{k:02d}'
        det['id'] = det_id
        det['box'] = _r(det['box'])
        det['score'] = round(float(det['score']), 4)
        truth['detections'][det_id] = {
            'camera': camera, 'frame': frame, 'stamp_ns': stamp_ns, 'kind': det['kind'],
            'object_id': det['object_id'], 'box': det['box']}
        sources[det_id] = det['source'] or f'blob:{det_id}'


def _write_image(bag: bag_io.BagWriter, camera: str, stamp_ns: int, rgb: np.ndarray,
                 calib: CameraCalibration, dets: List[dict]) -> None:
    """Write one camera's image, camera_info and detections at ``stamp_ns`` to the bag."""
    frame_id = FRAME_IDS[camera]
    bag.write(TOPICS[camera]['image'], stamp_ns, bag_io.image_msg(rgb, stamp_ns, frame_id))
    bag.write(TOPICS[camera]['info'], stamp_ns,
              bag_io.camera_info_msg(calib, stamp_ns, frame_id))
    bag.write(TOPICS[camera]['detections'], stamp_ns,
              bag_io.detection_array_msg(dets, stamp_ns, frame_id))


def _append_states(spec, renderer, frame: int, stamp_ns: int,
                   visible: Dict[str, Dict[str, bool]], truth: dict) -> None:
    """Append every object's state at ``frame`` (``visible[camera][object]``) to ``truth``."""
    for obj in spec.objects:
        world = obj.positions[frame]
        truth['objects'][obj.id]['states'].append({
            'frame': frame, 'stamp_ns': stamp_ns, 'world': _r(world, 6),
            'left_optical': _r(renderer.world_to_optical(world, 'left')[0], 6),
            'visible_left': visible['left'][obj.id],
            'visible_right': visible['right'][obj.id]})


class StereoFalsePositives:
    """
    Lingering false positives seen by both cameras (``detector.stereo_false_positives``).

    A detector firing on something that is not an object of interest (a poster, a shadow)
    sees it in both images, where it pairs like a real object: each episode is a point of
    the object region (drifting up to 0.2 m/s) with a size of 0.05-0.4 m, projected into both
    cameras for ``lingering_frames`` frames (kind ``false_positive``, source ``sfp<n>``).
    Drawn from the stream ``[seed, 3]``, only when there are episodes.
    """

    def __init__(self, spec, renderer):
        self.renderer = renderer
        self.episodes = []
        det = spec.scenario['detector']
        if det['stereo_false_positives'] <= 0:
            return
        rng = np.random.default_rng([int(spec.scenario['seed']), 3])
        region = spec.scenario['objects']
        low, high = det['lingering_frames']
        for n in range(int(det['stereo_false_positives'])):
            start = int(rng.integers(0, spec.n_frames))
            length = int(rng.integers(low, high + 1))
            point = rng.uniform(region['region_min'], region['region_max'])
            drift = rng.normal(0.0, 0.1, size=3) / spec.scenario['fps']
            size = rng.uniform(0.05, 0.4) * rng.uniform(0.7, 1.3, size=2)
            score = float(rng.uniform(*det['fp_score']))
            self.episodes.append((start, length, point, drift, size, score, f'sfp{n}'))

    def boxes(self, frame: int, camera: str) -> List[dict]:
        """Return this frame's false-positive boxes in ``camera`` (inside the image)."""
        out = []
        r = self.renderer
        for start, length, point, drift, size, score, source in self.episodes:
            if not start <= frame < start + length:
                continue
            pixel, depth = r.project((point + (frame - start) * drift)[None], camera)
            (u, v), z = pixel[0], depth[0]
            if not (z > 0.1 and 0 <= u < r.width and 0 <= v < r.height):
                continue
            w, h = r.focal * size / z
            out.append({'box': [float(u), float(v), float(w), float(h)], 'score': score,
                        'kind': 'false_positive', 'object_id': None, 'source': source})
        return out


@dataclass
class SimulatedFrame:
    """One rendered, detected and labelled stereo frame (detections named and rounded)."""

    index: int
    stamp_ns: int
    images: Dict[str, np.ndarray]
    detections: Dict[str, List[dict]]


class SceneSimulation:
    """
    The render/detect/label loop of one scene.

    ``frames()`` yields every frame once; ``truth`` (the ``truth.json`` dict) and ``sources``
    are complete when it is exhausted.
    """

    def __init__(self, spec, renderer):
        self.spec, self.renderer = spec, renderer
        det_cfg = spec.scenario['detector']
        seed = int(spec.scenario['seed'])
        self.calib = calibrations(renderer)
        self.detectors = {cam: BlobDetector(renderer.backgrounds[cam], det_cfg['threshold'],
                                            det_cfg['min_area_px'], det_cfg['smooth_px'])
                          for cam in CAMERAS}
        self.noise = {cam: NoiseModel(det_cfg, np.random.default_rng([seed, 2, i]),
                                      renderer.width, renderer.height, spec.n_frames, cam)
                      for i, cam in enumerate(CAMERAS)}
        self.hallucinations = StereoFalsePositives(spec, renderer)
        self.truth = _truth_header(spec, renderer, self.calib)
        self.sources: Dict[str, str] = {}

    def frames(self, progress: Optional[Callable[[int, int], None]] = None
               ) -> Iterator[SimulatedFrame]:
        """Yield the frames in order; ``progress(done, total)`` after each."""
        spec, renderer, truth = self.spec, self.renderer, self.truth
        for frame in range(spec.n_frames):
            stamp_ns = int(spec.stamps_ns[frame])
            rendered = renderer.render(frame)
            visible, detections = {}, {}
            for cam in CAMERAS:
                ids = rendered.geom_ids[cam]
                boxes, visible[cam] = _gt_boxes(spec, renderer, ids)
                truth['gt_boxes'][cam][str(frame)] = boxes
                dets = _detect(spec, renderer, frame, cam, rendered.rgb[cam], ids,
                               self.detectors[cam], self.noise[cam],
                               self.hallucinations.boxes(frame, cam))
                _name_detections(dets, cam, frame, stamp_ns, truth, self.sources)
                detections[cam] = dets
            _append_states(spec, renderer, frame, stamp_ns, visible, truth)
            yield SimulatedFrame(frame, stamp_ns, rendered.rgb, detections)
            if progress is not None:
                progress(frame + 1, spec.n_frames)

    def recorded(self, progress: Optional[Callable[[int, int], None]] = None
                 ) -> Tuple[StereoCalibration, Iterator[StereoFrame]]:
        """
        Return the calibration and the frames as ``read_stereo_bag`` reads them from the bag.

        Messages go through CDR serialization (``bag_io.as_recorded``: float32 boxes and
        scores), images are the rgb8 arrays the bag would hold; nothing is written.
        """
        def info(cam: str):
            msg = bag_io.camera_info_msg(self.calib[cam], int(self.spec.stamps_ns[0]),
                                         FRAME_IDS[cam])
            return calibration_from_camera_info(bag_io.as_recorded(msg, bag_io.CAMERA_INFO))

        def frames() -> Iterator[StereoFrame]:
            for sim in self.frames(progress):
                sides = [_recorded_detections(sim.detections[cam], sim.stamp_ns, cam)
                         for cam in CAMERAS]
                yield StereoFrame(sim.stamp_ns, sides[0], sides[1], sim.images['left'],
                                  sim.images['right'])
        return StereoCalibration(info('left'), info('right')), frames()


def _recorded_detections(detections: List[dict], stamp_ns: int, camera: str):
    """Return one image's detections as a DetectionFrame read back from a bag."""
    msg = bag_io.detection_array_msg(detections, stamp_ns, FRAME_IDS[camera])
    return detection_frame_from_msg(bag_io.as_recorded(msg, bag_io.DETECTION_2D_ARRAY))


@contextmanager
def simulated_scene(scenario: dict) -> Iterator[SceneSimulation]:
    """Yield the ``SceneSimulation`` of a scenario (in memory; the renderer is closed after)."""
    spec = build_scene(scenario)
    renderer = SceneRenderer(spec)
    try:
        yield SceneSimulation(spec, renderer)
    finally:
        renderer.close()


def _generate(spec, renderer, out_dir: Path, progress) -> dict:
    """Render every frame into the bag at ``out_dir``; write truth.json, sources.json."""
    sim = SceneSimulation(spec, renderer)
    with bag_io.BagWriter(out_dir) as bag:
        for cam in CAMERAS:
            bag.add_topic(TOPICS[cam]['image'], bag_io.IMAGE)
            bag.add_topic(TOPICS[cam]['info'], bag_io.CAMERA_INFO)
            bag.add_topic(TOPICS[cam]['detections'], bag_io.DETECTION_2D_ARRAY)
        for frame in sim.frames(progress):
            for cam in CAMERAS:
                _write_image(bag, cam, frame.stamp_ns, frame.images[cam], sim.calib[cam],
                             frame.detections[cam])
    (out_dir / TRUTH_FILE).write_text(json.dumps(sim.truth, indent=1, sort_keys=False) + '\n')
    (out_dir / SOURCES_FILE).write_text(json.dumps(sim.sources, indent=0, sort_keys=True)
                                        + '\n')
    return sim.truth


def load_truth(scene_dir) -> dict:
    """Return the parsed ``truth.json`` of a generated scene directory."""
    return json.loads((Path(scene_dir) / TRUTH_FILE).read_text())
