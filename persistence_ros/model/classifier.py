"""
Causal transformer over per-frame tokens: p(persistent) per frame, attention exposed.

The attention layer is written here (small) so the last layer's weights are returned as data.
Attention is banded-causal: the query at frame t sees frames t-W+1..t (W = window). Streaming
keeps a fixed-size key/value cache of W-1 frames per layer, so it is exact against the full
forward and its cost per frame is bounded by W.
"""

import math
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

from einops import rearrange
import torch
from torch import nn
import torch.nn.functional as F

from persistence_ros.model.config import ModelConfig


class AttentionCache(NamedTuple):
    """
    One attention layer's streaming cache: its last W-1 frames (oldest first).

    keys, values ``[B, heads, W-1, head_dim]``; valid ``[B, W-1]`` (False: an empty slot);
    rollout_rows ``[B, W-1, S]``: the previous layers' attention-rollout row of each cached
    frame, kept only when the stream returns the rollout (rollout mode), else None.
    """

    keys: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor
    rollout_rows: Optional[torch.Tensor] = None


class GRUCache(NamedTuple):
    """The GRU's hidden states, track-first ``[B, layers, width]``."""

    hidden: torch.Tensor


ClassifierCache = Union[Tuple[AttentionCache, ...], GRUCache]


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
        return tuple(rearrange(part, 'b t (h d) -> b h t d', h=self.heads)
                     for part in self.qkv(x).chunk(3, dim=-1))

    def _attend(self, q, keys, values, valid: Optional[torch.Tensor]):
        """
        Banded causal attention of T queries over K keys, the queries being the last T of them.

        ``valid [B, K]`` masks empty cache slots (None: all valid). Returns the output
        ``[B, T, C]`` and the head-mean weights ``[B, T, K]``.
        """
        t = q.shape[2]
        n_keys = keys.shape[2]
        dist = (torch.arange(t, device=q.device)[:, None] + (n_keys - t)
                - torch.arange(n_keys, device=q.device)[None, :])
        allowed = (dist >= 0) & (dist < self.window)
        if valid is not None:
            allowed = allowed & valid[:, None, None, :]
        scores = (q @ keys.transpose(-1, -2)) / math.sqrt(self.head_dim)
        bias = self.distance_bias[:, dist.clamp(0, self.window - 1)]
        scores = scores + bias.unsqueeze(0).to(scores.dtype)
        scores = scores.masked_fill(~allowed, float('-inf'))
        weights = torch.softmax(scores.float(), dim=-1).to(values.dtype)
        out = rearrange(weights @ values, 'b h t d -> b t (h d)')
        return out, weights.mean(dim=1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Attend over a clip ``[B, T, C]``; return output and head-mean weights ``[B, T, T]``."""
        q, k, v = self._split(x)
        out, weights = self._attend(q, k, v, None)
        return self.proj(out), weights

    def extend(self, x: torch.Tensor, cache: AttentionCache
               ) -> Tuple[torch.Tensor, torch.Tensor, AttentionCache]:
        """
        Attend for the next T frames ``[B, T, C]`` with the cache of the last W-1 frames.

        Returns the outputs ``[B, T, C]`` (equal to ``forward`` over the whole track), the
        weights ``[B, T, W-1+T]`` of the T new frames over the W-1 cached and T new slots
        (oldest first, zeros on empty slots and outside each frame's window) and the new cache
        (same size; its ``rollout_rows`` are the caller's, None here).
        """
        b, t, _ = x.shape
        q, k, v = self._split(x)
        keys = torch.cat([cache.keys, k], dim=2)
        values = torch.cat([cache.values, v], dim=2)
        valid = torch.cat([cache.valid, cache.valid.new_ones(b, t)], dim=1)
        out, weights = self._attend(q, keys, values, valid)
        keep = t  # the last W-1 of the W-1+T slots
        new_cache = AttentionCache(keys[:, :, keep:], values[:, :, keep:], valid[:, keep:])
        return self.proj(out), weights, new_cache

    def init_cache(self, batch: int, device, dtype) -> AttentionCache:
        """Return an empty cache (W-1 invalid slots) for ``batch`` tracks."""
        shape = (batch, self.heads, self.window - 1, self.head_dim)
        return AttentionCache(torch.zeros(shape, device=device, dtype=dtype),
                              torch.zeros(shape, device=device, dtype=dtype),
                              torch.zeros(batch, self.window - 1, device=device,
                                          dtype=torch.bool))


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

    def extend(self, x: torch.Tensor, cache: AttentionCache
               ) -> Tuple[torch.Tensor, torch.Tensor, AttentionCache]:
        """
        Apply the block to the next frames ``[B, T, C]`` of tracks with an attention cache.

        Returns the output, the new frames' weights ``[B, T, W-1+T]`` and the new cache.
        """
        h, weights, cache = self.attn.extend(self.ln1(x), cache)
        x = x + self.drop(h)
        return x + self.drop(self.mlp(self.ln2(x))), weights, cache


def attention_rollout(layers: List[torch.Tensor]) -> torch.Tensor:
    """
    Return the attention rollout ``[B, T, T]`` of per-layer attention ``[B, T, T]`` (first first).

    Abnar and Zuidema (2020): each layer's attention is mixed half-and-half with the identity
    (the residual path), and the layers are multiplied, so row t says how much each earlier
    frame flows into frame t's decision through all layers, not only the last one. With a
    window of W frames, row t reaches back L(W-1) frames.
    """
    eye = torch.eye(layers[0].shape[-1], device=layers[0].device, dtype=layers[0].dtype)
    rollout = None
    for weights in layers:
        mixed = 0.5 * weights + 0.5 * eye
        rollout = mixed if rollout is None else mixed @ rollout
    return rollout


def _skew(rows: torch.Tensor) -> torch.Tensor:
    """
    Shift row j of ``[..., W, S]`` right by j: ``[..., W, S+W-1]`` (zeros elsewhere).

    Row j is the rollout of the j-th frame of a window, spanning the S frames that end at it;
    after the shift every row is aligned on the S+W-1 frames that end at the window's last
    frame. (The pad-and-reshape trick: rows padded by W zeros, read back one element shorter.)
    """
    *lead, w, span = rows.shape
    padded = F.pad(rows, (0, w)).reshape(*lead, w * (span + w))
    return padded[..., :w * (span + w - 1)].reshape(*lead, w, span + w - 1)


def _rollout_step(weights: torch.Tensor, rows: torch.Tensor, window: int) -> torch.Tensor:
    """
    Return the rollout rows ``[B, T, S+W-1]`` of a layer's T new frames (streaming).

    ``weights [B, T, W-1+T]``: the layer's attention of the new frames over the W-1 cached and
    T new slots; ``rows [B, W-1+T, S]``: the previous layers' rollout row of each slot (the
    span S frames ending at that slot). Frame i mixes its window's rows by
    0.5 * attention + 0.5 * itself, exactly as ``attention_rollout`` does on the full clip.
    """
    b, t, _ = weights.shape
    index = (torch.arange(t, device=weights.device)[:, None]
             + torch.arange(window, device=weights.device)[None, :])
    mix = 0.5 * weights.gather(2, index.expand(b, t, window))
    mix[..., -1] += 0.5
    windows = rows.unfold(1, window, 1).transpose(-1, -2)  # [B, T, W, S]
    return (mix.unsqueeze(-2) @ _skew(windows)).squeeze(-2)


class CrossAttentionFusion(nn.Module):
    """
    Fuse one frame's streams: geometry-conditioned queries attend over the latent's grid cells.

    The geometry (and age) row is embedded to ``g``; ``Q`` learned queries, each shifted by
    ``g``, attend over the ``S`` cells of the frame's visual latent (``[D, h, w]`` flattened
    channel-major, as ``PersistenceModel`` pools it), with a learned embedding per cell
    position. Token = ``g + Linear(the Q attended vectors)``. Per frame, so it keeps the
    classifier causal and streams unchanged.
    """

    def __init__(self, latent_dim: int, cells: int, geometry_dim: int, width: int, heads: int,
                 queries: int):
        super().__init__()
        self.latent_dim, self.cells = latent_dim, cells
        self.cell_norm = nn.LayerNorm(latent_dim)
        self.cell_embed = nn.Linear(latent_dim, width)
        self.cell_position = nn.Parameter(0.02 * torch.randn(cells, width))
        self.geometry_embed = nn.Linear(geometry_dim, width)
        self.queries = nn.Parameter(0.02 * torch.randn(queries, width))
        self.query_norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.out = nn.Linear(queries * width, width)

    def forward(self, visual: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
        """Return tokens ``[..., width]`` of visual ``[..., D*S]`` and geometry ``[..., G]``."""
        lead = visual.shape[:-1]
        cells = rearrange(visual, '... (d s) -> (...) s d', d=self.latent_dim)
        kv = self.cell_embed(self.cell_norm(cells)) + self.cell_position
        g = self.geometry_embed(geometry.reshape(-1, geometry.shape[-1]))
        q = self.query_norm(self.queries.unsqueeze(0) + g.unsqueeze(1))
        fused, _ = self.attn(q, kv, kv, need_weights=False)
        return (g + self.out(fused.flatten(1))).reshape(*lead, -1)


FUSIONS = ('concat', 'cross_attention')
TEMPORAL = ('transformer', 'gru')


class PersistenceClassifier(nn.Module):
    """
    Per-frame tokens (visual features fused with normalised geometry and age) -> blocks -> logit.

    Fusion ``concat``: token = Linear([visual, geometry, age]) (the frame-count age only with
    ``classifier.frame_age``; rig-independent models read ``age_s`` among the geometry
    instead); ``cross_attention``:
    ``CrossAttentionFusion`` (needs both streams and the un-pooled latent grid, ``cells`` > 1).
    ``temporal: gru`` replaces the transformer by a GRU (the ablation baseline): no attention,
    the attention outputs have a window of 0.
    Geometry normalisation (mean/std per column, from the training set) lives in buffers so it
    is saved with the weights.
    """

    def __init__(self, config: ModelConfig, visual_dim: int, cells: int = 1):
        super().__init__()
        cc = config.classifier
        self.config = cc
        self.geometry_dim = len(cc.geometry_features)
        self.visual_dim = visual_dim
        if cc.fusion not in FUSIONS:
            raise ValueError(f'classifier.fusion must be one of {FUSIONS}, got {cc.fusion!r}')
        if cc.temporal not in TEMPORAL:
            raise ValueError(f'classifier.temporal must be one of {TEMPORAL}, '
                             f'got {cc.temporal!r}')
        self.register_buffer('geometry_mean', torch.zeros(self.geometry_dim))
        self.register_buffer('geometry_std', torch.ones(self.geometry_dim))
        self.fusion = None
        if cc.fusion == 'cross_attention':
            if not (cc.use_visual and cc.use_geometry) or cells < 2:
                raise ValueError('classifier.fusion: cross_attention needs use_visual and '
                                 'use_geometry true and pool: flatten (a grid of cells)')
            self.fusion = CrossAttentionFusion(visual_dim // cells, cells,
                                               self.geometry_dim + int(cc.frame_age),
                                               cc.width, cc.heads, cc.fusion_queries)
        in_dim = int(cc.frame_age) + (visual_dim if cc.use_visual else 0) + (
            self.geometry_dim if cc.use_geometry else 0)
        if in_dim == 0:
            raise ValueError('classifier: nothing to read (use_visual, use_geometry and '
                             'frame_age are all false)')
        self.visual_norm = (nn.LayerNorm(visual_dim)
                            if cc.use_visual and self.fusion is None else None)
        self.embed = nn.Linear(in_dim, cc.width) if self.fusion is None else None
        self.gru = (nn.GRU(cc.width, cc.width, num_layers=cc.layers, batch_first=True)
                    if cc.temporal == 'gru' else None)
        self.blocks = nn.ModuleList([
            Block(cc.width, cc.heads, cc.window, cc.mlp_ratio, cc.dropout)
            for _ in range(cc.layers if self.gru is None else 0)])
        self.ln = nn.LayerNorm(cc.width)
        self.head = nn.Linear(cc.width, 1)

    def _tokens(self, visual, geometry, age):
        dtype = self.head.weight.dtype
        g = (geometry.to(self.geometry_mean.dtype) - self.geometry_mean) / self.geometry_std
        ages = []
        if self.config.frame_age:
            ages.append((age.clamp(max=self.config.age_max).to(dtype)
                         / self.config.age_max).unsqueeze(-1))
        if self.fusion is not None:
            return self.fusion(visual, torch.cat([g.to(dtype)] + ages, dim=-1))
        parts = []
        if self.config.use_visual:
            parts.append(self.visual_norm(visual))
        if self.config.use_geometry:
            parts.append(g.to(dtype))
        return self.embed(torch.cat(parts + ages, dim=-1))

    def forward(self, visual: torch.Tensor, geometry: torch.Tensor,
                t0: Optional[torch.Tensor] = None, rollout: bool = False
                ) -> Dict[str, torch.Tensor]:
        """
        Classify every frame of clips.

        visual ``[B, T, V]``, geometry ``[B, T, G]``, t0 ``[B]`` index of the clip's first frame
        in its track (0 by default). Returns logits ``[B, T]`` and the last layer's attention
        ``[B, T, T]`` (row t: weights over frames <= t, mean over heads); with ``rollout``
        also the attention rollout over all layers ``[B, T, T]`` (``attention_rollout``).
        """
        b, t = geometry.shape[:2]
        age = torch.arange(t, device=geometry.device).unsqueeze(0).expand(b, t)
        if t0 is not None:
            age = age + t0.to(geometry.device).view(b, 1)
        x = self._tokens(visual, geometry, age)
        if self.gru is not None:
            x, _ = self.gru(x)
            weights = x.new_zeros(b, t, 0)
        layers = []
        for block in self.blocks:
            x, weights = block(x)
            layers.append(weights)
        out = {'logits': self.head(self.ln(x)).squeeze(-1), 'attention': weights}
        if rollout:
            out['rollout'] = attention_rollout(layers) if layers else weights
        return out

    def attention_span(self, rollout: bool = False) -> int:
        """Return how many frames the streamed attention covers: W, L(W-1)+1 rolled out, 0."""
        if self.gru is not None:
            return 0
        window = self.config.window
        return len(self.blocks) * (window - 1) + 1 if rollout else window

    def init_cache(self, batch: int, device, dtype=torch.float32, rollout: bool = False
                   ) -> ClassifierCache:
        """
        Return empty caches for ``batch`` new tracks: an ``AttentionCache`` per layer.

        With ``rollout`` each layer's cache also keeps the previous layers' rollout rows of the
        W-1 cached frames (``[B, W-1, (l-1)(W-1)+1]`` for layer l), so the streamed attention
        is the rollout. The GRU keeps its hidden states (``GRUCache``; it has no attention).
        """
        if self.gru is not None:
            shape = (batch, self.gru.num_layers, self.gru.hidden_size)
            return GRUCache(torch.zeros(shape, device=device, dtype=dtype))
        caches = [blk.attn.init_cache(batch, device, dtype) for blk in self.blocks]
        if rollout:
            w = self.config.window
            caches = [c._replace(rollout_rows=(
                torch.ones(batch, w - 1, 1, device=device, dtype=dtype) if i == 0
                else torch.zeros(batch, w - 1, i * (w - 1) + 1, device=device, dtype=dtype)))
                for i, c in enumerate(caches)]
        return tuple(caches)

    def extend(self, visual: torch.Tensor, geometry: torch.Tensor, age: torch.Tensor,
               cache: ClassifierCache) -> Tuple[torch.Tensor, torch.Tensor, ClassifierCache]:
        """
        Classify the next T frames of tracks (``[B, T, V]``, ``[B, T, G]``, ``age [B, T]``).

        Returns logits ``[B, T]``, the last frame's attention over the frames it can see
        (newest last): ``[B, W]`` of the last layer, or ``[B, L(W-1)+1]`` of the rollout when
        the cache was made with ``rollout``; ``[B, 0]`` for the GRU. And the new cache.
        """
        x = self._tokens(visual, geometry, age)
        if self.gru is not None:  # hidden states are kept track-first, GRU wants layer-first
            x, hidden = self.gru(x, rearrange(cache.hidden, 'b l c -> l b c').contiguous())
            return (self.head(self.ln(x)).squeeze(-1), x.new_zeros(x.shape[0], 0),
                    GRUCache(rearrange(hidden, 'l b c -> b l c')))
        b, t = x.shape[:2]
        window = self.config.window
        rollout = cache[0].rollout_rows is not None  # init_cache(rollout=True)
        rows = x.new_ones(b, t, 1) if rollout else None  # no layer yet: each frame is itself
        new_cache = []
        for block, c in zip(self.blocks, cache):
            x, weights, kv = block.extend(x, c)
            if rollout:  # mix the previous layers' rows of each new frame's window
                slots = torch.cat([c.rollout_rows, rows.to(c.rollout_rows.dtype)], dim=1)
                rows = _rollout_step(weights, slots, window)
                kv = kv._replace(rollout_rows=slots[:, t:])
            new_cache.append(kv)
        attention = rows[:, -1] if rollout else weights[:, -1, -window:]
        return self.head(self.ln(x)).squeeze(-1), attention, tuple(new_cache)


def frame_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Return the mean per-frame binary cross-entropy over valid frames."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction='none')
    mask = mask.to(loss.dtype)
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)
