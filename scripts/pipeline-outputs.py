#!/usr/bin/env python3
"""
Regression check of the core pipeline's outputs: dump them, then compare two dumps.

    python scripts/pipeline-outputs.py dump OUT.json SCENE [SCENE ...] [--filters learned,none]
        [--frames N]
    python scripts/pipeline-outputs.py compare BEFORE.json AFTER.json
    python scripts/pipeline-outputs.py time SCENE [--filter learned] [--frames N] [--json F]

``dump`` runs ``offline_runner.run_pipeline`` over each simulator scene (bag + truth.json;
the scene's floor is the ground plane) with each filter and writes every field of every
output track of every frame (ids, state, probability, frames observed, decision frame,
attention and its stamps, position, detection ids), the ended tracks and the rejection
counters.  Floats are written with ``repr`` (exact).  ``compare`` says whether two dumps are
equal bit for bit and, where not, the largest difference of each numeric field and the
first frames that differ.  Run ``dump`` with the code before a change (e.g. ``PYTHONPATH`` on
an export of the old commit) and after it; speed work must leave the dumps equal.  ``time``
measures the same loop per frame (wall and process CPU time, p50/p99/max; torch on one
thread), with only the API every version has, so the code before and after a change can be
timed alike.
"""

import argparse
from collections import Counter
import json
import math
import os
from pathlib import Path
import sys


def _tracks(tracks):
    return [{'id': t.id, 'left': t.left_track_id, 'right': t.right_track_id,
             'state': int(t.state), 'p': float(t.probability),
             'observed': t.frames_observed, 'decision_frame': t.decision_frame,
             'stamps': [int(s) for s in t.frame_stamps_ns],
             'attention': [float(a) for a in t.attention],
             'position': None if t.position is None else [float(v) for v in t.position],
             'left_det': t.left_detection_id, 'right_det': t.right_detection_id}
            for t in tracks]


def dump(out: Path, scenes, filters, frames: int) -> None:
    """Run every scene with every filter; write the outputs as JSON."""
    import torch

    from persistence_ros.evaluation.scoring import Truth
    from persistence_ros.offline_runner import read_stereo_bag
    torch.set_num_threads(1)
    result = {}
    for scene in scenes:
        scene = Path(scene)
        truth = Truth.load(scene / 'truth.json')
        calibration, stereo_frames = read_stereo_bag(scene, with_images=True)
        if frames:
            stereo_frames = stereo_frames[:frames]
        for spec in filters:
            pipeline = _pipeline(calibration, truth, spec)
            run = []
            for f in stereo_frames:
                r = pipeline.process(f.left, f.right, f.left_image, f.right_image)
                run.append({'stamp': r.stamp_ns, 'accepted': r.accepted, 'ended': r.ended,
                            'rejected_triangulation': dict(r.rejected_triangulation),
                            'rejected_detections': dict(r.rejected_detections),
                            'tracks': _tracks(r.tracks)})
            result[f'{scene.name}/{spec}'] = run
            print(f'{scene.name}/{spec}: {len(run)} frames, '
                  f'{sum(len(f["tracks"]) for f in run)} track outputs', file=sys.stderr)
    out.write_text(json.dumps(result))


def _pipeline(calibration, truth, spec: str):
    """
    Return a ``StereoPipeline`` with the filter ``spec``: NAME or NAME:KEY=VALUE:KEY=VALUE.

    KEY=VALUE are settings overrides (e.g. model.decision.recheck=true); gbdt reads the
    shipped training set; the scene's floor is the ground plane.
    """
    from persistence_ros.evaluation.runner import build_scene_filter, scene_settings
    from persistence_ros.overrides import parse_overrides, replace_fields
    from persistence_ros.pipeline import StereoPipeline
    from persistence_ros.settings import Settings
    name, *pairs = spec.split(':')
    values = {'filter.name': name}
    if name == 'gbdt':
        from persistence_ros.model import GBDT_BASELINE
        values['filter.gbdt_path'] = str(GBDT_BASELINE)
    values.update(parse_overrides(pairs))
    settings = scene_settings(replace_fields(Settings(), values), truth, plane_from_truth=True)
    return StereoPipeline(calibration, settings, build_scene_filter(settings, truth))


