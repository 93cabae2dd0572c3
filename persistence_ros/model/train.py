"""Training loops of the tokenizer and the classifier (seeded, resumable, AMP, DDP)."""

import dataclasses
import json
import logging
import math
import os
from pathlib import Path
import random
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from persistence_ros.model.checkpoint import (
    CheckpointError, file_sha256, load_tensors, model_metadata, save_model, save_tensors)
from persistence_ros.model.classifier import frame_bce
from persistence_ros.model.config import DomainConfig, ModelConfig
from persistence_ros.model.data import collate, TrackDataset
from persistence_ros.model.model import PersistenceModel
from persistence_ros.model.persistence_filter import resolve_device
from persistence_ros.model.probe import linear_probe
from persistence_ros.model.tokenizer import codebook_diagnostics, recon_loss, warn_if_collapsed
from persistence_ros.overrides import flatten

LOG = logging.getLogger(__name__)
STAGES = ('tokenizer', 'classifier')
MODEL_PREFIX = 'model.'  # the model's weights inside the train state
EMA_PREFIX = 'ema.'  # the moving average of the weights inside the train state
# The fields a tokenizer's weights depend on: a tokenizer checkpoint must match them.
TOKENIZER_KEYS = ('crop_size', 'input_size', 'tokenizer')


class NothingToTrain(Exception):
    """``train`` was asked for no work: 0 epochs or steps, or a run that is already done."""


def training_device(device: str) -> str:
    """
    Return the torch device to train on: 'auto' is cuda when torch sees a GPU, else cpu.

    ValueError for a GPU that is not there (``cuda`` without one, ``cuda:3`` with two) or a
    name that is not cpu/cuda[:N] (``resolve_device`` of the learned filter, plus the index).
    """
    device = resolve_device(device)
    if device.startswith('cuda:'):
        index = device[len('cuda:'):]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise ValueError(f'device {device!r}: torch sees {torch.cuda.device_count()} CUDA '
                             'device(s)')
    return device


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def optimizer_tensors(optimizer: torch.optim.Optimizer):
    """Flatten an optimizer state into (tensors, JSON-able param_groups) for safetensors."""
    state = optimizer.state_dict()
    tensors = {}
    for pid, entry in state['state'].items():
        for key, value in entry.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f'optim.{pid}.{key}'] = value
    return tensors, state['param_groups']


