"""Tests of the persistence model: streaming exactness, causality, checkpoints, training."""

import functools
import json
import logging
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
import torch
from torch.utils.data import DataLoader

from persistence_ros.features import LEGACY_FEATURES
from persistence_ros.model.checkpoint import (
    CheckpointError, load_model, load_tensors, save_model, save_tensors)
from persistence_ros.model.classifier import attention_rollout
from persistence_ros.model.config import load_config, ModelConfig
from persistence_ros.model.data import collate, jitter_appearance, TrackDataset
from persistence_ros.model.decision import EarlyDecision
from persistence_ros.model.model import (
    cache_tensors, PersistenceModel, StreamState, TrackStreamer)
from persistence_ros.model.probe import linear_probe
from persistence_ros.model.testing import make_synthetic_dataset, synthetic_batch
from persistence_ros.model.tokenizer import (
    CausalConv3d, codebook_diagnostics, ConvCache, is_collapsed, warn_if_collapsed)
from persistence_ros.model.train import (
    evaluate, NothingToTrain, restore_rng, resume_mismatches, selection_score,
    tokenizer_mismatches, train, training_device, with_prefix)
from persistence_ros.stereo_track import TrackState


pytestmark = pytest.mark.usefixtures('one_torch_thread')

# The device of the tests that take the ``device`` fixture: cpu here and in CI;
# scripts/gpu-check.sh runs them with PERSISTENCE_TEST_DEVICE=cuda on a GPU machine.
DEVICE = os.environ.get('PERSISTENCE_TEST_DEVICE', 'cpu')


@pytest.fixture
def device():
    """Return the device under test; on CUDA, float32 without TF32 (exactness tests)."""
    if DEVICE.startswith('cuda'):
        if not torch.cuda.is_available():
            pytest.fail(f'PERSISTENCE_TEST_DEVICE={DEVICE} but torch sees no CUDA device')
        matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        yield DEVICE
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    else:
        yield DEVICE


def _tol(device) -> float:
    """Return the tolerance of streaming against full forwards (cuDNN picks other kernels)."""
    return 1e-5 if str(device) == 'cpu' else 1e-4


def _model(name='cpu', window=6, seed=0, device='cpu', **settings):
    """Return a model; ``settings`` are tokenizer or classifier config fields."""
    torch.manual_seed(seed)
    config = load_config(name)
    config.classifier.window = window
    for key, value in settings.items():
        part = config.tokenizer if hasattr(config.tokenizer, key) else config.classifier
        assert hasattr(part, key), key
        setattr(part, key, value)
    model = PersistenceModel(config).eval()
    # Non-trivial normalisation and distance biases so the tests exercise them.
    g_dim = len(config.classifier.geometry_features)
    model.set_geometry_normalization(np.linspace(-1, 1, g_dim), np.linspace(0.5, 2, g_dim))
    with torch.no_grad():
        for block in model.classifier.blocks:
            block.attn.distance_bias.normal_(0, 0.5)
    return model.to(device)


def _inputs(b=3, t=14, seed=0, device='cpu'):
    crops, geom, _ = synthetic_batch(b, t, seed=seed)
    return torch.from_numpy(crops).to(device), torch.from_numpy(geom).to(device)


@pytest.mark.parametrize('name,kw', [('cpu', {}), ('cpu', {'quantizer': 'lfq'}),
                                     ('cpu', {'res_blocks': 1}),
                                     ('cpu', {'fusion': 'cross_attention'}),
                                     ('cpu', {'temporal': 'gru', 'kernel_t': 1})])
def test_streaming_equals_full_encode(name, kw, device):
    model = _model(name, window=6, device=device, **kw)
    crops, geom = _inputs(t=14, device=device)
    tol = _tol(device)
    with torch.no_grad():
        full = model(crops, geom)
        z_full = model.tokenizer.encode(crops)
    state, probs, sizes = None, [], set()
    cache = None
    for t in range(crops.shape[1]):
        z, cache = model.tokenizer.step(crops[:, t], cache)
        assert (z - z_full[:, t]).abs().max() < tol
        p, attn, state = model.step(crops[:, t], geom[:, t], state)
        probs.append(p)
        if model.config.classifier.temporal == 'gru':  # no attention at all
            assert attn.shape == (3, 0) and full['attention'].shape == (3, 14, 0)
            sizes.add(state.nbytes())
            continue
        # window is 6 < T: the streamed attention equals the full row over the window.
        lo = max(0, t - 5)
        ref = full['attention'][:, t, lo:t + 1]
        assert torch.allclose(attn[:, attn.shape[1] - (t + 1 - lo):], ref, atol=tol)
        assert attn[:, :attn.shape[1] - (t + 1 - lo)].abs().max() == 0 if t < 5 else True
        sizes.add(state.nbytes())
    assert (torch.stack(probs, 1) - full['prob']).abs().max() < tol
    assert len(sizes) == 1, 'the stream state must not grow with the track length'


