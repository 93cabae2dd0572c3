"""
The learned persistence model behind the ``PersistenceFilter`` interface (``--filter learned``).

Each stereo track is streamed as its two 2D tracks (left and right): every new matched frame
of a side is one ``PersistenceModel.step`` (batched over all tracks of the frame), fed with
that frame's crop and ``features.side_geometry`` row, the same rows the data set holds.  A
stereo track's probability is the mean of its sides' latest probabilities; ``EarlyDecision``
turns it into PERSISTENT/TRANSIENT after ``min_frames`` observed frames, and a decided track
stops costing model time unless ``recheck`` is set.  Attention is the left side's (the
right's when the left has none): the decision token's weights over its recent frames, with
their stamps; the last layer's (W frames) or, with ``attention='rollout'``, the rollout over
all layers (L(W-1)+1 frames).  A pair that forms late brings its back-filled history: with
``catch_up_frames`` set, at most that many of a side's frames go through the model per frame
(the rest in the next frames; streaming in chunks gives the same p as one clip) and the track
stays undecided until both sides have caught up, so one late pair does not stall a frame.
Several models make an ensemble (``model.ensemble_paths``, or ``evaluate --model``
repeated): each member streams every frame, p is the mean of the members' p, attention is
the first member's.
"""

from collections import deque
import dataclasses
from pathlib import Path
from typing import Deque, Dict, Hashable, Optional, Sequence, Union
import warnings

import numpy as np
import torch

from persistence_ros.baselines import NoFilter
from persistence_ros.features import (
    APPEARANCE_FEATURES, GEOMETRY_FEATURES, side_geometry, SIDES)
from persistence_ros.model import ATTENTION_MODES, DEFAULT_WEIGHTS
from persistence_ros.model.checkpoint import load_model
from persistence_ros.model.config import DomainConfig
from persistence_ros.model.decision import EarlyDecision
from persistence_ros.model.domain import DomainCheck
from persistence_ros.model.model import PersistenceModel, TrackStreamer
from persistence_ros.stereo_track import (
    FilterDecision, PersistenceFilter, StereoTrackHistory, TrackState)

_NEVER = EarlyDecision(hi=1.0, lo=0.0, min_frames=2 ** 62)  # the streamer only scores


def resolve_device(device: str = 'auto') -> str:
    """Return 'cuda' for 'auto' when a GPU is available, else 'cpu'; check explicit names."""
    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f'model device {device!r} requested but torch sees no CUDA device')
    if device != 'cpu' and not device.startswith('cuda'):
        raise ValueError(f'model device must be auto, cpu or cuda[:N], got {device!r}')
    return device


@dataclasses.dataclass
class LearnedFilterStats:
    """Counters of model work (the compute the early decision saves)."""

    frames_encoded: int = 0
    frames_skipped_decided: int = 0
    frames_without_crop: int = 0
    backlogs_deferred: int = 0  # times a side's back-filled frames were cut at catch_up_frames
    model_calls: int = 0


