"""`mamba_inner_numba` (the Mamba mixer's CPU path between in_proj and out_proj, one autograd node): its output and
every gradient against the same computation composed of PyTorch's ops (conv1d, linear layers, the float64 reference
scan, each direction on flipped copies), against autograd's numerical gradients (gradcheck, float64), in float32
within float32's accuracy, with a strided in_proj output; that half-precision inputs come back in their dtype; that
nothing is kept for a backward under torch.no_grad(); and its argument errors."""
from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

import nnunetv2_msvmamba.ssm.mamba_inner_numba as mamba_inner_module
from nnunetv2_msvmamba.ssm.mamba_inner_numba import mamba_inner_numba
from nnunetv2_msvmamba.ssm.selective_scan_ref import relative_error, selective_scan_ref

# the module, not the function of the same name that the ssm package exports
numba_scan = importlib.import_module("nnunetv2_msvmamba.ssm.selective_scan_numba")

CASES = [  # batch, length, d_inner, d_state, dt_rank, taps, conv bias, directions
    (2, 13, 6, 4, 2, 4, True, 2), (1, 200, 5, 3, 1, 4, False, 2), (3, 7, 4, 2, 3, 2, True, 1),
    (1, 1, 3, 2, 1, 4, True, 2)]
NAMES = ("out", "d_xz", "d_conv_weight", "d_conv_bias", "d_x_proj_weight", "d_dt_proj_weight", "d_dt_proj_bias",
         "d_A_log", "d_D")


def composed(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A_log, D, directions):
    """The same computation as PyTorch ops, the reverse direction on flipped copies, flipped back."""
    length, d_inner = xz.shape[1], xz.shape[2] // 2
    rank, dstate = dt_proj_weight.shape[1], (x_proj_weight.shape[0] - dt_proj_weight.shape[1]) // 2

    def one_direction(sequence: torch.Tensor) -> torch.Tensor:  # (batch, L, 2 d_inner) -> (batch, L, d_inner)
        x, z = sequence.transpose(1, 2).chunk(2, dim=1)
        x = F.silu(F.conv1d(x, conv_weight, conv_bias, padding=conv_weight.shape[-1] - 1, groups=d_inner)[..., :length])
        dt, B, C = torch.split(F.linear(x.transpose(1, 2), x_proj_weight), [rank, dstate, dstate], dim=-1)
        delta = F.linear(dt, dt_proj_weight).transpose(1, 2)
        y = selective_scan_ref(x, delta, -torch.exp(A_log), B.transpose(1, 2), C.transpose(1, 2), D, z=z,
                               delta_bias=dt_proj_bias, delta_softplus=True)
        return y.transpose(1, 2)
    out = one_direction(xz)
    return out + one_direction(xz.flip(1)).flip(1) if directions == 2 else out


def mixer_inputs(batch, length, d_inner, d_state, dt_rank, taps, conv_bias, dtype, seed=0, row_padding=3):
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=generator, dtype=dtype)
    # xz as in_proj gives it to the CPU path: a (batch, L, 2 d_inner) tensor, a strided view unless row_padding=0
    xz = randn(batch, length, 2 * d_inner + row_padding)[..., :2 * d_inner]
    A_log = torch.log(torch.arange(1, d_state + 1, dtype=dtype).repeat(d_inner, 1)) + randn(d_inner, d_state, scale=0.1)
    return [xz, randn(d_inner, 1, taps, scale=0.5), randn(d_inner) if conv_bias else None,
            randn(dt_rank + 2 * d_state, d_inner, scale=0.5), randn(d_inner, dt_rank, scale=0.5),
            randn(d_inner, scale=0.5) - 2.0, A_log, randn(d_inner)]


def outputs_and_gradients(function, inputs, directions):
    leaves = [t if t is None else t.detach().clone().requires_grad_() for t in inputs]
    out = function(*leaves, directions)
    # the same weights whatever the dtype: randn draws differently per dtype
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(out.dtype)
    present = [leaf for leaf in leaves if leaf is not None]
    grads = iter(torch.autograd.grad((out * weights).sum(), present))
    return [out.detach(), *(None if leaf is None else next(grads) for leaf in leaves)]


