"""What the tests of every selective-scan backend share: a case (sizes, options, B/C layouts) with its random inputs,
the outputs and gradients of one run, the references to run, and the comparison by relative error."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from helpers.upstream_mamba import selective_scan_interface
from nnunetv2_msvmamba.ssm import selective_scan_torch
from nnunetv2_msvmamba.ssm.selective_scan_ref import relative_error, selective_scan_ref

FLOAT32_TOLERANCE = 1e-4  # against upstream's reference, which computes in float32
FLOAT64_TOLERANCE = 1e-8  # against our float64 reference, our scan running on float64 inputs
INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@dataclasses.dataclass(frozen=True)
class ScanCase:
    """One selective-scan call: sizes, which optional inputs it has, the layouts of B and C."""
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
