"""
Per-stage wall-clock time of a frame: cheap, bounded, kept in one place.

A ``StageTimer`` knows a fixed list of stage names.  ``start()`` begins a frame, ``lap(stage)``
charges the time since the previous lap (or since ``start``) to ``stage``, ``add(stage, s)``
charges a duration measured elsewhere (a wait that began before the frame did), and
``finish()`` stores the frame's durations in a fixed-size ring (the last ``window`` frames).
Laps never nest, so the stages of a frame add up to its total.  ``summary()`` gives p50, p99
and max per stage in milliseconds over the ring; ``last()`` the latest frame's.

The cost is one ``time.perf_counter()`` call and a list update per lap; the ring is a numpy
array allocated once.  With ``cpu=True`` each lap also reads the process CPU time
(``time.process_time``, all threads): on a shared machine the wall time of a stage says as
much about the other jobs as about the stage, its CPU time much less (the benchmarks report
both).  The core pipeline keeps one (its stages, ``pipeline.PIPELINE_STAGES``)
and hands it to its filter (``PersistenceFilter.set_timer``), whose laps split the filter's
time; the node keeps another for what happens around the pipeline (waits, message
conversion and building, publishing) and reports both on ``/diagnostics``.
"""

import threading
import time
from typing import Dict, Iterable, List, Optional

import numpy as np


class StageTimer:
    """Durations of named stages per frame, the last ``window`` frames in a ring."""

    def __init__(self, stages: Iterable[str], window: int = 1000, cpu: bool = False):
        self.stages = tuple(stages)
        if not self.stages or len(set(self.stages)) != len(self.stages):
            raise ValueError(f'stages must be distinct names, got {self.stages}')
        if window < 1:
            raise ValueError(f'window must be >= 1, got {window}')
        self._index = {name: k for k, name in enumerate(self.stages)}
        self.cpu = bool(cpu)
        # [frame, clock (wall, cpu), stage] in seconds
        self._ring = np.zeros((int(window), 2, len(self.stages)))
        self._current: List[List[float]] = [[0.0] * len(self.stages), [0.0] * len(self.stages)]
        self._last: Optional[float] = None
        self._last_cpu = 0.0
        self._lock = threading.Lock()
        self.frames = 0  # frames finished since the timer was made or cleared

    @property
    def window(self) -> int:
        """Return how many frames the ring keeps."""
        return int(self._ring.shape[0])

    def start(self) -> None:
        """Begin a frame: its stages start at zero and the clock runs from now."""
        self._current = [[0.0] * len(self.stages), [0.0] * len(self.stages)]
        self._last = time.perf_counter()
        if self.cpu:
            self._last_cpu = time.process_time()

    def lap(self, stage: str) -> None:
        """Charge the time since the last lap or the start to a stage (no frame: nothing)."""
        if self._last is None:
            return
        now = time.perf_counter()
        k = self._index[stage]
        self._current[0][k] += now - self._last
        self._last = now
        if self.cpu:
            cpu = time.process_time()
            self._current[1][k] += cpu - self._last_cpu
            self._last_cpu = cpu

    def skip(self) -> None:
        """Charge the time since the last lap to no stage (e.g. a wait that is not work)."""
        if self._last is not None:
            self._last = time.perf_counter()
            if self.cpu:
                self._last_cpu = time.process_time()

    def add(self, stage: str, seconds: float) -> None:
        """Charge ``seconds`` measured elsewhere to ``stage`` of the current frame."""
        self._current[0][self._index[stage]] += float(seconds)

    def finish(self) -> None:
        """End the frame: store its stage durations in the ring."""
        with self._lock:
            self._ring[self.frames % self.window] = self._current
            self.frames += 1
        self._last = None

    def cancel(self) -> None:
        """Drop the frame in progress (a refused frame is not a processed one)."""
        self._last = None

    def clear(self) -> None:
        """Forget every stored frame."""
        with self._lock:
            self.frames = 0
            self._ring[:] = 0.0

    def samples_ms(self, clock: str = 'wall') -> np.ndarray:
        """
        Return the stored frames' durations ``[frames, stages]`` in ms, oldest first.

        ``clock``: 'wall' or 'cpu' (the process CPU time; zeros unless made with ``cpu``).
        """
        which = ('wall', 'cpu').index(clock)
        with self._lock:
            n = min(self.frames, self.window)
            start = self.frames % self.window if self.frames > self.window else 0
            data = self._ring[:n, which]
            data = np.roll(data, -start, axis=0) if start else data.copy()
        return 1e3 * data

    def last(self) -> Dict[str, float]:
        """Return the latest finished frame's duration per stage, in ms (empty before one)."""
        with self._lock:
            if not self.frames:
                return {}
            row = self._ring[(self.frames - 1) % self.window, 0]
            return {name: 1e3 * float(v) for name, v in zip(self.stages, row)}

    def summary(self, clock: str = 'wall') -> Dict[str, Dict[str, float]]:
        """
        Return ``{stage: {'p50', 'p99', 'max'}}`` in ms over the stored frames.

        ``'total'`` is the sum of the stages per frame; empty before the first frame.
        """
        data = self.samples_ms(clock)
        if not len(data):
            return {}
        columns = dict(zip(self.stages, data.T))
        columns['total'] = data.sum(axis=1)
        return {name: {'p50': float(np.percentile(values, 50)),
                       'p99': float(np.percentile(values, 99)),
                       'max': float(values.max())}
                for name, values in columns.items()}


class NullTimer(StageTimer):
    """A timer that records nothing (the default of a filter nobody times)."""

    def __init__(self):
        super().__init__(('none',), window=1)

    def start(self) -> None:
        """Do nothing."""

    def lap(self, stage: str) -> None:
        """Do nothing."""

    def add(self, stage: str, seconds: float) -> None:
        """Do nothing."""

    def finish(self) -> None:
        """Do nothing."""
