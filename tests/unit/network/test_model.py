"""MSVMambaUNet and its parts: shapes, nnU-Net's deep-supervision contract, gradients, LMS geometry, mixed precision
against float32, and the feature-map count nnU-Net's planners use."""
from __future__ import annotations

import pytest
import torch
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import nn

from helpers.network_fixtures import PLAIN_2D, PLAIN_3D, RESENC_2D, plans
from nnunetv2_msvmamba.network import LMSBlock, MSVMambaUNet, decoder_output_sizes, lms_stages_within
from nnunetv2_msvmamba.network.lms import window_partition, window_unpartition
from nnunetv2_msvmamba.ssm import BACKEND_ENV
from nnunetv2_msvmamba.ssm import mamba as mamba_module
from nnunetv2_msvmamba.training.network_from_plans import msvmamba_from_plans


def build(architecture: dict, deep_supervision: bool = True, patch_size=(64, 64), **options) -> MSVMambaUNet:
    configuration = "2d" if len(patch_size) == 2 else "3d_fullres"
    manager = PlansManager(plans(architecture, configuration, patch_size)).get_configuration(configuration)
    options.setdefault("lms_max_positions", None)  # LMS on every stage, full resolution included
    return msvmamba_from_plans(manager, 1, 3, deep_supervision, **options)


