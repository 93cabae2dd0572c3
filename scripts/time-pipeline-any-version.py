#!/usr/bin/env python3
"""
Per-frame CPU and wall time of ``StereoPipeline.process`` for the package on ``PYTHONPATH``.

    PYTHONPATH=EXPORT python scripts/time-pipeline-any-version.py SCENE FILTER

Works with the code before the issue-20 redesign (``evaluation.runner``) and after it
(``offline_runner``, ``filter_factory``), so the two can be timed alike, alternating.  Torch on
one thread; prints one JSON line (p50/p99 of per-frame CPU ms, p50 wall ms).
"""

import json
import sys
import time

import numpy as np
import torch


def _pipeline_factory(scene: str, name: str):
    """Return (read_stereo_bag, make(calibration) -> pipeline, version) of this code."""
    try:
        from persistence_ros.filter_factory import build_filter
        from persistence_ros.offline_runner import read_stereo_bag
        from persistence_ros.overrides import replace_fields
        from persistence_ros.pipeline import StereoPipeline
        from persistence_ros.settings import Settings
    except ImportError:  # before the redesign
        from persistence_ros.evaluation.runner import build_filter as build_named, read_stereo_bag
        from persistence_ros.evaluation.scoring import Truth
        from persistence_ros.pipeline import StereoPipeline
        filt = build_named(name, Truth.load(scene + '/truth.json'))
        return read_stereo_bag, lambda cal: StereoPipeline(cal, None, filt), 'before'
    settings = replace_fields(Settings(), {'filter.name': name})
    filt = build_filter(settings)
    return read_stereo_bag, lambda cal: StereoPipeline(cal, settings, filt), 'after'


def main() -> int:
    """Time one scene with one filter; print the JSON line."""
    scene, name = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    read_stereo_bag, make, version = _pipeline_factory(scene, name)
    calibration, frames = read_stereo_bag(scene, with_images=True)
    pipeline = make(calibration)
    wall, cpu = [], []
    for f in frames:
        w, c = time.perf_counter(), time.process_time()
        pipeline.process(f.left, f.right, f.left_image, f.right_image)
        wall.append(1e3 * (time.perf_counter() - w))
        cpu.append(1e3 * (time.process_time() - c))
    print(json.dumps({'version': version, 'filter': name, 'frames': len(frames),
                      'cpu_ms_p50': float(np.median(cpu)),
                      'cpu_ms_p99': float(np.percentile(cpu, 99)),
                      'wall_ms_p50': float(np.median(wall))}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
