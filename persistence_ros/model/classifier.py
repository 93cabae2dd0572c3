"""
Causal transformer over per-frame tokens: p(persistent) per frame, attention exposed.

The attention layer is written here (small) so the last layer's weights are returned as data.
Attention is banded-causal: the query at frame t sees frames t-W+1..t (W = window). Streaming
keeps a fixed-size key/value cache of W-1 frames per layer, so it is exact against the full
forward and its cost per frame is bounded by W.
"""

import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from persistence_ros.model.config import ModelConfig


class WindowedSelfAttention(nn.Module):
    """Multi-head causal self-attention over a window of W frames with a learned distance bias."""

    def __init__(self, width: int, heads: int, window: int):
        super().__init__()
        if width % heads:
            raise ValueError('classifier.width must be divisible by classifier.heads')
        self.heads = heads
        self.head_dim = width // heads
        self.window = window
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        # bias[h, d]: added to the score of a key d frames before the query (0 <= d < W).
        self.distance_bias = nn.Parameter(torch.zeros(heads, window))

    def _split(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        shape = (b, t, self.heads, self.head_dim)
        return (q.reshape(shape).transpose(1, 2), k.reshape(shape).transpose(1, 2),
                v.reshape(shape).transpose(1, 2))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Attend over a clip ``[B, T, C]``; return output and head-mean weights ``[B, T, T]``."""
        b, t, c = x.shape
        q, k, v = self._split(x)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        pos = torch.arange(t, device=x.device)
        dist = pos[:, None] - pos[None, :]
        allowed = (dist >= 0) & (dist < self.window)
        bias = self.distance_bias[:, dist.clamp(0, self.window - 1)]
        scores = scores + bias.unsqueeze(0).to(scores.dtype)
        scores = scores.masked_fill(~allowed, float('-inf'))
        weights = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        out = (weights @ v).transpose(1, 2).reshape(b, t, c)
        return self.proj(out), weights.mean(dim=1)

    def step(self, x: torch.Tensor, cache: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
             ) -> Tuple[torch.Tensor, torch.Tensor, Tuple]:
        """
        Attend for one frame ``[B, C]`` with a cache (keys, values, valid) of W-1 slots.

        Returns the output ``[B, C]``, weights ``[B, W]`` (oldest slot first, the newest frame
        last, zeros on empty slots) and the new cache (same size).
        """
        b, c = x.shape
        q, k, v = self._split(x.unsqueeze(1))
        keys_c, values_c, valid_c = cache
        keys = torch.cat([keys_c, k], dim=2)
        values = torch.cat([values_c, v], dim=2)
        valid = torch.cat([valid_c, valid_c.new_ones(b, 1)], dim=1)
        scores = (q @ keys.transpose(-1, -2)) / math.sqrt(self.head_dim)
        dist = torch.arange(self.window - 1, -1, -1, device=x.device)
        scores = scores + self.distance_bias[:, dist].unsqueeze(0).unsqueeze(2).to(scores.dtype)
        scores = scores.masked_fill(~valid[:, None, None, :], float('-inf'))
        weights = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        out = (weights @ values).transpose(1, 2).reshape(b, c)
        new_cache = (keys[:, :, 1:], values[:, :, 1:], valid[:, 1:])
        return self.proj(out), weights.mean(dim=1)[:, 0], new_cache

    def init_cache(self, batch: int, device, dtype) -> Tuple:
        """Return an empty cache (W-1 invalid slots) for ``batch`` tracks."""
        shape = (batch, self.heads, self.window - 1, self.head_dim)
        return (torch.zeros(shape, device=device, dtype=dtype),
                torch.zeros(shape, device=device, dtype=dtype),
                torch.zeros(batch, self.window - 1, device=device, dtype=torch.bool))


class Block(nn.Module):
    """Pre-norm transformer block (windowed causal attention + MLP)."""

    def __init__(self, width: int, heads: int, window: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = WindowedSelfAttention(width, heads, window)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(),
                                 nn.Linear(mlp_ratio * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        """Apply the block to a clip ``[B, T, C]``; return output and attention weights."""
        h, weights = self.attn(self.ln1(x))
        x = x + self.drop(h)
        return x + self.drop(self.mlp(self.ln2(x))), weights

    def step(self, x, cache):
        """Apply the block to one frame ``[B, C]``."""
        h, weights, cache = self.attn.step(self.ln1(x), cache)
        x = x + self.drop(h)
        return x + self.drop(self.mlp(self.ln2(x))), weights, cache


class PersistenceClassifier(nn.Module):
    """
    Per-frame tokens = Linear([visual features, normalised geometry, age]) -> blocks -> logit.

    Geometry normalisation (mean/std per column, from the training set) lives in buffers so it
    is saved with the weights.
    """

    def __init__(self, config: ModelConfig, visual_dim: int):
        super().__init__()
        cc = config.classifier
        self.config = cc
        self.geometry_dim = len(cc.geometry_features)
        self.visual_dim = visual_dim
        in_dim = 1 + (visual_dim if cc.use_visual else 0) + (
            self.geometry_dim if cc.use_geometry else 0)
        self.register_buffer('geometry_mean', torch.zeros(self.geometry_dim))
        self.register_buffer('geometry_std', torch.ones(self.geometry_dim))
        self.visual_norm = nn.LayerNorm(visual_dim) if cc.use_visual else None
        self.embed = nn.Linear(in_dim, cc.width)
        self.blocks = nn.ModuleList([
            Block(cc.width, cc.heads, cc.window, cc.mlp_ratio, cc.dropout)
            for _ in range(cc.layers)])
        self.ln = nn.LayerNorm(cc.width)
        self.head = nn.Linear(cc.width, 1)

    def _tokens(self, visual, geometry, age):
        parts = []
        if self.config.use_visual:
            parts.append(self.visual_norm(visual))
        if self.config.use_geometry:
            g = (geometry.to(self.geometry_mean.dtype) - self.geometry_mean) / self.geometry_std
            parts.append(g.to(self.embed.weight.dtype))
        a = age.clamp(max=self.config.age_max).to(self.embed.weight.dtype)
        parts.append((a / self.config.age_max).unsqueeze(-1))
        return self.embed(torch.cat(parts, dim=-1))

    def forward(self, visual: torch.Tensor, geometry: torch.Tensor,
                t0: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """
        Classify every frame of clips.

        visual ``[B, T, V]``, geometry ``[B, T, G]``, t0 ``[B]`` index of the clip's first frame
        in its track (0 by default). Returns logits ``[B, T]`` and the last layer's attention
        ``[B, T, T]`` (row t: weights over frames <= t, mean over heads).
        """
        b, t = geometry.shape[:2]
        age = torch.arange(t, device=geometry.device).unsqueeze(0).expand(b, t)
        if t0 is not None:
            age = age + t0.to(geometry.device).view(b, 1)
        x = self._tokens(visual, geometry, age)
        weights = None
        for block in self.blocks:
            x, weights = block(x)
        return {'logits': self.head(self.ln(x)).squeeze(-1), 'attention': weights}

    def init_cache(self, batch: int, device, dtype=torch.float32) -> List[Tuple]:
        """Return empty key/value caches for ``batch`` new tracks."""
        return [blk.attn.init_cache(batch, device, dtype) for blk in self.blocks]

    def step(self, visual: torch.Tensor, geometry: torch.Tensor, age: torch.Tensor,
             cache: List[Tuple]) -> Tuple[torch.Tensor, torch.Tensor, List[Tuple]]:
        """
        Classify one new frame per track (``[B, V]``, ``[B, G]``, ``age [B]``).

        Returns logits ``[B]``, attention ``[B, W]`` over the window (newest last) and the cache.
        """
        x = self._tokens(visual, geometry, age)
        new_cache = []
        weights = None
        for block, c in zip(self.blocks, cache):
            x, weights, c = block.step(x, c)
            new_cache.append(c)
        return self.head(self.ln(x)).squeeze(-1), weights, new_cache


def frame_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Return the mean per-frame binary cross-entropy over valid frames."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction='none')
    mask = mask.to(loss.dtype)
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)