def load_optimizer_tensors(optimizer, tensors: Dict[str, torch.Tensor], param_groups) -> None:
    """Restore an optimizer from ``optimizer_tensors`` output."""
    state: Dict[int, Dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if not name.startswith('optim.'):
            continue
        _, pid, key = name.split('.', 2)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({'state': state, 'param_groups': param_groups})


def _binary_metrics(prob: np.ndarray, label: np.ndarray) -> Dict[str, float]:
    pred = prob >= 0.5
    tp = float(np.sum(pred & (label == 1)))
    fp = float(np.sum(pred & (label == 0)))
    fn = float(np.sum(~pred & (label == 1)))
    metrics = {'track_accuracy': float(np.mean(pred == (label == 1))) if len(label) else 0.0,
               'track_f1': 2 * tp / max(2 * tp + fp + fn, 1.0),
               'track_precision': tp / max(tp + fp, 1.0), 'track_recall': tp / max(tp + fn, 1.0)}
    if len(np.unique(label)) == 2:
        from sklearn.metrics import roc_auc_score
        metrics['track_auc'] = float(roc_auc_score(label, prob))
    return metrics


@torch.no_grad()
def evaluate(model: PersistenceModel, loader: DataLoader, stage: str, device: str,
             amp: bool = False) -> Dict[str, float]:
    """
    Return validation metrics: losses, per-track accuracy/F1 (last-frame decision), codes.

    ``probe_latent_*`` / ``probe_codes_*``: a linear probe (``model.probe``) of the track
    label on the pre-quantization latents / the quantized codes, averaged over each track's
    frames, cross-validated by scene (the codebook-collapse check PSNR cannot be).
    """
    model.eval()
    totals = {'loss': 0.0, 'recon': 0.0, 'bce': 0.0, 'frames': 0.0}
    probs, labels, codes, code_mask = [], [], [], []
    pooled: Dict[str, list] = {'latent': [], 'codes': []}  # per track, for the linear probe
    track_labels, scenes = [], []
    for batch in loader:
        crops = batch['crops'].to(device)
        geom = batch['geometry'].to(device)
        valid = batch['valid'].to(device)
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=amp):
            out = model(crops, geom, batch['t0'].to(device), reconstruct=True)
        n = float(valid.sum())
        rec = recon_loss(out, valid)
        totals['recon'] += float(rec) * n
        if stage == 'classifier':
            bce = frame_bce(out['logits'], batch['labels'].to(device), valid)
            totals['bce'] += float(bce) * n
            last = (batch['length'] - 1).to(device)
            p = out['prob'].gather(1, last[:, None]).squeeze(1)
            probs.append(p.float().cpu().numpy())
            labels.append(batch['track_label'].numpy())
        totals['frames'] += n
        codes.append(out['indices'].cpu())
        code_mask.append(batch['valid'])
        weight = valid.float()[..., None]
        for name, latents in (('latent', out['z']), ('codes', out['zq'])):
            frames = model.pool(latents.float())
            pooled[name].append(((frames * weight).sum(1) / weight.sum(1).clamp_min(1.0))
                                .cpu().numpy())
        track_labels.append(batch['track_label'].numpy())
        scenes += [loader.dataset.tracks[int(i)][5] for i in batch['index']]
    n = max(totals['frames'], 1.0)
    metrics = {'recon_mse': totals['recon'] / n}
    metrics['psnr_db'] = 10 * math.log10(4.0 / max(metrics['recon_mse'], 1e-12))
    if stage == 'classifier':
        metrics['bce'] = totals['bce'] / n
        metrics['loss'] = metrics['bce']
        metrics.update(_binary_metrics(np.concatenate(probs), np.concatenate(labels)))
    else:
        metrics['loss'] = metrics['recon_mse']
    if codes:
        t = max(c.shape[1] for c in codes)
        idx = torch.cat([torch.nn.functional.pad(c, (0, 0, 0, 0, 0, t - c.shape[1]))
                         for c in codes])
        msk = torch.cat([torch.nn.functional.pad(m, (0, t - m.shape[1])) for m in code_mask])
        diag = codebook_diagnostics(idx, model.tokenizer.codebook_size, msk)
        metrics.update({f'code_{k}': v for k, v in diag.items()})
        for name, rows in pooled.items():
            probe = linear_probe(np.concatenate(rows), np.concatenate(track_labels), scenes)
            metrics.update({f'probe_{name}_{k}': v for k, v in probe.items()})
    return metrics


def selection_score(stage: str, metrics: Dict[str, float]) -> list:
    """
    Return the score that picks OUT/model.safetensors (higher is better, compared as a list).

    Classifier: validation track F1, ties broken by lower validation BCE (a small validation
    split saturates at F1 1.0 within a few epochs, and the first such epoch is rarely the
    best-calibrated). Tokenizer: lower validation loss. Without a validation split: lower
    training loss.
    """
    loss = metrics.get('val_loss', metrics['train_loss'])
    if stage == 'classifier' and 'val_track_f1' in metrics:
        return [float(metrics['val_track_f1']), -float(loss)]
    return [-float(loss)]


def resume_mismatches(saved: Dict, config: ModelConfig, stage: str, seed: int,
                      manifest: Path) -> List[str]:
    """
    Return what differs between a checkpoint's metadata and a run that resumes from it.

    Everything must match except ``train.epochs`` (resuming to train longer is the point):
    the model config, the stage, the seed and the data set (its manifest's sha256).  The
    ``domain`` section is not a setting: ``train`` derives it from the data set, which the
    manifest's digest already checks.
    """
    before = flatten(saved.get('config', {}))
    now = flatten(json.loads(json.dumps(config.to_dict())))  # tuples as JSON lists
    found = [f'{key}: {before.get(key)!r} then, {now.get(key)!r} now'
             for key in sorted(set(before) | set(now))
             if key != 'train.epochs' and not key.startswith('domain.')
             and before.get(key) != now.get(key)]
    for key, value in (('stage', stage), ('seed', seed)):
        if saved.get(key) != value:
            found.append(f'{key}: {saved.get(key)!r} then, {value!r} now')
    digest = saved.get('data_manifest_sha256')
    if digest and manifest.exists() and digest != file_sha256(manifest):
        found.append(f'data set: {manifest} is not the one it was trained on')
    return found


