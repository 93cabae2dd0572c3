"""Learned persistence model: causal video tokenizer + causal transformer classifier."""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / 'weights'
# The shipped weights of the ``cpu`` configuration (docs/model.md says how they were made).
DEFAULT_WEIGHTS = WEIGHTS_DIR / 'cpu.safetensors'