def time_scene(scene: Path, spec: str, frames: int, out=None) -> dict:
    """Time ``StereoPipeline.process`` per frame (wall and CPU); print and return p50/p99."""
    import time

    import numpy as np
    import torch

    import persistence_ros
    from persistence_ros.evaluation.scoring import Truth
    from persistence_ros.offline_runner import read_stereo_bag
    torch.set_num_threads(1)
    scene = Path(scene)
    calibration, stereo_frames = read_stereo_bag(scene, with_images=True)
    pipeline = _pipeline(calibration, Truth.load(scene / 'truth.json'), spec)
    if frames:
        stereo_frames = stereo_frames[:frames]
    wall, cpu, tracks = [], [], []
    for f in stereo_frames:
        w, c = time.perf_counter(), time.process_time()
        r = pipeline.process(f.left, f.right, f.left_image, f.right_image)
        wall.append(1e3 * (time.perf_counter() - w))
        cpu.append(1e3 * (time.process_time() - c))
        tracks.append(len(r.tracks))
    result = {'scene': str(scene), 'filter': spec, 'frames': len(wall),
              'package': str(Path(persistence_ros.__file__).parent),
              'load_average_1min': os.getloadavg()[0],
              'stereo_tracks_mean': float(np.mean(tracks))}
    for clock, values in (('wall', wall), ('cpu', cpu)):
        result[clock] = {'p50': float(np.percentile(values, 50)),
                         'p99': float(np.percentile(values, 99)), 'max': float(max(values))}
    print(json.dumps(result))
    if out:
        Path(out).write_text(json.dumps(result, indent=1) + '\n')
    return result


def _diff(a, b, path, report: Counter, worst: dict) -> bool:
    """Return True if equal; record the largest float difference per field path."""
    if isinstance(a, float) and isinstance(b, float):
        if a == b or (math.isnan(a) and math.isnan(b)):
            return True
        key = path.split('/')[-1]
        worst[key] = max(worst.get(key, 0.0), abs(a - b))
        report[key] += 1
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            report[f'{path}: keys'] += 1
            return False
        return all([_diff(a[k], b[k], f'{path}/{k}', report, worst) for k in a])
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            report[f'{path.split("/")[-1]}: length'] += 1
            return False
        return all([_diff(x, y, path, report, worst) for x, y in zip(a, b)])
    if a != b:
        report[path.split('/')[-1]] += 1
        return False
    return True


def compare(before: Path, after: Path) -> int:
    """Print the differences of two dumps; return 0 if they are equal bit for bit."""
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    status = 0
    for run in sorted(set(a) | set(b)):
        if run not in a or run not in b:
            print(f'{run}: only in {"after" if run in b else "before"}')
            status = 1
            continue
        report, worst, first = Counter(), {}, []
        for k, (fa, fb) in enumerate(zip(a[run], b[run])):
            if not _diff(fa, fb, '', report, worst) and len(first) < 3:
                first.append(k)
        if len(a[run]) != len(b[run]):
            report['frames'] += 1
        outputs = sum(len(f['tracks']) for f in a[run])
        if not report:
            print(f'{run}: {len(a[run])} frames, {outputs} track outputs: equal bit for bit')
            continue
        status = 1
        print(f'{run}: DIFFERENT in {dict(report)}; largest differences {worst}; first frames '
              f'{first}')
    return status


def main() -> int:
    """Parse the command line and run ``dump`` or ``compare``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    sub = parser.add_subparsers(dest='command', required=True)
    d = sub.add_parser('dump')
    d.add_argument('out', type=Path)
    d.add_argument('scenes', nargs='+')
    d.add_argument('--filters', default='learned,none',
                   help='comma-separated NAME[:KEY=VALUE...] (settings overrides)')
    d.add_argument('--frames', type=int, default=0, help='first N frames of each scene')
    c = sub.add_parser('compare')
    c.add_argument('before', type=Path)
    c.add_argument('after', type=Path)
    t = sub.add_parser('time')
    t.add_argument('scene', type=Path)
    t.add_argument('--filter', default='learned')
    t.add_argument('--frames', type=int, default=0)
    t.add_argument('--json', default=None)
    args = parser.parse_args()
    if args.command == 'dump':
        dump(args.out, args.scenes, args.filters.split(','), args.frames)
        return 0
    if args.command == 'time':
        time_scene(args.scene, args.filter, args.frames, args.json)
        return 0
    return compare(args.before, args.after)


if __name__ == '__main__':
    sys.exit(main())
