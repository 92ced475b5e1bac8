"""MSV-Mamba: residual encoder, dual-attention skip fusion, decoder with an LMS block per stage, and a
segmentation head per decoder stage for the auxiliary losses. 2D or 3D by `conv_op`."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
import torch.nn as nn
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He, init_last_bn_before_add_to_0
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd

from .fusion import DualAttentionSkipFusion
from .lms import LMSBlock

IntOrSeq = Union[int, List[int], Tuple[int, ...]]


def decoder_output_sizes(patch_size: Sequence[int], strides: Sequence[IntOrSeq]) -> list[tuple[int, ...]]:
    """The spatial size of the map each decoder stage outputs for an input of `patch_size` (0 = deepest), given
    the encoder's per-stage strides as in nnU-Net's plans."""
    sizes, size = [], tuple(patch_size)
    for stride in strides:
        stride = [stride] * len(size) if isinstance(stride, int) else stride
        size = tuple(-(-axis // s) for axis, s in zip(size, stride))  # ceil: convolutions pad
        sizes.append(size)
    return sizes[-2::-1]  # the bottleneck is not decoded; decoding runs deep to shallow


def lms_stages_within(patch_size: Sequence[int], strides: Sequence[IntOrSeq], max_positions: int) -> list[int]:
    """Decoder stages whose map has at most `max_positions` positions, and always the deepest one.

    The selective scan is sequential in the number of positions while the convolutions around it are not, so
    on full-resolution stages an LMS block costs many times the whole stock decoder stage; at small maps its
    large windows and pooled patches already cover the whole image."""
    sizes = decoder_output_sizes(patch_size, strides)
    return [s for s, size in enumerate(sizes) if s == 0 or math.prod(size) <= max_positions]


class MSVMambaDecoder(UNetDecoder):
    """nnU-Net's U-Net decoder (transposed conv, concatenation with the skip, conv blocks, head per stage) with
    an LMS block after the conv blocks of the chosen stages (indices in decoding order, 0 = deepest)."""

    def __init__(self, encoder: ResidualEncoder, num_classes: int, n_conv_per_stage: IntOrSeq,
                 deep_supervision: bool, lms_stages: Optional[Sequence[int]] = None, **lms_kwargs):
        super().__init__(encoder, num_classes, n_conv_per_stage, deep_supervision)
        n_decoder_stages = len(self.stages)
        lms_stages = range(n_decoder_stages) if lms_stages is None else lms_stages
        if any(not 0 <= s < n_decoder_stages for s in lms_stages):
            raise ValueError(f"lms_stages {list(lms_stages)} must lie in 0..{n_decoder_stages - 1}")
        self.lms_stages = sorted(set(lms_stages))
        self.lms = nn.ModuleList(
            LMSBlock(encoder.output_channels[-(s + 2)], **lms_kwargs) if s in self.lms_stages else nn.Identity()
            for s in range(n_decoder_stages))

    def forward(self, skips: Sequence[torch.Tensor]):
        """Skips in encoder order (bottleneck last). Deep supervision on: the logits of every decoder stage,
        highest resolution first; off: the full-resolution logits only."""
        below = skips[-1]
        outputs = []
        for s, (upsample, convs, lms) in enumerate(zip(self.transpconvs, self.stages, self.lms)):
            x = torch.cat((upsample(below), skips[-(s + 2)]), dim=1)
            x = lms(convs(x))
            if self.deep_supervision or s == len(self.stages) - 1:
                outputs.append(self.seg_layers[s](x))
            below = x
        return outputs[::-1] if self.deep_supervision else outputs[-1]

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """UNetDecoder's count for an encoder input of `input_size` (convolutions, transposed convolutions,
        heads) plus the LMS blocks' (each mixer's projections, convolution and selective-scan output)."""
        total = super().compute_conv_feature_map_size(input_size)
        for lms, size in zip(self.lms, decoder_output_sizes(input_size, self.encoder.strides)):
            if isinstance(lms, LMSBlock):
                total += lms.compute_conv_feature_map_size(size)
        return total


class MSVMambaUNet(nn.Module):
    """MSV-Mamba (arXiv 2501.07120) in nnU-Net's dynamic-architecture style.

    The encoder arguments are those of nnU-Net's plans (plain plans give `n_conv_per_stage`, ResEnc plans
    `n_blocks_per_stage`: either is accepted). LMS options: `window_size`, `pool_factors`, `bidirectional`,
    `d_state`, `d_conv`, `expand`, `lms_stages` (None: every decoder stage; () disables LMS); `skip_fusion`
    turns the dual-attention skip fusion on or off. The parameters never depend on `deep_supervision`.
    """

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: IntOrSeq, conv_op: Type[_ConvNd],
                 kernel_sizes: IntOrSeq, strides: IntOrSeq, n_blocks_per_stage: Optional[IntOrSeq] = None,
                 num_classes: int = 2, n_conv_per_stage_decoder: IntOrSeq = 1, conv_bias: bool = False,
                 norm_op: Optional[Type[nn.Module]] = None, norm_op_kwargs: Optional[dict] = None,
                 dropout_op: Optional[Type[_DropoutNd]] = None, dropout_op_kwargs: Optional[dict] = None,
                 nonlin: Optional[Type[nn.Module]] = None, nonlin_kwargs: Optional[dict] = None,
                 deep_supervision: bool = False, n_conv_per_stage: Optional[IntOrSeq] = None,
                 window_size: int = 16, pool_factors: Sequence[int] = (4, 8), bidirectional: bool = True,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, lms_stages: Optional[Sequence[int]] = None,
                 skip_fusion: bool = True):
        super().__init__()
        if (n_blocks_per_stage is None) == (n_conv_per_stage is None):
            raise ValueError("give exactly one of n_blocks_per_stage (ResEnc plans) and n_conv_per_stage (plain plans)")
        blocks = n_blocks_per_stage if n_blocks_per_stage is not None else n_conv_per_stage
        self.encoder = ResidualEncoder(
            input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides, blocks, conv_bias,
            norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, return_skips=True)
        self.skip_fusion = (DualAttentionSkipFusion(self.encoder.output_channels, conv_op)
                            if skip_fusion else None)
        self.decoder = MSVMambaDecoder(
            self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision, lms_stages=lms_stages,
            window_size=window_size, pool_factors=pool_factors, bidirectional=bidirectional, d_state=d_state,
            d_conv=d_conv, expand=expand)
        self.apply(self.initialize)

    def forward(self, x: torch.Tensor):
        skips = self.encoder(x)
        if self.skip_fusion is not None:
            skips = self.skip_fusion(skips)
        return self.decoder(skips)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Elements of the feature maps one sample of `input_size` makes, in dynamic-network-architectures'
        convention (what nnU-Net's planners compare with their VRAM budget): the encoder's and the decoder's
        convolution outputs as ResidualEncoderUNet counts them, plus the skip fusion and the LMS blocks."""
        if len(input_size) != len(self.encoder.strides[0]):
            raise ValueError(f"give the spatial size only (x, y(, z)), got {tuple(input_size)}")
        total = (self.encoder.compute_conv_feature_map_size(input_size)
                 + self.decoder.compute_conv_feature_map_size(input_size))
        if self.skip_fusion is not None:
            skip_sizes = decoder_output_sizes(input_size, self.encoder.strides)[::-1]
            total += self.skip_fusion.compute_conv_feature_map_size(skip_sizes)
        return total

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net's ResEnc initialisation for the convolutions; Mamba keeps its own."""
        InitWeights_He(1e-2)(module)
        init_last_bn_before_add_to_0(module)