@pytest.mark.parametrize('frames', [2, 3, 8, 17])
def test_a_lone_clip_convolved_as_two_halves_equals_the_plain_convolution(frames):
    # CausalConv3d splits a batch-1 CPU clip into two halves (oneDNN takes batches > 1 only)
    torch.manual_seed(frames)
    conv = CausalConv3d(4, 5, kernel_t=3, stride_s=2)
    x = torch.randn(1, 4, frames, 9, 9)
    past = torch.randn(1, 4, 2, 9, 9)
    with torch.no_grad():
        out, cache = conv.extend(x, ConvCache(past))
        plain = conv.conv(torch.cat([past, x], dim=2))
        zero_past = conv(x)
        plain_zero = conv.conv(torch.cat([torch.zeros_like(past), x], dim=2))
    assert out.shape == plain.shape == (1, 5, frames, 5, 5)
    assert (out - plain).abs().max() < 1e-5
    assert (zero_past - plain_zero).abs().max() < 1e-5
    assert torch.equal(cache.frames, x[:, :, -2:])
    # at the boundary: the first frame of the second half sees the last ones of the first
    with torch.no_grad():
        y = x.clone()
        y[:, :, (frames + 1) // 2 - 1] += 10.0
        changed = conv.extend(y, ConvCache(past))[0]
    assert (changed - out)[:, :, (frames + 1) // 2].abs().max() > 1e-3


def test_preprocess_of_a_2x_uint8_crop_equals_the_area_resize():
    model = _model()
    size = model.tokenizer.input_size
    crops = torch.randint(0, 256, (2, 5, 3, 2 * size, 2 * size), dtype=torch.uint8)
    crops[0, 0] = 255
    crops[0, 1] = 0
    ref = torch.nn.functional.interpolate(crops.reshape(-1, 3, 2 * size, 2 * size).float() / 255,
                                          size=(size, size), mode='area') * 2 - 1
    got = model.tokenizer.preprocess(crops)
    assert got.shape == (2, 5, 3, size, size)
    assert (got.reshape(ref.shape) - ref).abs().max() < 1e-6
    assert got[0, 0].eq(1.0).all() and got[0, 1].eq(-1.0).all()
    # another size still takes the general area resize
    odd = crops[..., :2 * size - 3, :2 * size - 3]
    ref_odd = torch.nn.functional.interpolate(odd.reshape(-1, 3, *odd.shape[-2:]).float() / 255,
                                              size=(size, size), mode='area') * 2 - 1
    assert torch.equal(model.tokenizer.preprocess(odd).reshape(ref_odd.shape), ref_odd)


@pytest.mark.parametrize('kw', [{}, {'res_blocks': 1}, {'fusion': 'cross_attention'},
                                {'temporal': 'gru', 'kernel_t': 1}])
def test_extend_in_chunks_equals_full_forward_and_steps(kw, device):
    model = _model('cpu', window=6, device=device, **kw)
    crops, geom = _inputs(t=20, device=device)
    tol = _tol(device)
    with torch.no_grad():
        full = model(crops, geom)
    state, probs, start = None, [], 0
    for size in (1, 4, 9, 1, 5):  # 9 > window: a backlog longer than the attention window
        p, attn, state = model.extend(crops[:, start:start + size], geom[:, start:start + size],
                                      state)
        assert p.shape == (3, size)
        probs.append(p)
        start += size
    assert (torch.cat(probs, 1) - full['prob']).abs().max() < tol
    stepped = None
    for t in range(20):
        _, step_attn, stepped = model.step(crops[:, t], geom[:, t], stepped)
    assert torch.allclose(attn, step_attn, atol=tol)
    assert int(state.t[0]) == 20 and state.nbytes() == stepped.nbytes()
    for a, b in zip(cache_tensors(state.classifier), cache_tensors(stepped.classifier)):
        assert torch.allclose(a.float(), b.float(), atol=tol)


def test_causal_mask_and_attention_rows():
    model = _model(window=32)
    crops, geom = _inputs(t=10)
    with torch.no_grad():
        a = model(crops, geom)
        crops2, geom2 = crops.clone(), geom.clone()
        crops2[:, 6] = 255 - crops2[:, 6]
        geom2[:, 6] += 3.0
        b = model(crops2, geom2)
    assert torch.equal(a['logits'][:, :6], b['logits'][:, :6])
    assert (a['logits'][:, 6] - b['logits'][:, 6]).abs().max() > 1e-4
    att = a['attention']
    assert torch.allclose(att.sum(-1), torch.ones_like(att.sum(-1)), atol=1e-5)
    future = torch.triu(torch.ones(10, 10, dtype=torch.bool), diagonal=1)
    assert att[:, future].abs().max() == 0
    assert (att[:, ~future] > 0).all()


def test_window_bounds_attention():
    model = _model(window=4)
    crops, geom = _inputs(t=9)
    with torch.no_grad():
        att = model(crops, geom)['attention']
    t, s = torch.meshgrid(torch.arange(9), torch.arange(9), indexing='ij')
    outside = (t - s >= 4) | (s > t)
    assert att[:, outside].abs().max() == 0


def test_attention_rollout_of_one_layer_and_of_identity():
    a = torch.softmax(torch.randn(2, 5, 5).masked_fill(
        torch.triu(torch.ones(5, 5, dtype=torch.bool), 1), float('-inf')), -1)
    eye = torch.eye(5).expand(2, 5, 5)
    assert torch.allclose(attention_rollout([a]), 0.5 * a + 0.5 * eye)
    # Layers that attend only to themselves leave every frame with itself.
    assert torch.allclose(attention_rollout([eye, eye, eye]), eye)
    two = attention_rollout([a, a])
    assert torch.allclose(two, (0.5 * a + 0.5 * eye) @ (0.5 * a + 0.5 * eye))


@pytest.mark.parametrize('layers,window,t', [(2, 4, 11), (3, 3, 9), (1, 5, 7)])
def test_streamed_rollout_equals_full_rollout(layers, window, t, device):
    model = _model(window=window, layers=layers, device=device)
    crops, geom = _inputs(b=2, t=t, device=device)
    tol = _tol(device)
    with torch.no_grad():
        full = model(crops, geom, rollout=True)
    rollout = full['rollout']
    assert torch.allclose(rollout.sum(-1), torch.ones(2, t, device=device), atol=tol)
    span = layers * (window - 1) + 1
    assert model.classifier.attention_span(rollout=True) == span
    state, sizes = model.init_state(2, rollout=True), set()
    for i in range(t):
        p, attn, state = model.step(crops[:, i], geom[:, i], state)
        sizes.add(state.nbytes())
        assert attn.shape == (2, span)
        lo = max(0, i + 1 - span)
        assert torch.allclose(attn[:, span - (i + 1 - lo):], rollout[:, i, lo:i + 1], atol=tol)
        assert attn[:, :span - (i + 1 - lo)].abs().max() == 0 if i + 1 < span else True
        assert torch.allclose(p, full['prob'][:, i], atol=tol)
    assert len(sizes) == 1
    # With more than one layer, the rollout reaches frames the last layer cannot see.
    if layers > 1:
        assert rollout[:, -1, :t - window].sum() > 1e-3
        assert full['attention'][:, -1, :t - window].abs().max() == 0
    # A backlog streamed as one clip gives the same rollout as frame-by-frame steps.
    p, attn_clip, _ = model.extend(crops, geom, model.init_state(2, rollout=True))
    assert torch.allclose(attn_clip, attn, atol=tol)


def test_track_streamer_matches_batched_and_skips_decided(device):
    model = _model(window=6, device=device)
    crops, geom = _inputs(b=4, t=8, device=device)
    with torch.no_grad():
        full = model(crops, geom)['prob']
    crops, geom = crops.cpu(), geom.cpu()  # the streamer takes host arrays
    streamer = TrackStreamer(model, EarlyDecision(hi=1.0, lo=0.0, min_frames=100))
    ids = ['a', 'b', 'c', 'd']
    for t in range(8):
        # track 'd' starts 3 frames late: its state starts fresh then.
        use = ids if t >= 3 else ids[:3]
        res = streamer.update(use, crops[:len(use), t].permute(0, 2, 3, 1).numpy(),
                              geom[:len(use), t].numpy())
        for j, tid in enumerate(use[:3]):
            assert abs(res[tid].probability - float(full[j, t])) < _tol(device)
            assert res[tid].attention.shape == (min(t + 1, 6),)
            assert abs(res[tid].attention.sum() - 1.0) < 1e-5
    assert streamer.result('d').frames == 5
    # Early decision: decided tracks are not run again unless recheck is set.
    streamer.decision = EarlyDecision(hi=0.0 + 1e-9, lo=0.0, min_frames=1)
    first = streamer.update(['a'], crops[:1, 0].permute(0, 2, 3, 1).numpy(), geom[:1, 0].numpy())
    assert first['a'].decision == TrackState.PERSISTENT and first['a'].updated
    again = streamer.update(['a'], crops[:1, 1].permute(0, 2, 3, 1).numpy(), geom[:1, 1].numpy())
    assert not again['a'].updated and again['a'].frames == first['a'].frames
    streamer.drop(['a'])
    assert streamer.result('a') is None


def _latched(rule, trajectory, offset=0):
    decision = TrackState.TENTATIVE
    for t, p in enumerate(trajectory):
        decision = rule.decide(float(p), t + 1 + offset, decision)
    return decision


def test_track_streamer_extend_decides_as_per_frame_updates():
    model = _model(window=6)
    crops, geom = _inputs(t=10)
    with torch.no_grad():
        probs = model(crops, geom)['prob'].numpy()
    # Rules whose outcome depends on counting the frames inside a chunk right: miscounting by
    # one frame (one rule per direction) would decide some track differently.
    # thresholds between the probabilities, never on one: streaming and the full forward may
    # differ in the last bit
    levels = np.unique(probs)
    rules = [EarlyDecision(hi=float(hi), lo=0.0, min_frames=m)
             for m in range(2, 9) for hi in 0.5 * (levels[1:] + levels[:-1])]
    hwc = crops.permute(0, 1, 3, 4, 2).numpy()
    ids = ['a', 'b', 'c']
    for shift in (-1, 1):
        rule = next(r for r in rules if any(
            _latched(r, traj) != _latched(r, traj, shift) for traj in probs))
        per_frame = TrackStreamer(model, rule)
        for t in range(10):
            expected = per_frame.update(ids, hwc[:, t], geom[:, t].numpy())
        chunked = TrackStreamer(model, rule)
        chunked.extend(ids, hwc[:, :3], geom[:, :3].numpy())
        got = chunked.extend(ids, hwc[:, 3:], geom[:, 3:].numpy())
        for j, tid in enumerate(ids):
            assert got[tid].decision == expected[tid].decision == _latched(rule, probs[j])


def test_early_decision_rule():
    rule = EarlyDecision(hi=0.8, lo=0.2, min_frames=3)
    assert rule.decide(0.99, 2) == TrackState.TENTATIVE
    assert rule.decide(0.99, 3) == TrackState.PERSISTENT
    assert rule.decide(0.05, 4) == TrackState.TRANSIENT
    assert rule.decide(0.5, 10) == TrackState.TENTATIVE
    assert rule.decide(0.01, 10, TrackState.PERSISTENT) == TrackState.PERSISTENT
    assert not rule.needs_encoding(TrackState.TRANSIENT)
    recheck = EarlyDecision(hi=0.8, lo=0.2, min_frames=3, recheck=True)
    assert recheck.decide(0.01, 10, TrackState.PERSISTENT) == TrackState.TRANSIENT
    assert recheck.decide(0.5, 10, TrackState.PERSISTENT) == TrackState.PERSISTENT
    assert recheck.needs_encoding(TrackState.TRANSIENT)
    with pytest.raises(ValueError):
        EarlyDecision(hi=0.2, lo=0.8)
    # unsure for keep_unsure_after frames: kept (published) rather than lost
    keep = EarlyDecision(hi=0.8, lo=0.2, min_frames=3, keep_unsure_after=30)
    assert keep.decide(0.5, 29) == TrackState.TENTATIVE
    assert keep.decide(0.5, 30) == TrackState.PERSISTENT
    assert keep.decide(0.1, 30) == TrackState.TRANSIENT   # a clear answer still counts
    with pytest.raises(ValueError, match='keep_unsure_after'):
        EarlyDecision(keep_unsure_after=-1)


def test_codebook_diagnostics_detect_collapse(caplog):
    rng = np.random.default_rng(0)
    healthy = torch.from_numpy(rng.integers(0, 1000, (16, 8, 4, 4)))
    diag = codebook_diagnostics(healthy, 1000)
    assert diag['usage_fraction'] > 0.3 and diag['perplexity'] > 200
    assert diag['equal_across_clips'] < 0.01
    assert not is_collapsed(diag)
    collapsed = torch.full((16, 8, 4, 4), 7)
    collapsed[0, 0, 0, 0] = 3
    diag = codebook_diagnostics(collapsed, 1000)
    assert diag['used_codes'] == 2 and diag['perplexity'] < 1.1
    assert diag['equal_across_clips'] > 0.99
    with caplog.at_level(logging.WARNING):
        assert warn_if_collapsed(diag)
    assert 'CODEBOOK COLLAPSE' in caplog.text
    # Input-independent codes that still use many codes are caught by equal_across_clips.
    same = healthy[:1].expand(16, -1, -1, -1)
    diag = codebook_diagnostics(same, 1000)
    assert diag['equal_across_clips'] == 1.0 and is_collapsed(diag)


def test_linear_probe_reads_the_label_only_where_features_carry_it():
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 60)
    scenes = np.repeat([f's{k}' for k in range(6)], 20)
    signal = rng.normal(size=(120, 8)) + 2.0 * labels[:, None]
    assert linear_probe(signal, labels, scenes)['auc'] > 0.95
    noise = linear_probe(rng.normal(size=(120, 8)), labels, scenes)
    assert 0.25 < noise['auc'] < 0.75
    # collapsed codes: every track looks the same, so the probe is at chance exactly
    assert linear_probe(np.ones((120, 8)), labels, scenes)['auc'] == 0.5
    assert linear_probe(signal, labels, ['one'] * 120) == {}   # no scene to hold out


def test_checkpoint_round_trip(tmp_path):
    model = _model(window=6)
    crops, geom = _inputs(t=7)
    path = save_model(model, tmp_path / 'ck', metrics={'val_track_f1': 0.5})
    meta = json.loads(path.with_suffix('.json').read_text())
    assert meta['config']['classifier']['window'] == 6
    assert meta['versions']['torch'] == torch.__version__
    loaded = load_model(tmp_path / 'ck')
    with torch.no_grad():
        a = model(crops, geom)
        b = loaded(crops, geom)
    assert torch.equal(a['logits'], b['logits'])
    assert torch.equal(loaded.classifier.geometry_std, model.classifier.geometry_std)


def test_checkpoint_rejects_pickle_and_mismatch(tmp_path):
    model = _model(window=6)
    path = save_model(model, tmp_path / 'ok.safetensors')
    meta = path.with_suffix('.json')
    # A pickle under a .safetensors name is refused without unpickling.
    bad = tmp_path / 'bad.safetensors'
    bad.write_bytes(pickle.dumps({'x': torch.zeros(2)}))
    bad.with_suffix('.json').write_text(meta.read_text())
    with pytest.raises(CheckpointError, match='not a valid safetensors'):
        load_model(bad)
    # An extra tensor and a missing one are named.
    tensors = load_file(str(path))
    tensors['evil.extra'] = torch.zeros(1)
    del tensors['classifier.head.bias']
    extra = tmp_path / 'extra.safetensors'
    save_file(tensors, str(extra))
    extra.with_suffix('.json').write_text(meta.read_text())
    with pytest.raises(CheckpointError, match='evil.extra') as info:
        load_model(extra)
    assert 'classifier.head.bias' in str(info.value)
    # A config that does not match the weights.
    data = json.loads(meta.read_text())
    data['config']['classifier']['width'] = 32
    wide = save_tensors(load_file(str(path)), tmp_path / 'wide.safetensors', data)
    with pytest.raises(CheckpointError, match='shape mismatches'):
        load_model(wide)
    # The same JSON beside weights saved with another one: the header's sha256 tells.
    path.with_suffix('.json').write_text(wide.with_suffix('.json').read_text())
    with pytest.raises(CheckpointError, match='come from different saves'):
        load_model(path)
    with pytest.raises(CheckpointError, match='not found'):
        load_model(tmp_path / 'missing.safetensors')


def test_cross_attention_fusion_uses_both_streams():
    model = _model(fusion='cross_attention')
    crops, geom = _inputs(t=8)
    with torch.no_grad():
        base = model(crops, geom)['logits']
        moved = model(crops, geom + 1.0)['logits']
        swapped = model(crops.flip(0), geom)['logits']
        flipped = model(crops.flip(0), geom.flip(0))['logits']
    assert (base - moved).abs().max() > 1e-4, 'geometry must change the output'
    assert (base - swapped).abs().max() > 1e-4, 'the crops must change the output'
    assert (base - flipped.flip(0)).abs().max() < 1e-5, 'tracks must not mix in a batch'
    with pytest.raises(ValueError, match='cross_attention needs'):
        _model(fusion='cross_attention', use_geometry=False)
    with pytest.raises(ValueError, match='classifier.fusion must be'):
        _model(fusion='sum')


def test_train_command_config_overrides():
    from persistence_ros.overrides import parse_overrides
    overrides = parse_overrides(['classifier.fusion=cross_attention', 'tokenizer.kernel_t=1',
                                 'name=cpu_x'])
    assert overrides == {'classifier.fusion': 'cross_attention', 'tokenizer.kernel_t': 1,
                         'name': 'cpu_x'}
    config = load_config('cpu', overrides)
    assert (config.classifier.fusion, config.tokenizer.kernel_t, config.name) == (
        'cross_attention', 1, 'cpu_x')
    with pytest.raises(ValueError, match='KEY=VALUE'):
        parse_overrides(['classifier.fusion'])
    with pytest.raises(ValueError, match="unknown field 'classifier.fuse'; fields of classifier"):
        load_config('cpu', parse_overrides(['classifier.fuse=1']))
    with pytest.raises(ValueError, match='lo < hi'):  # the decision section is checked too
        load_config('cpu', parse_overrides(['decision.lo=0.95']))


def test_config_rejects_unknown_keys():
    data = load_config('cpu').to_dict()
    data['classifier']['widht'] = 3
    with pytest.raises(ValueError, match='widht'):
        ModelConfig.from_dict(data)
    assert load_config('gpu').classifier.layers == 4


def test_configs_read_the_default_columns_and_the_data_set_offers_more():
    from persistence_ros.features import APPEARANCE_FEATURES, DEFAULT_MODEL_FEATURES, \
        GEOMETRY_FEATURES, LEGACY_FEATURES, RIG_FREE_FEATURES
    assert ModelConfig().classifier.geometry_features == list(DEFAULT_MODEL_FEATURES)
    for name in ('cpu', 'gpu'):
        assert load_config(name).classifier.geometry_features == list(DEFAULT_MODEL_FEATURES)
    assert DEFAULT_MODEL_FEATURES == RIG_FREE_FEATURES
    # the data set offers every column once: the legacy ones (older weights), appearance, and
    # the rig-independent ones
    assert set(GEOMETRY_FEATURES) == set(LEGACY_FEATURES + APPEARANCE_FEATURES
                                         + RIG_FREE_FEATURES)
    assert len(GEOMETRY_FEATURES) == len(set(GEOMETRY_FEATURES))
    assert GEOMETRY_FEATURES[:len(LEGACY_FEATURES)] == LEGACY_FEATURES


def test_dataset_windows_and_short_tracks(tmp_path):
    root = make_synthetic_dataset(tmp_path / 'ds', splits=('train',), tracks_per_scene=12,
                                  max_frames=20, seed=3)
    feats = load_config('cpu').classifier.geometry_features
    ds = TrackDataset(root, 'train', feats, window=8, burn_in=2, start_at_track_start=0.0)
    lengths = [b - a for _, a, b, *_ in ds.tracks]
    assert min(lengths) >= 1 and len(ds) == 12
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch['crops'].shape[1:] == (8, 3, 64, 64)
    for j, n in enumerate(lengths):
        assert int(batch['length'][j]) == min(n, 8)
        if n > 8 and int(batch['t0'][j]) > 0:
            assert not batch['mask'][j, :2].any() and batch['mask'][j, 2:].all()
        if n <= 8:
            assert batch['mask'][j, :n].all() and not batch['valid'][j, n:].any()


def test_appearance_jitter_changes_the_look_of_a_clip_but_not_its_course(tmp_path):
    # a clip that brightens frame by frame (a glare flash) stays one that brightens
    ramp = np.linspace(40, 200, 6)[:, None, None, None]
    clip = np.clip(ramp + np.random.default_rng(0).normal(0, 3, (6, 64, 64, 3)), 0, 255)
    clip = clip.astype(np.uint8)
    out = jitter_appearance(clip, np.random.default_rng(1))
    assert out.dtype == np.uint8 and out.shape == clip.shape
    assert np.abs(out.astype(int) - clip).mean() > 1.0
    assert np.all(np.diff(out.reshape(6, -1).mean(1)) > 0)
    again = jitter_appearance(clip, np.random.default_rng(1))
    assert np.array_equal(out, again)
    # the data set jitters training items only when asked, the same way for an epoch
    root = make_synthetic_dataset(tmp_path / 'ds', splits=('train',), tracks_per_scene=4,
                                  max_frames=10, seed=3)
    feats = load_config('cpu').classifier.geometry_features
    plain = TrackDataset(root, 'train', feats, window=8)
    jittered = TrackDataset(root, 'train', feats, window=8, appearance_jitter=1.0)
    for i in range(len(plain)):
        a, b = plain[i]['crops'], jittered[i]['crops']
        assert a.shape == b.shape and not torch.equal(a, b)
        assert torch.equal(b, jittered[i]['crops'])
        assert torch.equal(plain[i]['geometry'], jittered[i]['geometry'])
    with pytest.raises(ValueError, match='appearance_jitter'):
        load_config('cpu', {'train.appearance_jitter': 1.5})


def test_training_learns_synthetic_persistence(tmp_path):
    root = make_synthetic_dataset(tmp_path / 'ds', splits=('train',) * 4 + ('val',) * 3,
                                  tracks_per_scene=16, max_frames=16, seed=1)
    config = load_config('cpu')
    config.train.batch_size = 16
    config.train.window = 16
    config.train.lr = 3e-3
    # the 11 legacy columns and the frame-count age, as when this bar was set: the geometry is
    # noise here, and 20 noise columns take longer to learn to ignore than this test runs
    config.classifier.geometry_features = list(LEGACY_FEATURES)
    config.classifier.frame_age = True
    metrics = train('classifier', config, root, tmp_path / 'ck', epochs=9, progress=False,
                    seed=0)
    history = [json.loads(line) for line in
               (tmp_path / 'ck' / 'metrics.jsonl').read_text().splitlines()]
    assert history[-1]['train_loss'] < 0.8 * history[0]['train_loss']
    # Held-out tracks (48): chance is AUC 0.5; geometry is noise, only the crops separate.
    assert metrics['val_track_auc'] > 0.8
    assert metrics['val_track_accuracy'] > 0.65
    # ... so a linear probe on the tokenizer's latents reads the label too (3 val scenes)
    assert metrics['val_probe_latent_auc'] > 0.7, metrics
    assert 0.0 <= metrics['val_probe_codes_auc'] <= 1.0
    model = load_model(tmp_path / 'ck' / 'model.safetensors')
    kept = json.loads((tmp_path / 'ck' / 'model.json').read_text())
    assert kept['data_manifest_sha256']
    best = max(history, key=lambda m: selection_score('classifier', m))
    assert kept['metrics']['epoch'] == best['epoch']
    # Resume continues from the saved epoch and optimizer state.
    more = train('classifier', config, root, tmp_path / 'ck', epochs=10, progress=False,
                 seed=0, resume=True)
    assert more['epoch'] == 9
    # ... and refuses to resume a different run into the same directory.
    config.classifier.fusion = 'cross_attention'
    with pytest.raises(ValueError, match="classifier.fusion: 'concat' then, "
                                         "'cross_attention' now"):
        train('classifier', config, root, tmp_path / 'ck', epochs=11, progress=False,
              seed=0, resume=True)
    config.classifier.fusion = 'concat'
    with pytest.raises(ValueError, match='seed: 0 then, 1 now'):
        train('classifier', config, root, tmp_path / 'ck', epochs=11, progress=False,
              seed=1, resume=True)
    saved = json.loads((tmp_path / 'ck' / 'last.json').read_text())
    assert resume_mismatches(saved, config, 'classifier', 0, root / 'manifest.json') == []
    other = tmp_path / 'other_manifest.json'
    other.write_text('{}')
    assert resume_mismatches(saved, config, 'classifier', 0, other) == [
        f'data set: {other} is not the one it was trained on']
    assert isinstance(model, PersistenceModel)


def _torchrun_train(stage, root, out, epochs, *extra):
    """Train on 2 CPU processes with torchrun (gloo on the loopback interface)."""
    env = dict(os.environ, OMP_NUM_THREADS='1', GLOO_SOCKET_IFNAME='lo',
               MASTER_ADDR='127.0.0.1')
    done = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
         '-m', 'persistence_ros.cli', 'train', stage, '--config', 'cpu', '--data', str(root),
         '--out', str(out), '--epochs', str(epochs), '--no-progress', *extra],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize('stage', ['tokenizer', 'classifier'])
