"""Builds MSVMambaUNet from an nnU-Net configuration (plain `nnUNetPlans` or `nnUNetResEncUNet*Plans`)."""
from __future__ import annotations

import pydoc
from typing import Optional

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnunetv2_msvmamba.network import MSVMambaUNet, lms_stages_within

# LMS on the decoder stages whose map has at most 32 x 32 positions (the three deepest of a 256 x 256 2D plan):
# there it costs about as much as the stock decoder stage; on every stage a CPU training step costs ~5x stock
# nnU-Net's (benchmarks/bench_network.py, README "Speed and memory").
LMS_MAX_POSITIONS = 32 * 32


def msvmamba_from_plans(configuration_manager: ConfigurationManager, num_input_channels: int,
                        num_output_channels: int, deep_supervision: bool,
                        lms_max_positions: Optional[int] = LMS_MAX_POSITIONS, **network_options) -> MSVMambaUNet:
    """The plans' encoder layout (stages, features, kernels, strides, blocks, norm, nonlinearity) with the
    MSV-Mamba decoder; `network_options` are MSVMambaUNet's LMS/fusion keyword arguments. Without an explicit
    `lms_stages`, LMS goes on the decoder stages whose map, at the plans' patch size, has at most
    `lms_max_positions` positions (None: every stage)."""
    kwargs = dict(configuration_manager.network_arch_init_kwargs)
    for key in configuration_manager.network_arch_init_kwargs_req_import:
        if kwargs.get(key) is not None:
            located = pydoc.locate(kwargs[key])
            if located is None:
                raise ImportError(f"plans name {kwargs[key]!r} for {key!r}, which cannot be imported")
            kwargs[key] = located
    if "lms_stages" not in network_options and lms_max_positions is not None:
        network_options["lms_stages"] = lms_stages_within(configuration_manager.patch_size, kwargs["strides"],
                                                          lms_max_positions)
    return MSVMambaUNet(input_channels=num_input_channels, num_classes=num_output_channels,
                        deep_supervision=deep_supervision, **kwargs, **network_options)
