"""The pure-PyTorch selective scan against upstream's `selective_scan_ref` (float32) and against an
independent float64 sequential reference (nnunetv2_msvmamba.ssm.selective_scan_ref): outputs, last state and the gradient of
every input, over a grid of options, B/C layouts, lengths and batch sizes.

Error measure (selective_scan_ref.relative_error): the largest absolute difference divided by the largest magnitude
of the reference tensor, max|ours - ref| / max|ref|, so tensors with near-zero entries are judged at the scale
of the tensor.
"""
from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from helpers.scan_cases import (FLOAT32_TOLERANCE, FLOAT64_TOLERANCE, INPUT_NAMES, ScanCase, assert_matches,
                                run_float64_reference, run_ours, run_upstream)
from nnunetv2_msvmamba.ssm import selective_scan_torch

OPTION_CASES = [ScanCase(with_D=D, with_z=z, with_delta_bias=bias, delta_softplus=softplus)
                for D, z, bias, softplus in itertools.product((False, True), repeat=4)]
LAYOUT_CASES = [ScanCase(batch=batch, length=length, b_layout=b_layout, c_layout=c_layout, return_last_state=last)
                for (b_layout, c_layout), length, batch, last in itertools.product(
                    (("constant", "constant"), ("shared", "shared"), ("grouped", "grouped"), ("shared", "grouped"),
                     ("constant", "shared")),
                    (1, 17), (1, 3), (True, False))]
GROUP_CASES = [ScanCase(dim=6, groups=groups) for groups in (1, 3, 6)]
# lengths around the scan's chunks of 16 steps (the state is carried from one chunk to the next)
CHUNK_BOUNDARY_CASES = [ScanCase(length=length, b_layout="shared", c_layout="grouped") for length in (15, 16, 32, 50)]
LONG_CASE = ScanCase(batch=1, dim=4, length=4096, dstate=4, b_layout="shared", c_layout="shared")
GRID = OPTION_CASES + LAYOUT_CASES + GROUP_CASES + CHUNK_BOUNDARY_CASES + [LONG_CASE]


@pytest.mark.parametrize("case", GRID, ids=str)
def test_matches_upstream_reference_in_float32(case: ScanCase) -> None:
    inputs = case.inputs()
    assert_matches(case, run_ours(case, inputs, torch.float32), run_upstream(case, inputs), FLOAT32_TOLERANCE)


@pytest.mark.parametrize("case", GRID, ids=str)
def test_matches_float64_sequential_reference(case: ScanCase) -> None:
    inputs = case.inputs()
    ours = run_ours(case, inputs, torch.float64)
    assert ours[0].dtype == torch.float64 and all(g.dtype == torch.float64 for g in ours[2].values())
    assert_matches(case, ours, run_float64_reference(case, inputs), FLOAT64_TOLERANCE)


def test_long_sequence_state_is_carried_to_the_end() -> None:
    """Guards the long case against passing trivially: the last output still depends on the first input."""
    case = dataclasses.replace(LONG_CASE, with_z=False, with_D=False)
    inputs = case.inputs()
    inputs["A"] = torch.full_like(inputs["A"], -1e-4)  # almost no decay over 4096 steps
    u = inputs["u"].clone().requires_grad_()
    out = selective_scan_torch(u, inputs["delta"], inputs["A"], inputs["B"], inputs["C"],
                               delta_bias=inputs["delta_bias"], delta_softplus=True)
    (gradient,) = torch.autograd.grad(out[:, :, -1].sum(), u)
    assert gradient[:, :, 0].abs().min() > 1e-3


GRADCHECK_CASES = [
    ScanCase(batch=2, dim=2, length=5, dstate=2, b_layout="shared", c_layout="shared"),
    ScanCase(batch=1, dim=4, length=4, dstate=3, groups=2, with_z=False, with_delta_bias=False),
    ScanCase(batch=2, dim=2, length=3, dstate=2, b_layout="constant", c_layout="grouped", groups=1, with_D=False,
             delta_softplus=False),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=str)
def test_analytic_backward_passes_gradcheck(case: ScanCase) -> None:
    inputs = case.inputs()
    present = [name for name in INPUT_NAMES if inputs[name] is not None]
    if case.delta_softplus:  # finite differences across softplus's threshold would be meaningless
        inputs["delta"][:, 0, 0] = 0.3

    def scan(*tensors):
        named = dict(zip(present, tensors))
        return selective_scan_torch(*(named.get(name) for name in INPUT_NAMES), delta_softplus=case.delta_softplus)

    assert torch.autograd.gradcheck(scan, [inputs[name].requires_grad_() for name in present])


def test_runs_in_float32_under_autocast() -> None:
    """Under bfloat16 autocast the scan neither lowers its precision nor changes its results."""
    case = ScanCase(b_layout="shared", c_layout="shared")
    inputs = case.inputs()
    plain = run_ours(case, inputs, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = run_ours(case, inputs, torch.float32)
    assert autocast[0].dtype == torch.float32 and autocast[1].dtype == torch.float32
    assert torch.equal(autocast[0], plain[0]) and torch.equal(autocast[1], plain[1])
    for name, gradient in plain[2].items():
        assert torch.equal(autocast[2][name], gradient), name


def test_bfloat16_inputs_are_computed_in_float32_and_returned_in_bfloat16() -> None:
    case = ScanCase(b_layout="shared", c_layout="shared", return_last_state=False)
    inputs = {name: None if value is None else value.to(torch.bfloat16) for name, value in case.inputs().items()}
    as_float32 = {name: None if value is None else value.float() for name, value in inputs.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = selective_scan_torch(*(inputs[name] for name in INPUT_NAMES), delta_softplus=True)
    expected = selective_scan_torch(*(as_float32[name] for name in INPUT_NAMES), delta_softplus=True)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, expected.to(torch.bfloat16))


def test_no_gradient_flows_through_last_state() -> None:
    inputs = ScanCase(b_layout="shared", c_layout="shared").inputs()
    u = inputs["u"].requires_grad_()
    out, last_state = selective_scan_torch(u, inputs["delta"], inputs["A"], inputs["B"], inputs["C"],
                                           return_last_state=True)
    assert out.requires_grad and not last_state.requires_grad


@pytest.mark.parametrize("bad_B, message", [
    (torch.zeros(1, 3, 3, 5), "3 groups, which does not divide dim=4"),
    (torch.zeros(4, 2), r"constant B must have shape \(dim, n\) = \(4, 3\)"),
    (torch.zeros(5), "B must have 2, 3 or 4 dimensions"),
])
def test_malformed_B_is_a_clear_error(bad_B: torch.Tensor, message: str) -> None:
    u = torch.zeros(1, 4, 5)
    with pytest.raises(ValueError, match=message):
        selective_scan_torch(u, u, -torch.ones(4, 3), bad_B, torch.zeros(1, 3, 5))


def test_complex_A_is_refused() -> None:
    u = torch.zeros(1, 2, 3)
    with pytest.raises(NotImplementedError, match="real A only"):
        selective_scan_torch(u, u, torch.zeros(2, 2, dtype=torch.complex64), torch.zeros(1, 2, 3),
                             torch.zeros(1, 2, 3))