def test_distributed_training_on_two_cpu_processes_keeps_replicas_in_sync(tmp_path, stage):
    # torchrun, 2 processes, gloo on the loopback interface: the DistributedDataParallel path
    # that a multi-GPU run takes (train() raises if the replicas end with different weights;
    # the tokenizer stage once bypassed the wrapper and did).
    root = make_synthetic_dataset(tmp_path / 'ds', splits=('train',) * 4 + ('val',),
                                  tracks_per_scene=8, max_frames=12, seed=2)
    out = tmp_path / 'ck'
    _torchrun_train(stage, root, out, 2)
    history = (out / 'metrics.jsonl').read_text().splitlines()
    assert [json.loads(line)['epoch'] for line in history] == [0, 1]  # rank 0 writes alone
    assert all('val_loss' in json.loads(line) for line in history)  # and validates
    assert json.loads((out / 'model.json').read_text())['stage'] == stage
    load_model(out / 'model.safetensors')


def test_distributed_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    # Each rank draws its own dropout masks; a resumed rank must get its own RNG state back
    # (rank 1 used to get rank 0's, and its weights went another way than without the stop).
    root = make_synthetic_dataset(tmp_path / 'ds', splits=('train',) * 4 + ('val',),
                                  tracks_per_scene=8, max_frames=12, seed=4)
    _torchrun_train('classifier', root, tmp_path / 'straight', 2)
    _torchrun_train('classifier', root, tmp_path / 'resumed', 1)
    state, _ = load_tensors(tmp_path / 'resumed' / 'train_state.safetensors')
    assert not torch.equal(state['rng.torch'], state['rng.torch.rank1'])
    with torch.random.fork_rng():  # leave this process's RNG as it was
        assert restore_rng(state, 1, 'cpu')
        assert torch.equal(torch.get_rng_state(), state['rng.torch.rank1'])
    # a state written by one process has nothing for rank 1: train() then warns and reseeds
    assert not restore_rng({'rng.torch': state['rng.torch']}, 1, 'cpu')
    _torchrun_train('classifier', root, tmp_path / 'resumed', 2, '--resume')
    straight, _ = load_tensors(tmp_path / 'straight' / 'last.safetensors')
    resumed, meta = load_tensors(tmp_path / 'resumed' / 'last.safetensors')
    assert meta['metrics']['epoch'] == 1
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight), [
        k for k in straight if not torch.equal(straight[k], resumed[k])][:5]


