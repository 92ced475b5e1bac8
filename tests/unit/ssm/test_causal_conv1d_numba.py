"""The Numba causal convolution + SiLU (the Numba mixer's convolution): output and the gradients of x, the weights and
the bias against PyTorch's conv1d and SiLU, for one direction and for both (the reverse one as PyTorch's convolution
of the flipped sequence, flipped back), in float64 and float32, at lengths shorter than the kernel, from a strided
channels-last view as in_proj's output gives it, and in half precision; and its argument errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nnunetv2_msvmamba.ssm.causal_conv1d_numba import causal_conv1d_silu_numba
from nnunetv2_msvmamba.ssm.selective_scan_ref import relative_error


def conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias, directions: int) -> torch.Tensor:
    """PyTorch's conv1d + SiLU of (batch, L, dim) x as the Mamba mixer's torch path runs it, per direction:
    -> (directions, batch, L, dim)."""
    length, taps = x.shape[1], weight.shape[-1]

    def causal(sequence: torch.Tensor) -> torch.Tensor:  # (batch, dim, L)
        return F.silu(F.conv1d(sequence, weight, bias, padding=taps - 1, groups=weight.shape[0])[..., :length])
    channels_first = x.transpose(1, 2)
    outputs = [causal(channels_first), causal(channels_first.flip(-1)).flip(-1)][:directions]
    return torch.stack([out.transpose(1, 2) for out in outputs])


def outputs_and_gradients(function, x, weight, bias, directions: int):
    leaves = [t if t is None else t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    out = function(*leaves, directions)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    present = [leaf for leaf in leaves if leaf is not None]
    return [out.detach(), *torch.autograd.grad((out * weights).sum(), present)]


CASES = [  # batch, length, dim, taps, bias
    (2, 13, 6, 4, True), (1, 2, 5, 4, True), (3, 1, 3, 4, False), (2, 9, 7, 2, True), (1, 17, 16, 3, False)]


@pytest.mark.parametrize("directions", [1, 2])
@pytest.mark.parametrize("batch,length,dim,taps,with_bias", CASES)
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)], ids=["f64", "f32"])
def test_matches_pytorchs_conv1d_and_silu(batch, length, dim, taps, with_bias, directions, dtype, tolerance) -> None:
    generator = torch.Generator().manual_seed(batch * 100 + length)
    # x as in_proj's output gives it: the first half of the channels of a (batch, L, 2 dim) tensor
    x = torch.randn(batch, length, 2 * dim, generator=generator, dtype=dtype)[..., :dim]
    weight = torch.randn(dim, 1, taps, generator=generator, dtype=dtype)
    bias = torch.randn(dim, generator=generator, dtype=dtype) if with_bias else None
    ours = outputs_and_gradients(causal_conv1d_silu_numba, x, weight, bias, directions)
    expected = outputs_and_gradients(conv1d_silu, x, weight, bias, directions)
    assert ours[0].shape == (directions, batch, length, dim) and ours[0].is_contiguous()
    assert ours[1].shape == x.shape and ours[2].shape == weight.shape
    for name, value, reference in zip(("out", "dx", "dweight", "dbias"), ours, expected):
        assert value.dtype == dtype, name
        assert relative_error(value, reference) <= tolerance, name


def test_half_precision_comes_back_in_its_dtype_computed_in_float32() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 11, 4, generator=generator).to(torch.bfloat16)
    weight, bias = torch.randn(4, 1, 4, generator=generator), torch.randn(4, generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, dx, dweight, dbias = outputs_and_gradients(causal_conv1d_silu_numba, x, weight, bias, 2)
    assert out.dtype == dx.dtype == torch.bfloat16 and dweight.dtype == dbias.dtype == torch.float32
    expected = conv1d_silu(x.float(), weight, bias, 2)
    assert relative_error(out.float(), expected) <= 2 ** -8  # bfloat16's rounding of a float32 result


def test_three_directions_are_refused() -> None:
    with pytest.raises(ValueError, match="directions must be 1 or 2, got 3"):
        causal_conv1d_silu_numba(torch.zeros(1, 4, 2), torch.zeros(2, 1, 4), None, 3)
