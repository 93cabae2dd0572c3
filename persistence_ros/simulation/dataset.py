"""Training data set from generated scenes (format: docs/simulator.md, 'Data set')."""

import hashlib
import json
import os
from pathlib import Path
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from persistence_ros.baselines import NoFilter
from persistence_ros.calibration import CameraCalibration, StereoCalibration
from persistence_ros.evaluation.scoring import (labels_from_kind_counts, track_kind_counts,
                                                Truth)
from persistence_ros.features import GEOMETRY_FEATURES, side_geometry, SIDES
from persistence_ros.gbdt import FEATURE_NAMES, GBDT_DECIDE_AFTER, track_features
from persistence_ros.offline_runner import read_stereo_bag, run_pipeline, StereoFrame
from persistence_ros.settings import PipelineConfig, Settings
from persistence_ros.simulation.generate import simulated_scene, TRUTH_FILE
from persistence_ros.simulation.parallel import map_jobs
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
    Return the data-set arrays of one generated scene directory (its bag and truth.json).

    See ``frames_arrays``, which this reads the bag for.
    """
    scene_dir = Path(scene_dir)
    calibration, frames = read_stereo_bag(scene_dir, with_images=True)
    return frames_arrays(calibration, frames, lambda: Truth.load(scene_dir / TRUTH_FILE),
                         crop_size, context)


def simulated_scene_arrays(scenario: dict, crop_size: int = 64, context: float = 0.25,
                           progress=None, timings: Optional[dict] = None
                           ) -> Tuple[Dict[str, np.ndarray], dict]:
    """
    Return the data-set arrays and the truth dict of a scenario rendered in memory (no bag).

    The frames are what the scene's bag would hold (``SceneSimulation.recorded``); each
    frame's images are dropped once the pipeline has cut its crops, so memory holds one
    frame's images, not the scene's. ``timings`` (a dict, optional) gets ``render_s``: the
    seconds spent making frames (render, looks, detection, labels), the rest being set-up
    and the pipeline.
    """
    with simulated_scene(scenario) as sim:
        calibration, frames = sim.recorded(progress)
        if timings is not None:
            frames = _timed(frames, timings)
        # the truth as truth.json gives it back (a JSON round trip), once every frame is made
        arrays = frames_arrays(calibration, frames,
                               lambda: Truth(json.loads(json.dumps(sim.truth))),
                               crop_size, context)
        return arrays, sim.truth


def _timed(frames: Iterable, timings: dict) -> Iterator:
    """Yield ``frames``, adding the seconds spent making each to ``timings['render_s']``."""
    timings['render_s'] = 0.0
    iterator = iter(frames)
    while True:
        started = time.perf_counter()
        try:
            frame = next(iterator)
        except StopIteration:
            return
        timings['render_s'] += time.perf_counter() - started
        yield frame


def frames_arrays(calibration: StereoCalibration, frames: Iterable[StereoFrame],
                  truth: Callable[[], Truth], crop_size: int = 64,
                  context: float = 0.25) -> Dict[str, np.ndarray]:
    """
    Return the data-set arrays of one scene's frames (from a bag or from memory).

    The frames run through the package's own pipeline (``StereoPipeline``: 2D trackers,
    stereo association, crops of ``crop_size`` with ``context``), exactly as in the node;
    each stereo track gives two sequences (its left and right 2D tracks, matched frames
    only) with ``features.side_geometry`` rows. Labels come from the truth (``truth()``,
    called after the last frame) through the detection ids: per frame the detection's kind,
    per track the evaluator's label (real when more than half of the detections the stereo
    track used are real objects).
    """
    records: Dict[int, dict] = {}
    snapshots: Dict[int, StereoTrackHistory] = {}
    record = _record_states(records)

    def on_states(states: Sequence[StereoTrackHistory]) -> None:
        record(states)
        for st in states:  # what the gbdt baseline sees at the frame it decides
            if st.id not in snapshots and st.frames_observed >= GBDT_DECIDE_AFTER:
                snapshots[st.id] = st

    run = run_pipeline(calibration, frames, NoFilter(),
                       Settings(pipeline=PipelineConfig(crop_size=crop_size,
                                                        crop_context=context)),
                       on_states=on_states)
    truth = truth()
    kinds = track_kind_counts(run, truth)
    labels = labels_from_kind_counts(kinds)
    gbdt_ids = [tid for tid in sorted(snapshots) if labels.get(tid) is not None]
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
        # the gbdt baseline's training rows: per stereo track its features at the frame it
        # decides (GBDT_DECIDE_AFTER), with the truth's ground plane and without one
        'gbdt_track_id': np.asarray(gbdt_ids, dtype=np.int64),
        'gbdt_features': np.asarray(
            [[track_features(snapshots[tid], truth.ground_plane), track_features(snapshots[tid])]
             for tid in gbdt_ids], dtype=np.float64).reshape(-1, 2, len(FEATURE_NAMES)),
        'gbdt_label': np.asarray([int(bool(labels[tid])) for tid in gbdt_ids], dtype=np.uint8),
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


def _check_seed(where: str, seed: int, allow_evaluation_seeds: bool) -> None:
    if seed in EVALUATION_SEEDS and not allow_evaluation_seeds:
        raise ValueError(f'{where}: seed {seed} is an evaluation seed (1000-1009) and '
                         'must not be used for training scenes')


def _write_entry(out_dir: Path, name: str, truth: dict, arrays: Dict[str, np.ndarray],
                 split_by: str) -> dict:
    """Write one scene's arrays; return its manifest entry."""
    rel = Path('scenes') / f'{name}.npz'
    np.savez_compressed(out_dir / rel, **arrays)
    return {'name': name, 'scenario': truth['scenario'], 'seed': int(truth['seed']),
            'rig': scene_rig(truth), 'split': split_of(name, split_by),
            'file': rel.as_posix(), 'sha256': _sha256(out_dir / rel),
            'tracks': int(len(arrays['track_label'])),
            'frames': int(len(arrays['frame_label']))}