class LearnedFilter(PersistenceFilter):
    """Stream stereo tracks through a ``PersistenceModel``; decide early."""

    name = 'learned'
    uses_images = True

    def __init__(self, model: Union[PersistenceModel, Sequence[PersistenceModel]],
                 plane: Optional[Sequence[float]] = None,
                 decision: Optional[EarlyDecision] = None,
                 calibration=None, attention: str = 'last_layer',
                 fallback: Optional[PersistenceFilter] = None, catch_up_frames: int = 0):
        if attention not in ATTENTION_MODES:
            raise ValueError(f'learned filter: attention must be one of {ATTENTION_MODES}, '
                             f'got {attention!r}')
        self.models = [model] if isinstance(model, PersistenceModel) else list(model)
        if not self.models:
            raise ValueError('learned filter: no model given')
        for member in self.models:
            unknown = [f for f in member.config.classifier.geometry_features
                       if f not in GEOMETRY_FEATURES]
            if unknown:
                raise ValueError(f'learned filter: the model reads geometry columns {unknown} '
                                 f'that this package does not compute (known: '
                                 f'{list(GEOMETRY_FEATURES)}); use weights made for this '
                                 'version')
            member.eval()
        self.model = self.models[0]  # the first member gives decision defaults and attention
        self.attention = attention
        if int(catch_up_frames) < 0:
            raise ValueError(f'learned filter: catch_up_frames must be >= 0 (0: no limit), got '
                             f'{catch_up_frames}')
        self.catch_up_frames = int(catch_up_frames)
        # per member, the side_geometry columns it was trained on, in its order
        self.columns = [[GEOMETRY_FEATURES.index(f)
                         for f in member.config.classifier.geometry_features]
                        for member in self.models]
        self.appearance = any(set(APPEARANCE_FEATURES)
                              & set(member.config.classifier.geometry_features)
                              for member in self.models)
        self.decision = decision or dataclasses.replace(self.model.config.decision)
        self.plane = None if plane is None else [float(v) for v in plane]
        self.calibration = calibration
        # frames whose stamps are kept per track: what the published attention covers
        self.attention_span = self.model.classifier.attention_span(attention == 'rollout') or 1
        self.stats = LearnedFilterStats()
        features = self.model.config.classifier.geometry_features
        if self.plane is None and 'height_m' in features and 'plane_known' not in features:
            warnings.warn('learned filter without a ground plane: the height feature is 0, and '
                          'these weights cannot tell (they were trained with the floor plane)',
                          stacklevel=2)
        # the fail-safe: tracks out of what the model was trained on go to this rule
        self.fallback = fallback if fallback is not None else NoFilter()
        self.domain = DomainCheck(self.model.config.domain, features)
        self._warned: set = set()
        self.fallback_decided = 0  # tracks the fallback decided (since configure)
        self.reset()
        if calibration is not None:
            self.set_calibration(calibration)

    def disable_fail_safe(self) -> None:
        """
        Let the model decide every track, whatever its rig or features (an evaluation tool).

        The domain check then knows no training ranges (``diagnostics`` says 'unknown'); the
        node never calls this: on a robot, out-of-domain tracks go to ``model.fallback``.
        """
        self.domain = DomainCheck(DomainConfig(), self.domain.columns)
        self._warned.clear()
        self.reset()
        if self.calibration is not None:
            self.set_calibration(self.calibration)

    @property
    def device(self) -> str:
        """Return the device the model runs on (``cpu``, ``cuda``)."""
        return next(self.model.parameters()).device.type

    @torch.no_grad()
    def warm_up(self) -> None:
        """
        Run each model once on a dummy clip (no track state is touched).

        The first forward of a process pays the libraries' lazy start (one node's first
        frame took 1.2 s, docs/benchmarks.md); the node calls this at configure instead.
        """
        for member in self.models:
            config = member.config
            device = next(member.parameters()).device
            crops = torch.zeros(1, 2, 3, config.crop_size, config.crop_size, dtype=torch.uint8,
                                device=device)
            geometry = torch.zeros(1, 2, len(config.classifier.geometry_features),
                                   device=device)
            member.extend(crops, geometry, member.init_state(1, device,
                                                             self.attention == 'rollout'))
            if device.type == 'cuda':
                torch.cuda.synchronize(device)

    def reset(self) -> None:
        """Forget every track."""
        self._streamers = [TrackStreamer(member, _NEVER, self.attention == 'rollout')
                           for member in self.models]
        self._last_stamp: Dict[Hashable, int] = {}
        self._stamps: Dict[Hashable, Deque[int]] = {}
        self._latched: Dict[int, FilterDecision] = {}
        self._on_fallback: set = set()
        self._catching_up: set = set()  # tracks with back-filled frames not yet streamed
        self.fallback.reset()
        self.domain.reset()

    def set_calibration(self, calibration) -> None:
        """Take the rig (sizes, intrinsics, lens, baseline); check it against the domain."""
        self.calibration = calibration
        self.fallback.set_calibration(calibration)
        self.domain.set_rig(calibration)
        self._warn_domain()

    def _warn_domain(self) -> None:
        """Warn once per reason that the rig is out of the model's domain."""
        for reason in self.domain.reasons:
            if reason not in self._warned:
                self._warned.add(reason)
                warnings.warn(f'learned filter: {reason}: tracks are decided by the fallback '
                              f'rule {self.fallback.name!r} (model.fallback)', stacklevel=3)

    def diagnostics(self) -> Dict[str, object]:
        """Return the fail-safe's state: domain, its reasons, tracks on the fallback rule."""
        reasons = self.domain.reasons
        return {'domain': 'outside' if reasons else (
                    'inside' if self.domain.known else 'unknown'),
                'domain.reasons': '; '.join(reasons),
                'domain.fallback': self.fallback.name,
                'domain.tracks_on_fallback': len(self._on_fallback),
                'domain.tracks_decided_by_fallback': self.fallback_decided,
                'model.tracks_catching_up': len(self._catching_up),
                'model.backlogs_deferred': self.stats.backlogs_deferred}

    def _pending(self, tracks: Sequence[StereoTrackHistory]):
        """Return {(track id, side): (crops, geometry rows, stamps)} of frames not yet streamed."""
        pending = {}
        self._catching_up = set()
        for st in tracks:
            decided = st.id in self._latched and not self.decision.recheck
            for side in SIDES:
                key = (st.id, side)
                last = self._last_stamp.get(key)
                if decided:  # count the skipped frames; no features, no model
                    history = st.left if side == 'left' else st.right
                    new, newest = 0, None
                    for o in reversed(history):  # stamps increase: only the tail is new
                        if last is not None and o.stamp_ns <= last:
                            break
                        if o.matched:
                            new += 1
                            newest = o.stamp_ns if newest is None else newest
                    if new:
                        self.stats.frames_skipped_decided += new
                        self._last_stamp[key] = newest
                    continue
                rows = side_geometry(st, side, self.calibration, self.plane, after_ns=last,
                                     appearance=self.appearance)
                if not rows.observations:
                    continue
                keep = [i for i, o in enumerate(rows.observations) if o.crop is not None]
                last = len(rows.observations) - 1
                if self.catch_up_frames and len(keep) > self.catch_up_frames:
                    # the oldest frames now, the rest in the next frames
                    keep = keep[:self.catch_up_frames]
                    last = keep[-1]
                    self._catching_up.add(st.id)
                    self.stats.backlogs_deferred += 1
                self.stats.frames_without_crop += last + 1 - len(keep)
                if keep:
                    self.domain.add_rows(st.id, rows.geometry[keep][:, self.columns[0]])
                    stamps = [rows.observations[i].stamp_ns for i in keep]
                    if side == 'right' and len(st.right_stamps_ns):
                        # attention stamps are frame (left) stamps, the right side's too
                        frame_of = dict(zip((int(s) for s in st.right_stamps_ns),
                                            (int(s) for s in st.stamps_ns)))
                        stamps = [frame_of.get(int(s), s) for s in stamps]
                    pending[key] = ([rows.observations[i].crop for i in keep],
                                    rows.geometry[keep], stamps)
                self._last_stamp[key] = rows.observations[last].stamp_ns
        return pending

    def _stream(self, pending) -> None:
        """
        Feed pending frames: one batched ``TrackStreamer.extend`` per backlog length.

        Usually every track has one new frame (one call); a pair that formed late brings its
        back-filled history, which goes through the model as one clip instead of one step
        per past frame.
        """
        by_length: Dict[int, list] = {}
        for key, (_, _, stamps) in pending.items():
            by_length.setdefault(len(stamps), []).append(key)
        for length, keys in sorted(by_length.items()):
            crops = np.stack([np.stack(pending[key][0]) for key in keys])
            geometry = np.stack([pending[key][1] for key in keys])
            for streamer, columns in zip(self._streamers, self.columns):
                streamer.extend(keys, crops, geometry[..., columns])
            self.stats.model_calls += 1
            self.stats.frames_encoded += length * len(keys)
            for key in keys:
                stamps = self._stamps.setdefault(key, deque(maxlen=self.attention_span))
                stamps.extend(pending[key][2])

    def _attention(self, track_id: int):
        for side in SIDES:
            result = self._streamers[0].result((track_id, side))
            stamps = self._stamps.get((track_id, side))
            if result is not None and stamps and len(result.attention):
                n = min(len(result.attention), len(stamps))
                weights = np.asarray(result.attention[-n:], dtype=np.float64)
                total = weights.sum()
                if total > 0:
                    return weights / total, list(stamps)[-n:]
        return None, None

    def update(self, tracks: Sequence[StereoTrackHistory]) -> Dict[int, FilterDecision]:
        """Stream the new frames of every track; return its (latched) decision."""
        if self.calibration is None:
            raise RuntimeError('learned filter: no calibration (call set_calibration or pass '
                               'calibration)')
        live = {st.id for st in tracks}
        # every side the streamer or the attention stamps know has a _last_stamp entry
        gone = [key for key in self._last_stamp if key[0] not in live]
        for streamer in self._streamers:
            streamer.drop(gone)
        for key in gone:
            self._last_stamp.pop(key, None)
            self._stamps.pop(key, None)
        for tid in [t for t in self._latched if t not in live]:
            del self._latched[tid]
        self.domain.forget(live)
        self._on_fallback &= live
        if tracks and len(tracks[0].stamps_ns):
            self.domain.add_frame(int(tracks[0].stamps_ns[-1]))
            self._warn_domain()

        pending = self._pending(tracks)
        self.timer.lap('features')
        self._stream(pending)
        self.timer.lap('model')
        fallback = self.fallback.update(tracks)
        rig_outside = bool(self.domain.reasons)
        out: Dict[int, FilterDecision] = {}
        for st in tracks:
            latched = self._latched.get(st.id)
            if latched is not None and not self.decision.recheck:
                out[st.id] = latched
                continue
            if rig_outside or self.domain.track_outside(st.id):
                # the fail-safe: out of what the model knows, the fallback rule decides
                decision = fallback[st.id]
                if st.id not in self._on_fallback:
                    self._on_fallback.add(st.id)
                    self.fallback_decided += 1
                out[st.id] = decision
                continue
            probs = [[r.probability for r in (streamer.result((st.id, s)) for s in SIDES)
                      if r is not None] for streamer in self._streamers]
            if not probs[0]:
                out[st.id] = FilterDecision(0.5, TrackState.TENTATIVE)
                continue
            p = float(np.mean([np.mean(member) for member in probs]))
            previous = latched.state if latched else TrackState.TENTATIVE
            state = TrackState.TENTATIVE if st.id in self._catching_up else \
                self.decision.decide(p, int(st.frames_observed), previous)
            attention, stamps = self._attention(st.id)
            result = FilterDecision(p, state, attention, stamps)
            if state != TrackState.TENTATIVE:
                self._latched[st.id] = result
            out[st.id] = result
        return out


