"""Learned persistence model: causal video tokenizer + causal transformer classifier."""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / 'weights'
# The shipped weights of the ``cpu`` configuration (docs/model.md says how they were made).
DEFAULT_WEIGHTS = WEIGHTS_DIR / 'cpu.safetensors'
# The gbdt baseline's training set (features + labels of the training-split scenes; the
# filter refits on load, no pickle), so the strongest baseline is comparable out of the box.
GBDT_BASELINE = WEIGHTS_DIR / 'gbdt_baseline.npz'
# What a track's published attention is: the decision (last) layer's weights over the last W
# frames, or the attention rollout over all layers (L(W-1)+1 frames).
ATTENTION_MODES = ('last_layer', 'rollout')
