"""Draws docs/architecture.png: the MSV-Mamba network that nnUNetTrainerMSVMamba builds from an nnU-Net plan,
read from the built module (stages, channels, map sizes, where the LMS blocks are, parameter counts), so the
figure shows what the code builds, not what a drawing says it builds.

    python docs/draw_architecture.py                                  # the plan below -> docs/architecture.png
    python docs/draw_architecture.py --plans nnUNetResEncUNetMPlans.json -c 2d -o my_network.png
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager  # noqa: E402
from torch import nn  # noqa: E402

from nnunetv2_msvmamba.network import LMSBlock, MSVMambaUNet, decoder_output_sizes  # noqa: E402
from nnunetv2_msvmamba.training.network_from_plans import msvmamba_from_plans  # noqa: E402

# The `2d` configuration that nnUNetv2_plan_experiment -pl nnUNetPlannerResEncM writes for 256 x 256 echo images
# (the plan benchmarks/bench_network.py measures): 7 stages, features 32..512, ResEnc-M blocks.
RESENC_M_256_2D = {
    "patch_size": [256, 256],
    "architecture": {
        "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
        "arch_kwargs": {
            "n_stages": 7, "features_per_stage": [32, 64, 128, 256, 512, 512, 512],
            "conv_op": "torch.nn.modules.conv.Conv2d", "kernel_sizes": [[3, 3]] * 7,
            "strides": [[1, 1]] + [[2, 2]] * 6, "n_blocks_per_stage": [1, 3, 4, 6, 6, 6, 6],
            "n_conv_per_stage_decoder": [1] * 6, "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
}
PLAN_DESCRIPTION = "nnUNetPlannerResEncM 2d plan for 256×256 images"
INPUT_CHANNELS, CLASSES = 1, 4  # one echo channel; CAMUS: background, LV cavity, myocardium, atrium


@dataclass
class Stage:
    label: str
    detail: str
    parameters: int
    highlighted: bool = False


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def size_text(size) -> str:
    return "×".join(str(int(s)) for s in size)


def encoder_sizes(patch_size: list[int], strides: list[list[int]]) -> list[tuple[int, ...]]:
    """The map size after each encoder stage (its convolutions pad, so each stride rounds up)."""
    sizes, size = [], tuple(patch_size)
    for stride in strides:
        size = tuple(-(-axis // s) for axis, s in zip(size, stride))
        sizes.append(size)
    return sizes


def encoder_stages(network: MSVMambaUNet, patch_size: list[int]) -> list[Stage]:
    stages = []
    sizes = encoder_sizes(patch_size, network.encoder.strides)
    for index, (stage, size) in enumerate(zip(network.encoder.stages, sizes)):
        blocks = len(stage.blocks)
        stages.append(Stage(f"encoder {index}", f"{size_text(size)}, {network.encoder.output_channels[index]} ch, "
                                                f"{blocks} residual block{'s' if blocks > 1 else ''}",
                            parameter_count(stage)))
    return stages


def decoder_stages(network: MSVMambaUNet, patch_size: list[int]) -> list[Stage]:
    """Decoding order (0 = deepest), as the decoder's own lists are."""
    decoder = network.decoder
    sizes = decoder_output_sizes(patch_size, network.encoder.strides)
    stages = []
    for index, (upsample, convs, lms) in enumerate(zip(decoder.transpconvs, decoder.stages, decoder.lms)):
        channels = network.encoder.output_channels[-(index + 2)]
        has_lms = isinstance(lms, LMSBlock)
        detail = f"{size_text(sizes[index])}, {channels} ch: up-conv, conv"
        if has_lms:
            windows = [min(lms.window_size, s) for s in sizes[index]]
            detail += f"\n+ LMS (windows {size_text(windows)}, pooled ×{', ×'.join(map(str, lms.pool_factors))})"
        stages.append(Stage(f"decoder {index}", detail,
                            parameter_count(upsample) + parameter_count(convs) + parameter_count(lms), has_lms))
    return stages