def existing_scenes(out_dir, crop_size: int, context: float, split_by: str) -> List[dict]:
    """
    Return the scene entries of a data set at ``out_dir`` that new scenes may be added to.

    None there: ``[]``.  A data set made with other crops, another split or other feature
    columns cannot take more scenes: ValueError says which setting differs.
    """
    path = Path(out_dir) / 'manifest.json'
    if not path.is_file():
        return []
    manifest = json.loads(path.read_text())
    wanted = {'schema_version': SCHEMA_VERSION, 'split_by': split_by,
              'crop_size': int(crop_size), 'crop_context': float(context),
              'geometry_features': list(GEOMETRY_FEATURES)}
    differ = [key for key, value in wanted.items() if manifest.get(key) != value]
    if differ:
        raise ValueError(f'{path}: cannot add scenes to a data set made with other '
                         f'{", ".join(differ)} (start a new --dataset folder)')
    return list(manifest['scenes'])


def _write_manifest(out_dir: Path, entries: List[dict], crop_size: int, context: float,
                    split_by: str, earlier: Sequence[dict] = ()) -> dict:
    manifest = {'schema_version': SCHEMA_VERSION, 'split_by': split_by,
                'crop_size': int(crop_size),
                'crop_context': float(context), 'geometry_features': list(GEOMETRY_FEATURES),
                'label_meaning': {'1': 'persistent real object', '0': 'transient'},
                'scenes': sorted(list(earlier) + list(entries), key=lambda e: e['name'])}
    (out_dir / 'manifest.json').write_text(json.dumps(manifest, indent=1) + '\n')
    return manifest


def build_dataset(scene_dirs: Iterable, out_dir, crop_size: int = 64, context: float = 0.25,
                  allow_evaluation_seeds: bool = False, progress=None,
                  split_by: str = 'seed', append: bool = False) -> dict:
    """
    Build the training data set from generated scene directories; return the manifest.

    Writes ``out_dir/scenes/<scenario>-s<seed>.npz`` and ``out_dir/manifest.json``. Scenes with
    an evaluation seed (1000-1009) are refused unless ``allow_evaluation_seeds``.
    ``progress`` (optional) wraps the scene iterable (e.g. ``tqdm``); ``split_by``: see
    ``split_of``.  ``append``: add the scenes to the data set already at ``out_dir``
    (``existing_scenes``; a scene it holds is refused), instead of replacing its manifest.
    """
    _check_split_by(split_by)  # before the scenes are read, not at the first one
    out_dir = Path(out_dir)
    earlier = existing_scenes(out_dir, crop_size, context, split_by) if append else []
    (out_dir / 'scenes').mkdir(parents=True, exist_ok=True)
    scene_dirs = [Path(d) for d in scene_dirs]
    entries: List[dict] = []
    names = {e['name'] for e in earlier}
    for scene_dir in (progress(scene_dirs) if progress else scene_dirs):
        truth = json.loads((scene_dir / TRUTH_FILE).read_text())
        seed = int(truth['seed'])
        _check_seed(str(scene_dir), seed, allow_evaluation_seeds)
        name = scene_name(file_name(truth['scenario']), seed)  # never a path outside out
        if name in names:
            raise ValueError(f'{scene_dir}: duplicate scene {name}')
        names.add(name)
        arrays = scene_arrays(scene_dir, crop_size, context)
        entries.append(_write_entry(out_dir, name, truth, arrays, split_by))
    return _write_manifest(out_dir, entries, crop_size, context, split_by, earlier)


