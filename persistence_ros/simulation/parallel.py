"""Run simulator jobs in worker processes (spawned: each renders with its own GL context)."""

from concurrent.futures import as_completed, ProcessPoolExecutor
import multiprocessing
from typing import Callable, Iterator, Sequence


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
