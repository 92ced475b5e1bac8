"""Dual-attention multilayer fusion of the encoder skips (the paper's hierarchical feature fusion).

Channel attention is computed jointly from the globally pooled descriptors of all encoder stages (a 1D conv
across the concatenated descriptors lets every stage see the others, then a per-stage projection and a
sigmoid); spatial attention is computed per stage from its channel-mean and channel-max maps. Each is applied
with a residual (x + x * attention), so an untrained fusion starts close to the identity.
Design precedent: the channel/spatial attention bridge of MALUNet and H-vmunet.
"""
from __future__ import annotations

import math
from typing import Sequence, Type

import numpy as np
import torch
import torch.nn as nn
from torch.nn.modules.conv import _ConvNd


class CrossStageChannelAttention(nn.Module):
    """A sigmoid gate per channel of each gated stage, from the pooled descriptors of all stages together."""

    def __init__(self, channels_per_stage: Sequence[int], gated_channels: Sequence[int], kernel_size: int = 3):
        super().__init__()
        total = sum(channels_per_stage)
        self.cross_stage_conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2)
        self.projections = nn.ModuleList(nn.Linear(total, c) for c in gated_channels)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        descriptors = torch.cat([f.flatten(2).mean(-1) for f in features], dim=1)  # (B, sum C)
        mixed = self.cross_stage_conv(descriptors.unsqueeze(1)).squeeze(1)
        return [torch.sigmoid(p(mixed)) for p in self.projections]


class SpatialAttention(nn.Module):
    """A sigmoid gate per position from the channel-mean and channel-max maps."""

    def __init__(self, conv_op: Type[_ConvNd], kernel_size: int = 7):
        super().__init__()
        self.conv = conv_op(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), dim=1)
        return torch.sigmoid(self.conv(pooled))


class DualAttentionSkipFusion(nn.Module):
    """Re-weights the encoder's skips (all but the bottleneck) with cross-stage channel attention and
    per-stage spatial attention; the bottleneck only contributes its descriptor."""

    def __init__(self, channels_per_stage: Sequence[int], conv_op: Type[_ConvNd], channel_kernel_size: int = 3,
                 spatial_kernel_size: int = 7):
        super().__init__()
        self.channel_attention = CrossStageChannelAttention(channels_per_stage, channels_per_stage[:-1],
                                                            channel_kernel_size)
        self.spatial_attentions = nn.ModuleList(SpatialAttention(conv_op, spatial_kernel_size)
                                                for _ in channels_per_stage[:-1])

    def forward(self, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        channel_gates = self.channel_attention(skips)
        fused = []
        for skip, gate, spatial in zip(skips[:-1], channel_gates, self.spatial_attentions):
            gate = gate.reshape(*gate.shape, *([1] * (skip.dim() - 2)))
            skip = skip * (1 + gate)  # x + x * attention, with one pass over the full-size map
            fused.append(skip * (1 + spatial(skip)))
        return fused + [skips[-1]]

    def compute_conv_feature_map_size(self, skip_sizes: Sequence[Sequence[int]]) -> np.int64:
        """Elements of the maps the fusion makes for re-weighted skips of these spatial sizes (encoder order, the
        bottleneck left out): per skip its spatial attention map and the fused skip; the channel attention's
        descriptors."""
        channels = [p.out_features for p in self.channel_attention.projections]
        total = np.int64(sum(channels) + self.channel_attention.projections[0].in_features)
        for c, size in zip(channels, skip_sizes):
            total += (c + 1) * math.prod(size)
        return total
