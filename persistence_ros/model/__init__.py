"""Learned persistence model: causal video tokenizer + causal transformer classifier."""