def _simulate_entry(job: tuple) -> dict:
    """Render one scenario in memory and write its arrays (a worker process's job)."""
    scenario, out_dir, crop_size, context, split_by = job
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    arrays, truth = simulated_scene_arrays(scenario, crop_size, context)
    name = scene_name(file_name(truth['scenario']), int(truth['seed']))
    return _write_entry(Path(out_dir), name, truth, arrays, split_by)


def build_simulated_dataset(scenarios: Sequence[dict], out_dir, crop_size: int = 64,
                            context: float = 0.25, allow_evaluation_seeds: bool = False,
                            workers: int = 1, progress=None, split_by: str = 'seed',
                            append: bool = False) -> dict:
    """
    Build the training data set by rendering validated scenarios in memory; no bag is written.

    Each scenario (seed set) is rendered, detected and run through the pipeline in one process
    (``simulated_scene_arrays``); only its arrays are stored, as ``build_dataset`` stores a
    bag's. ``workers`` processes (spawned: one GL context each); ``progress`` wraps the
    iterable of finished scenes (e.g. ``tqdm`` with ``total``). Same refusals as
    ``build_dataset`` (evaluation seeds, duplicate names), checked before anything renders;
    ``append`` as in ``build_dataset``.  The manifest is written after every finished scene.
    """
    _check_split_by(split_by)
    out_dir = Path(out_dir)
    earlier = existing_scenes(out_dir, crop_size, context, split_by) if append else []
    names = {e['name'] for e in earlier}
    for scenario in scenarios:
        name = scene_name(file_name(scenario['name']), int(scenario['seed']))
        _check_seed(name, int(scenario['seed']), allow_evaluation_seeds)
        if name in names:
            raise ValueError(f'duplicate scene {name}')
        names.add(name)
    (out_dir / 'scenes').mkdir(parents=True, exist_ok=True)
    jobs = [(scenario, str(out_dir), crop_size, context, split_by) for scenario in scenarios]
    entries: List[dict] = []
    manifest = _write_manifest(out_dir, entries, crop_size, context, split_by, earlier)
    for entry in map_jobs(_simulate_entry, jobs, workers, progress):
        # the manifest lists every finished scene: a run stopped half way leaves a data set
        # that holds them, and ``append`` with the remaining seeds completes it
        entries.append(entry)
        manifest = _write_manifest(out_dir, entries, crop_size, context, split_by, earlier)
    return manifest


def gbdt_training_rows(dataset_dir, split: str = 'train') -> Tuple[np.ndarray, np.ndarray]:
    """
    Return (features, labels) to fit the gbdt baseline on, from a data set's ``split``.

    Each labelled stereo track gives two rows: its ``gbdt.track_features`` at the frame the
    filter decides, with and without the ground plane (``frames_arrays``).  Evaluation
    seeds never reach a data set (``build_dataset`` refuses them).
    """
    manifest = json.loads((Path(dataset_dir) / 'manifest.json').read_text())
    xs, ys = [], []
    for entry in manifest['scenes']:
        if entry['split'] != split:
            continue
        arrays = load_scene_arrays(dataset_dir, entry)
        if 'gbdt_features' not in arrays:
            raise ValueError(f'{dataset_dir}: {entry["name"]} has no gbdt rows (a data set '
                             'built before they were stored): rebuild it')
        features = arrays['gbdt_features']
        xs.append(features.reshape(-1, features.shape[-1]))
        ys.append(np.repeat(arrays['gbdt_label'].astype(np.int64), features.shape[1]))
    if not xs or not sum(len(y) for y in ys):
        raise ValueError(f'{dataset_dir}: no labelled stereo tracks in split {split!r}')
    return np.concatenate(xs), np.concatenate(ys)


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
