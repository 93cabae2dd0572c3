"""Learned persistence model: causal video tokenizer + causal transformer classifier."""

import os
from pathlib import Path
from typing import Optional

WEIGHTS_DIR = Path(__file__).resolve().parent / 'weights'
# The shipped weights of the ``cpu`` configuration (docs/model.md says how they were made).
DEFAULT_WEIGHTS = WEIGHTS_DIR / 'cpu.safetensors'
# The gbdt baseline's training set (features + labels of the training-split scenes; the
# filter refits on load, no pickle), so the strongest baseline is comparable out of the box.
GBDT_BASELINE = WEIGHTS_DIR / 'gbdt_baseline.npz'
# What a track's published attention is: the decision (last) layer's weights over the last W
# frames, or the attention rollout over all layers (L(W-1)+1 frames).
ATTENTION_MODES = ('last_layer', 'rollout')


def auto_torch_threads(cpus: Optional[int] = None) -> int:
    """
    Return the model's CPU threads for ``processing.torch_threads: 0``: cores - 1, 1 to 4.

    Measured on 2 shared cores (docs/benchmarks.md): with 2 threads a model step waited on
    the busy second core (the thread pool spins and waits at every operation), with 1 it did
    not; tiny batches gain nothing from more than a few threads.
    """
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, min(4, cpus - 1))
