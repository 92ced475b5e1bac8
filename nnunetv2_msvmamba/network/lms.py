"""Large-window multiscale Mamba (LMS) block: global context for a decoder stage at linear cost.

Tokens are spatial positions and channels are features. Two kinds of branch, summed and projected:
- pixel level: the map is cut into non-overlapping large windows (default 16 per axis, capped at the map
  size, padded to a multiple), each window one sequence scanned forward and backward by a Mamba mixer;
- patch level (the multiscale part): the map is average-pooled by each pool factor and the whole pooled
  map is one sequence, scanned both ways and upsampled back, so every position sees the whole image.
LayerNorm before, residual after. Every step is linear in the number of pixels.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nnunetv2_msvmamba.ssm import Mamba

_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


def window_partition(x: torch.Tensor, window: Sequence[int]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(B, *S, C), channels last -> (B * windows, prod(window), C), zero-padding each axis up to a multiple of its
    window. Also returns the padded spatial shape that `window_unpartition` needs."""
    spatial = x.shape[1:-1]
    pad = [(-size) % w for size, w in zip(spatial, window)]
    if any(pad):
        x = F.pad(x, [0, 0] + [p for amount in reversed(pad) for p in (0, amount)])
    padded = tuple(x.shape[1:-1])
    batch, channels, dims = x.shape[0], x.shape[-1], len(window)
    grid = [size // w for size, w in zip(padded, window)]
    x = x.reshape(batch, *[v for g, w in zip(grid, window) for v in (g, w)], channels)
    # (B, g1, w1, g2, w2, ..., C) -> (B, g1, g2, ..., w1, w2, ..., C)
    order = [0, *range(1, 1 + 2 * dims, 2), *range(2, 2 + 2 * dims, 2), 1 + 2 * dims]
    x = x.permute(order).reshape(batch * math.prod(grid), math.prod(window), channels)
    return x, padded


def window_unpartition(windows: torch.Tensor, window: Sequence[int], padded: Sequence[int], batch: int,
                       spatial: Sequence[int]) -> torch.Tensor:
    """Inverse of `window_partition`, cropping the padding: -> (B, *spatial, C), channels last."""
    dims, channels = len(window), windows.shape[-1]
    grid = [size // w for size, w in zip(padded, window)]
    x = windows.reshape(batch, *grid, *window, channels)
    # (B, g1, g2, ..., w1, w2, ..., C) -> (B, g1, w1, g2, w2, ..., C)
    order = [0, *[v for i in range(dims) for v in (1 + i, 1 + dims + i)], 1 + 2 * dims]
    x = x.permute(order).reshape(batch, *padded, channels)
    return x[(slice(None), *[slice(0, s) for s in spatial])]


class BidirectionalMamba(nn.Module):
    """A Mamba mixer run over each sequence and its reverse (`Mamba.forward_bidirectional`), outputs summed."""

    def __init__(self, channels: int, bidirectional: bool = True, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2):
        super().__init__()
        self.bidirectional = bidirectional
        self.mixer = Mamba(channels, d_state=d_state, d_conv=d_conv, expand=expand)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """(N, L, C) -> (N, L, C)."""
        return self.mixer.forward_bidirectional(sequences) if self.bidirectional else self.mixer(sequences)

    def compute_conv_feature_map_size(self, tokens: int) -> np.int64:
        """Elements of the maps the mixer makes for `tokens` positions: in_proj (once for both directions), then
        per direction the convolution, x_proj, dt_proj and the selective scan's output, and out_proj (once, on
        the summed directions)."""
        mixer, directions = self.mixer, 2 if self.bidirectional else 1
        per_direction = 3 * mixer.d_inner + mixer.dt_rank + 2 * mixer.d_state
        return np.int64(tokens) * (2 * mixer.d_inner + directions * per_direction + mixer.d_model)


class LMSBlock(nn.Module):
    """Large-window multiscale Mamba block on (B, C, *spatial) maps of any dimensionality (2D or 3D)."""

    def __init__(self, channels: int, window_size: int = 16, pool_factors: Sequence[int] = (4, 8),
                 bidirectional: bool = True, d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__()
        if window_size < 1 or any(p < 2 for p in pool_factors):
            raise ValueError(f"window_size must be >= 1 and pool factors >= 2, got {window_size}, {pool_factors}")
        self.window_size = window_size
        self.pool_factors = tuple(pool_factors)
        self.norm = nn.LayerNorm(channels)
        mixer = dict(bidirectional=bidirectional, d_state=d_state, d_conv=d_conv, expand=expand)
        self.pixel_mamba = BidirectionalMamba(channels, **mixer)
        self.patch_mambas = nn.ModuleList(BidirectionalMamba(channels, **mixer) for _ in self.pool_factors)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels last from the LayerNorm to the output projection, as the mixers and both linear layers take
        # them: in (B, C, *S) the windows, the sums and the projection made copies of their own (the full-resolution
        # block's CPU training step took 2-6 % longer, its inference up to 7 %; medians, alternated in one process)
        normed = self.norm(x.movedim(1, -1))  # (B, *S, C)
        mixed = self._pixel_level(normed)
        for factor, mamba in zip(self.pool_factors, self.patch_mambas):
            mixed = mixed + self._patch_level(normed, factor, mamba)
        return x + self.proj(mixed).movedim(-1, 1)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Elements of the feature maps the block makes for one (C, *input_size) map, as dynamic-network-
        architectures counts its blocks' convolution outputs: LayerNorm and the output projection at full size,
        the pixel-level mixer over the window-padded map, each patch-level mixer over its pooled map."""
        channels = self.norm.normalized_shape[0]
        window = [min(self.window_size, size) for size in input_size]
        padded = math.prod(-(-size // w) * w for size, w in zip(input_size, window))
        total = 2 * np.int64(channels) * math.prod(input_size)
        total += self.pixel_mamba.compute_conv_feature_map_size(padded)
        for factor, mamba in zip(self.pool_factors, self.patch_mambas):
            pooled = math.prod(-(-size // min(factor, size)) for size in input_size)
            total += mamba.compute_conv_feature_map_size(pooled)
        return total

    def _pixel_level(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *S, C) -> (B, *S, C)."""
        spatial = tuple(x.shape[1:-1])
        window = [min(self.window_size, size) for size in spatial]
        windows, padded = window_partition(x, window)
        return window_unpartition(self.pixel_mamba(windows), window, padded, x.shape[0], spatial)

    def _patch_level(self, x: torch.Tensor, factor: int, mamba: BidirectionalMamba) -> torch.Tensor:
        """(B, *S, C) -> (B, *S, C); pooling and interpolation run on the channels-last (B, C, *S) view."""
        spatial = tuple(x.shape[1:-1])
        dims = len(spatial)
        kernel = [min(factor, size) for size in spatial]  # a map smaller than the factor pools to one patch
        pooled = _AVG_POOL[dims](x.movedim(-1, 1), kernel_size=kernel, stride=kernel, ceil_mode=True).movedim(1, -1)
        mixed = mamba(pooled.reshape(x.shape[0], -1, x.shape[-1])).reshape(pooled.shape)  # (B, positions, C) inside
        return F.interpolate(mixed.movedim(-1, 1), size=spatial, mode=_LINEAR_MODE[dims],
                             align_corners=False).movedim(1, -1)
