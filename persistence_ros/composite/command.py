"""
``persistence-ros composite``: composite scenes onto real stereo photographs.

One scene (one preset, ``--scenes 1``): ``--out DIR`` is the scene directory. Several:
``DIR/<preset>-s<seed>/`` for seeds ``seed .. seed+N-1``. The output is the format of
``persistence-ros simulate`` (rosbag2 + ``truth.json``), so ``evaluate --bag`` and the
data-set builder (``simulate --from-scenes --dataset``, or ``--dataset`` here) read it.
"""

import argparse
from concurrent.futures import as_completed, ProcessPoolExecutor
import multiprocessing
import os
from pathlib import Path
import sys
import time
from typing import List, Optional

from tqdm import tqdm

from persistence_ros.composite.presets import list_presets, load_preset
from persistence_ros.simulation.scenario import file_name, ScenarioError
from persistence_ros.simulation.scene_writer import scene_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``composite`` options to ``parser``."""
    parser.add_argument('--preset', action='append', default=None,
                        help='preset name (%s) or path to a preset YAML; repeat to mix '
                        '(default: composite_mixed_hard)' % ', '.join(list_presets()))
    parser.add_argument('--seed', type=int, default=None,
                        help="seed of the first scene (default: the preset's seed)")
    parser.add_argument('--out', required=True, help='output: the scene directory for one '
                        'scene, a folder of scene directories for several')
    parser.add_argument('--scenes', type=int, default=1,
                        help='scenes per preset, seeds seed..seed+N-1 (default 1)')
    parser.add_argument('--workers', type=int, default=1, help='parallel processes (default 1)')
    parser.add_argument('--duration', type=float, default=None, help='override duration_s')
    parser.add_argument('--fps', type=float, default=None,
                        help='fix the frame rate (overrides the preset fps range)')
    parser.add_argument('--width', type=int, default=None,
                        help='fix the image width (overrides the preset rig.width range)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace existing scene directories')
    parser.add_argument('--dataset', default=None, metavar='DATASET_DIR',
                        help='also build the training data set from the scenes into this folder')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')


def overrides_of(args: argparse.Namespace) -> dict:
    """Return the preset overrides of the command-line options."""
    out: dict = {}
    if args.duration is not None:
        out['duration_s'] = args.duration
    if args.fps is not None:
        out['fps'] = [args.fps, args.fps]
    if args.width is not None:
        out['rig'] = {'width': [args.width, args.width]}
    return out


def _render_one(job: tuple) -> str:
    name_or_path, seed, overrides, out_dir, overwrite = job
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    from persistence_ros.composite.generate import generate_composite_scene
    generate_composite_scene(load_preset(name_or_path, seed=seed, overrides=overrides), out_dir,
                             overwrite=overwrite)
    return str(out_dir)


def composite_scenes(presets: List[str], seed: Optional[int], scenes: int, out,
                     overrides: Optional[dict] = None, workers: int = 1,
                     overwrite: bool = False, progress: bool = True) -> List[Path]:
    """Composite ``scenes`` seeds of each preset; return the scene directories."""
    out = Path(out)
    jobs = []
    for name in presets:
        base = load_preset(name, seed=seed, overrides=overrides)  # validates early
        for k in range(scenes):
            scene_seed = int(base['seed']) + k
            single = len(presets) == 1 and scenes == 1
            folder = f'{file_name(base["name"])}-s{scene_seed:04d}'
            jobs.append((name, scene_seed, overrides or {}, out if single else out / folder,
                         overwrite))
    directories = [Path(job[3]) for job in jobs]
    twice = sorted({str(d) for d in directories if directories.count(d) > 1})
    if twice:
        raise ValueError(f'two presets would write into the same folder: {twice}')
    for directory in directories:  # before compositing anything
        if scene_files(directory) and not overwrite:
            raise FileExistsError(f'{directory} exists and is not empty (use --overwrite)')
    bar = tqdm(total=len(jobs), desc='scenes', unit='scene', disable=not progress,
               file=sys.stderr)
    done = []
    if workers <= 1 or len(jobs) == 1:
        for job in jobs:
            done.append(Path(_render_one(job)))
            bar.update()
    else:
        context = multiprocessing.get_context('spawn')
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for future in as_completed([pool.submit(_render_one, job) for job in jobs]):
                done.append(Path(future.result()))
                bar.update()
    bar.close()
    return sorted(done)


def main(args: argparse.Namespace) -> int:
    """Run ``composite``; return the exit status."""
    try:
        if args.scenes < 1:
            raise ValueError('--scenes must be >= 1')
        start = time.monotonic()
        scene_dirs = composite_scenes(args.preset or ['composite_mixed_hard'], args.seed,
                                      args.scenes, args.out, overrides_of(args), args.workers,
                                      args.overwrite, progress=not args.quiet)
        print(f'composite: {len(scene_dirs)} scene(s) in {time.monotonic() - start:.1f} s '
              f'under {args.out}')
        if args.dataset:
            from persistence_ros.simulation.dataset import build_dataset
            wrap = None if args.quiet else (lambda it: tqdm(it, desc='dataset', file=sys.stderr))
            manifest = build_dataset(scene_dirs, args.dataset, progress=wrap)
            tracks = sum(e['tracks'] for e in manifest['scenes'])
            print(f'composite: data set of {len(manifest["scenes"])} scene(s), {tracks} tracks '
                  f'in {args.dataset}')
    except (ScenarioError, FileExistsError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f'composite: {error}', file=sys.stderr)
        return 2
    return 0
