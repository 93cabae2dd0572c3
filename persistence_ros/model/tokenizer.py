"""
Causal 3D-convolution video tokenizer (MagVIT-v2 style) with exact frame-by-frame streaming.

Written here instead of using magvit2-pytorch: its smallest config streams 8 tracks in
35-41 ms on 2 CPU threads (docs/model.md), several times over the ``cpu`` budget.
"""

import logging
from typing import Dict, NamedTuple, Optional, Sequence, Tuple, Union

from einops import rearrange
import torch
from torch import nn
import torch.nn.functional as F
from vector_quantize_pytorch import FSQ, LFQ

from persistence_ros.model.config import latent_grid, ModelConfig

LOG = logging.getLogger(__name__)


class ConvCache(NamedTuple):
    """The last k_t - 1 input frames of a causal convolution, ``[B, C, k_t - 1, H, W]``."""

    frames: torch.Tensor


class ResBlockCache(NamedTuple):
    """The caches of a residual block's two convolutions (None where k_t is 1)."""

    conv1: Optional[ConvCache]
    conv2: Optional[ConvCache]


LayerCache = Union[ConvCache, ResBlockCache, None]
EncoderCache = Tuple[LayerCache, ...]  # one per encoder layer, in order


def _frame_size(size: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


class CausalConv3d(nn.Module):
    """
    3D convolution, causal in time (k_t - 1 zero frames before, none after), no time stride.

    ``forward`` takes a whole clip ``[B, C, T, H, W]``; ``step`` takes one frame ``[B, C, H, W]``
    and a ``ConvCache`` of the previous ``k_t - 1`` input frames (fixed size; None for k_t 1,
    which needs no past), and returns exactly the output frame ``forward`` would give then.
    """

    def __init__(self, c_in: int, c_out: int, kernel_t: int = 3, kernel_s: int = 3,
                 stride_s: int = 1):
        super().__init__()
        self.kernel_t = kernel_t
        self.conv = nn.Conv3d(c_in, c_out, (kernel_t, kernel_s, kernel_s),
                              stride=(1, stride_s, stride_s),
                              padding=(0, kernel_s // 2, kernel_s // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve a clip ``[B, C, T, H, W]`` causally (its past is the zero padding)."""
        return self.extend(x, None)[0]

    def init_cache(self, batch: int, size: Union[int, Tuple[int, int]], device=None,
                   dtype=None) -> Optional[ConvCache]:
        """Return the zero cache (the causal padding) of ``batch`` clips of frames ``size``."""
        if self.kernel_t == 1:
            return None
        h, w = _frame_size(size)
        return ConvCache(torch.zeros(batch, self.conv.in_channels, self.kernel_t - 1, h, w,
                                     device=device, dtype=dtype))

    def output_size(self, size: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
        """Return the output frame size ``(h, w)`` for input frames of ``size``."""
        return tuple((n + 2 * pad - k) // stride + 1 for n, pad, k, stride in zip(
            _frame_size(size), self.conv.padding[1:], self.conv.kernel_size[1:],
            self.conv.stride[1:]))

    def extend(self, x: torch.Tensor, cache: Optional[ConvCache]
               ) -> Tuple[torch.Tensor, Optional[ConvCache]]:
        """Return the output frames for the next input frames ``x`` and the updated cache."""
        if self.kernel_t == 1:
            return self.conv(x), None
        if cache is None:
            cache = self.init_cache(x.shape[0], x.shape[-2:], x.device, x.dtype)
        clip = torch.cat([cache.frames, x], dim=2)
        if clip.shape[0] == 1 and x.shape[2] > 1 and clip.device.type == 'cpu':
            out = self._conv_lone_clip(clip)
        else:
            out = self.conv(clip)
        return out, ConvCache(clip[:, :, clip.shape[2] - (self.kernel_t - 1):])

    def _conv_lone_clip(self, clip: torch.Tensor) -> torch.Tensor:
        """
        Convolve one clip as its two halves in a batch of 2 (each with its k_t - 1 frames before).

        PyTorch's CPU convolution uses oneDNN only for batches > 1 (for these sizes); one clip
        runs the native ``slow_conv3d``, about 3x slower per frame (docs/benchmarks.md). A
        late pair's back-filled history is such a clip. Same outputs up to float rounding.
        """
        past = self.kernel_t - 1
        frames = clip.shape[2] - past
        first = (frames + 1) // 2
        halves = [clip[:, :, :first + past], clip[:, :, first:]]
        halves[1] = F.pad(halves[1], (0, 0, 0, 0, 0, halves[0].shape[2] - halves[1].shape[2]))
        out = self.conv(torch.cat(halves))
        return torch.cat([out[:1], out[1:, :, :frames - first]], dim=2)

    def step(self, x: torch.Tensor, cache: Optional[ConvCache]
             ) -> Tuple[torch.Tensor, Optional[ConvCache]]:
        """Return the output frame for input frame ``x`` ``[B, C, H, W]`` and the cache."""
        out, cache = self.extend(x.unsqueeze(2), cache)
        return out.squeeze(2), cache


class CausalResBlock(nn.Module):
    """Residual block of two causal convolutions (SiLU before each)."""

    def __init__(self, channels: int, kernel_t: int):
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, kernel_t)
        self.conv2 = CausalConv3d(channels, channels, kernel_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to a clip."""
        return self.extend(x, None)[0]

    def init_cache(self, batch: int, size: Union[int, Tuple[int, int]], device=None,
                   dtype=None) -> ResBlockCache:
        """Return the zero caches of both convolutions for ``batch`` clips of frames ``size``."""
        return ResBlockCache(self.conv1.init_cache(batch, size, device, dtype),
                             self.conv2.init_cache(batch, size, device, dtype))

    def output_size(self, size: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
        """Return the output frame size (that of the input)."""
        return _frame_size(size)

    def extend(self, x: torch.Tensor, cache: Optional[ResBlockCache]
               ) -> Tuple[torch.Tensor, ResBlockCache]:
        """Apply the block to the next frames ``[B, C, T, H, W]`` with its two conv caches."""
        c1, c2 = cache if cache is not None else (None, None)
        h, c1 = self.conv1.extend(F.silu(x), c1)
        h, c2 = self.conv2.extend(F.silu(h), c2)
        return x + h, ResBlockCache(c1, c2)


class CausalEncoder(nn.Module):
    """
    Stages of (causal conv, 2x spatial downsample, SiLU, residual blocks), then a 1x1 head.

    Output: the pre-quantization latent ``[B, D, T, h, w]``, one latent per frame (no temporal
    downsampling).
    """

    def __init__(self, channels: Sequence[int], res_blocks: int, kernel_t: int,
                 latent_dim: int, normalize: bool):
        super().__init__()
        layers = []
        c_in = 3
        for c_out in channels:
            layers.append(CausalConv3d(c_in, c_out, kernel_t, 3, stride_s=2))
            for _ in range(res_blocks):
                layers.append(CausalResBlock(c_out, kernel_t))
            c_in = c_out
        self.layers = nn.ModuleList(layers)
        self.head = CausalConv3d(c_in, latent_dim, kernel_t=1, kernel_s=1)
        self.normalize = normalize
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode a clip ``[B, 3, T, H, W]`` (values in [-1, 1])."""
        return self.extend(x, None)[0]

    def init_cache(self, batch: int, size: Union[int, Tuple[int, int]], device=None
                   ) -> EncoderCache:
        """Return the zero cache of ``batch`` clips of input frames ``size``: each layer's own."""
        caches = []
        for layer in self.layers:
            caches.append(layer.init_cache(batch, size, device))
            size = layer.output_size(size)
        return tuple(caches)

    def extend(self, x: torch.Tensor, cache: Optional[EncoderCache]
               ) -> Tuple[torch.Tensor, EncoderCache]:
        """
        Encode the next frames ``[B, 3, T, H, W]`` of clips whose past is in ``cache``.

        Returns latents ``[B, D, T, h, w]`` (equal to ``forward`` over the whole clip) and the
        new cache: ``k_t - 1`` frames per causal convolution, whatever T is.
        """
        if cache is None:
            cache = (None,) * len(self.layers)
        new_cache = []
        for layer, c in zip(self.layers, cache):
            x, c = layer.extend(x, c)
            if isinstance(layer, CausalConv3d):
                x = F.silu(x)
            new_cache.append(c)
        z, _ = self.head.extend(x, None)
        if self.normalize:
            b = z.shape[0]
            z = F.group_norm(rearrange(z, 'b d t h w -> (b t) d h w'), 1)
            z = rearrange(z, '(b t) d h w -> b d t h w', b=b)
        return z, tuple(new_cache)


class FrameDecoder(nn.Module):
    """Per-frame 2D decoder (quantized latent -> image), used only for the reconstruction loss."""

    def __init__(self, latent_dim: int, channels: Sequence[int]):
        super().__init__()
        layers = [nn.Conv2d(latent_dim, channels[0], 3, padding=1), nn.SiLU()]
        c_in = channels[0]
        for c_out in channels:
            layers += [nn.Upsample(scale_factor=2, mode='nearest'),
                       nn.Conv2d(c_in, c_out, 3, padding=1), nn.SiLU()]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 3, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decode ``[B, D, T, h, w]`` to ``[B, T, 3, H, W]``."""
        out = self.net(rearrange(z, 'b d t h w -> (b t) d h w'))
        return rearrange(out, '(b t) c h w -> b t c h w', b=z.shape[0])


class Tokenizer(nn.Module):
    """Causal encoder + FSQ/LFQ quantizer (vector_quantize_pytorch) + per-frame decoder."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        tc = config.tokenizer
        if tc.quantizer == 'fsq':
            latent_dim = len(tc.fsq_levels)
            self.quantizer = FSQ(list(tc.fsq_levels))
            self.codebook_size = self.quantizer.codebook_size
        elif tc.quantizer == 'lfq':
            latent_dim = tc.lfq_dim
            self.quantizer = LFQ(dim=latent_dim, codebook_size=2 ** latent_dim,
                                 entropy_loss_weight=tc.lfq_entropy_weight,
                                 commitment_loss_weight=tc.lfq_commitment_weight)
            self.codebook_size = 2 ** latent_dim
        else:
            raise ValueError(f'tokenizer.quantizer must be fsq or lfq, got {tc.quantizer!r}')
        if len(tc.decoder_channels) != len(tc.channels):
            raise ValueError('tokenizer.decoder_channels needs one entry per encoder stage')
        # LFQ expects normalised inputs (GroupNorm without affine, per its author).
        self.encoder = CausalEncoder(tc.channels, tc.res_blocks, tc.kernel_t, latent_dim,
                                     normalize=tc.quantizer == 'lfq')
        self.decoder = FrameDecoder(latent_dim, tc.decoder_channels)
        self.latent_dim = latent_dim
        self.input_size = config.input_size
        self.grid = latent_grid(config)  # checked again: a config can be changed after loading
        self.temporal_receptive_field = 1 + (tc.kernel_t - 1) * (
            len(tc.channels) * (1 + 2 * tc.res_blocks))

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """Map ``[..., 3, H, W]`` uint8 or [0, 1] floats to [-1, 1] at ``input_size``."""
        lead = frames.shape[:-3]
        size = self.input_size
        if frames.dtype == torch.uint8 and tuple(frames.shape[-2:]) == (2 * size, 2 * size):
            # the area resize of the usual 2x crop: each pixel's 4 values summed as exact
            # integers in float32, then one scale; 4x cheaper on the CPU than
            # interpolate(mode='area'), the same up to float rounding
            x = frames.reshape(-1, 3, 2 * size, 2 * size).float()
            x = x[..., ::2, ::2] + x[..., 1::2, ::2] + x[..., ::2, 1::2] + x[..., 1::2, 1::2]
            return (x * (2.0 / (4 * 255.0)) - 1.0).reshape(*lead, 3, size, size)
        if frames.dtype == torch.uint8:
            frames = frames.float() / 255.0
        x = frames.reshape(-1, *frames.shape[-3:])
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode='area')
        return (x * 2.0 - 1.0).reshape(*lead, 3, size, size)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Return pre-quantization latents ``[B, T, D, h, w]`` of a clip ``[B, T, 3, H, W]``."""
        x = self.preprocess(video).transpose(1, 2)
        return self.encoder(x).transpose(1, 2)

    def quantize(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize latents ``[..., D, h, w]``; return quantized, indices ``[..., h, w]``, aux."""
        lead = z.shape[:-3]
        d, h, w = z.shape[-3:]
        flat = z.reshape(-1, d, h * w).transpose(1, 2)
        if isinstance(self.quantizer, LFQ):
            zq, idx, aux = self.quantizer(flat)
        else:
            zq, idx = self.quantizer(flat)
            aux = flat.new_zeros(())
        zq = zq.transpose(1, 2).reshape(*lead, d, h, w)
        return zq, idx.reshape(*lead, h, w), aux

    def decode(self, zq: torch.Tensor) -> torch.Tensor:
        """Decode quantized latents ``[B, T, D, h, w]`` to images in [-1, 1]."""
        return self.decoder(zq.transpose(1, 2))

    def forward(self, video: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Encode, quantize and reconstruct a clip; return latents, codes, recon and losses."""
        target = self.preprocess(video)
        z = self.encoder(target.transpose(1, 2)).transpose(1, 2)
        zq, idx, aux = self.quantize(z)
        recon = self.decode(zq)
        return {'z': z, 'zq': zq, 'indices': idx, 'aux_loss': aux, 'recon': recon,
                'target': target}

    def init_cache(self, batch: int, device=None) -> EncoderCache:
        """Return the encoder's zero cache for ``batch`` new clips (``extend``, ``step``)."""
        return self.encoder.init_cache(batch, self.input_size, device)

    def extend(self, frames: torch.Tensor, cache: Optional[EncoderCache]
               ) -> Tuple[torch.Tensor, EncoderCache]:
        """Encode the next frames ``[B, T, 3, H, W]``: latents ``[B, T, D, h, w]`` and cache."""
        z, cache = self.encoder.extend(self.preprocess(frames).transpose(1, 2), cache)
        return z.transpose(1, 2), cache

    def step(self, frame: torch.Tensor, cache: Optional[EncoderCache]
             ) -> Tuple[torch.Tensor, EncoderCache]:
        """Encode one frame ``[B, 3, H, W]``; return the latent ``[B, D, h, w]`` and new cache."""
        z, cache = self.extend(frame.unsqueeze(1), cache)
        return z[:, 0], cache


def recon_loss(out: Dict[str, torch.Tensor], mask: Optional[torch.Tensor] = None
               ) -> torch.Tensor:
    """Return the mean squared reconstruction error over valid frames (mask ``[B, T]``)."""
    err = (out['recon'].float() - out['target'].float()).pow(2).mean(dim=(-3, -2, -1))
    if mask is None:
        return err.mean()
    mask = mask.to(err.dtype)
    return (err * mask).sum() / mask.sum().clamp_min(1.0)


def codebook_diagnostics(indices: torch.Tensor, codebook_size: int,
                         mask: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """
    Return collapse diagnostics of code indices ``[N_clips, T, ...]``.

    usage_fraction: distinct codes used / codebook size; perplexity: exp(entropy) of the code
    histogram; equal_across_clips: share of positions (t, y, x) where every clip has the same
    code (1.0 = the encoder ignores its input). ``mask`` ``[N_clips, T]`` marks valid frames.
    """
    idx = indices.detach().long().cpu()
    n = idx.shape[0]
    if mask is not None:
        valid = mask.detach().bool().cpu()
        flat = idx[valid].reshape(-1)
    else:
        valid = None
        flat = idx.reshape(-1)
    if flat.numel() == 0:
        return {'usage_fraction': 0.0, 'perplexity': 0.0, 'used_codes': 0,
                'equal_across_clips': float('nan')}
    counts = torch.bincount(flat, minlength=codebook_size).double()
    probs = counts / counts.sum()
    nz = probs[probs > 0]
    entropy = float(-(nz * nz.log()).sum())
    used = int((counts > 0).sum())
    per_pos = idx.reshape(n, idx.shape[1], -1)
    if n > 1:
        same = (per_pos == per_pos[:1]).all(dim=0)
        if valid is not None:
            common = valid.all(dim=0)
            same = same[common]
        equal = float(same.double().mean()) if same.numel() else float('nan')
    else:
        equal = float('nan')
    return {'usage_fraction': used / codebook_size, 'perplexity': float(torch.exp(
        torch.tensor(entropy))), 'used_codes': used, 'equal_across_clips': equal}


def is_collapsed(diag: Dict[str, float], min_usage: float = 0.02,
                 min_perplexity: float = 4.0, max_equal: float = 0.9) -> bool:
    """Return True if diagnostics show a collapsed codebook."""
    equal = diag.get('equal_across_clips', float('nan'))
    return (diag['usage_fraction'] < min_usage or diag['perplexity'] < min_perplexity
            or (equal == equal and equal > max_equal))


def warn_if_collapsed(diag: Dict[str, float], min_usage: float = 0.02,
                      min_perplexity: float = 4.0, logger: logging.Logger = LOG) -> bool:
    """Log a loud 'CODEBOOK COLLAPSE' warning if collapsed; return whether it is."""
    if is_collapsed(diag, min_usage, min_perplexity):
        logger.warning(
            'CODEBOOK COLLAPSE: %d codes used (%.2f %% of the codebook), perplexity %.2f, '
            '%.1f %% of positions equal across clips', diag['used_codes'],
            100.0 * diag['usage_fraction'], diag['perplexity'],
            100.0 * diag.get('equal_across_clips', float('nan')))
        return True
    return False