def test_resume_reads_one_train_state_so_a_stop_while_saving_is_harmless(tmp_path):
    # GPU time comes in short windows: a run killed between writing last.* and
    # train_state.* used to resume with the newer weights and the older optimizer and epoch.
    root = make_synthetic_dataset(tmp_path / 'ds', splits=('train',) * 2 + ('val',),
                                  tracks_per_scene=8, max_frames=12, seed=5)
    config = load_config('cpu')
    config.train.batch_size = 8
    out = tmp_path / 'ck'
    run = functools.partial(train, 'classifier', config, root, out, progress=False, seed=0)
    run(epochs=1)
    saved = {name: (out / name).read_bytes()
             for name in ('train_state.safetensors', 'train_state.json')}
    run(epochs=2, resume=True)
    straight, _ = load_tensors(out / 'last.safetensors')
    for name, data in saved.items():  # stopped after last.* of epoch 2, before train_state.*
        (out / name).write_bytes(data)
    assert run(epochs=2, resume=True)['epoch'] == 1
    again, _ = load_tensors(out / 'last.safetensors')
    assert all(torch.equal(straight[k], again[k]) for k in straight)
    # stopped between the two renames of one save: weights of one, metadata of the other
    (out / 'train_state.json').write_bytes(saved['train_state.json'])
    with pytest.raises(CheckpointError, match='come from different saves'):
        run(epochs=3, resume=True)


