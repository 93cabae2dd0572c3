"""The combined streaming persistence model, its stream state and the track streamer."""

from dataclasses import dataclass, replace
from typing import Callable, Dict, Hashable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from persistence_ros.model.classifier import ClassifierCache, PersistenceClassifier
from persistence_ros.model.config import ModelConfig
from persistence_ros.model.decision import EarlyDecision
from persistence_ros.model.tokenizer import EncoderCache, Tokenizer
from persistence_ros.stereo_track import TrackState


def map_tensors(fn: Callable[..., torch.Tensor], *trees):
    """
    Apply ``fn`` leaf by leaf to caches of one structure; return a cache of that structure.

    A cache is a tensor, None (nothing cached: stays None) or a tuple of caches (the named
    caches of ``tokenizer`` and ``classifier`` are NamedTuples). ``fn`` gets the tensors at
    the same place in every tree.
    """
    first = trees[0]
    if first is None:
        return None
    if torch.is_tensor(first):
        return fn(*trees)
    parts = [map_tensors(fn, *items) for items in zip(*trees)]
    return type(first)(*parts) if hasattr(first, '_fields') else type(first)(parts)


def cache_tensors(tree) -> List[torch.Tensor]:
    """Return the tensors of a cache (``map_tensors``), depth first."""
    found: List[torch.Tensor] = []
    map_tensors(lambda x: found.append(x) or x, tree)
    return found


@dataclass
class StreamState:
    """
    Batched streaming state of B tracks; every tensor has a fixed size (no growth with time).

    tokenizer: the causal encoder's cache (``Tokenizer.init_cache``); classifier: the
    attention or GRU cache (``PersistenceClassifier.init_cache``); t: frames seen per track.
    Every tensor in them has the tracks on its first axis.
    """

    tokenizer: EncoderCache
    classifier: ClassifierCache
    t: torch.Tensor

    @property
    def batch(self) -> int:
        """Return the number of tracks in this state."""
        return int(self.t.shape[0])

    def select(self, index: Union[Sequence[int], torch.Tensor]) -> 'StreamState':
        """Return the state of the tracks at ``index`` (in that order)."""
        idx = (index.to(self.t.device) if torch.is_tensor(index)
               else torch.as_tensor(list(index), dtype=torch.long, device=self.t.device))
        return StreamState(*(map_tensors(lambda x: x.index_select(0, idx), part)
                             for part in (self.tokenizer, self.classifier, self.t)))

    @staticmethod
    def cat(states: Sequence['StreamState']) -> 'StreamState':
        """Concatenate states along the track axis."""
        return StreamState(*(map_tensors(lambda *xs: torch.cat(xs, dim=0), *parts)
                             for parts in ([s.tokenizer for s in states],
                                           [s.classifier for s in states],
                                           [s.t for s in states])))

    def nbytes(self) -> int:
        """Return the memory held by the state in bytes."""
        return int(sum(x.numel() * x.element_size()
                       for x in cache_tensors((self.t, self.tokenizer, self.classifier))))

    def put(self, index: torch.Tensor, rows: 'StreamState') -> None:
        """Write the states ``rows`` (in order) over the tracks at ``index``, in place."""
        for part, new in ((self.tokenizer, rows.tokenizer), (self.classifier, rows.classifier),
                          (self.t, rows.t)):
            map_tensors(lambda x, y: x.index_copy_(0, index, y), part, new)