@pytest.mark.parametrize("architecture, size, window", [
    (PLAIN_2D, (40, 56), 16),      # neither axis a multiple of the window: windows pad internally
    (RESENC_2D, (24, 72), 16),
    (PLAIN_3D, (12, 20, 28), 8),
])
def test_deep_supervision_returns_every_decoder_stage_highest_resolution_first(architecture, size, window):
    torch.manual_seed(0)
    network = build(architecture, True, size, window_size=window)
    n_stages = architecture["arch_kwargs"]["n_stages"]
    outputs = network(torch.randn(2, 1, *size))
    assert isinstance(outputs, list) and len(outputs) == n_stages - 1
    for level, output in enumerate(outputs):
        assert output.shape == (2, 3, *[s // 2 ** level for s in size])
        assert torch.isfinite(output).all()

    network.decoder.deep_supervision = False
    single = network(torch.randn(2, 1, *size))
    assert isinstance(single, torch.Tensor) and single.shape == (2, 3, *size)


def test_parameters_do_not_depend_on_deep_supervision_and_load_strictly():
    torch.manual_seed(0)
    trained = build(PLAIN_2D, deep_supervision=True)
    torch.manual_seed(1)
    for_inference = build(PLAIN_2D, deep_supervision=False)
    assert {k: v.shape for k, v in trained.state_dict().items()} == \
           {k: v.shape for k, v in for_inference.state_dict().items()}
    for_inference.load_state_dict(trained.state_dict(), strict=True)
    trained.decoder.deep_supervision = False
    trained.eval(), for_inference.eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(trained(x), for_inference(x), atol=1e-6)


def test_gradients_reach_every_parameter():
    """What DDP without find_unused_parameters needs: every parameter takes part in the loss."""
    torch.manual_seed(0)
    network = build(RESENC_2D)
    loss = sum(o.square().mean() for o in network(torch.randn(2, 1, 32, 48)))
    loss.backward()
    missing = [name for name, p in network.named_parameters() if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in network.parameters())
    lms_and_fusion = [p for name, p in network.named_parameters() if ".lms." in name or "skip_fusion" in name]
    assert lms_and_fusion and all(p.grad.abs().sum() > 0 for p in lms_and_fusion)


def test_every_decoder_stage_can_have_an_lms_block_and_options_remove_them():
    full = build(PLAIN_2D)
    assert all(isinstance(block, LMSBlock) for block in full.decoder.lms)
    assert full.skip_fusion is not None
    no_lms = build(PLAIN_2D, lms_stages=())
    assert all(isinstance(block, nn.Identity) for block in no_lms.decoder.lms)
    assert not any(".lms." in name for name, _ in no_lms.named_parameters())
    deepest_only = build(PLAIN_2D, lms_stages=[0])
    assert [type(b).__name__ for b in deepest_only.decoder.lms] == ["LMSBlock", "Identity", "Identity"]
    no_fusion = build(PLAIN_2D, skip_fusion=False)
    assert no_fusion.skip_fusion is None and not any("skip_fusion" in n for n, _ in no_fusion.named_parameters())
    with pytest.raises(ValueError, match="lms_stages"):
        build(PLAIN_2D, lms_stages=[5])


def test_decoder_output_sizes_follow_the_plans_strides():
    resenc_m_256 = [1, [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]]
    assert decoder_output_sizes((256, 256), resenc_m_256) == [(8, 8), (16, 16), (32, 32), (64, 64), (128, 128),
                                                              (256, 256)]
    # anisotropic 3D strides and sizes that do not divide (convolutions pad: ceil)
    assert decoder_output_sizes((20, 60, 66), [1, [1, 2, 2], 2, 2]) == [(10, 15, 17), (20, 30, 33), (20, 60, 66)]


def test_lms_stages_within_a_position_budget_keep_the_deepest_stage():
    resenc_m_256 = [1, [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]]
    assert lms_stages_within((256, 256), resenc_m_256, 32 * 32) == [0, 1, 2]
    assert lms_stages_within((256, 256), resenc_m_256, 256 * 256) == [0, 1, 2, 3, 4, 5]
    assert lms_stages_within((256, 256), [1, 2, 2], 16) == [0]  # even when its map is larger than the budget


def test_plain_and_resenc_plans_give_the_encoder_their_block_counts():
    plain, resenc = build(PLAIN_2D), build(RESENC_2D)
    assert [len(stage.blocks) for stage in plain.encoder.stages] == [1, 1, 1, 1]
    assert [len(stage.blocks) for stage in resenc.encoder.stages] == [1, 2, 2, 2]
    with pytest.raises(ValueError, match="exactly one"):
        MSVMambaUNet(1, 2, [4, 8], nn.Conv2d, 3, [1, 2], n_blocks_per_stage=1, n_conv_per_stage=1)


@pytest.mark.parametrize("shape, window", [((2, 40, 56, 5), (16, 16)), ((1, 7, 9, 12, 3), (4, 8, 5))])
def test_window_partition_round_trip_and_windows_are_contiguous_blocks(shape, window):
    x = torch.randn(*shape)  # channels last: (B, *S, C)
    windows, padded = window_partition(x, window)
    assert windows.shape[1:] == (torch.Size(window).numel(), shape[-1])
    assert torch.equal(window_unpartition(windows, window, padded, shape[0], shape[1:-1]), x)
    # the first window of the first image is the top-left block, in row-major order
    block = x[(0, *[slice(0, min(w, s)) for w, s in zip(window, shape[1:-1])])]
    if all(w <= s for w, s in zip(window, shape[1:-1])):
        assert torch.equal(windows[0], block.reshape(-1, shape[-1]))


def test_lms_sequence_length_is_the_window_not_the_image():
    """Linear cost: a bigger image gives more windows of the same length, never longer sequences."""
    small, _ = window_partition(torch.randn(1, 32, 32, 4), (16, 16))
    large, _ = window_partition(torch.randn(1, 128, 128, 4), (16, 16))
    assert small.shape[1] == large.shape[1] == 256
    assert large.shape[0] == 16 * small.shape[0]


def test_lms_patch_level_branch_gives_global_context():
    """A position far outside its window sees the whole map through the pooled branch, and not without it."""
    torch.manual_seed(0)
    for pool_factors, expect_global in (((4, 8), True), ((), False)):
        block = LMSBlock(8, window_size=8, pool_factors=pool_factors)
        x = torch.randn(1, 8, 32, 32, requires_grad=True)
        block(x)[0, :, 0, 0].sum().backward()
        far_corner = x.grad[0, :, 24:, 24:].abs().sum()
        assert (far_corner > 0) == expect_global
        assert x.grad[0, :, :8, :8].abs().sum() > 0  # the own window always contributes


# Mixed precision against float32 on the same weights and input. The tolerances follow from the formats' 8-bit
# (bfloat16) and 11-bit (float16) significands, with room over what was measured on the CPU (relative L2 error
# ~0.9 % and ~0.1 %, largest error ~0.09 and ~0.014 of the logits' standard deviation).
AUTOCAST_TOLERANCES = {  # dtype: (relative L2 error, largest error / std of the float32 logits)
    torch.bfloat16: (0.02, 0.2),
    torch.float16: (0.004, 0.04),
}


@pytest.mark.parametrize("dtype", list(AUTOCAST_TOLERANCES), ids=str)
@pytest.mark.parametrize("architecture, size", [(RESENC_2D, (64, 64)), (PLAIN_3D, (16, 32, 32))], ids=["2d", "3d"])
def test_autocast_output_matches_float32_within_the_format_tolerance(dtype, architecture, size):
    torch.manual_seed(0)
    network = build(architecture, deep_supervision=False, patch_size=size).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        reference = network(x)
        with torch.autocast("cpu", dtype=dtype):
            low = network(x)
    assert low.dtype == dtype  # autocast really ran the head in the low-precision format
    error = low.float() - reference
    relative_l2, largest_over_std = AUTOCAST_TOLERANCES[dtype]
    assert error.norm() / reference.norm() < relative_l2
    assert error.abs().max() / reference.std() < largest_over_std
    assert (low.argmax(1) == reference.argmax(1)).float().mean() > 0.99


# ------------------------------------------------------------------- feature-map size for nnU-Net's planners

MEASURED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
                   nn.LayerNorm)


def measured_feature_map_size(network: MSVMambaUNet, input_size, monkeypatch) -> int:
    """What one forward pass of one sample really makes, recorded with hooks: the outputs of every convolution,
    linear and LayerNorm layer, the input (dt) and output of every selective scan, and the fused skips. The mixers
    run their pure-PyTorch path, whose modules the hooks see (the Numba path makes the same maps, less the
    convolution's padding, in fused kernels)."""
    monkeypatch.setenv(BACKEND_ENV, "torch")
    total = 0

    def record(*tensors):
        nonlocal total
        total += sum(t.numel() for t in tensors)

    hooks = [m.register_forward_hook(lambda module, inputs, output: record(output))
             for m in network.modules() if isinstance(m, MEASURED_LAYERS)]
    if network.skip_fusion is not None:
        hooks.append(network.skip_fusion.register_forward_hook(lambda module, inputs, output: record(*output[:-1])))
    scan = mamba_module.selective_scan

    def recording_scan(u, delta, *args, **kwargs):
        out = scan(u, delta, *args, **kwargs)
        record(delta, out)
        return out

    monkeypatch.setattr(mamba_module, "selective_scan", recording_scan)
    with torch.no_grad():
        network(torch.randn(1, 1, *input_size))
    for hook in hooks:
        hook.remove()
    return total


@pytest.mark.parametrize("deep_supervision", [True, False])
def test_feature_map_size_without_lms_and_fusion_is_dynamic_network_architectures_own(deep_supervision):
    """Encoder and decoder are ResidualEncoderUNet's: without LMS and fusion the count is exactly its count."""
    size = (64, 96)
    arch = RESENC_2D["arch_kwargs"]
    stock = get_network_from_plans(RESENC_2D["network_class_name"], arch, RESENC_2D["_kw_requires_import"], 1, 3,
                                   deep_supervision=deep_supervision)
    ours = build(RESENC_2D, deep_supervision, size, lms_stages=(), skip_fusion=False)
    assert ours.compute_conv_feature_map_size(size) == stock.compute_conv_feature_map_size(size)


@pytest.mark.parametrize("architecture, size", [(PLAIN_2D, (64, 64)), (RESENC_2D, (64, 96)),
                                                (PLAIN_3D, (16, 32, 32))], ids=["plain2d", "resenc2d", "3d"])
def test_feature_map_size_is_close_to_what_a_forward_pass_makes(architecture, size, monkeypatch):
    """What remains: dynamic-network-architectures also counts a strided residual block's pooled skip, and each
    short convolution in the mixers outputs d_conv - 1 padded positions more than it keeps."""
    torch.manual_seed(0)
    for options in ({"lms_stages": (), "skip_fusion": False}, {}):
        network = build(architecture, patch_size=size, **options)
        estimate = network.compute_conv_feature_map_size(size)
        measured = measured_feature_map_size(network, size, monkeypatch)
        assert abs(estimate - measured) / measured < 0.015, (options, estimate, measured)


def test_feature_map_size_grows_with_lms_and_fusion_and_deep_supervision():
    size = (64, 64)
    count = {name: build(PLAIN_2D, patch_size=size, **options).compute_conv_feature_map_size(size)
             for name, options in {"full": {}, "no_lms": {"lms_stages": ()}, "no_fusion": {"skip_fusion": False},
                                   "deepest_lms": {"lms_stages": [0]}}.items()}
    assert count["full"] > count["deepest_lms"] > count["no_lms"] and count["full"] > count["no_fusion"]
    assert build(PLAIN_2D, False, size).compute_conv_feature_map_size(size) < count["full"]
    with pytest.raises(ValueError, match="spatial size"):
        build(PLAIN_2D).compute_conv_feature_map_size((1, 1, 64, 64))


def test_nnunet_planners_vram_estimate_accepts_the_network_by_its_class_name():
    """nnU-Net's planners size patches and batches with this count, building the network by the class name that
    plans give; MSV-Mamba's estimate exceeds that of the ResidualEncoderUNet it extends."""
    estimate = ExperimentPlanner.static_estimate_VRAM_usage
    arch, imports = RESENC_2D["arch_kwargs"], RESENC_2D["_kw_requires_import"]
    ours = estimate((64, 64), 1, 3, "nnunetv2_msvmamba.network.MSVMambaUNet", arch, imports)
    stock = estimate((64, 64), 1, 3, RESENC_2D["network_class_name"], arch, imports)
    assert ours == build(RESENC_2D, False).compute_conv_feature_map_size((64, 64)) and ours > stock