def test_selection_score_breaks_f1_ties_by_validation_bce():
    early = {'train_loss': 0.3, 'val_loss': 0.20, 'val_track_f1': 1.0}
    later = {'train_loss': 0.2, 'val_loss': 0.05, 'val_track_f1': 1.0}
    worse = {'train_loss': 0.1, 'val_loss': 0.01, 'val_track_f1': 0.9}
    assert selection_score('classifier', later) > selection_score('classifier', early)
    assert selection_score('classifier', early) > selection_score('classifier', worse)
    assert selection_score('tokenizer', later) > selection_score('tokenizer', early)
    assert selection_score('classifier', {'train_loss': 0.1}) > \
        selection_score('classifier', {'train_loss': 0.2})


def test_state_select_and_cat_round_trip():
    model = _model(window=5)
    crops, geom = _inputs(b=3, t=4)
    state = None
    for t in range(4):
        _, _, state = model.step(crops[:, t], geom[:, t], state)
    parts = [state.select([i]) for i in (2, 0, 1)]
    joined = StreamState.cat(parts)
    p1, _, _ = model.step(crops[[2, 0, 1], 0], geom[[2, 0, 1], 0], joined)
    p2, _, _ = model.step(crops[:, 0], geom[:, 0], state)
    assert torch.allclose(p1, p2[[2, 0, 1]], atol=1e-6)


