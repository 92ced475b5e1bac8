"""The Numba causal convolution + SiLU (the Numba mixer's convolution, `conv_forward` and `conv_backward`): output and
the gradients of x, the weights and the bias against PyTorch's conv1d and SiLU, for one direction and for both (the
reverse one as PyTorch's convolution of the flipped sequence, flipped back), in float64 and float32, at lengths
shorter than the kernel, from a strided channels-last view as in_proj's output gives it, dx written into a given
strided tensor, and half-precision input computed in float32."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nnunetv2_msvmamba.ssm.causal_conv1d_numba import conv_backward, conv_forward
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


def output_weights(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """Fixed random weights of the output, whose weighted sum the gradients are taken of."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)


def reference_outputs_and_gradients(x, weight, bias, directions: int) -> list:
    """PyTorch's output and its gradients (x, weight, bias where present) of the weighted sum of the output."""
    leaves = [t if t is None else t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    out = conv1d_silu(*leaves, directions)
    present = [leaf for leaf in leaves if leaf is not None]
    return [out.detach(), *torch.autograd.grad((out * output_weights(out.shape, out.dtype)).sum(), present)]


def numba_outputs_and_gradients(x, weight, bias, directions: int, dx=None) -> list:
    """The kernels' output and gradients, for the same weighted sum."""
    out = conv_forward(x, weight, bias, directions)
    dx, dweight, dbias = conv_backward(x, weight, bias, output_weights(out.shape, out.dtype), dx=dx)
    return [out, dx, dweight] + ([] if dbias is None else [dbias])


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
    # dx written into the first half of a (batch, L, 2 dim) gradient, as the mixer's node gives it
    dx = torch.empty(batch, length, 2 * dim, dtype=dtype)[..., :dim]
    ours = numba_outputs_and_gradients(x, weight, bias, directions, dx=dx)
    expected = reference_outputs_and_gradients(x, weight, bias, directions)
    assert len(ours) == len(expected)
    assert ours[0].shape == (directions, batch, length, dim) and ours[0].is_contiguous()
    assert ours[1] is dx and ours[2].shape == weight.shape
    for name, value, reference in zip(("out", "dx", "dweight", "dbias"), ours, expected):
        assert value.dtype == dtype, name
        assert relative_error(value, reference) <= tolerance, name


def test_half_precision_input_is_computed_in_float32() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 11, 4, generator=generator).to(torch.bfloat16)
    weight, bias = torch.randn(4, 1, 4, generator=generator), torch.randn(4, generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, dx, dweight, dbias = numba_outputs_and_gradients(x, weight, bias, 2)
    assert out.dtype == dx.dtype == dweight.dtype == dbias.dtype == torch.float32
    expected = reference_outputs_and_gradients(x.float(), weight, bias, 2)
    for name, value, reference in zip(("out", "dx", "dweight", "dbias"), (out, dx, dweight, dbias), expected):
        assert relative_error(value, reference) <= 1e-5, name
