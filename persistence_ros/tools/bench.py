"""
``persistence-ros bench``: speed measurements, printed with the machine they ran on.

Performance is measured here, never in timed tests. Record results (with this output's machine
line, the date and the command) in docs/benchmarks.md.
"""

import argparse
import datetime
import json
import os
from pathlib import Path
import platform
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options."""
    parser.add_argument('target', choices=('model', 'render', 'pipeline', 'fuzz', 'soak'),
                        help='model: streaming latency of the persistence model for 1/8/32/64 '
                             'tracks vs re-encoding the window; render: simulator frames/s '
                             '(one bag scene; per --sizes; or, for a randomized scenario or '
                             '--scenes > 1, seconds per in-memory data-set scene); '
                             'pipeline: core per-frame latency (trackers, stereo, filter); '
                             'fuzz: malformed messages of every kind against a running node '
                             '(counters, WARN, recovery, RSS); soak: valid frames at a rate '
                             'for a duration (RSS drift, drops)')
    parser.add_argument('--config', default='cpu', help='model config (model target)')
    parser.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    parser.add_argument('--device', default='cpu',
                        help='cpu, cuda[:N] or auto (model target)')
    parser.add_argument('--frames', type=int, default=40, help='streamed frames per size')
    parser.add_argument('--tracks', default='1,8,32,64', help='concurrent track counts')
    parser.add_argument('--scenario', default='mixed_hard', help='render/pipeline scene')
    parser.add_argument('--filter', default=None,
                        help="filter name (pipeline target: default 'score'; fuzz/soak: the "
                             "node's default)")
    parser.add_argument('--sizes', default=None, metavar='WxH,...',
                        help='render target: frames/s of --frames frames at each size '
                             '(e.g. 320x240,640x480,1280x720)')
    parser.add_argument('--scenes', type=int, default=1,
                        help='render target: scenes (seeds --seed ..) rendered in memory into '
                             'data-set arrays, timed one by one')
    parser.add_argument('--seed', type=int, default=100,
                        help='render target: first seed of --scenes (default 100)')
    parser.add_argument('--workers', type=int, default=1,
                        help='render target: processes for --scenes (default 1)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='pipeline target: override a core pipeline setting, e.g. '
                             'tracker.appearance_gate=1.0; fuzz/soak: a node parameter '
                             '(repeatable)')
    fuzz = parser.add_argument_group('fuzz and soak (a persistence_node process over DDS)')
    fuzz.add_argument('--rate', type=float, default=15.0, help='valid frames per second')
    fuzz.add_argument('--objects', type=int, default=8, help='objects of the valid scene')
    fuzz.add_argument('--width', type=int, default=320, help='image width')
    fuzz.add_argument('--height', type=int, default=240, help='image height')
    fuzz.add_argument('--malformed', type=int, default=0,
                      help='fuzz: repeat the kinds until this many malformed messages')
    fuzz.add_argument('--rounds', type=int, default=1, help='fuzz: rounds over the kinds')
    fuzz.add_argument('--burst', type=int, default=1,
                      help='fuzz: publish each (non-flood) kind this many times back to back')
    fuzz.add_argument('--kinds', default='', help='fuzz: comma-separated kinds (default all)')
    fuzz.add_argument('--duration', type=float, default=600.0, help='soak: seconds')
    fuzz.add_argument('--warmup', type=float, default=60.0, help='soak: warm-up seconds')
    fuzz.add_argument('--node-log', default='', help='write the node output here')
    parser.add_argument('--json', help='also write the result as JSON here')


def machine() -> Dict:
    """Return what the numbers ran on."""
    import torch
    info = {'date': datetime.date.today().isoformat(), 'host_cpus': os.cpu_count(),
            'platform': platform.platform(), 'python': platform.python_version(),
            'torch': torch.__version__, 'load_average_1min': os.getloadavg()[0]}
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name(0)
    return info


def bench_render(scenario: str, frames: int, overrides: Optional[Dict] = None) -> Dict:
    """Render ``frames`` stereo frames of a scenario and time it (includes detection, bag)."""
    from persistence_ros.simulation.generate import generate_scene
    from persistence_ros.simulation.scenario import load_scenario
    spec = load_scenario(scenario, overrides=overrides)
    spec = load_scenario(scenario, overrides=dict(overrides or {},
                                                  duration_s=frames / float(spec['fps'])))
    with tempfile.TemporaryDirectory() as tmp:
        started, cpu = time.perf_counter(), time.process_time()
        truth = generate_scene(spec, Path(tmp) / 'scene')
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        size = sum(p.stat().st_size for p in (Path(tmp) / 'scene').iterdir())
    count = len(truth['frames'])
    return {'scenario': scenario, 'stereo_frames': count, 'seconds': seconds,
            'stereo_frames_per_s': count / seconds, 'cpu_s': cpu,
            'stereo_frames_per_cpu_s': count / cpu, 'bytes': size,
            'bytes_per_10s': size * 10.0 * float(spec['fps']) / count}


def bench_render_sizes(scenario: str, frames: int, sizes: str) -> List[Dict]:
    """Return ``bench_render`` of ``frames`` stereo frames at each ``WxH`` of ``sizes``."""
    out = []
    for size in sizes.split(','):
        try:
            width, height = (int(v) for v in size.lower().split('x'))
        except ValueError:
            raise ValueError(f'--sizes expects WxH,WxH,..., got {size!r}') from None
        result = bench_render(scenario, frames, {'rig': {'width': width, 'height': height}})
        out.append(dict(result, width=width, height=height))
        print(f'{width}x{height}: {result["stereo_frames_per_s"]:.2f} stereo frames/s, '
              f'{result["stereo_frames_per_cpu_s"]:.2f} per CPU second '
              f'({result["stereo_frames"]} frames in {result["seconds"]:.1f} s)', flush=True)
    return out


def _timed_scene(job: tuple) -> Dict:
    """Render one scene in memory into data-set arrays; return its rig and timings."""
    scenario, = job
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    from persistence_ros.simulation.dataset import simulated_scene_arrays
    started, cpu = time.perf_counter(), time.process_time()
    timings: Dict = {}
    arrays, truth = simulated_scene_arrays(scenario, timings=timings)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    left = truth['rig']['left']
    frames = len(truth['frames'])
    return {'seed': int(truth['seed']), 'width': left['image_width'],
            'height': left['image_height'], 'fps': truth['fps'], 'frames': frames,
            'distorted': any(left['distortion_coefficients']['data']),
            'blur_subframes': truth.get('drawn', {}).get('looks', {}).get('blur_subframes', 1),
            'seconds': seconds, 'cpu_s': cpu, 'render_s': timings['render_s'],
            'stereo_frames_per_s': frames / seconds, 'tracks': int(len(arrays['track_label'])),
            'rows': int(len(arrays['frame_label']))}


def bench_render_scenes(scenario: str, seed: int, scenes: int, workers: int = 1) -> Dict:
    """
    Time ``scenes`` seeds of a scenario rendered in memory into data-set arrays.

    What ``simulate --dataset`` (without ``--out``) does per scene: render, looks, detect,
    label, run the pipeline, cut crops and geometry rows. ``render_s`` is the part spent
    making frames; ``cpu_s`` the CPU time of the scene's process (all its threads, Mesa's
    too): unlike wall time it hardly depends on what else runs on the machine, so
    ``cpu_hours_per_100_scenes`` is the estimate to plan with (two busy cores give two CPU
    hours per hour). With ``workers`` > 1 the scenes run in parallel; ``wall_s`` is the whole.
    """
    from persistence_ros.simulation.parallel import map_jobs
    from persistence_ros.simulation.scenario import load_scenario
    jobs = [(load_scenario(scenario, seed=seed + k),) for k in range(scenes)]
    started = time.perf_counter()
    rows = []
    for row in map_jobs(_timed_scene, jobs, workers):
        rows.append(row)
        print(f'seed {row["seed"]}: {row["width"]}x{row["height"]} {row["fps"]:.1f} fps, '
              f'{row["frames"]} frames in {row["seconds"]:.1f} s (CPU {row["cpu_s"]:.1f} s, '
              f'render {row["render_s"]:.1f} s), {row["stereo_frames_per_s"]:.2f} frames/s, '
              f'{row["tracks"]} tracks',
              flush=True)
    wall = time.perf_counter() - started
    rows.sort(key=lambda r: r['seed'])
    mean = statistics.mean(r['seconds'] for r in rows)
    return {'scenario': scenario, 'scenes': rows, 'workers': workers, 'wall_s': wall,
            'mean_seconds_per_scene': mean,
            'median_seconds_per_scene': statistics.median(r['seconds'] for r in rows),
            'mean_frames_per_scene': statistics.mean(r['frames'] for r in rows),
            'mean_cpu_s_per_scene': statistics.mean(r['cpu_s'] for r in rows),
            'cpu_hours_per_100_scenes': 100.0 * statistics.mean(r['cpu_s'] for r in rows)
            / 3600.0,
            'scenes_per_hour': 3600.0 * len(rows) / wall}


def bench_pipeline(scenario: str, filter_name: str, frames: int, settings=None) -> Dict:
    """
    Time ``StereoPipeline.process`` per frame on a rendered scene.

    ``settings``: the ``Settings`` (defaults when None); ``filter_name`` replaces its
    ``filter.name``.
    """
    from persistence_ros.evaluation.runner import build_scene_filter
    from persistence_ros.evaluation.scoring import Truth
    from persistence_ros.offline_runner import needs_images, read_stereo_bag
    from persistence_ros.overrides import replace_fields
    from persistence_ros.settings import Settings
    from persistence_ros.pipeline import StereoPipeline
    from persistence_ros.simulation.generate import generate_scene
    from persistence_ros.simulation.scenario import load_scenario
    spec = load_scenario(scenario)
    spec = load_scenario(scenario, overrides={'duration_s': frames / float(spec['fps'])})
    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / 'scene'
        generate_scene(spec, scene)
        truth = Truth.load(scene / 'truth.json')
        settings = replace_fields(settings if settings is not None else Settings(),
                                  {'filter.name': filter_name})
        filt = build_scene_filter(settings, truth)
        calibration, stereo_frames = read_stereo_bag(scene,
                                                     with_images=needs_images(filt, settings))
    pipeline = StereoPipeline(calibration, settings, filt)
    times, tracks = [], []
    for frame in stereo_frames:
        started = time.perf_counter()
        result = pipeline.process(frame.left, frame.right, frame.left_image, frame.right_image)
        times.append(1000.0 * (time.perf_counter() - started))
        tracks.append(len(result.tracks))
    times.sort()
    return {'scenario': scenario, 'filter': filter_name, 'frames': len(times),
            'stereo_tracks_mean': statistics.mean(tracks), 'stereo_tracks_max': max(tracks),
            'median_ms': statistics.median(times), 'p99_ms': times[int(0.99 * (len(times) - 1))]}


def _track_counts(text: str) -> tuple:
    """Return the ``--tracks`` counts (``1,8,32``); ValueError unless integers >= 1."""
    try:
        counts = tuple(int(n) for n in text.split(','))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise ValueError(f'--tracks expects comma-separated integers >= 1, got {text!r}')
    return counts


def main(args: argparse.Namespace) -> int:
    """
    Run a benchmark and print the result with the machine it ran on.

    A bad option, scenario, config or device: a one-line message on stderr, exit status 2.
    """
    try:
        result = _run(args)
    except (OSError, ValueError) as error:
        print(f'persistence-ros bench: error: {error}', file=sys.stderr)
        return 2
    except RuntimeError as error:  # learned filter weights that do not load
        from persistence_ros.model.checkpoint import CheckpointError
        if not isinstance(error, CheckpointError):
            raise
        print(f'persistence-ros bench: error: {error}', file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str) + '\n')
    return 0


def _render(args: argparse.Namespace) -> Dict:
    """Run the render benchmark ``args`` ask for (see ``add_arguments``)."""
    from persistence_ros.simulation.randomize import is_randomized
    from persistence_ros.simulation.scenario import load_scenario
    if args.sizes:
        return {'sizes': bench_render_sizes(args.scenario, args.frames, args.sizes)}
    if args.scenes > 1 or is_randomized(load_scenario(args.scenario)):
        result = bench_render_scenes(args.scenario, args.seed, max(1, args.scenes),
                                     args.workers)
        print(json.dumps({k: v for k, v in result.items() if k != 'scenes'}, indent=1))
        return result
    result = bench_render(args.scenario, args.frames)
    print(json.dumps(result, indent=1))
    return result


def _run(args: argparse.Namespace) -> Dict:
    """Run the benchmark ``args`` ask for; print and return the result."""
    for name in ('frames', 'threads', 'scenes', 'workers'):
        if getattr(args, name) < 1:
            raise ValueError(f'--{name} must be >= 1, got {getattr(args, name)}')
    tracks = _track_counts(args.tracks) if args.target == 'model' else None
    result = {'machine': machine(), 'command': ' '.join(sys.argv[1:]) or args.target}
    if args.target in ('fuzz', 'soak'):
        # an adapter (rclpy): imported by name when asked for, as the cli imports replay, so
        # that the tools stay core and the other targets run without ROS
        import importlib
        fuzz = importlib.import_module('persistence_ros.ros.fuzz')
        args.set = [item if ':=' in item else item.replace('=', ':=', 1) for item in args.set]
        result[args.target] = report = fuzz.main(args)
        if args.target == 'fuzz':
            print(fuzz.format_fuzz(report))
            print(json.dumps({k: v for k, v in report.items() if k != 'results'}, indent=1))
        else:
            print(json.dumps({k: v for k, v in report.items() if k != 'rss_samples'},
                             indent=1))
    elif args.target == 'model':
        from persistence_ros.model.bench import bench_streaming, format_bench
        result['model'] = bench_streaming(args.config, tracks=tracks,
                                          frames=args.frames, threads=args.threads,
                                          device=args.device)
        print(format_bench(result['model']))
    elif args.target == 'render':
        result['render'] = _render(args)
    else:
        import torch
        torch.set_num_threads(args.threads)
        from persistence_ros.overrides import parse_overrides, replace_fields
        from persistence_ros.settings import Settings
        overrides = parse_overrides(args.set)
        settings = replace_fields(Settings(), overrides)
        result['pipeline'] = bench_pipeline(args.scenario, args.filter or 'score', args.frames,
                                            settings)
        result['pipeline']['settings'] = overrides
        print(json.dumps(result['pipeline'], indent=1))
    print('machine:', json.dumps(result['machine']))
    return result
