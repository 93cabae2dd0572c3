"""Training data set from generated scenes (format: docs/simulator.md, 'Data set')."""

from collections import Counter
import hashlib
import json
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

import cv2
import numpy as np

from persistence_ros import bag_io
from persistence_ros.simulation.generate import SOURCES_FILE, TOPICS, TRUTH_FILE

SCHEMA_VERSION = 1
GEOMETRY_FEATURES = ('cx_norm', 'cy_norm', 'w_norm', 'h_norm', 'score', 'vx_norm', 'vy_norm',
                     'epipolar_px', 'disparity_norm', 'height_m', 'has_partner')
EVALUATION_SEEDS = frozenset(range(1000, 1010))
MIN_CROP_PX = 16
SPLITS = (('train', 70), ('val', 85), ('test', 100))


def scene_name(scenario: str, seed: int) -> str:
    """Return the canonical scene name, e.g. ``mixed_hard-s0007``."""
    return f'{scenario}-s{int(seed):04d}'


def split_of(name: str) -> str:
    """Return the split of a scene: a deterministic hash of its name, ~70/15/15."""
    bucket = int(hashlib.sha256(name.encode('utf-8')).hexdigest()[:8], 16) % 100
    return next(split for split, upper in SPLITS if bucket < upper)


def crop(image: np.ndarray, box: Sequence[float], crop_size: int, context: float) -> np.ndarray:
    """
    Return a ``crop_size`` square RGB crop around a box (side ``context * max(w, h)``).

    Borders are replicated where the crop leaves the image (``cv2.getRectSubPix``).
    """
    cx, cy, w, h = (float(v) for v in box)
    side = max(MIN_CROP_PX, int(np.ceil(context * max(w, h))))
    patch = cv2.getRectSubPix(image, (side, side), (cx, cy))
    interpolation = cv2.INTER_AREA if side > crop_size else cv2.INTER_LINEAR
    return cv2.resize(patch, (crop_size, crop_size), interpolation=interpolation)


def _read_scene(scene_dir: Path):
    truth = json.loads((scene_dir / TRUTH_FILE).read_text())
    sources_path = scene_dir / SOURCES_FILE
    sources = json.loads(sources_path.read_text()) if sources_path.exists() else {}
    images: Dict[Tuple[str, int], np.ndarray] = {}
    scores: Dict[str, float] = {}
    topics = {TOPICS[c]['image']: c for c in ('left', 'right')}
    det_topics = {TOPICS[c]['detections']: c for c in ('left', 'right')}
    for topic, stamp_ns, msg in bag_io.read_messages(scene_dir, list(topics) + list(det_topics)):
        if topic in topics:
            images[(topics[topic], stamp_ns)] = bag_io.image_to_rgb(msg)
        else:
            for det in msg.detections:
                scores[det.id] = float(det.score)
    return truth, sources, images, scores


def _track_key(det_id: str, det: dict, sources: Dict[str, str]) -> str:
    # Ground-truth association for now (the package's own tracker in persistence_ros/tracking.py
    # will replace it): objects and reflections by (kind, object id), glare and false positives
    # by the source that made them (glare patch, false-positive episode, unexplained blob).
    if det['kind'] in ('object', 'reflection') and det['object_id'] is not None:
        return f'{det["kind"]}:{det["object_id"]}'
    return f'{det["kind"]}:{sources.get(det_id, det_id)}'


def _height_m(truth: dict, left_box, right_box) -> float:
    p_left = np.array(truth['rig']['left']['projection_matrix']['data']).reshape(3, 4)
    p_right = np.array(truth['rig']['right']['projection_matrix']['data']).reshape(3, 4)
    homog = cv2.triangulatePoints(p_left, p_right, np.array(left_box[:2], float).reshape(2, 1),
                                  np.array(right_box[:2], float).reshape(2, 1))
    if abs(homog[3, 0]) < 1e-12:
        return 0.0
    point = homog[:3, 0] / homog[3, 0]  # rectified left = left optical (R = I in simulation)
    world_T_left = np.array(truth['rig']['world_T_left_optical'])
    return float((world_T_left[:3, :3] @ point + world_T_left[:3, 3])[2])


