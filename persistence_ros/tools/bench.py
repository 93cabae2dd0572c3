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
    parser.add_argument('target',
                        choices=('model', 'render', 'pipeline', 'age', 'fuzz', 'soak'),
                        help='model: streaming latency of the persistence model for 1/8/32/64 '
                             'tracks vs re-encoding the window; render: simulator frames/s '
                             '(one bag scene; per --sizes; or, for a randomized scenario or '
                             '--scenes > 1, seconds per in-memory data-set scene); '
                             'pipeline: core per-frame latency per stage (trackers, stereo, '
                             'filter); age: the pipeline over a long generated stream of '
                             '--frames frames (default 32 objects, 640x480, 30 fps, learned), '
                             'early frames against late ones; '
                             'fuzz: malformed messages of every kind against a running node '
                             '(counters, WARN, recovery, RSS); soak: valid frames at a rate '
                             'for a duration (RSS drift, drops)')
    parser.add_argument('--config', default='cpu', help='model config (model target)')
    parser.add_argument('--threads', type=int, default=0,
                        help="torch threads (default 0: the node's rule, cores - 1, 1 to 4)")
    parser.add_argument('--device', default='cpu',
                        help='cpu, cuda[:N] or auto (model target)')
    parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'),
                        help='model target: bfloat16 runs the steps under torch.autocast')
    parser.add_argument('--frames', type=int, default=40, help='streamed frames per size')
    parser.add_argument('--tracks', default='1,8,32,64', help='concurrent track counts')
    parser.add_argument('--scenario', default='mixed_hard', help='render/pipeline scene')
    parser.add_argument('--filter', default=None,
                        help="filter name (pipeline target: default 'score'; fuzz/soak: the "
                             "node's default)")
    parser.add_argument('--bag', type=Path, default=None,
                        help='pipeline target: a simulator scene folder (bag + truth.json) to '
                             'run instead of rendering one (the same input for runs to compare)')
    parser.add_argument('--objects', type=int, default=None,
                        help='pipeline target: objects.count of the rendered scene (default: '
                             "the scenario's); fuzz/soak: objects of the valid scene "
                             '(default 8)')
    parser.add_argument('--size', default=None, metavar='WxH',
                        help='pipeline target: override the render size, e.g. 640x480')
    parser.add_argument('--fps', type=float, default=None,
                        help="pipeline target: override the scene's frame rate")
    parser.add_argument('--seed', type=int, default=None,
                        help="pipeline target: the rendered scene's seed (default: the file's); "
                             'render target: first seed of --scenes (default 100)')
    parser.add_argument('--sizes', default=None, metavar='WxH,...',
                        help='render target: frames/s of --frames frames at each size '
                             '(e.g. 320x240,640x480,1280x720)')
    parser.add_argument('--scenes', type=int, default=1,
                        help='render target: scenes (seeds --seed ..) rendered in memory into '
                             'data-set arrays, timed one by one')
    parser.add_argument('--workers', type=int, default=1,
                        help='render target: processes for --scenes (default 1)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='pipeline target: override a core pipeline setting, e.g. '
                             'tracker.appearance_gate=1.0; fuzz/soak: a node parameter '
                             '(repeatable)')
    fuzz = parser.add_argument_group('fuzz and soak (a persistence_node process over DDS)')
    fuzz.add_argument('--rate', type=float, default=15.0, help='valid frames per second')
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


def scene_overrides(frames: int, fps: Optional[float] = None, objects: Optional[int] = None,
                    size: Optional[str] = None, base_fps: float = 15.0) -> Dict:
    """
    Return the scenario overrides of a benchmark scene: ``frames`` at ``fps``, objects, size.

    ``size``: ``WxH`` (e.g. ``640x480``); ValueError when it is not two integers.
    """
    fps = float(fps) if fps else float(base_fps)
    overrides: Dict = {'fps': fps, 'duration_s': frames / fps}
    if objects is not None:
        overrides['objects'] = {'count': int(objects)}
    if size:
        try:
            width, height = (int(v) for v in size.lower().split('x'))
        except ValueError:
            raise ValueError(f'--size expects WxH, e.g. 640x480, got {size!r}') from None
        overrides['rig'] = {'width': width, 'height': height}
    return overrides