def box(axes, x: float, y: float, width: float, stage: Stage, colour: str) -> None:
    axes.add_patch(FancyBboxPatch((x, y - 0.4), width, 0.8, boxstyle="round,pad=0.02", facecolor=colour,
                                  edgecolor="black", linewidth=0.8))
    axes.text(x + width / 2, y, f"{stage.label}  ({stage.parameters / 1e6:.2f} M)\n{stage.detail}",
              ha="center", va="center", fontsize=7)


def draw(network: MSVMambaUNet, patch_size: list[int], title: str, output: Path) -> None:
    encoder, decoder = encoder_stages(network, patch_size), decoder_stages(network, patch_size)
    n = len(encoder)
    figure, axes = plt.subplots(figsize=(12, 1.1 * n + 1.5))
    axes.set_xlim(0, 12)
    axes.set_ylim(-1.2, n + 0.2)
    axes.axis("off")
    row = lambda level: n - 1 - level  # noqa: E731 - stage 0 at the top
    for level, stage in enumerate(encoder):
        box(axes, 0.2, row(level), 3.4, stage, "#dbe8f6")
    for index, stage in enumerate(decoder):
        level = n - 2 - index  # decoder stage 0 sits beside the encoder stage above the bottleneck
        box(axes, 7.0, row(level), 3.4, stage, "#f9d9a6" if stage.highlighted else "#e8e8e8")
        aux = index < len(decoder) - 1
        axes.annotate("", xy=(11.1, row(level)), xytext=(10.45, row(level)), arrowprops={"arrowstyle": "->"})
        axes.text(11.15, row(level), "head:\nauxiliary loss" if aux else "head:\noutput + loss", va="center",
                  fontsize=7)
        source = n - 1 if index == 0 else level + 1  # from the bottleneck, then from the decoder stage below
        source_x = 3.6 if index == 0 else 8.7
        axes.annotate("", xy=(8.7 if index else 7.0, row(level) - 0.42),
                      xytext=(source_x, row(source) + (0 if index == 0 else 0.42)),
                      arrowprops={"arrowstyle": "->", "color": "grey"})
    fusion = network.skip_fusion
    if fusion is not None:
        axes.add_patch(FancyBboxPatch((4.3, row(n - 2) - 0.4), 2.0, n - 1 - 0.2, boxstyle="round,pad=0.02",
                                      facecolor="#d8f0d8", edgecolor="black", linewidth=0.8))
        middle = (n - 2) // 2  # between two skip arrows
        axes.text(5.3, row(middle) - 0.5, f"dual-attention skip fusion\n{parameter_count(fusion) / 1e6:.2f} M",
                  ha="center", va="center", fontsize=7)
    for level in range(n - 1):
        axes.annotate("", xy=(7.0, row(level)), xytext=(3.6, row(level)), arrowprops={"arrowstyle": "->"})
    axes.text(0.2, -0.9, "Orange: decoder stages with an LMS block (large-window multiscale Mamba). Grey arrows: "
              "upsampling path. Black arrows: skips,\n"
              "re-weighted by the dual-attention fusion (channel attention across all encoder stages, spatial "
              "attention per stage) when it is on.", fontsize=7)
    axes.set_title(f"{title}: {parameter_count(network) / 1e6:.2f} M parameters", fontsize=10)
    figure.tight_layout()
    figure.savefig(output, dpi=110)
    plt.close(figure)


def configuration_from(plans_file: Path | None, configuration: str) -> tuple[dict, str]:
    if plans_file is None:
        return RESENC_M_256_2D, PLAN_DESCRIPTION
    plans = json.loads(plans_file.read_text())
    return plans["configurations"][configuration], f"{plans_file.name}, configuration {configuration}"


def main() -> None:
    """Builds MSVMambaUNet from a plan as nnUNetTrainerMSVMamba does and draws its stages."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", type=Path, help="an nnU-Net plans JSON (default: a 256x256 ResEnc-M 2d plan)")
    parser.add_argument("-c", "--configuration", default="2d", help="configuration in --plans (default 2d)")
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).with_name("architecture.png"))
    args = parser.parse_args()
    configuration, description = configuration_from(args.plans, args.configuration)
    manager = ConfigurationManager(configuration)
    network = msvmamba_from_plans(manager, INPUT_CHANNELS, CLASSES, deep_supervision=True)
    draw(network, list(manager.patch_size), f"MSVMambaUNet from the {description}", args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
