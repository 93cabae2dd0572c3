"""Training data set from generated scenes (format: docs/simulator.md, 'Data set')."""

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

import numpy as np

from persistence_ros.baselines import NoFilter
from persistence_ros.calibration import CameraCalibration
from persistence_ros.evaluation.scoring import (labels_from_kind_counts, track_kind_counts,
                                                Truth)
from persistence_ros.features import GEOMETRY_FEATURES, side_geometry, SIDES
from persistence_ros.offline_runner import read_stereo_bag, run_pipeline
from persistence_ros.settings import PipelineConfig, Settings
from persistence_ros.simulation.generate import TRUTH_FILE
from persistence_ros.simulation.scenario import file_name
from persistence_ros.stereo_track import StereoTrackHistory

SCHEMA_VERSION = 2
EVALUATION_SEEDS = frozenset(range(1000, 1010))
SPLITS = (('train', 70), ('val', 85), ('test', 100))
# What the split hashes: 'seed' puts every preset of one seed in the same split (presets of
# one seed share their objects and trajectories, so a split by scene name let a test scene's
# objects be trained on in another preset); 'scene' is the old split by scene name, kept to
# reproduce the shipped weights' data set.
SPLIT_BY = ('seed', 'scene')


def scene_name(scenario: str, seed: int) -> str:
    """Return the canonical scene name, e.g. ``mixed_hard-s0007``."""
    return f'{scenario}-s{int(seed):04d}'


def _check_split_by(by: str) -> None:
    if by not in SPLIT_BY:
        raise ValueError(f'split_by must be one of {SPLIT_BY}, got {by!r}')


def split_of(name: str, by: str = 'seed') -> str:
    """
    Return the split of a scene (``scenario-sNNNN``): a deterministic hash, ~70/15/15.

    ``by='seed'`` hashes the ``sNNNN`` part (every preset of a seed in one split),
    ``by='scene'`` the whole name (see ``SPLIT_BY``).
    """
    _check_split_by(by)
    key = name.rsplit('-', 1)[-1] if by == 'seed' else name
    bucket = int(hashlib.sha256(key.encode('utf-8')).hexdigest()[:8], 16) % 100
    return next(split for split, upper in SPLITS if bucket < upper)


def _record_states(records: Dict[int, dict]):
    """Return an ``on_states`` callback that keeps every stereo track's whole history."""
    def on_states(states: Sequence[StereoTrackHistory]) -> None:
        for st in states:
            rec = records.setdefault(st.id, {'left': {}, 'right': {}, 'stereo': {},
                                             'ids': (st.left_track_id, st.right_track_id),
                                             'born': (st.left_start_ns, st.right_start_ns)})
            for side, history in (('left', st.left), ('right', st.right)):
                for obs in history:
                    if obs.matched:
                        rec[side].setdefault(obs.stamp_ns, obs)
            for k, stamp in enumerate(st.stamps_ns):
                rec['stereo'].setdefault(int(stamp), (float(st.epipolar_residuals[k]),
                                                      tuple(st.points[k])))
    return on_states


def _full_state(track_id: int, rec: dict) -> StereoTrackHistory:
    stamps = sorted(rec['stereo'])
    return StereoTrackHistory(
        id=track_id, left_track_id=rec['ids'][0], right_track_id=rec['ids'][1],
        left=[rec['left'][s] for s in sorted(rec['left'])],
        right=[rec['right'][s] for s in sorted(rec['right'])], stamps_ns=stamps,
        epipolar_residuals=np.array([rec['stereo'][s][0] for s in stamps]),
        points=np.array([rec['stereo'][s][1] for s in stamps]).reshape(-1, 3),
        left_start_ns=rec['born'][0], right_start_ns=rec['born'][1])


