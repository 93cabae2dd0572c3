"""Run simulator jobs in worker processes (spawned: each renders with its own GL context)."""

from concurrent.futures import as_completed, ProcessPoolExecutor
import importlib
import multiprocessing
import os
from typing import Callable, Iterator, Sequence


def _function(dotted: str) -> Callable:
    module, name = dotted.rsplit('.', 1)
    return getattr(importlib.import_module(module), name)


def render_job(job: tuple) -> str:
    """
    Make one scene (a worker's job); return its directory.

    ``job`` = (loader, generator, name or path, seed, overrides, out_dir, overwrite), the two
    functions as dotted names (``'persistence_ros.simulation.generate.generate_scene'``): they
    are imported here, after OMP_NUM_THREADS is set, so one worker uses one thread.
    """
    loader, generator, name_or_path, seed, overrides, out_dir, overwrite = job
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    scene = _function(loader)(name_or_path, seed=seed, overrides=overrides)
    _function(generator)(scene, out_dir, overwrite=overwrite)
    return str(out_dir)


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
