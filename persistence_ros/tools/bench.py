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
from typing import Dict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options."""
    parser.add_argument('target', choices=('model', 'render', 'pipeline', 'fuzz', 'soak'),
                        help='model: streaming latency of the persistence model for 1/8/32/64 '
                             'tracks vs re-encoding the window; render: simulator frames/s; '
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


def bench_render(scenario: str, frames: int) -> Dict:
    """Render ``frames`` stereo frames of a scenario and time it (includes detection, bag)."""
    from persistence_ros.simulation.generate import generate_scene
    from persistence_ros.simulation.scenario import load_scenario
    spec = load_scenario(scenario)
    spec = load_scenario(scenario, overrides={'duration_s': frames / float(spec['fps'])})
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        truth = generate_scene(spec, Path(tmp) / 'scene')
        seconds = time.perf_counter() - started
        size = sum(p.stat().st_size for p in (Path(tmp) / 'scene').iterdir())
    count = len(truth['frames'])
    return {'scenario': scenario, 'stereo_frames': count, 'seconds': seconds,
            'stereo_frames_per_s': count / seconds, 'bytes': size,
            'bytes_per_10s': size * 10.0 * float(spec['fps']) / count}


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


def _run(args: argparse.Namespace) -> Dict:
    """Run the benchmark ``args`` ask for; print and return the result."""
    for name in ('frames', 'threads'):
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
        result['render'] = bench_render(args.scenario, args.frames)
        print(json.dumps(result['render'], indent=1))
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