class StatePool:
    """
    The streaming states of many tracks in one batched ``StreamState`` (a slot per track).

    A frame gathers the states of the tracks it streams (one ``index_select`` per cache
    tensor, whatever the number of tracks) and writes them back in place (one
    ``index_copy_`` each), instead of splitting a batched state into one state per track
    and concatenating them again every frame.  A new track takes a free slot, reset to the
    model's initial state; an ended track's slot is freed.  The pool grows by doubling; when
    a quarter or less of its slots are in use (after a flood of tracks has ended) it is
    compacted to twice the tracks left (at least ``MIN_SLOTS``), so its memory comes back.
    """

    MIN_SLOTS = 8

    def __init__(self, model: 'PersistenceModel', device, rollout: bool = False):
        self.model = model
        self.device = device
        self.rollout = bool(rollout)
        self.state: Optional[StreamState] = None
        self.slots: Dict[Hashable, int] = {}
        self._free: List[int] = []

    @property
    def capacity(self) -> int:
        """Return the number of slots."""
        return 0 if self.state is None else self.state.batch

    def __contains__(self, key: Hashable) -> bool:
        """Return True if the track has a slot."""
        return key in self.slots

    def _grow(self, needed: int) -> None:
        size = max(needed, self.capacity, self.MIN_SLOTS)
        extra = self.model.init_state(size, self.device, self.rollout)
        start = self.capacity
        self.state = extra if self.state is None else StreamState.cat([self.state, extra])
        self._free.extend(range(start + size - 1, start - 1, -1))

    def add(self, keys: Sequence[Hashable]) -> None:
        """Give new tracks a slot each, holding the initial state."""
        if not keys:
            return
        if len(self._free) < len(keys):
            self._grow(len(keys) - len(self._free))
        slots = [self._free.pop() for _ in keys]
        self.slots.update(zip(keys, slots))
        index = torch.as_tensor(slots, dtype=torch.long, device=self.state.t.device)
        self.state.put(index, self.model.init_state(len(keys), self.device, self.rollout))

    def index(self, keys: Sequence[Hashable]) -> torch.Tensor:
        """Return the slots of tracks (in order) as an index tensor."""
        return torch.as_tensor([self.slots[k] for k in keys], dtype=torch.long,
                               device=self.state.t.device)

    def remove(self, keys: Sequence[Hashable]) -> None:
        """Free the slots of ended tracks."""
        for key in keys:
            slot = self.slots.pop(key, None)
            if slot is not None:
                self._free.append(slot)
        if self.capacity > self.MIN_SLOTS and 4 * len(self.slots) <= self.capacity:
            self._compact()

    def _compact(self) -> None:
        """Move the live tracks' states into a pool of twice their number (fresh tensors)."""
        keys = list(self.slots)
        size = max(2 * len(keys), self.MIN_SLOTS)
        kept = self.state.select(self.index(keys))
        extra = self.model.init_state(size - len(keys), self.device, self.rollout)
        self.state = StreamState.cat([kept, extra])
        self.slots = {key: i for i, key in enumerate(keys)}
        self._free = list(range(size - 1, len(keys) - 1, -1))