def load_persistence_filter(model_path: Union[None, str, Sequence[str]] = None,
                            device: str = 'auto', plane: Optional[Sequence[float]] = None,
                            calibration=None, attention: str = 'last_layer',
                            decision: Optional[EarlyDecision] = None,
                            fallback: Optional[PersistenceFilter] = None,
                            catch_up_frames: int = 0) -> LearnedFilter:
    """
    Return a ``LearnedFilter`` with the weights at ``model_path`` (default: shipped ``cpu``).

    Several paths make an ensemble: p is the mean of the members' p, the first member gives
    the attention.  ``attention``: 'last_layer' or 'rollout' (``LearnedFilter``).
    ``decision``: the early-decision rule (None: the first checkpoint's);
    ``catch_up_frames``: see ``LearnedFilter``.  Fails with a
    message naming the missing file when no weights are found.
    """
    if not model_path:
        paths = [DEFAULT_WEIGHTS]
    else:
        paths = [Path(model_path)] if isinstance(model_path, (str, Path)) else [
            Path(p) for p in model_path]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(
                f'learned filter: no weights at {path}; train them with `persistence-ros '
                'train classifier` (docs/model.md) or set model.path')
    device = resolve_device(device)
    models = [load_model(path, device) for path in paths]
    return LearnedFilter(models, plane=plane, decision=decision, calibration=calibration,
                         attention=attention, fallback=fallback,
                         catch_up_frames=catch_up_frames)
