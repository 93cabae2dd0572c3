"""
``persistence-ros composite``: composite scenes onto real stereo photographs.

One scene (one preset, ``--scenes 1``): ``--out DIR`` is the scene directory. Several:
``DIR/<preset>-s<seed>/`` for seeds ``seed .. seed+N-1``. The output is the format of
``persistence-ros simulate`` (rosbag2 + ``truth.json``), so ``evaluate --bag`` and the
data-set builder (``simulate --from-scenes --dataset``, or ``--dataset`` here) read it.
"""

import argparse
import json
import os
from pathlib import Path
import sys
import time
from typing import List, Optional

from persistence_ros.composite.presets import list_presets, load_preset
from persistence_ros.simulation.parallel import map_jobs, progress_bar, render_job, RenderJob
from persistence_ros.simulation.scenario import file_name, ScenarioError
from persistence_ros.simulation.scene_writer import check_scene_folders, TRUTH_FILE


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
            jobs.append(RenderJob('persistence_ros.composite.presets.load_preset',
                                  'persistence_ros.composite.generate.generate_composite_scene',
                                  name, scene_seed, overrides or {},
                                  out if single else out / folder, overwrite))
    check_scene_folders([job.out_dir for job in jobs], overwrite)  # before compositing
    return sorted(Path(d) for d in map_jobs(render_job, jobs, workers,
                                            progress_bar(len(jobs), 'scenes', progress)))


def main(args: argparse.Namespace) -> int:
    """Run ``composite``; return the exit status."""
    try:
        if args.scenes < 1:
            raise ValueError('--scenes must be >= 1')
        start = time.monotonic()
        scene_dirs = composite_scenes(args.preset or ['composite_mixed_hard'], args.seed,
                                      args.scenes, args.out, overrides_of(args), args.workers,
                                      args.overwrite, progress=not args.quiet)
        seconds = time.monotonic() - start
        frames = sum(len(json.loads((d / TRUTH_FILE).read_text())['frames'])
                     for d in scene_dirs)
        print(f'composite: {len(scene_dirs)} scene(s), {frames} stereo frames in {seconds:.1f} s '
              f'({frames / max(seconds, 1e-9):.2f} stereo frames/s, {args.workers} worker(s), '
              f'load average {os.getloadavg()[0]:.1f}) under {args.out}')
        if args.dataset:
            from persistence_ros.simulation.dataset import build_dataset
            wrap = progress_bar(None, 'dataset', not args.quiet)
            manifest = build_dataset(scene_dirs, args.dataset, progress=wrap)
            tracks = sum(e['tracks'] for e in manifest['scenes'])
            print(f'composite: data set of {len(manifest["scenes"])} scene(s), {tracks} tracks '
                  f'in {args.dataset}')
    except (ScenarioError, FileExistsError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f'composite: {error}', file=sys.stderr)
        return 2
    return 0