def _load_scene(scene: Path, settings, filter_name: str):
    """Return (settings with the scene's floor as plane, filter, calibration, frames)."""
    from persistence_ros.evaluation.runner import build_scene_filter, scene_settings
    from persistence_ros.evaluation.scoring import Truth
    from persistence_ros.offline_runner import needs_images, read_stereo_bag
    from persistence_ros.overrides import replace_fields
    from persistence_ros.settings import Settings
    truth_path = scene / 'truth.json'
    truth = Truth.load(truth_path) if truth_path.is_file() else None
    settings = replace_fields(settings if settings is not None else Settings(),
                              {'filter.name': filter_name})
    # the learned filter and the ground-plane rule read the floor, as on a robot that knows it
    settings = scene_settings(settings, truth, plane_from_truth=True)
    filt = build_scene_filter(settings, truth)
    calibration, frames = read_stereo_bag(scene, with_images=needs_images(filt, settings))
    return settings, filt, calibration, frames


def bench_pipeline(scenario: str, filter_name: str, frames: int, settings=None,
                   bag: Optional[Path] = None, overrides: Optional[Dict] = None,
                   seed: Optional[int] = None) -> Dict:
    """
    Time ``StereoPipeline.process`` per frame and per stage on a scene.

    The scene is ``bag`` (a simulator scene folder: bag + truth.json) or, without it, one
    rendered from ``scenario`` (``overrides``: ``scene_overrides``; ``frames`` frames).
    ``settings``: the ``Settings`` (defaults when None); ``filter_name`` replaces its
    ``filter.name``; the scene's floor (truth.json) is the ground plane.  Returns the
    per-stage p50/p99/max of wall and process CPU time (``timing.StageTimer``), totals,
    throughput and the slowest frames with what they spent their time on.
    """
    if bag is not None:
        scene_name = str(bag)
        settings, filt, calibration, stereo_frames = _load_scene(Path(bag), settings,
                                                                 filter_name)
    else:
        from persistence_ros.simulation.generate import generate_scene
        from persistence_ros.simulation.scenario import load_scenario
        base = load_scenario(scenario, seed=seed)
        spec = load_scenario(scenario, seed=seed, overrides=dict(
            overrides or scene_overrides(frames, base_fps=base['fps'])))
        scene_name = f"{scenario} (seed {spec['seed']}, {spec['rig']['width']}x" \
                     f"{spec['rig']['height']}, {spec['fps']:g} fps, " \
                     f"{spec['objects']['count']} objects)"
        with tempfile.TemporaryDirectory() as tmp:
            generate_scene(spec, Path(tmp) / 'scene')
            settings, filt, calibration, stereo_frames = _load_scene(
                Path(tmp) / 'scene', settings, filter_name)
    if frames and bag is not None:
        stereo_frames = stereo_frames[:frames]
    result = time_pipeline(calibration, stereo_frames, settings, filt)
    result.pop('_timer')
    result.update({'scene': scene_name, 'filter': filter_name})
    return result


def time_pipeline(calibration, stereo_frames, settings, filt,
                  count: Optional[int] = None) -> Dict:
    """
    Run the frames through a ``StereoPipeline`` with a CPU-timing ``StageTimer``; summarise.

    ``stereo_frames``: a sequence, or an iterable of ``count`` frames (a generated stream).
    """
    import gc

    from persistence_ros.pipeline import PIPELINE_STAGES, StereoPipeline
    from persistence_ros.timing import StageTimer
    count = len(stereo_frames) if count is None else count
    timer = StageTimer(PIPELINE_STAGES, window=max(1, count), cpu=True)
    pipeline = StereoPipeline(calibration, settings, filt, timer=timer)
    stats = getattr(filt, 'stats', None)
    gc_ms = [0.0]
    gc_start = [0.0]

    def on_gc(phase, info):
        if phase == 'start':
            gc_start[0] = time.perf_counter()
        else:
            gc_ms[0] += 1e3 * (time.perf_counter() - gc_start[0])

    per_frame = []
    gc.callbacks.append(on_gc)
    try:
        for index, frame in enumerate(stereo_frames):
            gc_ms[0] = 0.0
            encoded = stats.frames_encoded if stats is not None else 0
            started = time.perf_counter()
            result = pipeline.process(frame.left, frame.right, frame.left_image,
                                      frame.right_image)
            per_frame.append({'frame': index, 'ms': 1e3 * (time.perf_counter() - started),
                              'tracks': len(result.tracks), 'gc_ms': gc_ms[0],
                              'frames_encoded': (stats.frames_encoded - encoded
                                                 if stats is not None else 0)})
    finally:
        gc.callbacks.remove(on_gc)
    result = summarise_frames(timer, per_frame)
    result['_timer'] = timer  # for callers that look at frame ranges (bench age); not JSON
    return result