def scene_arrays(scene_dir, crop_size: int = 64, context: float = 0.25) -> Dict[str, np.ndarray]:
    """
    Return the data-set arrays of one generated scene directory.

    The scene's bag runs through the package's own pipeline (``StereoPipeline``: 2D trackers,
    stereo association, crops of ``crop_size`` with ``context``), exactly as in the node;
    each stereo track gives two sequences (its left and right 2D tracks, matched frames
    only) with ``features.side_geometry`` rows. Labels come from ``truth.json`` through the
    detection ids: per frame the detection's kind, per track the evaluator's label (real when
    more than half of the detections the stereo track used are real objects).
    """
    scene_dir = Path(scene_dir)
    truth = Truth.load(scene_dir / TRUTH_FILE)
    calibration, frames = read_stereo_bag(scene_dir, with_images=True)
    records: Dict[int, dict] = {}
    run = run_pipeline(calibration, frames, NoFilter(),
                       Settings(pipeline=PipelineConfig(crop_size=crop_size,
                                                        crop_context=context)),
                       on_states=_record_states(records))
    kinds = track_kind_counts(run, truth)
    labels = labels_from_kind_counts(kinds)
    crops, geometry, frame_label, frame_stamp, frame_detection = [], [], [], [], []
    offsets, track_label, track_kind, track_camera, track_id = [0], [], [], [], []
    for stereo_id in sorted(records):
        if labels.get(stereo_id) is None:
            continue
        state = _full_state(stereo_id, records[stereo_id])
        # most frequent kind, ties broken by name (the label itself is the evaluator's)
        kind = sorted(kinds[stereo_id].items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        for side in SIDES:
            rows = side_geometry(state, side, calibration, truth.ground_plane)
            if not rows.observations:
                continue
            crops.extend(o.crop for o in rows.observations)
            geometry.append(rows.geometry)
            frame_label.extend(int(truth.kind(o.detection_id) == 'object')
                               for o in rows.observations)
            frame_stamp.extend(rows.stamps_ns)
            frame_detection.extend(o.detection_id for o in rows.observations)
            offsets.append(offsets[-1] + len(rows.observations))
            track_kind.append(kind)
            track_label.append(int(bool(labels[stereo_id])))
            track_camera.append(side)
            track_id.append(stereo_id)
    return {
        'crops': np.asarray(crops, dtype=np.uint8).reshape(-1, crop_size, crop_size, 3),
        'geometry': (np.concatenate(geometry) if geometry
                     else np.zeros((0, len(GEOMETRY_FEATURES)), np.float32)),
        'frame_label': np.asarray(frame_label, dtype=np.uint8),
        'frame_stamp_ns': np.asarray(frame_stamp, dtype=np.int64),
        'frame_detection_id': np.asarray(frame_detection, dtype='<U32'),
        'track_offsets': np.asarray(offsets, dtype=np.int64),
        'track_label': np.asarray(track_label, dtype=np.uint8),
        'track_kind': np.asarray(track_kind, dtype='<U16'),
        'track_camera': np.asarray(track_camera, dtype='<U8'),
        'track_id': np.asarray(track_id, dtype=np.int64),
    }


def scene_rig(truth: dict) -> dict:
    """
    Return the rig of a scene as the model's domain counts it.

    ``image_width`` (pixels), ``fovy_deg`` (from the left camera's fy and height),
    ``baseline_m``, ``fps`` and the scene ``source`` (``mujoco`` unless the truth names one).
    """
    left = CameraCalibration.from_dict(truth['rig']['left'])
    return {'image_width': int(left.width),
            'fovy_deg': float(np.degrees(2.0 * np.arctan(0.5 * left.height / left.K[1, 1]))),
            'baseline_m': float(truth['rig']['baseline_m']), 'fps': float(truth['fps']),
            'source': str(truth.get('source', 'mujoco'))}


def _sha256(path: Path) -> str:
    with open(path, 'rb') as stream:
        return hashlib.file_digest(stream, 'sha256').hexdigest()


def build_dataset(scene_dirs: Iterable, out_dir, crop_size: int = 64, context: float = 0.25,
                  allow_evaluation_seeds: bool = False, progress=None,
                  split_by: str = 'seed') -> dict:
    """
    Build the training data set from generated scene directories; return the manifest.

    Writes ``out_dir/scenes/<scenario>-s<seed>.npz`` and ``out_dir/manifest.json``. Scenes with
    an evaluation seed (1000-1009) are refused unless ``allow_evaluation_seeds``.
    ``progress`` (optional) wraps the scene iterable (e.g. ``tqdm``); ``split_by``: see
    ``split_of``.
    """
    _check_split_by(split_by)  # before the scenes are read, not at the first one
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
        name = scene_name(file_name(truth['scenario']), seed)  # never a path outside out
        if name in names:
            raise ValueError(f'{scene_dir}: duplicate scene {name}')
        names.add(name)
        arrays = scene_arrays(scene_dir, crop_size, context)
        rel = Path('scenes') / f'{name}.npz'
        np.savez_compressed(out_dir / rel, **arrays)
        entries.append({'name': name, 'scenario': truth['scenario'], 'seed': seed,
                        'rig': scene_rig(truth),
                        'split': split_of(name, split_by), 'file': rel.as_posix(),
                        'sha256': _sha256(out_dir / rel),
                        'tracks': int(len(arrays['track_label'])),
                        'frames': int(len(arrays['frame_label']))})
    manifest = {'schema_version': SCHEMA_VERSION, 'split_by': split_by,
                'crop_size': int(crop_size),
                'crop_context': float(context), 'geometry_features': list(GEOMETRY_FEATURES),
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
    """
    Return the generated scene directories (holding ``truth.json``) under ``root``.

    Symbolic links to scene directories are followed (a selection of scenes can be a directory
    of links); no scene at all is an error, not an empty data set.
    """
    root = Path(root)
    found = sorted(Path(d) for d, _, files in os.walk(root, followlinks=True)
                   if TRUTH_FILE in files)
    if not found:
        raise FileNotFoundError(f'{root}: no scene directory ({TRUTH_FILE}) under it')
    return found


def dataset_splits(manifest: dict) -> Dict[str, List[str]]:
    """Return ``{split: [scene names]}`` of a manifest."""
    out: Dict[str, List[str]] = {}
    for entry in manifest['scenes']:
        out.setdefault(entry['split'], []).append(entry['name'])
    return out