def scene_arrays(scene_dir, crop_size: int = 64, context: float = 1.5) -> Dict[str, np.ndarray]:
    """Return the data-set arrays of one generated scene directory."""
    scene_dir = Path(scene_dir)
    truth, sources, images, scores = _read_scene(scene_dir)
    width = truth['rig']['left']['image_width']
    height = truth['rig']['left']['image_height']
    tracks: Dict[Tuple[str, str], List[Tuple[int, str]]] = {}
    for det_id, det in truth['detections'].items():
        tracks.setdefault((det['camera'], _track_key(det_id, det, sources)), []).append(
            (det['frame'], det_id))
    by_frame_key = {(cam, key, frame): det_id
                    for (cam, key), items in tracks.items() for frame, det_id in items}
    crops, geometry, frame_label, frame_stamp = [], [], [], []
    offsets, track_label, track_kind, track_camera, track_id = [0], [], [], [], []
    next_id = {'left': 0, 'right': 0}
    for cam, key in sorted(tracks):
        items = sorted(tracks[(cam, key)])
        other = 'right' if cam == 'left' else 'left'
        previous = None
        kinds = []
        for frame, det_id in items:
            det = truth['detections'][det_id]
            cx, cy, w, h = det['box']
            stamp_ns = det['stamp_ns']
            crops.append(crop(images[(cam, stamp_ns)], det['box'], crop_size, context))
            vx, vy = (0.0, 0.0) if previous is None else ((cx - previous[0]) / width,
                                                          (cy - previous[1]) / height)
            previous = (cx, cy)
            partner_id = by_frame_key.get((other, key, frame))
            epipolar = disparity = height_m = has_partner = 0.0
            if partner_id is not None:
                pbox = truth['detections'][partner_id]['box']
                left_box, right_box = (det['box'], pbox) if cam == 'left' else (pbox, det['box'])
                # rectified rig: epipolar lines are image rows, the distance is the row gap
                epipolar = abs(left_box[1] - right_box[1])
                disparity = (left_box[0] - right_box[0]) / width
                height_m = _height_m(truth, left_box, right_box)
                has_partner = 1.0
            geometry.append([cx / width, cy / height, w / width, h / height,
                             scores.get(det_id, 1.0), vx, vy, epipolar, disparity, height_m,
                             has_partner])
            frame_label.append(1 if det['kind'] == 'object' else 0)
            frame_stamp.append(stamp_ns)
            kinds.append(det['kind'])
        offsets.append(offsets[-1] + len(items))
        # majority kind; ties broken by the kind's order in the sorted list
        kind = sorted(Counter(kinds).items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        track_kind.append(kind)
        track_label.append(1 if kind == 'object' else 0)
        track_camera.append(cam)
        track_id.append(next_id[cam])
        next_id[cam] += 1
    return {
        'crops': np.asarray(crops, dtype=np.uint8).reshape(-1, crop_size, crop_size, 3),
        'geometry': np.asarray(geometry, dtype=np.float32).reshape(-1, len(GEOMETRY_FEATURES)),
        'frame_label': np.asarray(frame_label, dtype=np.uint8),
        'frame_stamp_ns': np.asarray(frame_stamp, dtype=np.int64),
        'track_offsets': np.asarray(offsets, dtype=np.int64),
        'track_label': np.asarray(track_label, dtype=np.uint8),
        'track_kind': np.asarray(track_kind, dtype='<U16'),
        'track_camera': np.asarray(track_camera, dtype='<U8'),
        'track_id': np.asarray(track_id, dtype=np.int64),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for block in iter(lambda: stream.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def build_dataset(scene_dirs: Iterable, out_dir, crop_size: int = 64, context: float = 1.5,
                  allow_evaluation_seeds: bool = False, progress=None) -> dict:
    """
    Build the training data set from generated scene directories; return the manifest.

    Writes ``out_dir/scenes/<scenario>-s<seed>.npz`` and ``out_dir/manifest.json``. Scenes with
    an evaluation seed (1000-1009) are refused unless ``allow_evaluation_seeds``.
    ``progress`` (optional) wraps the scene iterable (e.g. ``tqdm``).
    """
    out_dir = Path(out_dir)
    (out_dir / 'scenes').mkdir(parents=True, exist_ok=True)
    scene_dirs = [Path(d) for d in scene_dirs]
    entries: List[dict] = []
    names = set()
    for scene_dir in (progress(scene_dirs) if progress else scene_dirs):
        truth = json.loads((scene_dir / TRUTH_FILE).read_text())
        seed = int(truth['seed'])
        if seed in EVALUATION_SEEDS and not allow_evaluation_seeds:
            raise ValueError(f'{scene_dir}: seed {seed} is an evaluation seed (1000-1009) and '
                             'must not be used for training scenes')
        name = scene_name(truth['scenario'], seed)
        if name in names:
            raise ValueError(f'{scene_dir}: duplicate scene {name}')
        names.add(name)
        arrays = scene_arrays(scene_dir, crop_size, context)
        rel = Path('scenes') / f'{name}.npz'
        np.savez_compressed(out_dir / rel, **arrays)
        entries.append({'name': name, 'scenario': truth['scenario'], 'seed': seed,
                        'split': split_of(name), 'file': rel.as_posix(),
                        'sha256': _sha256(out_dir / rel),
                        'tracks': int(len(arrays['track_label'])),
                        'frames': int(len(arrays['frame_label']))})
    manifest = {'schema_version': SCHEMA_VERSION, 'crop_size': int(crop_size),
                'context': float(context), 'geometry_features': list(GEOMETRY_FEATURES),
                'label_meaning': {'1': 'persistent real object', '0': 'transient'},
                'scenes': sorted(entries, key=lambda e: e['name'])}
    (out_dir / 'manifest.json').write_text(json.dumps(manifest, indent=1) + '\n')
    return manifest


def load_scene_arrays(dataset_dir, entry: dict, verify: bool = True) -> Dict[str, np.ndarray]:
    """Return the arrays of one manifest entry, checking its sha256 when ``verify``."""
    path = Path(dataset_dir) / entry['file']
    if verify and _sha256(path) != entry['sha256']:
        raise ValueError(f'{path}: sha256 does not match the manifest')
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def find_scene_dirs(root) -> List[Path]:
    """Return the generated scene directories (holding ``truth.json``) under ``root``."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob(TRUTH_FILE))


def dataset_splits(manifest: dict) -> Dict[str, List[str]]:
    """Return ``{split: [scene names]}`` of a manifest."""
    out: Dict[str, List[str]] = {}
    for entry in manifest['scenes']:
        out.setdefault(entry['split'], []).append(entry['name'])
    return out
