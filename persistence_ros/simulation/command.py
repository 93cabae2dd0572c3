"""
``persistence-ros simulate``: render scenes to rosbag2 + truth.json, optionally a data set.

One scene (``--scenes 1``): ``--out DIR`` is the bag directory (``truth.json`` inside).
Several scenes: ``DIR/<scenario>-s<seed>/`` for seeds ``seed .. seed+N-1``, rendered by
``--workers`` processes. ``--dataset DATASET_DIR`` then builds the training data set from the
scenes just rendered (or, with ``--from-scenes``, from scenes already under ``--out``).
``--dataset`` without ``--out`` renders in memory and writes only the data set (no bags).
"""

import argparse
from pathlib import Path
import sys
import time
from typing import List, Optional

from persistence_ros.simulation.parallel import map_jobs, progress_bar, render_job, RenderJob
from persistence_ros.simulation.scenario import (file_name, list_presets, load_scenario,
                                                 ScenarioError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` options to ``parser``."""
    parser.add_argument('--scenario', action='append', default=None,
                        help='preset name (%s) or path to a scenario YAML; repeat to mix '
                        'scenarios (default: mixed_hard)' % ', '.join(list_presets()))
    parser.add_argument('--seed', type=int, default=None,
                        help="seed of the first scene (default: the scenario file's seed)")
    parser.add_argument('--out', default=None, help='output: the bag directory for one scene, '
                        'a folder of scene directories for several (without it, --dataset '
                        'renders in memory and writes no bag)')
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
    parser.add_argument('--append', action='store_true',
                        help='with --dataset: add the scenes to the data set already there '
                             '(same crops, split and feature columns; its scenes are kept)')
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
    """Return the scenario overrides of the command line (``--duration``, ``--fps``, ...)."""
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


def _check_overrides(base: dict, overrides: dict) -> None:
    """Refuse overrides that a randomize section of ``base`` would replace by its draw."""
    from persistence_ros.simulation.randomize import conflicts
    clash = conflicts(base, overrides)
    if clash:
        raise ScenarioError(f'scenario {base["name"]!r} draws {", ".join(clash)} per scene: '
                            'the override would be ignored; drop it or disable that '
                            'randomize section')


def _scene_list(scenarios: List[str], seed: Optional[int], scenes: int,
                overrides: Optional[dict]) -> List[tuple]:
    """Return ``(name or path, validated scenario)`` of every scene to make, in order."""
    out = []
    for name in scenarios:
        base = load_scenario(name, seed=seed, overrides=overrides)  # validates early
        _check_overrides(base, overrides or {})
        for k in range(scenes):
            out.append((name, load_scenario(name, seed=int(base['seed']) + k,
                                            overrides=overrides)))
    return out


def render_scenes(scenarios: List[str], seed: Optional[int], scenes: int, out,
                  overrides: Optional[dict] = None, workers: int = 1, overwrite: bool = False,
                  progress: bool = True) -> List[Path]:
    """
    Render ``scenes`` seeds of each scenario; return the scene directories.

    With one scenario and one scene, ``out`` is the scene directory itself.
    """
    from persistence_ros.simulation.dataset import scene_name
    from persistence_ros.simulation.scene_writer import check_scene_folders
    out = Path(out)
    jobs = []
    single = len(scenarios) == 1 and scenes == 1
    for name, scenario in _scene_list(scenarios, seed, scenes, overrides):
        # the folder is named from the scenario's name made a safe file name, never from
        # the argument (a path) nor a name that could point outside ``out``
        directory = out if single else out / scene_name(file_name(scenario['name']),
                                                        int(scenario['seed']))
        jobs.append(RenderJob('persistence_ros.simulation.scenario.load_scenario',
                              'persistence_ros.simulation.generate.generate_scene',
                              name, int(scenario['seed']), overrides or {}, directory,
                              overwrite))
    check_scene_folders([job.out_dir for job in jobs], overwrite)  # before rendering
    return sorted(Path(d) for d in map_jobs(render_job, jobs, workers,
                                            progress_bar(len(jobs), 'scenes', progress)))


def simulate_dataset(scenarios: List[str], seed: Optional[int], scenes: int, dataset,
                     overrides: Optional[dict] = None, workers: int = 1, progress: bool = True,
                     crop_size: int = 64, context: float = 0.25, split_by: str = 'seed',
                     append: bool = False) -> dict:
    """Render ``scenes`` seeds of each scenario in memory into a data set; return the manifest."""
    from persistence_ros.simulation.dataset import build_simulated_dataset
    todo = [scenario for _, scenario in _scene_list(scenarios, seed, scenes, overrides)]
    return build_simulated_dataset(todo, dataset, crop_size=crop_size, context=context,
                                   workers=workers,
                                   progress=progress_bar(len(todo), 'dataset', progress),
                                   split_by=split_by, append=append)


def main(args: argparse.Namespace) -> int:
    """Run ``simulate``; return the exit status."""
    scenarios = args.scenario or ['mixed_hard']
    if not args.out and not args.dataset:
        print('simulate: give --out (bags) or --dataset (a data set rendered in memory)',
              file=sys.stderr)
        return 2
    try:
        if not args.out:
            start = time.monotonic()
            manifest = simulate_dataset(scenarios, args.seed, args.scenes, args.dataset,
                                        _overrides(args), args.workers, not args.quiet,
                                        args.crop_size, args.context, args.split_by,
                                        args.append)
            tracks = sum(e['tracks'] for e in manifest['scenes'])
            print(f'simulate: data set of {len(manifest["scenes"])} scene(s), {tracks} tracks '
                  f'in {args.dataset}, rendered in memory in {time.monotonic() - start:.1f} s')
            return 0
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
            wrap = progress_bar(None, 'dataset', not args.quiet)
            manifest = build_dataset(scene_dirs, args.dataset, crop_size=args.crop_size,
                                     context=args.context, progress=wrap,
                                     split_by=args.split_by, append=args.append)
            tracks = sum(e['tracks'] for e in manifest['scenes'])
            print(f'simulate: data set of {len(manifest["scenes"])} scene(s), {tracks} tracks '
                  f'in {args.dataset}')
    except (ScenarioError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f'simulate: {error}', file=sys.stderr)
        return 2
    return 0