def test_fresh_and_stepped_states_concatenate_with_kernel_t_1():
    # k_t 1 keeps no past frames: a new track's state used to hold empty tensors where a
    # stepped one held None, and TrackStreamer failed to concatenate them.
    model = _model(window=4, kernel_t=1, res_blocks=1)
    crops, geom = _inputs(b=2, t=2)
    _, _, old = model.step(crops[1:, 0], geom[1:, 0])
    joined = StreamState.cat([model.init_state(1), old])
    p, _, _ = model.step(crops[:, 1], geom[:, 1], joined)
    assert torch.allclose(p[:1], model.step(crops[:1, 1], geom[:1, 1])[0], atol=1e-6)
    assert torch.allclose(p[1:], model.step(crops[1:, 1], geom[1:, 1], old)[0], atol=1e-6)


def _small_config(*items):
    """Return the cpu config with small windows and batches (4 batches an epoch below)."""
    from persistence_ros.overrides import parse_overrides
    return load_config('cpu', parse_overrides(['train.batch_size=4', 'train.window=8',
                                               'classifier.window=8', *items]))


def _steps(out):
    return [(row['epoch'], row['step']) for row in
            map(json.loads, (out / 'metrics.jsonl').read_text().splitlines())]


def test_max_steps_is_exact_and_resume_reenters_a_partial_epoch(tmp_path):
    root = make_synthetic_dataset(tmp_path / 'ds', splits=('train',) * 2, tracks_per_scene=8,
                                  max_frames=8, seed=6)  # 16 tracks: 4 batches of 4
    config = _small_config()
    out = tmp_path / 'ck'
    run = functools.partial(train, 'classifier', config, root, out, progress=False, seed=0)
    with pytest.raises(NothingToTrain, match='max_steps is 0'):  # it trained 1 step
        run(epochs=2, max_steps=0)
    with pytest.raises(NothingToTrain, match='epochs is 0'):
        run(epochs=0)
    assert not (out / 'metrics.jsonl').exists()
    assert run(epochs=2, max_steps=2)['step'] == 2
    state = json.loads((out / 'train_state.json').read_text())
    assert (state['epoch'], state['epoch_complete'], state['epoch_steps']) == (0, False, 2)
    # resume re-enters epoch 0 for its 2 missing batches (it used to skip them: 6 steps)
    assert run(epochs=2, resume=True)['step'] == 8
    assert _steps(out) == [(0, 2), (0, 4), (1, 8)]
    assert json.loads((out / 'train_state.json').read_text())['epoch_complete']
    # max_steps already reached: nothing (it used to train one more step)
    with pytest.raises(NothingToTrain, match='is at step 8 and max_steps is 8'):
        run(epochs=3, max_steps=8, resume=True)
    with pytest.raises(NothingToTrain, match='already holds 2 epochs of 2'):
        run(epochs=2, resume=True)
    assert run(epochs=3, max_steps=9, resume=True)['step'] == 9
    # a stop on an epoch's last batch saves the epoch as complete
    other = tmp_path / 'other'
    train('classifier', config, root, other, epochs=3, max_steps=4, progress=False)
    state = json.loads((other / 'train_state.json').read_text())
    assert (state['epoch'], state['epoch_complete'], state['step']) == (0, True, 4)
    train('classifier', config, root, other, epochs=2, resume=True, progress=False)
    assert _steps(other) == [(0, 4), (1, 8)]


