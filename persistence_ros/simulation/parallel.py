"""Run simulator jobs in worker processes (spawned: each renders with its own GL context)."""

from concurrent.futures import as_completed, ProcessPoolExecutor
import importlib
import multiprocessing
import os
from pathlib import Path
import sys
from typing import Callable, Iterator, NamedTuple, Optional, Sequence

from tqdm import tqdm


def _function(dotted: str) -> Callable:
    module, name = dotted.rsplit('.', 1)
    return getattr(importlib.import_module(module), name)


class RenderJob(NamedTuple):
    """
    One scene for a worker to make (``render_job``).

    ``loader`` and ``generator`` are dotted names
    (``'persistence_ros.simulation.generate.generate_scene'``): they are imported in the
    worker, after OMP_NUM_THREADS is set, so one worker uses one thread.
    """

    loader: str
    generator: str
    name_or_path: str
    seed: int
    overrides: dict
    out_dir: Path
    overwrite: bool


def render_job(job: RenderJob) -> str:
    """Make one scene (a worker's job); return its directory."""
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    scene = _function(job.loader)(job.name_or_path, seed=job.seed, overrides=job.overrides)
    _function(job.generator)(scene, job.out_dir, overwrite=job.overwrite)
    return str(job.out_dir)


def progress_bar(total: Optional[int], desc: str, enabled: bool = True
                 ) -> Optional[Callable]:
    """Return a progress wrapper (tqdm on stderr, in scenes) for ``map_jobs``, or None."""
    if not enabled:
        return None
    return lambda it: tqdm(it, total=total, desc=desc, unit='scene', file=sys.stderr)


def map_jobs(function: Callable, jobs: Sequence, workers: int = 1,
             progress: Callable = None) -> Iterator:
    """
    Yield ``function(job)`` for every job, in the order they finish.

    ``workers`` <= 1 (or one job) runs them here, in order. ``progress`` (optional) wraps the
    iterator of results (e.g. ``lambda it: tqdm(it, total=len(jobs))``). A job's exception is
    raised here; the jobs not started yet are cancelled.
    """
    def results() -> Iterator:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                yield function(job)
            return
        context = multiprocessing.get_context('spawn')  # fresh GL context per worker
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(function, job) for job in jobs]
            try:
                for future in as_completed(futures):
                    yield future.result()
            finally:
                for future in futures:
                    future.cancel()
    return progress(results()) if progress is not None else results()
