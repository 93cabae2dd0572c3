"""
``persistence-ros simulate``: render scenes to rosbag2 + truth.json, optionally a data set.

One scene (``--scenes 1``): ``--out DIR`` is the bag directory (``truth.json`` inside).
Several scenes: ``DIR/<scenario>-s<seed>/`` for seeds ``seed .. seed+N-1``, rendered by
``--workers`` processes. ``--dataset DATASET_DIR`` then builds the training data set from the
scenes just rendered (or, with ``--from-scenes``, from scenes already under ``--out``).
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

from persistence_ros.simulation.scenario import (file_name, list_presets, load_scenario,
                                                 ScenarioError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` options to ``parser``."""
    parser.add_argument('--scenario', action='append', default=None,
                        help='preset name (%s) or path to a scenario YAML; repeat to mix '
                        'scenarios (default: mixed_hard)' % ', '.join(list_presets()))
    parser.add_argument('--seed', type=int, default=None,
                        help="seed of the first scene (default: the scenario file's seed)")
    parser.add_argument('--out', required=True, help='output: the bag directory for one scene, '
                        'a folder of scene directories for several')
    parser.add_argument('--scenes', type=int, default=1,
                        help='scenes per scenario, seeds seed..seed+N-1 (default 1)')
    parser.add_argument('--workers', type=int, default=1, help='parallel processes (default 1)')
    parser.add_argument('--duration', type=float, default=None, help='override duration_s')
    parser.add_argument('--fps', type=float, default=None, help='override fps')
    parser.add_argument('--size', default=None, metavar='WxH',
                        help='override the render size, e.g. 640x480')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace existing scene directories')
    parser.add_argument('--dataset', default=None, metavar='DATASET_DIR',
                        help='also build the training data set from the scenes into this folder')
    parser.add_argument('--from-scenes', action='store_true',
                        help='with --dataset: render nothing, use every scene found under --out')
    parser.add_argument('--crop-size', type=int, default=64, help='data set crop size (64)')
    parser.add_argument('--context', type=float, default=0.25,
                        help='data set crop border per side, as a fraction of the larger box '
                             'side (0.25, the crop_context of the pipeline)')
    parser.add_argument('--split-by', choices=('seed', 'scene'), default='seed',
                        help='data set split: hash of the seed (default; every preset of one '
                             'seed in one split, they share their objects) or of the scene '
                             'name (the data set of the shipped weights)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')


def _overrides(args: argparse.Namespace) -> dict:
    out: dict = {}
    if args.duration is not None:
        out['duration_s'] = args.duration
    if args.fps is not None:
        out['fps'] = args.fps
    if args.size:
        try:
            width, height = (int(v) for v in args.size.lower().split('x'))
        except ValueError:
            raise ScenarioError(f'--size must be WxH, got {args.size!r}') from None
        out['rig'] = {'width': width, 'height': height}
    return out


def _render_one(job: tuple) -> str:
    name_or_path, seed, overrides, out_dir, overwrite = job
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    from persistence_ros.simulation.generate import generate_scene
    generate_scene(load_scenario(name_or_path, seed=seed, overrides=overrides), out_dir,
                   overwrite=overwrite)
    return str(out_dir)


def render_scenes(scenarios: List[str], seed: Optional[int], scenes: int, out,
                  overrides: Optional[dict] = None, workers: int = 1, overwrite: bool = False,
                  progress: bool = True) -> List[Path]:
    """
    Render ``scenes`` seeds of each scenario; return the scene directories.

    With one scenario and one scene, ``out`` is the scene directory itself.
    """
    from persistence_ros.simulation.dataset import scene_name
    from persistence_ros.simulation.generate import scene_files
    out = Path(out)
    jobs = []
    for name in scenarios:
        base = load_scenario(name, seed=seed, overrides=overrides)  # validates early
        for k in range(scenes):
            scene_seed = int(base['seed']) + k
            single = len(scenarios) == 1 and scenes == 1
            # the folder is named from the scenario's name made a safe file name, never from
            # the argument (a path) nor a name that could point outside ``out``
            directory = out if single else out / scene_name(file_name(base['name']), scene_seed)
            jobs.append((name, scene_seed, overrides or {}, directory, overwrite))
    directories = [Path(job[3]) for job in jobs]
    twice = sorted({str(d) for d in directories if directories.count(d) > 1})
    if twice:
        raise ValueError(f'two scenarios would render into the same folder: {twice} (give '
                         'the scenario files different names)')
    for directory in directories:  # before rendering anything
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
        context = multiprocessing.get_context('spawn')  # fresh GL context per worker
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(_render_one, job) for job in jobs]
            for future in as_completed(futures):
                done.append(Path(future.result()))
                bar.update()
    bar.close()
    return sorted(done)


def main(args: argparse.Namespace) -> int:
    """Run ``simulate``; return the exit status."""
    scenarios = args.scenario or ['mixed_hard']
    try:
        if args.from_scenes:
            if not args.dataset:
                print('simulate: --from-scenes needs --dataset', file=sys.stderr)
                return 2
            from persistence_ros.simulation.dataset import find_scene_dirs
            scene_dirs = find_scene_dirs(args.out)
        else:
            start = time.monotonic()
            scene_dirs = render_scenes(scenarios, args.seed, args.scenes, args.out,
                                       _overrides(args), args.workers, args.overwrite,
                                       progress=not args.quiet)
            print(f'simulate: {len(scene_dirs)} scene(s) in {time.monotonic() - start:.1f} s '
                  f'under {args.out}')
        if args.dataset:
            from persistence_ros.simulation.dataset import build_dataset
            wrap = None if args.quiet else (lambda it: tqdm(it, desc='dataset', file=sys.stderr))
            manifest = build_dataset(scene_dirs, args.dataset, crop_size=args.crop_size,
                                     context=args.context, progress=wrap,
                                     split_by=args.split_by)
            tracks = sum(e['tracks'] for e in manifest['scenes'])
            print(f'simulate: data set of {len(manifest["scenes"])} scene(s), {tracks} tracks '
                  f'in {args.dataset}')
    except (ScenarioError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f'simulate: {error}', file=sys.stderr)
        return 2
    return 0