def test_moving_average_of_the_weights_is_what_is_validated_saved_and_resumed(tmp_path):
    # train.ema_decay d: after two steps the kept weights are d * w1 + (1 - d) * w2, where
    # w1, w2 are the raw weights after steps 1 and 2 (the first update copies w1)
    root = make_synthetic_dataset(tmp_path / 'ds', splits=('train',) * 2 + ('val',),
                                  tracks_per_scene=8, max_frames=8, seed=8)
    config = _small_config('train.ema_decay=0.75')
    run = functools.partial(train, 'classifier', config, root, progress=False, seed=0)
    run(tmp_path / 'one', epochs=1, max_steps=1)
    run(tmp_path / 'two', epochs=1, max_steps=2)
    raw1, _ = load_tensors(tmp_path / 'one' / 'train_state.safetensors')
    raw2, _ = load_tensors(tmp_path / 'two' / 'train_state.safetensors')
    kept, meta = load_tensors(tmp_path / 'two' / 'last.safetensors')
    names = [name for name, _ in PersistenceModel(config).named_parameters()]
    assert names and set(names) <= set(kept)
    moved = 0
    for name in names:
        w1, w2 = raw1['model.' + name], raw2['model.' + name]
        assert torch.allclose(kept[name], 0.75 * w1 + 0.25 * w2, atol=1e-6), name
        moved += not torch.equal(w1, w2)
    assert moved > len(names) // 2  # the raw weights did change between the two steps
    assert int(raw2['ema.n_averaged']) == 2
    # validation ran on the average: re-scoring the kept weights on the run's validation
    # split gives the logged BCE, and the raw weights give another
    history = json.loads((tmp_path / 'two' / 'metrics.jsonl').read_text().splitlines()[-1])
    assert meta['metrics']['val_bce'] == history['val_bce']
    val = DataLoader(TrackDataset(root, 'val', config.classifier.geometry_features,
                                  4 * config.train.window, False),
                     batch_size=config.train.batch_size, collate_fn=collate)
    kept_bce = evaluate(load_model(tmp_path / 'two' / 'last.safetensors'), val, 'classifier',
                        'cpu')['bce']
    raw_model = load_model(tmp_path / 'two' / 'last.safetensors')
    raw_model.load_state_dict(with_prefix(raw2, 'model.'), strict=True)
    raw_bce = evaluate(raw_model, val, 'classifier', 'cpu')['bce']
    assert kept_bce == pytest.approx(history['val_bce'], abs=1e-6)
    assert abs(raw_bce - history['val_bce']) > 1e-4
    # a resumed run continues the average exactly
    run(tmp_path / 'straight', epochs=2)
    run(tmp_path / 'resumed', epochs=1)
    run(tmp_path / 'resumed', epochs=2, resume=True)
    straight, _ = load_tensors(tmp_path / 'straight' / 'last.safetensors')
    resumed, _ = load_tensors(tmp_path / 'resumed' / 'last.safetensors')
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    # off by default; the decay must be below 1
    assert load_config('cpu').train.ema_decay == 0.0
    with pytest.raises(ValueError, match='ema_decay'):
        _small_config('train.ema_decay=1.0')


def test_tokenizer_checkpoint_must_match_the_run_config(tmp_path):
    root = make_synthetic_dataset(tmp_path / 'ds', splits=('train',), tracks_per_scene=4,
                                  max_frames=8, seed=7)
    torch.manual_seed(1)
    path = save_model(PersistenceModel(_small_config()), tmp_path / 'tok' / 'model.safetensors')
    # same tensor shapes, other quantizer levels and input size: it used to load silently
    other = _small_config('tokenizer.fsq_levels=[7, 7, 7, 7]', 'input_size=64')
    with pytest.raises(CheckpointError) as info:
        train('classifier', other, root, tmp_path / 'a', epochs=1, progress=False,
              tokenizer_checkpoint=str(path))
    assert 'input_size: 32 in the checkpoint, 64 here' in str(info.value)
    assert 'tokenizer.fsq_levels: [8, 5, 5, 5] in the checkpoint, [7, 7, 7, 7] here' in str(
        info.value)
    assert not (tmp_path / 'a' / 'metrics.jsonl').exists()
    saved = json.loads(path.with_suffix('.json').read_text())
    assert tokenizer_mismatches(saved, _small_config('tokenizer.kernel_t=1')) == [
        'tokenizer.kernel_t: 3 in the checkpoint, 1 here']
    assert tokenizer_mismatches({}, other) == ['the checkpoint holds no config']
    # other classifier and train settings are fine; the tokenizer is the checkpoint's
    same = _small_config('classifier.layers=1', 'train.lr=1e-2',
                         'train.finetune_tokenizer=false')
    assert tokenizer_mismatches(saved, same) == []
    train('classifier', same, root, tmp_path / 'b', epochs=1, max_steps=1, progress=False,
          tokenizer_checkpoint=str(path))
    trained, _ = load_tensors(tmp_path / 'b' / 'last.safetensors')
    initial = load_file(str(path))
    assert all(torch.equal(trained[k], initial[k]) for k in initial if k.startswith('tokenizer.'))


def test_distributed_training_refuses_steps_per_epoch(tmp_path, monkeypatch):
    # the DistributedSampler used to win silently: each epoch was a full pass
    root = make_synthetic_dataset(tmp_path / 'ds', splits=('train',), tracks_per_scene=4,
                                  max_frames=8, seed=8)
    for name, value in (('WORLD_SIZE', '2'), ('RANK', '0'), ('LOCAL_RANK', '0')):
        monkeypatch.setenv(name, value)
    for name in ('MASTER_ADDR', 'MASTER_PORT'):  # no rendezvous is waited for
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=r'train.steps_per_epoch \(3\) is not supported with '
                                         r'several processes \(WORLD_SIZE=2\)'):
        train('classifier', _small_config('train.steps_per_epoch=3'), root, tmp_path / 'ck',
              epochs=1, progress=False)


def test_training_device_names():
    assert training_device('cpu') == 'cpu'
    assert training_device('auto') == ('cuda' if torch.cuda.is_available() else 'cpu')
    with pytest.raises(ValueError, match="got 'gpu'"):
        training_device('gpu')
    with pytest.raises(ValueError):
        training_device(f'cuda:{torch.cuda.device_count()}')