def bench_age(frames: int, objects: int, size: str, fps: float, filter_name: str,
              settings=None, windows: int = 100) -> Dict:
    """
    Time the pipeline over a long generated stream (``long_stream``): cost against track age.

    Returns the whole run's statistics and, per stage, the p50 (wall and CPU) of the
    ``windows`` frames from frame 50 (a quarter of a short run) and of the last ``windows``
    frames: equal p50s mean the cost of a frame does not grow with the age of its tracks.
    """
    import numpy as np

    from persistence_ros.filter_factory import build_filter
    from persistence_ros.overrides import replace_fields
    from persistence_ros.settings import Settings
    from persistence_ros.tools import long_stream
    width, height = (int(v) for v in size.lower().split('x'))
    settings = replace_fields(settings if settings is not None else Settings(),
                              {'filter.name': filter_name,
                               'filter.ground_plane': list(long_stream.GROUND_PLANE)})
    filt = build_filter(settings)
    calibration = long_stream.rig(width, height)
    result = time_pipeline(calibration, long_stream.stream(frames, objects, width, height, fps),
                           settings, filt, count=frames)
    timer = result.pop('_timer')
    wall, cpu = timer.samples_ms('wall'), timer.samples_ms('cpu')
    start = min(50, frames // 4)  # after the first pairs formed and were decided
    early = slice(start, min(start + windows, frames))
    late = slice(max(0, frames - windows), frames)
    result['age'] = {
        'early_frames': [early.start, early.stop], 'late_frames': [late.start, late.stop],
        'stages': {name: {'early_p50': float(np.median(wall[early, k])),
                          'late_p50': float(np.median(wall[late, k])),
                          'early_cpu_p50': float(np.median(cpu[early, k])),
                          'late_cpu_p50': float(np.median(cpu[late, k]))}
                   for k, name in enumerate(list(timer.stages))}}
    for clock, data in (('', wall), ('cpu_', cpu)):
        total = data.sum(axis=1)
        result['age'][f'{clock}early_p50'] = float(np.median(total[early]))
        result['age'][f'{clock}late_p50'] = float(np.median(total[late]))
    result.update({'scene': f'long_stream ({objects} spheres, {width}x{height}, {fps:g} fps)',
                   'filter': filter_name})
    return result


def format_age(result: Dict) -> str:
    """Return the early/late p50 table of a ``bench_age`` result."""
    age = result['age']
    lines = [f"p50 ms of frames {age['early_frames'][0]}-{age['early_frames'][1] - 1} against "
             f"{age['late_frames'][0]}-{age['late_frames'][1] - 1}:",
             'stage          wall early   late  | cpu early   late']
    rows = list(age['stages'].items()) + [('total', {
        'early_p50': age['early_p50'], 'late_p50': age['late_p50'],
        'early_cpu_p50': age['cpu_early_p50'], 'late_cpu_p50': age['cpu_late_p50']})]
    for name, row in rows:
        lines.append(f"{name:13s} {row['early_p50']:10.2f} {row['late_p50']:6.2f}  | "
                     f"{row['early_cpu_p50']:9.2f} {row['late_cpu_p50']:6.2f}")
    return '\n'.join(lines)


def _percentiles(values) -> Dict[str, float]:
    import numpy as np
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return {'p50': float('nan'), 'p99': float('nan'), 'max': float('nan')}
    return {'p50': float(np.percentile(values, 50)), 'p99': float(np.percentile(values, 99)),
            'max': float(values.max())}


def summarise_frames(timer, per_frame) -> Dict:
    """Return per-stage and total statistics of a timed run (``time_pipeline``)."""
    import numpy as np
    wall, cpu = timer.samples_ms('wall'), timer.samples_ms('cpu')
    totals = np.array([f['ms'] for f in per_frame])
    stages = {}
    for k, name in enumerate(timer.stages):
        row = _percentiles(wall[:, k])
        row.update({f'cpu_{key}': value for key, value in _percentiles(cpu[:, k]).items()})
        stages[name] = row
    total = _percentiles(totals)
    total.update({f'cpu_{key}': value
                  for key, value in _percentiles(cpu.sum(axis=1)).items()})
    tracks = [f['tracks'] for f in per_frame]
    # the slowest frames, and where their time went
    slow = sorted(per_frame, key=lambda f: -f['ms'])[:5]
    spikes = []
    for f in slow:
        k = f['frame']
        top = sorted(zip(timer.stages, wall[k], cpu[k]), key=lambda item: -item[1])[:3]
        spikes.append(dict(f, stages={name: [round(w, 2), round(c, 2)] for name, w, c in top}))
    return {'frames': len(per_frame),
            'stereo_tracks_mean': float(np.mean(tracks)) if tracks else 0.0,
            'stereo_tracks_max': int(max(tracks)) if tracks else 0,
            'median_ms': total['p50'], 'p99_ms': total['p99'], 'max_ms': total['max'],
            'total': total, 'stages': stages,
            'first_frame_ms': float(totals[0]) if len(totals) else float('nan'),
            'frames_per_s': len(totals) / max(1e-9, totals.sum() / 1e3),
            'gc_ms_total': float(sum(f['gc_ms'] for f in per_frame)),
            'slowest_frames': spikes}


def format_stages(result: Dict) -> str:
    """Return a plain-text table of a ``bench_pipeline`` result."""
    lines = [f"{result.get('scene', '')}: {result['frames']} frames, "
             f"{result['stereo_tracks_mean']:.1f} stereo tracks per frame (max "
             f"{result['stereo_tracks_max']}), filter {result.get('filter', '')}",
             'stage           wall p50    p99     max   | cpu p50    p99     max   (ms)']
    rows = list(result['stages'].items()) + [('total', result['total'])]
    for name, row in rows:
        lines.append(f"{name:13s} {row['p50']:8.2f} {row['p99']:7.2f} {row['max']:7.1f}   | "
                     f"{row['cpu_p50']:7.2f} {row['cpu_p99']:7.2f} {row['cpu_max']:7.1f}")
    lines.append(f"first frame {result['first_frame_ms']:.1f} ms; {result['frames_per_s']:.1f} "
                 f"frames/s; garbage collection {result['gc_ms_total']:.1f} ms in all")
    for spike in result['slowest_frames']:
        parts = ', '.join(f'{name} {w:.1f} (cpu {c:.1f})'
                          for name, (w, c) in spike['stages'].items())
        lines.append(f"slow frame {spike['frame']}: {spike['ms']:.1f} ms, {spike['tracks']} "
                     f"tracks, {spike['frames_encoded']} frames encoded, gc "
                     f"{spike['gc_ms']:.1f} ms: {parts}")
    return '\n'.join(lines)


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
    # as in the node: idle model threads sleep instead of spinning (read when torch loads)
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
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
        seed = 100 if args.seed is None else args.seed
        result = bench_render_scenes(args.scenario, seed, max(1, args.scenes), args.workers)
        print(json.dumps({k: v for k, v in result.items() if k != 'scenes'}, indent=1))
        return result
    result = bench_render(args.scenario, args.frames)
    print(json.dumps(result, indent=1))
    return result


def _run(args: argparse.Namespace) -> Dict:
    """Run the benchmark ``args`` ask for; print and return the result."""
    for name in ('frames', 'scenes', 'workers'):
        if getattr(args, name) < 1:
            raise ValueError(f'--{name} must be >= 1, got {getattr(args, name)}')
    if args.threads < 0:
        raise ValueError(f'--threads must be >= 0, got {args.threads}')
    if not args.threads:
        from persistence_ros.model import auto_torch_threads
        args.threads = auto_torch_threads()
    tracks = _track_counts(args.tracks) if args.target == 'model' else None
    result = {'machine': machine(), 'command': ' '.join(['persistence-ros'] + sys.argv[1:])}
    if args.target in ('fuzz', 'soak'):
        # an adapter (rclpy): imported by name when asked for, as the cli imports replay, so
        # that the tools stay core and the other targets run without ROS
        import importlib
        fuzz = importlib.import_module('persistence_ros.ros.fuzz')
        args.objects = 8 if args.objects is None else args.objects
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
                                          device=args.device, dtype=args.dtype)
        print(format_bench(result['model']))
    elif args.target == 'render':
        result['render'] = _render(args)
    elif args.target == 'age':
        import torch
        torch.set_num_threads(args.threads)
        from persistence_ros.overrides import parse_overrides, replace_fields
        from persistence_ros.settings import Settings
        overrides = parse_overrides(args.set)
        result['age'] = bench_age(args.frames, 32 if args.objects is None else args.objects,
                                  args.size or '640x480', args.fps or 30.0,
                                  args.filter or 'learned',
                                  replace_fields(Settings(), overrides))
        result['age'].update({'settings': overrides, 'torch_threads': args.threads})
        print(format_stages(result['age']))
        print(format_age(result['age']))
    else:
        import torch
        torch.set_num_threads(args.threads)
        from persistence_ros.overrides import parse_overrides, replace_fields
        from persistence_ros.settings import Settings
        overrides = parse_overrides(args.set)
        settings = replace_fields(Settings(), overrides)
        from persistence_ros.simulation.scenario import load_scenario
        scene = scene_overrides(args.frames, args.fps, args.objects, args.size,
                                base_fps=load_scenario(args.scenario)['fps'])
        result['pipeline'] = bench_pipeline(args.scenario, args.filter or 'score', args.frames,
                                            settings, bag=args.bag, overrides=scene,
                                            seed=args.seed)
        result['pipeline']['settings'] = overrides
        result['pipeline']['torch_threads'] = args.threads
        print(format_stages(result['pipeline']))
    print('machine:', json.dumps(result['machine']))
    return result
