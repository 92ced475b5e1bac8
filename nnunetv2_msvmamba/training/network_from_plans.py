"""Builds MSVMambaUNet from an nnU-Net configuration (plain `nnUNetPlans` or `nnUNetResEncUNet*Plans`)."""
from __future__ import annotations

import pydoc

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnunetv2_msvmamba.network import MSVMambaUNet


def msvmamba_from_plans(configuration_manager: ConfigurationManager, num_input_channels: int,
                        num_output_channels: int, deep_supervision: bool, **network_options) -> MSVMambaUNet:
    """The plans' encoder layout (stages, features, kernels, strides, blocks, norm, nonlinearity) with the
    MSV-Mamba decoder; `network_options` are MSVMambaUNet's LMS/fusion keyword arguments."""
    kwargs = dict(configuration_manager.network_arch_init_kwargs)
    for key in configuration_manager.network_arch_init_kwargs_req_import:
        if kwargs.get(key) is not None:
            located = pydoc.locate(kwargs[key])
            if located is None:
                raise ImportError(f"plans name {kwargs[key]!r} for {key!r}, which cannot be imported")
            kwargs[key] = located
    return MSVMambaUNet(input_channels=num_input_channels, num_classes=num_output_channels,
                        deep_supervision=deep_supervision, **kwargs, **network_options)