@pytest.mark.parametrize("batch,length,d_inner,d_state,dt_rank,taps,conv_bias,directions", CASES)
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-4)], ids=["f64", "f32"])
def test_matches_the_composed_ops(batch, length, d_inner, d_state, dt_rank, taps, conv_bias, directions, dtype,
                                  tolerance) -> None:
    inputs = mixer_inputs(batch, length, d_inner, d_state, dt_rank, taps, conv_bias, dtype)
    ours = outputs_and_gradients(mamba_inner_numba, inputs, directions)
    reference = outputs_and_gradients(composed, [t if t is None else t.double() for t in inputs], directions)
    assert ours[0].shape == (batch, length, d_inner)
    for name, value, expected, given in zip(NAMES, ours, reference, [None, *inputs]):
        if expected is None:
            assert value is None, name
            continue
        assert value.dtype == dtype, name
        if given is not None:
            assert value.shape == given.shape, name
        error = relative_error(value.double(), expected)
        assert error <= tolerance, f"{name}: {error:.1e}"


@pytest.mark.parametrize("directions", [1, 2])
def test_channels_in_whole_blocks_use_z_and_dz_where_they_lie(directions: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """d_inner in whole blocks of LANES and xz contiguous, as in_proj gives it: the scan reads z and writes dz in
    xz's and its gradient's own memory, and the results match the composed ops."""
    in_place = []
    blocked_in_place = numba_scan.ChannelBlocks.blocked_in_place

    def recorded(layout, x, dtype):
        result = blocked_in_place(layout, x, dtype)
        in_place.append(result is not None)
        return result
    monkeypatch.setattr(numba_scan.ChannelBlocks, "blocked_in_place", recorded)
    inputs = mixer_inputs(2, 21, 2 * numba_scan.LANES, 4, 2, 4, True, torch.float64, row_padding=0)
    ours = outputs_and_gradients(mamba_inner_numba, inputs, directions)
    reference = outputs_and_gradients(composed, inputs, directions)
    assert in_place == [True] * 3  # z in the forward and the backward (shared by the directions), dz once
    for name, value, expected in zip(NAMES, ours, reference):
        if expected is not None:
            assert relative_error(value, expected) <= 1e-12, name


@pytest.mark.parametrize("directions", [1, 2])
def test_gradients_pass_gradcheck(directions: int) -> None:
    inputs = [t.requires_grad_() if t is not None else None
              for t in mixer_inputs(2, 9, 3, 2, 1, 4, True, torch.float64, seed=5)]
    inputs[0] = inputs[0].detach().contiguous().requires_grad_()
    assert torch.autograd.gradcheck(lambda *args: mamba_inner_numba(*args, directions), inputs)


def test_half_precision_comes_back_in_its_dtype() -> None:
    inputs = mixer_inputs(2, 11, 4, 2, 1, 4, True, torch.float32, seed=3)
    inputs[0] = inputs[0].to(torch.bfloat16)
    out, d_xz, *_ = outputs_and_gradients(mamba_inner_numba, inputs, 2)
    expected = composed(*[t if t is None else t.double() for t in inputs], 2)
    assert out.dtype == d_xz.dtype == torch.bfloat16
    assert relative_error(out.double(), expected) <= 1e-2


def test_argument_errors() -> None:
    inputs = mixer_inputs(1, 4, 2, 2, 1, 4, True, torch.float32)
    with pytest.raises(ValueError, match="directions must be 1 or 2, got 3"):
        mamba_inner_numba(*inputs, 3)
    with pytest.raises(RuntimeError, match="runs on CPU tensors, got tensors on meta"):
        mamba_inner_numba(inputs[0].to("meta"), *inputs[1:], 2)


@pytest.mark.parametrize("grad_enabled", [True, False])
def test_keeps_state_for_a_backward_only_where_one_can_run(monkeypatch: pytest.MonkeyPatch, grad_enabled: bool) -> None:
    """Under torch.no_grad() a parameter still says it needs a gradient (ctx.needs_input_grad), but no backward can
    run: the scan must not keep its checkpoints and gate inputs then, in the mixer's node or in the scan's own."""
    kept, scan_forward = [], numba_scan.scan_forward

    def recording_scan_forward(*args, **kwargs):
        kept.append(args[-1])  # for_backward
        return scan_forward(*args, **kwargs)
    monkeypatch.setattr(mamba_inner_module, "scan_forward", recording_scan_forward)
    monkeypatch.setattr(numba_scan, "scan_forward", recording_scan_forward)
    inputs = [t if t is None else t.requires_grad_() for t in mixer_inputs(1, 5, 2, 2, 1, 4, True, torch.float32)]
    u, delta = torch.randn(2, 1, 2, 5).unbind(0)
    with torch.set_grad_enabled(grad_enabled):
        mamba_inner_numba(*inputs, 2)
        numba_scan.selective_scan_numba(u, delta, -torch.ones(2, 3, requires_grad=True), torch.randn(1, 3, 5),
                                        torch.randn(1, 3, 5))
    assert kept == [grad_enabled, grad_enabled]