def _cli(*argv):
    """Run ``persistence-ros ARGV`` in a new process; return it (rc, stdout, stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-m', 'persistence_ros', *argv], env=env,
                          capture_output=True, text=True, timeout=300)


def _one_line_error(rc, stderr, command, message):
    assert rc == 2, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if 'Warning' not in line
             and not line.startswith('  ')]  # a library's warning and its source line
    assert len(lines) == 1 and lines[0].startswith(f'persistence-ros {command}: error: '), stderr
    assert message in lines[0] and 'Traceback' not in stderr


def _cli_in_process(capsys, *argv):
    """Run ``persistence-ros ARGV`` here (torch is loaded already); return rc, stderr."""
    from persistence_ros import cli
    capsys.readouterr()
    rc = cli.main(list(argv))
    return rc, capsys.readouterr().err


def test_train_command_errors_are_one_line(tmp_path, capsys):
    root = make_synthetic_dataset(tmp_path / 'ds', splits=('train',), tracks_per_scene=4,
                                  max_frames=8, seed=9)
    base = ['train', 'classifier', '--data', str(root), '--out', str(tmp_path / 'ck'),
            '--no-progress', '--set', 'train.batch_size=4', '--set', 'train.window=8']
    cases = [(['--config', 'nope'], "no model config 'nope'"),
             (['--set', 'train=5'], "'train' is a section, not a value"),
             (['--set', 'train.lr=fast'], "train.lr: expected float, got 'fast'"),
             (['--set', 'classifier.age_max=0'], 'classifier.age_max must be >= 1, got 0'),
             (['--tokenizer', str(tmp_path / 'none.safetensors')], 'checkpoint weights not '
                                                                   'found'),
             (['--device', 'gpu'], "model device must be auto, cpu or cuda[:N], got 'gpu'"),
             (['--epochs', '-1'], '--epochs must be >= 0, got -1')]
    if not torch.cuda.is_available():
        cases.append((['--device', 'cuda'], "model device 'cuda' requested but torch sees no "
                                            'CUDA device'))
    for extra, message in cases:
        _one_line_error(*_cli_in_process(capsys, *base, *extra), 'train', message)
    done = _cli(*base, '--data', str(tmp_path / 'none'))  # the exit status of the process
    _one_line_error(done.returncode, done.stderr, 'train', 'no data set there (no manifest')
    # 1e-3 is a string to YAML; auto picks a device; --max-steps 1 is one step
    done = _cli(*base, '--set', 'train.lr=1e-3', '--device', 'auto', '--max-steps', '1')
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)['step'] == 1
    for extra, message in ((['--resume', '--max-steps', '1'], 'is at step 1 and max_steps is 1'),
                           (['--epochs', '0', '--out', str(tmp_path / 'new')], 'epochs is 0')):
        capsys.readouterr()
        rc, err = _cli_in_process(capsys, *base, *extra)
        assert rc == 0 and 'persistence-ros train: nothing to train: ' in err and message in err
        assert '{}' not in err


def test_bench_command_errors_are_one_line(capsys):
    cases = [(['model', '--tracks', '1', '--frames', '0'], '--frames must be >= 1, got 0'),
             (['model', '--config', 'nope'], "no model config 'nope'"),
             (['model', '--device', 'gpu'], "got 'gpu'"),
             (['render', '--scenario', 'nope'], "no scenario file or preset named 'nope'"),
             (['render', '--frames', '0'], '--frames must be >= 1, got 0'),
             (['pipeline', '--set', 'tracker=5'], "'tracker' is a section")]
    if not torch.cuda.is_available():
        cases.append((['model', '--device', 'cuda'], "model device 'cuda' requested"))
    for argv, message in cases:
        _one_line_error(*_cli_in_process(capsys, 'bench', *argv), 'bench', message)
    done = _cli('bench', 'model', '--tracks', '1,x')
    _one_line_error(done.returncode, done.stderr, 'bench',
                    "--tracks expects comma-separated integers >= 1, got '1,x'")


def test_track_streamer_state_pool_reuses_slots_of_ended_tracks_from_a_fresh_state(device):
    # States live in one batched pool; a track that ends frees its slot and a new track
    # taking it starts from the initial state: every track's p equals its own streaming.
    model = _model(window=4, device=device)
    crops, geom = _inputs(b=12, t=6, seed=3, device=device)
    hwc = crops.permute(0, 1, 3, 4, 2).cpu().numpy()
    streamer = TrackStreamer(model, EarlyDecision(hi=1.0, lo=0.0, min_frames=100))
    alone = {}
    with torch.no_grad():
        for j in range(12):
            state, alone[j] = None, []
            for t in range(6):
                p, _, state = model.step(crops[j:j + 1, t], geom[j:j + 1, t], state)
                alone[j].append(float(p[0]))
    start = {j: 0 if j < 10 else 3 for j in range(12)}  # tracks 10, 11 start at frame 3
    for t in range(6):
        live = [j for j in range(12) if start[j] <= t and not (j < 2 and t >= 3)]
        if t == 3:
            streamer.drop([0, 1])  # their slots go to 10 and 11
        res = streamer.extend(live, np.stack([hwc[j, t - start[j]][None] for j in live]),
                              np.stack([geom[j, t - start[j]][None].cpu().numpy()
                                        for j in live]))
        for j in live:
            assert abs(res[j].probability - alone[j][t - start[j]]) < _tol(device), (j, t)
    pool = streamer._pool
    assert pool.capacity == 10 and set(pool.slots) == set(range(2, 12))
    assert {pool.slots[10], pool.slots[11]} == {0, 1}


def test_state_pool_gives_its_memory_back_after_a_flood_of_tracks_ends(device):
    # 40 tracks grow the pool to 40 slots; when 36 of them end, it is compacted and the
    # 4 left go on streaming exactly as alone; new tracks grow it again from there.
    model = _model(window=4, device=device)
    crops, geom = _inputs(b=40, t=6, seed=5, device=device)
    hwc = crops.permute(0, 1, 3, 4, 2).cpu().numpy()
    g = geom.cpu().numpy()
    streamer = TrackStreamer(model, EarlyDecision(hi=1.0, lo=0.0, min_frames=100))
    survivors = [3, 17, 28, 39]
    alone = {}
    with torch.no_grad():
        for j in survivors:
            state, alone[j] = None, []
            for t in range(6):
                p, _, state = model.step(crops[j:j + 1, t], geom[j:j + 1, t], state)
                alone[j].append(float(p[0]))
    pool = streamer._pool
    streamer.extend(list(range(40)), hwc[:, :3], g[:, :3])
    assert pool.capacity == 40
    full = pool.state.nbytes()
    streamer.drop([j for j in range(40) if j not in survivors])
    assert pool.capacity == 8 and pool.state.nbytes() == full * 8 // 40
    assert sorted(pool.slots.values()) == [0, 1, 2, 3] and len(pool._free) == 4
    res = streamer.extend(survivors, hwc[survivors, 3:], g[survivors, 3:])
    for j in survivors:
        assert abs(res[j].probability - alone[j][-1]) < _tol(device), j
    streamer.extend(list(range(100, 110)), hwc[:10, :1], g[:10, :1])   # 4 + 10 tracks
    assert pool.capacity == 16 and len(pool.slots) == 14


def test_bfloat16_autocast_streaming_stays_close_to_float32(device):
    # `bench model --dtype bfloat16` runs the steps under autocast: the stream still works
    # (caches mix dtypes), stays bounded, and p moves by bf16 rounding only.
    model = _model(window=4, device=device)
    crops, geom = _inputs(b=4, t=8, device=device)
    with torch.no_grad():
        full = model(crops, geom)['prob']
        state, probs, sizes = None, [], set()
        with torch.autocast(device_type=str(device).split(':')[0], dtype=torch.bfloat16):
            for t in range(8):
                p, attn, state = model.step(crops[:, t], geom[:, t], state)
                probs.append(p.float())
                sizes.add(state.nbytes())
    error = (torch.stack(probs, 1) - full).abs().max()
    assert 0.0 < error < 0.05, error
    assert len(sizes) <= 2  # the caches turn bfloat16 after the first frame, then stay
    assert attn.shape == (4, 4) and torch.isfinite(attn).all()


def test_bench_model_reports_wall_and_cpu_time_of_the_backlog_catch_up():
    from persistence_ros.model.bench import bench_streaming, format_bench
    result = bench_streaming(tracks=(2,), frames=3, threads=1, full_reps=1, backlog=6)
    catch_up = result['catch_up']
    assert catch_up['frames'] == 6
    for name in ('steps', 'extend'):
        assert catch_up[name]['median_ms'] > 0 and catch_up[name]['cpu_median_ms'] > 0
    text = format_bench(result)
    assert '6-frame backlog' in text and '(CPU ' in text
