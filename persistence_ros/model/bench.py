"""Streaming latency benchmark of the persistence model (random weights: cost only)."""

import os
import statistics
import time
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from persistence_ros.model.config import load_config
from persistence_ros.model.decision import EarlyDecision
from persistence_ros.model.model import PersistenceModel, TrackStreamer


def _stats(samples):
    ms = sorted(1000.0 * s for s in samples)
    return {'median_ms': statistics.median(ms), 'p90_ms': ms[int(0.9 * (len(ms) - 1))],
            'p99_ms': float(np.percentile(ms, 99)), 'max_ms': ms[-1], 'min_ms': ms[0]}


def _timed(run, reps: int, device: str) -> Dict:
    """Return the ``_stats`` of ``reps`` calls of ``run()`` (GPU work waited for)."""
    times, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        if device != 'cpu':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    # this process's CPU time: on a shared machine the wall time also counts preemption
    return dict(_stats(times), cpu_median_ms=1000.0 * statistics.median(cpu))


DTYPES = ('float32', 'bfloat16')


@torch.no_grad()
def bench_streaming(config_name: str = 'cpu', tracks: Sequence[int] = (1, 8, 32, 64),
                    frames: int = 40, window: Optional[int] = None, threads: int = 2,
                    full_reps: int = 5, device: str = 'cpu', seed: int = 0,
                    backlog: int = 64, dtype: str = 'float32') -> Dict:
    """
    Measure per-frame latency for N concurrent tracks (``_bench_streaming``).

    ``dtype``: 'float32', or 'bfloat16' to run every step under ``torch.autocast`` in
    bfloat16 (the weights stay float32).
    """
    if dtype not in DTYPES:
        raise ValueError(f'dtype must be one of {DTYPES}, got {dtype!r}')
    from persistence_ros.model.train import training_device
    device = training_device(device)
    with torch.autocast(device_type=device.split(':')[0], dtype=torch.bfloat16,
                        enabled=dtype == 'bfloat16'):
        result = _bench_streaming(config_name, tracks, frames, window, threads, full_reps,
                                  device, seed, backlog)
    result['dtype'] = dtype
    return result


def _bench_streaming(config_name: str, tracks: Sequence[int], frames: int,
                     window: Optional[int], threads: int, full_reps: int, device: str,
                     seed: int, backlog: int) -> Dict:
    """
    Measure per-frame latency for N concurrent tracks: streaming vs re-encoding the window.

    For each N: ``step_ms`` is one batched ``PersistenceModel.step`` (state kept batched),
    ``streamer_ms`` one ``TrackStreamer.update`` (the states in its pool, as a node runs
    it), ``full_window_ms`` one full forward over the last ``window`` frames of all N tracks
    (what a non-streaming model must do per frame). Streaming steps are timed
    after ``window`` warm-up frames so the caches are full. ``catch_up``: one new track
    arriving with ``backlog`` frames of history (a stereo pair that formed late), fed as
    ``backlog`` steps versus one ``PersistenceModel.extend``. ``device``: cpu, cuda[:N] or
    auto. ValueError for a count below 1 or a device torch does not see.
    """
    counts = {'tracks': min(tracks, default=0), 'frames': frames, 'threads': threads,
              'full_reps': full_reps, 'backlog': backlog}
    if window is not None:
        counts['window'] = window
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f'{name} must be >= 1, got {value}'
                             if name != 'tracks' else f'track counts must be >= 1, got {tracks}')
    config = load_config(config_name)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    if window is not None:
        config.classifier.window = window
    window = config.classifier.window
    model = PersistenceModel(config).eval().to(device)
    size = config.crop_size
    g_dim = len(config.classifier.geometry_features)
    result = {'config': config.name, 'threads': threads, 'window': window, 'frames': frames,
              'device': device, 'torch': torch.__version__, 'cpu_count': os.cpu_count(),
              'encoder_params': sum(p.numel() for p in model.tokenizer.encoder.parameters()),
              'classifier_params': sum(p.numel() for p in model.classifier.parameters()),
              'tracks': {}}
    rng = np.random.default_rng(seed)
    for n in tracks:
        crops = torch.as_tensor(rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8),
                                device=device)
        geom = torch.as_tensor(rng.normal(size=(n, g_dim)).astype(np.float32), device=device)
        state = [model.init_state(n, device)]  # carried from one timed step to the next

        def step():
            state[0] = model.step(crops, geom, state[0])[2]

        for _ in range(window):
            step()
        row = {'step': _timed(step, frames, device),
               'state_bytes_per_track': state[0].nbytes() // n}
        streamer = TrackStreamer(model, EarlyDecision(0.9, 0.1, 10 ** 9, False))
        ids = list(range(n))
        hwc = crops.permute(0, 2, 3, 1).cpu().numpy()
        geom_np = geom.cpu().numpy()
        for _ in range(min(window, 8)):
            streamer.update(ids, hwc, geom_np)
        row['streamer'] = _timed(lambda: streamer.update(ids, hwc, geom_np),
                                 max(5, frames // 2), device)
        clip = crops.unsqueeze(1).expand(n, window, 3, size, size).contiguous()
        gclip = geom.unsqueeze(1).expand(n, window, g_dim).contiguous()
        model(clip, gclip)
        row['full_window'] = _timed(lambda: model(clip, gclip), full_reps, device)
        row['speedup'] = row['full_window']['median_ms'] / row['step']['median_ms']
        result['tracks'][n] = row
    result['catch_up'] = _bench_catch_up(model, backlog, size, g_dim, full_reps, device, rng)
    return result


def _bench_catch_up(model, backlog, size, g_dim, reps, device, rng) -> Dict:
    crops = torch.as_tensor(rng.integers(0, 256, (1, backlog, 3, size, size), dtype=np.uint8),
                            device=device)
    geom = torch.as_tensor(rng.normal(size=(1, backlog, g_dim)).astype(np.float32),
                           device=device)

    def steps():
        state = None
        for t in range(backlog):
            _, _, state = model.step(crops[:, t], geom[:, t], state)

    out = {'frames': backlog}
    for name, run in (('steps', steps), ('extend', lambda: model.extend(crops, geom))):
        run()
        out[name] = _timed(run, reps, device)
    return out


def format_bench(result: Dict) -> str:
    """Return a plain-text table of a ``bench_streaming`` result."""
    lines = [f"config {result['config']}: {result['threads']} threads, window "
             f"{result['window']}, device {result['device']}, {result.get('dtype', 'float32')}"
             f", torch {result['torch']}, "
             f"encoder {result['encoder_params']} params, classifier "
             f"{result['classifier_params']} params",
             'tracks  step ms (median/p99)  streamer ms (median)  full-window ms (median)  '
             'speedup']
    for n, row in result['tracks'].items():
        lines.append(f"{n:6d}  {row['step']['median_ms']:8.2f} / {row['step']['p99_ms']:7.2f}"
                     f"  {row['streamer']['median_ms']:20.2f}  "
                     f"{row['full_window']['median_ms']:23.2f}  {row['speedup']:7.1f}")
    if 'catch_up' in result:
        c = result['catch_up']
        lines.append(f"catch-up of one track's {c['frames']}-frame backlog: "
                     f"{c['steps']['median_ms']:.1f} ms as steps, "
                     f"{c['extend']['median_ms']:.1f} ms as one extend (CPU "
                     f"{c['steps']['cpu_median_ms']:.1f} / {c['extend']['cpu_median_ms']:.1f} ms)")
    return '\n'.join(lines)
