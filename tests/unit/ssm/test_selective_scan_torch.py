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
from typing import Optional

import pytest
import torch

from nnunetv2_msvmamba.ssm import selective_scan_torch
from nnunetv2_msvmamba.ssm.selective_scan_ref import relative_error, selective_scan_ref
from upstream_mamba import selective_scan_interface

FLOAT32_TOLERANCE = 1e-4  # against upstream's reference, which computes in float32
FLOAT64_TOLERANCE = 1e-8  # against our float64 reference, our scan running on float64 inputs
INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")



@dataclasses.dataclass(frozen=True)
class ScanCase:
    batch: int = 2
    dim: int = 4
    length: int = 33
    dstate: int = 3
    b_layout: str = "grouped"  # "constant" (dim, n), "shared" (batch, n, L) or "grouped" (batch, groups, n, L)
    c_layout: str = "grouped"
    groups: int = 2
    with_D: bool = True
    with_z: bool = True
    with_delta_bias: bool = True
    delta_softplus: bool = True
    return_last_state: bool = True

    def __str__(self) -> str:
        flags = {"D": self.with_D, "z": self.with_z, "delta_bias": self.with_delta_bias,
                 "softplus": self.delta_softplus}
        options = [name for name, on in flags.items() if on]
        grouped = f"-g{self.groups}" if "grouped" in (self.b_layout, self.c_layout) else ""
        return (f"b{self.batch}-d{self.dim}-L{self.length}-n{self.dstate}-B:{self.b_layout}-C:{self.c_layout}{grouped}"
                f"-{'+'.join(options) or 'plain'}{'-last_state' if self.return_last_state else ''}")

    def coefficient(self, layout: str, generator: torch.Generator) -> torch.Tensor:
        shape = {"constant": (self.dim, self.dstate), "shared": (self.batch, self.dstate, self.length),
                 "grouped": (self.batch, self.groups, self.dstate, self.length)}[layout]
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    def inputs(self, seed: int = 0) -> dict[str, Optional[torch.Tensor]]:
        """float64 inputs (cast them for float32 runs); delta > 0, and with softplus some raw deltas above
        softplus's linear threshold (20) so that branch of the gradient is exercised too."""
        generator = torch.Generator().manual_seed(seed)
        sequence = (self.batch, self.dim, self.length)
        delta = torch.rand(sequence, generator=generator, dtype=torch.float64) * 0.5
        if self.delta_softplus:
            delta[:, 0, 0] = 25.0
        return {
            "u": torch.randn(sequence, generator=generator, dtype=torch.float64),
            "delta": delta,
            "A": -0.5 - torch.rand(self.dim, self.dstate, generator=generator, dtype=torch.float64),
            "B": self.coefficient(self.b_layout, generator),
            "C": self.coefficient(self.c_layout, generator),
            "D": torch.randn(self.dim, generator=generator, dtype=torch.float64) if self.with_D else None,
            "z": torch.randn(sequence, generator=generator, dtype=torch.float64) if self.with_z else None,
            "delta_bias": (0.2 * torch.rand(self.dim, generator=generator, dtype=torch.float64)
                           if self.with_delta_bias else None),
        }


def outputs_and_gradients(scan, case: ScanCase, inputs: dict, dtype: torch.dtype, **scan_options):
    """Runs `scan` on `inputs` cast to `dtype`; returns out, last_state and {name: gradient} of a fixed random
    weighting of out (a plain sum would hide errors that cancel)."""
    leaves = {name: None if value is None else value.to(dtype).requires_grad_() for name, value in inputs.items()}
    result = scan(*(leaves[name] for name in INPUT_NAMES), delta_softplus=case.delta_softplus, **scan_options)
    out, last_state = result if isinstance(result, tuple) else (result, None)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    present = [name for name in INPUT_NAMES if leaves[name] is not None]
    gradients = torch.autograd.grad((out * weights).sum(), [leaves[name] for name in present])
    return out.detach(), last_state, dict(zip(present, gradients))


def assert_matches(case: ScanCase, ours, reference, tolerance: float) -> None:
    (out, last_state, gradients), (ref_out, ref_last_state, ref_gradients) = ours, reference
    errors = {"out": relative_error(out, ref_out)}
    if case.return_last_state:
        assert last_state is not None and last_state.shape == (case.batch, case.dim, case.dstate)
        errors["last_state"] = relative_error(last_state, ref_last_state)
    else:
        assert last_state is None
    assert gradients.keys() == ref_gradients.keys()
    for name, gradient in gradients.items():
        assert gradient.shape == ref_gradients[name].shape, name
        errors[f"d{name}"] = relative_error(gradient, ref_gradients[name])
    assert max(errors.values()) <= tolerance, {name: f"{error:.2e}" for name, error in errors.items()}


def run_upstream(case: ScanCase, inputs: dict):
    return outputs_and_gradients(selective_scan_interface().selective_scan_ref, case, inputs, torch.float32,
                                 return_last_state=case.return_last_state)


def run_ours(case: ScanCase, inputs: dict, dtype: torch.dtype):
    return outputs_and_gradients(selective_scan_torch, case, inputs, dtype, return_last_state=case.return_last_state)


def run_float64_reference(case: ScanCase, inputs: dict):
    return outputs_and_gradients(selective_scan_ref, case, inputs, torch.float64,
                                 return_last_state=case.return_last_state)


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