class PersistenceModel(nn.Module):
    """Tokenizer + classifier; full-clip ``forward`` for training, ``step`` for streaming."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tokenizer = Tokenizer(config)
        cc = config.classifier
        if cc.features not in ('latent', 'codes'):
            raise ValueError(f'classifier.features must be latent or codes, got {cc.features!r}')
        if cc.pool == 'flatten':
            cells = self.tokenizer.grid ** 2
        elif cc.pool == 'mean':
            cells = 1
        else:
            raise ValueError(f'classifier.pool must be flatten or mean, got {cc.pool!r}')
        self.classifier = PersistenceClassifier(config, self.tokenizer.latent_dim * cells, cells)

    def pool(self, z: torch.Tensor) -> torch.Tensor:
        """Pool latents ``[..., D, h, w]`` per frame as the classifier reads them."""
        if self.config.classifier.pool == 'mean':
            return z.mean(dim=(-2, -1))
        return z.flatten(-3)

    def _visual(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.classifier.features == 'codes':
            z = self.tokenizer.quantize(z)[0]
        return self.pool(z)

    def set_geometry_normalization(self, mean, std) -> None:
        """Set the per-column geometry mean/std (from the training set)."""
        mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        std = torch.as_tensor(np.asarray(std), dtype=torch.float32).clamp_min(1e-6)
        self.classifier.geometry_mean.copy_(mean)
        self.classifier.geometry_std.copy_(std)

    def forward(self, crops: torch.Tensor, geometry: torch.Tensor,
                t0: Optional[torch.Tensor] = None, reconstruct: bool = False,
                tokenizer_grad: bool = True, rollout: bool = False) -> Dict[str, torch.Tensor]:
        """
        Run a clip: crops ``[B, T, 3, H, W]`` (uint8 or [0, 1]), geometry ``[B, T, G]``.

        Returns logits ``[B, T]``, prob, attention ``[B, T, T]`` (last layer), latents ``z``,
        with ``rollout`` the attention rollout ``[B, T, T]`` and, with ``reconstruct``, the
        tokenizer outputs (recon, target, indices, aux_loss).
        """
        out = {}
        with torch.set_grad_enabled(tokenizer_grad and torch.is_grad_enabled()):
            if reconstruct:
                tok = self.tokenizer(crops)
                out.update(tok)
                z = tok['z']
                visual = self.pool(tok['zq'] if self.config.classifier.features == 'codes'
                                   else z)
            else:
                z = self.tokenizer.encode(crops)
                out['z'] = z
                visual = self._visual(z)
        cls = self.classifier(visual, geometry, t0, rollout)
        out.update(cls)
        out['prob'] = torch.sigmoid(cls['logits'].float())
        return out

    def init_state(self, batch: int, device=None, rollout: bool = False) -> StreamState:
        """
        Return the state of ``batch`` new tracks (zero causal padding, empty KV cache).

        With ``rollout`` the attention that ``extend`` and ``step`` return is the attention
        rollout over all layers (``PersistenceClassifier.init_cache``), not the last layer's.
        """
        device = device or next(self.parameters()).device
        return StreamState(self.tokenizer.init_cache(batch, device),
                           self.classifier.init_cache(batch, device, rollout=rollout),
                           torch.zeros(batch, dtype=torch.long, device=device))

    @torch.no_grad()
    def extend(self, crops: torch.Tensor, geometry: torch.Tensor,
               state: Optional[StreamState] = None
               ) -> Tuple[torch.Tensor, torch.Tensor, StreamState]:
        """
        Process the next T frames of B tracks in one call (a late track's backlog).

        crops ``[B, T, 3, H, W]``, geometry ``[B, T, G]``; returns p(persistent) ``[B, T]``,
        the last frame's attention (``[B, W]``, or ``[B, L(W-1)+1]`` for a state made with
        ``rollout``) and the new state: the same as T calls of ``step``, at the cost of one
        clip forward.
        """
        b, t = crops.shape[:2]
        if state is None:
            state = self.init_state(b, crops.device)
        z, tokenizer = self.tokenizer.extend(crops, state.tokenizer)
        age = state.t.unsqueeze(1) + torch.arange(t, device=state.t.device)
        logits, attention, classifier = self.classifier.extend(self._visual(z), geometry, age,
                                                               state.classifier)
        return (torch.sigmoid(logits.float()), attention,
                StreamState(tokenizer, classifier, state.t + t))

    @torch.no_grad()
    def step(self, crops: torch.Tensor, geometry: torch.Tensor,
             state: Optional[StreamState] = None
             ) -> Tuple[torch.Tensor, torch.Tensor, StreamState]:
        """
        Process one new frame of B tracks.

        crops ``[B, 3, H, W]``, geometry ``[B, G]``; returns p(persistent) ``[B]``, attention
        ``[B, W]`` over the window (oldest first, this frame last; empty slots are 0; the
        rollout's ``[B, L(W-1)+1]`` for a state made with ``rollout``) and the new state. Cost
        per call is constant in the track length.
        """
        prob, attention, state = self.extend(crops.unsqueeze(1), geometry.unsqueeze(1), state)
        return prob[:, 0], attention, state


@dataclass
class TrackResult:
    """Output for one track at one frame."""

    probability: float
    decision: TrackState
    frames: int
    attention: np.ndarray
    updated: bool


class TrackStreamer:
    """
    Stream many concurrent tracks through one model, one batched step per camera frame.

    States are kept batched in a ``StatePool`` (gathered and written back per call); decided
    tracks are skipped unless the decision rule has ``recheck``. ``rollout``: each result's
    attention is the attention rollout over all layers (span L(W-1)+1 frames) instead of the
    last layer's (W).
    """

    def __init__(self, model: PersistenceModel, decision: Optional[EarlyDecision] = None,
                 rollout: bool = False):
        self.model = model.eval()
        self.decision = decision or replace(model.config.decision)
        self.rollout = bool(rollout)
        self.device = next(model.parameters()).device
        self._pool = StatePool(self.model, self.device, self.rollout)
        self._last: Dict[Hashable, TrackResult] = {}

    def update(self, track_ids: Sequence[Hashable], crops, geometry
               ) -> Dict[Hashable, TrackResult]:
        """
        Feed one frame of each listed track: crops ``[N, H, W, 3]`` uint8 or ``[N, 3, H, W]``.

        Returns the result for every listed track (``updated`` False for skipped tracks).
        """
        crops = torch.as_tensor(np.asarray(crops) if not torch.is_tensor(crops) else crops)
        geometry = torch.as_tensor(np.asarray(geometry, dtype=np.float32)
                                   if not torch.is_tensor(geometry) else geometry)
        return self.extend(track_ids, crops.unsqueeze(1), geometry.unsqueeze(1))

    def extend(self, track_ids: Sequence[Hashable], crops, geometry
               ) -> Dict[Hashable, TrackResult]:
        """
        Feed the next T frames of each listed track in one call (``PersistenceModel.extend``).

        crops ``[N, T, H, W, 3]`` uint8 or ``[N, T, 3, H, W]``, geometry ``[N, T, G]``. The
        decision rule sees every frame's p in order, as T calls of ``update`` would.
        """
        crops = torch.as_tensor(np.asarray(crops) if not torch.is_tensor(crops) else crops)
        if crops.ndim == 5 and crops.shape[-1] == 3 and crops.shape[2] != 3:
            crops = crops.permute(0, 1, 4, 2, 3)
        geometry = torch.as_tensor(np.asarray(geometry, dtype=np.float32)
                                   if not torch.is_tensor(geometry) else geometry)
        results = {}
        run = [i for i, tid in enumerate(track_ids) if tid not in self._last
               or self.decision.needs_encoding(self._last[tid].decision)]
        for i, tid in enumerate(track_ids):
            if i not in run:
                old = self._last[tid]
                results[tid] = TrackResult(old.probability, old.decision, old.frames,
                                           old.attention, False)
        if not run:
            return results
        self._pool.add([track_ids[i] for i in run if track_ids[i] not in self._pool])
        slots = self._pool.index([track_ids[i] for i in run])
        idx = torch.as_tensor(run, dtype=torch.long)
        prob, attn, state = self.model.extend(crops.index_select(0, idx).to(self.device),
                                              geometry.index_select(0, idx).to(self.device),
                                              self._pool.state.select(slots))
        self._pool.state.put(slots, state)
        prob = prob.cpu().numpy()
        attn = attn.cpu().numpy()
        frames = state.t.cpu().numpy()
        window = attn.shape[1]
        for j, i in enumerate(run):
            tid = track_ids[i]
            dec = self._last[tid].decision if tid in self._last else TrackState.TENTATIVE
            n = int(frames[j])
            first = n - prob.shape[1] + 1  # frame count at the first of the T new frames
            for k, p in enumerate(prob[j]):
                dec = self.decision.decide(float(p), first + k, dec)
            res = TrackResult(float(prob[j, -1]), dec, n, attn[j, window - min(n, window):],
                              True)
            self._last[tid] = res
            results[tid] = res
        return results

    def drop(self, track_ids: Sequence[Hashable]) -> None:
        """Forget ended tracks."""
        self._pool.remove(track_ids)
        for tid in track_ids:
            self._last.pop(tid, None)

    def result(self, track_id: Hashable) -> Optional[TrackResult]:
        """Return the last result of a track, or None."""
        return self._last.get(track_id)

    @property
    def tracks(self) -> List[Hashable]:
        """Return the ids of tracks with state."""
        return list(self._last)