def tokenizer_mismatches(saved: Dict, config: ModelConfig) -> List[str]:
    """
    Return what differs between a checkpoint's config and ``config`` in ``TOKENIZER_KEYS``.

    Tensor shapes do not tell everything a tokenizer depends on (other ``fsq_levels`` of the
    same count, another ``input_size``, ``kernel_t`` 1 against 3 with ``res_blocks`` 0 have
    the same shapes, or none at all), so ``train --tokenizer`` compares the configs.
    ``saved``: the checkpoint's JSON metadata; its config is read as ``ModelConfig`` (fields
    missing from older files take their defaults).
    """
    if not isinstance(saved.get('config'), dict):
        return ['the checkpoint holds no config']
    try:
        then = ModelConfig.from_dict(saved['config']).to_dict()
    except (ValueError, TypeError) as error:
        return [f'its config does not load: {error}']
    now = config.to_dict()
    before = flatten(json.loads(json.dumps({k: then[k] for k in TOKENIZER_KEYS})))
    after = flatten(json.loads(json.dumps({k: now[k] for k in TOKENIZER_KEYS})))
    return [f'{key}: {before.get(key)!r} in the checkpoint, {after.get(key)!r} here'
            for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]


def with_prefix(tensors: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """Return the tensors whose names start with ``prefix``, the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_tokenizer(model: PersistenceModel, path) -> None:
    """
    Initialise ``model.tokenizer`` from the checkpoint at ``path``.

    CheckpointError when the file is missing or unreadable, its config differs from the
    model's in any field the tokenizer depends on (``tokenizer_mismatches``), or its tensors
    do not fit.
    """
    tensors, metadata = load_tensors(path)
    mismatches = tokenizer_mismatches(metadata, model.config)
    if mismatches:
        raise CheckpointError(f'{path}: its tokenizer was trained with other settings than '
                              f'this run\'s ({"; ".join(mismatches)}); give a tokenizer '
                              'trained with this config, or the same settings (--config/--set)')
    tok = with_prefix(tensors, 'tokenizer.')
    try:
        model.tokenizer.load_state_dict(tok, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f'{path}: tokenizer does not match: {exc}') from exc


def gather_from_ranks(tensor: torch.Tensor) -> List[torch.Tensor]:
    """Return ``tensor`` of every rank, indexed by rank, on the CPU (collective)."""
    import torch.distributed as dist
    local = tensor.to('cuda' if dist.get_backend() == 'nccl' else 'cpu')  # NCCL: CUDA only
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return [part.cpu() for part in parts]


def replicas_in_sync(model: torch.nn.Module) -> bool:
    """Return True if every rank of the process group holds the same parameters (collective)."""
    with torch.no_grad():
        local = torch.stack([p.detach().double().sum() for p in model.parameters()])
    gathered = gather_from_ranks(local)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def _rng_key(name: str, rank: int) -> str:
    """Train-state key of ``rank``'s RNG state ``name`` (rank 0 keeps the unsuffixed key)."""
    return f'rng.{name}' + (f'.rank{rank}' if rank else '')


def rng_tensors(device: str, distributed: bool) -> Dict[str, torch.Tensor]:
    """
    Return the torch RNG states of every rank for the train state (collective under DDP).

    Rank 0's are ``rng.torch`` (and ``rng.cuda`` on a GPU), rank r's carry ``.rank{r}``: each
    rank draws its own dropout masks, so a resumed rank must get its own state back.
    """
    states = {'torch': torch.get_rng_state()}
    if device.startswith('cuda'):
        states['cuda'] = torch.cuda.get_rng_state()
    tensors = {}
    for name, state in states.items():
        for r, part in enumerate(gather_from_ranks(state) if distributed else [state]):
            tensors[_rng_key(name, r)] = part
    return tensors


def restore_rng(tensors: Dict[str, torch.Tensor], rank: int, device: str) -> bool:
    """Set this rank's RNG states from a train state; False if it holds none for ``rank``."""
    if _rng_key('torch', rank) not in tensors:
        return False
    torch.set_rng_state(tensors[_rng_key('torch', rank)])
    if device.startswith('cuda') and _rng_key('cuda', rank) in tensors:
        torch.cuda.set_rng_state(tensors[_rng_key('cuda', rank)])
    return True


def _diag(metrics):
    return {k[5:]: v for k, v in metrics.items() if k.startswith('code_')}


def _nothing_left(state_path: Optional[Path], start_epoch: int, step: int, epochs: int,
                  max_steps: Optional[int]) -> str:
    """Return why a run has nothing to train (``state_path``: the state it resumed from)."""
    if state_path is None:
        return f'epochs is {epochs}' if epochs == 0 else f'max_steps is {max_steps}'
    if start_epoch >= epochs:
        return (f'{state_path} already holds {start_epoch} epochs of {epochs} (step {step}); '
                'give a larger --epochs to train longer')
    return (f'{state_path} is at step {step} and max_steps is {max_steps}; give a larger '
            '--max-steps to train longer')


def train(stage: str, config: ModelConfig, data_dir, out_dir, epochs: Optional[int] = None,
          device: str = 'cpu', seed: int = 0, resume: bool = False,
          max_steps: Optional[int] = None, progress: bool = True,
          tokenizer_checkpoint: Optional[str] = None) -> Dict[str, float]:
    """
    Train ``stage`` ('tokenizer' or 'classifier'); return the last epoch's metrics.

    Writes OUT/last.safetensors (+ .json) every ``checkpoint_every`` epochs, OUT/model.safetensors
    for the best validation score, OUT/train_state.safetensors (+ .json: weights, optimizer, every
    rank's RNG, epoch) and OUT/metrics.jsonl. Runs DistributedDataParallel when WORLD_SIZE > 1
    (torchrun); rank 0 validates, writes and returns the validation metrics, the other ranks
    only train. ``device``: cpu, cuda[:N] or auto (``training_device``).

    ``max_steps`` stops after that many optimizer steps in all (a resumed run counts the
    steps before it). A run stopped inside an epoch saves that epoch as incomplete
    (``epoch_complete`` false, ``epoch_steps`` done in it, in the train state's JSON), and
    ``resume`` re-enters it for the batches it still lacks, drawn afresh: the epoch then has
    as many steps as without the stop, but not the same batches, so only a resume from a
    complete epoch continues exactly like an uninterrupted run.

    Raises NothingToTrain when there is nothing to do (0 epochs, ``max_steps`` 0 or already
    reached, or a resumed run already at ``epochs``); ValueError for a bad argument.
    """
    epochs = config.train.epochs if epochs is None else epochs
    _check_arguments(stage, config, data_dir, epochs, max_steps, resume)
    world, rank = _world_and_rank()
    device = _start_processes(training_device(device), world)
    run = _TrainRun(stage, config, data_dir, Path(out_dir), epochs, max_steps, seed,
                    world, rank, device)
    run.build(tokenizer_checkpoint)
    if resume:
        run.resume()
    run.check_work_left()
    run.make_loaders()
    metrics = run.fit(progress)
    run.finish()
    return metrics


def _world_and_rank() -> Tuple[int, int]:
    """Return the number of processes and this one's rank (torchrun's environment)."""
    return int(os.environ.get('WORLD_SIZE', '1')), int(os.environ.get('RANK', '0'))


def _check_arguments(stage: str, config: ModelConfig, data_dir, epochs: int,
                     max_steps: Optional[int], resume: bool) -> None:
    """Raise ValueError, FileNotFoundError or NothingToTrain for a run ``train`` refuses."""
    if stage not in STAGES:
        raise ValueError(f'stage must be one of {STAGES}, got {stage!r}')
    if epochs < 0 or (max_steps is not None and max_steps < 0):
        raise ValueError(f'epochs and max_steps must be >= 0, got {epochs} and {max_steps}')
    world, _ = _world_and_rank()
    steps_per_epoch = config.train.steps_per_epoch
    if world > 1 and steps_per_epoch > 0:
        raise ValueError(f'train.steps_per_epoch ({steps_per_epoch}) is not supported with '
                         f'several processes (WORLD_SIZE={world}): each epoch is one pass of '
                         'the distributed sampler; set train.steps_per_epoch=0')
    if not (Path(data_dir) / 'manifest.json').is_file():
        raise FileNotFoundError(f'{data_dir}: no data set there (no manifest.json); build one '
                                'with `persistence-ros simulate --dataset`')
    if not resume and (epochs == 0 or max_steps == 0):
        raise NothingToTrain(_nothing_left(None, 0, 0, epochs, max_steps))


def _start_processes(device: str, world: int) -> str:
    """Join the process group of a distributed run (``world`` > 1); return this rank's device."""
    if world > 1:
        import torch.distributed as dist
        local = int(os.environ.get('LOCAL_RANK', '0'))
        if device.startswith('cuda'):
            device = f'cuda:{local}'
            torch.cuda.set_device(local)
        dist.init_process_group('nccl' if device.startswith('cuda') else 'gloo')
    return device


class _TrainRun:
    """
    One call of ``train`` on one rank, step by step.

    ``build`` (model, data sets, optimizer), ``resume`` (from the train state),
    ``check_work_left``, ``make_loaders``, ``fit`` (per epoch: ``train_epoch``, ``validate``,
    ``save``) and ``finish`` (the DDP replica check).
    """

    def __init__(self, stage: str, config: ModelConfig, data_dir, out_dir: Path,
                 epochs: int, max_steps: Optional[int], seed: int, world: int, rank: int,
                 device: str):
        self.stage, self.config, self.tc = stage, config, config.train
        self.data_dir, self.out_dir = data_dir, out_dir
        self.epochs, self.max_steps, self.seed = epochs, max_steps, seed
        self.world, self.rank, self.device = world, rank, device
        self.distributed = world > 1
        self.amp = device.startswith('cuda')
        self.manifest = Path(data_dir) / 'manifest.json'
        self.state_path = out_dir / 'train_state.safetensors'
        self.start_epoch, self.step, self.best = 0, 0, None
        self.done_in_epoch = 0  # batches of start_epoch trained before a stop inside it
        seed_everything(seed + rank)
        if rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)

    def build(self, tokenizer_checkpoint: Optional[str]) -> None:
        """Make the model, the data sets (geometry normalisation from ``train``), the optimizer."""
        tc = self.tc
        model = self.model = PersistenceModel(self.config)
        burn_in = model.tokenizer.temporal_receptive_field - 1
        feats = self.config.classifier.geometry_features
        self.train_set = TrackDataset(self.data_dir, 'train', feats, tc.window, True,
                                      tc.start_at_track_start, burn_in, self.seed,
                                      plane_dropout=tc.plane_dropout,
                                      appearance_jitter=tc.appearance_jitter)
        self.val_set = TrackDataset(self.data_dir, 'val', feats, max(tc.window, 4 * tc.window),
                                    False)
        if len(self.train_set) == 0:
            raise ValueError(f'{self.data_dir}: no training tracks (split "train")')
        model.set_geometry_normalization(*self.train_set.geometry_stats())
        # what the training data covered, saved with the weights (the filter's fail-safe)
        self.config = model.config = dataclasses.replace(
            self.config, domain=DomainConfig(**self.train_set.domain()))
        tok_ckpt = tokenizer_checkpoint or tc.tokenizer_checkpoint
        if self.stage == 'classifier' and tok_ckpt:
            load_tokenizer(model, tok_ckpt)
            LOG.info('tokenizer initialised from %s', tok_ckpt)
        model.to(self.device)
        if self.stage == 'tokenizer':
            self.params = list(model.tokenizer.parameters())
        elif tc.finetune_tokenizer:
            self.params = list(model.parameters())
        else:
            for p in model.tokenizer.parameters():
                p.requires_grad_(False)
            self.params = list(model.classifier.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=tc.lr, weight_decay=tc.weight_decay)
        # train.ema_decay > 0: validation, the choice of epoch and the saved weights use an
        # exponential moving average of the weights (a copy; buffers are constants here)
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay))
                    if tc.ema_decay > 0 else None)

    @property
    def kept_model(self) -> PersistenceModel:
        """Return the model that is validated and saved: the moving average if there is one."""
        return self.model if self.ema is None else self.ema.module

    def resume(self) -> None:
        """Restore weights, optimizer, progress and this rank's RNG from the train state."""
        state_path = self.state_path
        if not state_path.exists():
            if (self.out_dir / 'last.safetensors').exists():
                raise CheckpointError(f'cannot resume: {self.out_dir} has last.safetensors but '
                                      'no train_state.safetensors; start a new --out')
            return
        tensors, meta = load_tensors(state_path)
        mismatches = resume_mismatches(meta, self.config, self.stage, self.seed, self.manifest)
        if mismatches:
            raise ValueError(f'cannot resume from {state_path}: it was trained with '
                             f'different settings ({"; ".join(mismatches)}); give the same '
                             '--config/--set/--seed/--data (only --epochs may change), or a '
                             'new --out')
        weights = with_prefix(tensors, MODEL_PREFIX)
        if not weights:
            raise CheckpointError(f'{state_path} holds no model weights (written by an older '
                                  'version that kept them in last.safetensors); start a new '
                                  '--out')
        self.model.load_state_dict(weights, strict=True)
        if self.ema is not None:
            averaged = with_prefix(tensors, EMA_PREFIX)
            if not averaged:
                raise CheckpointError(f'{state_path} holds no moving average of the weights '
                                      '(train.ema_decay); start a new --out')
            self.ema.load_state_dict(averaged, strict=True)
        load_optimizer_tensors(self.optimizer, tensors, meta['param_groups'])
        self.start_epoch, self.step, self.best = meta['epoch'] + 1, meta['step'], meta.get('best')
        if not meta.get('epoch_complete', True):  # stopped by max_steps inside that epoch
            self.start_epoch, self.done_in_epoch = meta['epoch'], int(meta.get('epoch_steps', 0))
        if not restore_rng(tensors, self.rank, self.device):
            LOG.warning('%s holds no RNG state for rank %d (it was written by fewer processes);'
                        ' seeding that rank from the seed, rank and epoch instead', state_path,
                        self.rank)
            seed_everything(self.seed + self.rank + self.world * self.start_epoch)
        LOG.info('resumed from %s at epoch %d', state_path, self.start_epoch)

    def _steps_done(self) -> bool:
        return self.max_steps is not None and self.step >= self.max_steps

    def check_work_left(self) -> None:
        """Raise NothingToTrain (leaving the process group) when the run is already done."""
        if self.start_epoch >= self.epochs or self._steps_done():
            if self.distributed:
                import torch.distributed as dist
                dist.destroy_process_group()
            raise NothingToTrain(_nothing_left(self.state_path if self.step else None,
                                               self.start_epoch, self.step, self.epochs,
                                               self.max_steps))

    def make_loaders(self) -> None:
        """Make the module the loss runs through (DDP-wrapped), the sampler and both loaders."""
        tc = self.tc
        # The module the loss runs through; under DDP its forward must go through the wrapper,
        # or gradients are not synchronised (the tokenizer stage used to call net.module).
        net = self.model.tokenizer if self.stage == 'tokenizer' else self.model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel
            net = DistributedDataParallel(net, find_unused_parameters=True)
            sampler = DistributedSampler(self.train_set, seed=self.seed)
        elif tc.steps_per_epoch > 0:
            sampler = RandomSampler(self.train_set, replacement=True,
                                    num_samples=tc.steps_per_epoch * tc.batch_size)
        else:
            sampler = RandomSampler(self.train_set)
        self.net, self.sampler = net, sampler
        self.loader = DataLoader(self.train_set, batch_size=tc.batch_size, sampler=sampler,
                                 collate_fn=collate, num_workers=tc.num_workers,
                                 drop_last=False)
        self.val_loader = DataLoader(self.val_set, batch_size=tc.batch_size, collate_fn=collate,
                                     num_workers=tc.num_workers)

    def fit(self, progress: bool) -> Dict[str, float]:
        """Train from ``start_epoch`` to ``epochs`` (or ``max_steps``); return the last metrics."""
        metrics: Dict[str, float] = {}
        for epoch in range(self.start_epoch, self.epochs):
            train_loss, done, complete = self.train_epoch(epoch, progress)
            metrics = {'epoch': epoch, 'step': self.step, 'train_loss': train_loss}
            metrics.update(self.validate())
            self.save(epoch, metrics, complete, done)
            if self._steps_done():
                break
        return metrics

    def _loss(self, batch) -> torch.Tensor:
        tc, device = self.tc, self.device
        crops = batch['crops'].to(device, non_blocking=True)
        geom = batch['geometry'].to(device)
        valid = batch['valid'].to(device)
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=self.amp):
            if self.stage == 'tokenizer':
                out = self.net(crops)
                return recon_loss(out, valid) + out['aux_loss']
            want_recon = tc.finetune_tokenizer and tc.recon_weight > 0
            out = self.net(crops, geom, batch['t0'].to(device), reconstruct=want_recon,
                           tokenizer_grad=tc.finetune_tokenizer)
            loss = frame_bce(out['logits'], batch['labels'].to(device),
                             batch['mask'].to(device))
            if want_recon:
                loss = loss + tc.recon_weight * (recon_loss(out, valid) + out['aux_loss'])
            return loss

    def train_epoch(self, epoch: int, progress: bool) -> Tuple[float, int, bool]:
        """
        Train one epoch (of a re-entered one, the batches it lacks).

        Returns the mean training loss, the batches of the epoch done and whether it is
        complete (False: stopped by ``max_steps`` inside it).
        """
        self.train_set.set_epoch(epoch)
        if self.distributed:
            self.sampler.set_epoch(epoch)
        self.net.train()
        if self.stage == 'classifier' and not self.tc.finetune_tokenizer:
            self.model.tokenizer.eval()
        sums = {'loss': 0.0, 'n': 0}
        batches = len(self.loader)
        done = self.done_in_epoch if epoch == self.start_epoch else 0
        complete = True
        bar = tqdm(self.loader, desc=f'{self.stage} epoch {epoch + 1}/{self.epochs}',
                   total=batches - done, disable=not progress or self.rank != 0, leave=False)
        for batch in bar:
            loss = self._loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.tc.grad_clip)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            self.step += 1
            sums['loss'] += float(loss.detach())
            sums['n'] += 1
            bar.set_postfix(loss=f'{float(loss.detach()):.4f}')
            done += 1
            if done >= batches:  # the last batch (of a re-entered epoch: of those it lacked)
                break
            if self._steps_done():
                complete = False
                break
        return sums['loss'] / max(sums['n'], 1), done, complete

    def validate(self) -> Dict[str, float]:
        """Return the ``val_`` metrics on rank 0 (warning on a collapsed codebook), else {}."""
        if not (len(self.val_set) and self.rank == 0):  # other ranks would repeat the work
            return {}
        tc = self.tc
        metrics = {f'val_{k}': v for k, v in
                   evaluate(self.kept_model, self.val_loader, self.stage, self.device,
                            self.amp).items()}
        if 'val_code_usage_fraction' in metrics:
            warn_if_collapsed({k[9:]: v for k, v in metrics.items()
                               if k.startswith('val_code_')},
                              tc.collapse_min_usage, tc.collapse_min_perplexity, LOG)
        return metrics

    def save(self, epoch: int, metrics: Dict[str, float], complete: bool, done: int) -> None:
        """
        Log ``metrics`` and write the epoch's files (rank 0; every rank gives its RNG).

        metrics.jsonl always, model.* on a better selection score, last.* and the train state
        every ``checkpoint_every`` epochs and at the end.
        """
        last = epoch + 1 == self.epochs or self._steps_done()
        checkpoint = (epoch + 1) % max(self.tc.checkpoint_every, 1) == 0 or last
        rng = rng_tensors(self.device, self.distributed) if checkpoint else {}  # collective
        if self.rank != 0:
            return
        model, out_dir, manifest = self.kept_model, self.out_dir, self.manifest
        LOG.info('%s epoch %d: %s', self.stage, epoch + 1, json.dumps(metrics))
        with open(out_dir / 'metrics.jsonl', 'a', encoding='utf-8') as stream:
            stream.write(json.dumps(metrics) + '\n')
        score = selection_score(self.stage, metrics)
        extra = {'stage': self.stage, 'epoch': epoch, 'step': self.step, 'seed': self.seed,
                 'epoch_complete': complete, 'epoch_steps': done}
        if self.best is None or score > self.best:
            self.best = score
            save_model(model, out_dir / 'model.safetensors', metrics, manifest, extra)
        if checkpoint:
            save_model(model, out_dir / 'last.safetensors', metrics, manifest, extra)
            # One file holds everything a resume needs (weights, optimizer, RNG): a run
            # stopped while saving resumes from the previous state, never from a mix.
            tensors, groups = optimizer_tensors(self.optimizer)
            tensors.update(rng)
            tensors.update({MODEL_PREFIX + k: v for k, v in self.model.state_dict().items()})
            if self.ema is not None:
                tensors.update({EMA_PREFIX + k: v for k, v in self.ema.state_dict().items()})
            save_tensors(tensors, self.state_path, dict(
                model_metadata(model, metrics, manifest, extra),
                param_groups=groups, best=self.best))

    def finish(self) -> None:
        """Leave the process group; RuntimeError if the DDP replicas ended out of sync."""
        if not self.distributed:
            return
        import torch.distributed as dist
        in_sync = replicas_in_sync(self.net.module)
        dist.destroy_process_group()
        if not in_sync:
            raise RuntimeError('DistributedDataParallel replicas ended with different weights '
                               '(gradients were not synchronised)')
