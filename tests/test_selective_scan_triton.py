"""The Triton selective scan under Triton's interpreter on the CPU (TRITON_INTERPRET=1, set by conftest.py before
triton is imported): output, last state and the gradient of every input against the pure-PyTorch scan and
upstream's `selective_scan_ref`, in float32, at tiny shapes (the interpreter runs each kernel op in numpy).

The kernels checkpoint the state every CHUNK steps; most cases shrink CHUNK to 4 so that a few steps cross
several chunk boundaries (and end inside a chunk), and one runs the default CHUNK.
"""
from __future__ import annotations

import dataclasses
import importlib
import os

import pytest
import torch

from nnunetv2_msvmamba.ssm import BACKEND_ENV, Mamba
from test_selective_scan import FLOAT32_TOLERANCE, ScanCase, assert_matches, run_ours, run_upstream, \
    outputs_and_gradients, INPUT_NAMES

triton_scan = importlib.import_module("nnunetv2_msvmamba.ssm.selective_scan_triton")
SMALL_CHUNK = 4

CASES = [
    ScanCase(batch=2, dim=4, length=1, dstate=3, b_layout="shared", c_layout="shared"),  # L = 1
    ScanCase(batch=2, dim=4, length=11, dstate=3, groups=2),  # grouped B/C, 3 chunks, the last one partial
    ScanCase(batch=1, dim=4, length=6, dstate=2, b_layout="shared", c_layout="grouped", with_D=False, with_z=False,
             with_delta_bias=False, delta_softplus=False),  # nothing optional, softplus off
    ScanCase(batch=1, dim=6, length=5, dstate=3, b_layout="constant", c_layout="grouped", groups=3,
             with_z=False, return_last_state=False),  # constant B; groups of 2 channels, one block each
    ScanCase(batch=1, dim=40, length=3, dstate=5, b_layout="shared", c_layout="constant",
             with_delta_bias=False),  # two channel blocks of 32, the second mostly masked; n not a power of two
]


@pytest.fixture(autouse=True)
def interpreter(monkeypatch: pytest.MonkeyPatch):
    assert os.environ.get("TRITON_INTERPRET") == "1", "run under tests/conftest.py, which turns the interpreter on"
    monkeypatch.setattr(triton_scan, "CHUNK", SMALL_CHUNK)


def run_triton(case: ScanCase, inputs: dict, dtype: torch.dtype = torch.float32):
    return outputs_and_gradients(triton_scan.selective_scan_triton, case, inputs, dtype,
                                 return_last_state=case.return_last_state)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_torch_scan_and_upstream_reference(case: ScanCase) -> None:
    inputs = case.inputs()
    ours = run_triton(case, inputs)
    assert ours[0].dtype == torch.float32
    assert_matches(case, ours, run_ours(case, inputs, torch.float32), FLOAT32_TOLERANCE)
    assert_matches(case, ours, run_upstream(case, inputs), FLOAT32_TOLERANCE)


def test_default_chunk_across_a_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triton_scan, "CHUNK", 32)
    case = ScanCase(batch=1, dim=2, length=37, dstate=2, b_layout="shared", c_layout="shared")
    inputs = case.inputs()
    assert_matches(case, run_triton(case, inputs), run_ours(case, inputs, torch.float32), FLOAT32_TOLERANCE)


def test_half_precision_inputs_come_back_in_their_dtype_computed_in_float32() -> None:
    """bfloat16 inputs under autocast: out and every gradient in bfloat16, equal to the float32 scan of the same
    (rounded) inputs rounded to bfloat16."""
    case = ScanCase(batch=1, dim=4, length=5, dstate=2, b_layout="shared", c_layout="shared", return_last_state=False)
    rounded = {name: None if value is None else value.to(torch.bfloat16).double() for name, value in
               case.inputs().items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _, gradients = run_triton(case, rounded, torch.bfloat16)
    expected_out, _, expected_gradients = run_triton(case, rounded, torch.float32)
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected_out.to(torch.bfloat16))
    for name, gradient in gradients.items():
        assert gradient.dtype == torch.bfloat16, name
        # the output gradient itself is rounded to bfloat16 on the half-precision side
        assert (gradient.float() - expected_gradients[name]).abs().max() <= 2e-2 * expected_gradients[name].abs().max()


def test_no_gradient_needed_keeps_no_checkpoints_and_gives_the_same_output() -> None:
    case = ScanCase(batch=1, dim=4, length=9, dstate=2, b_layout="shared", c_layout="shared")
    inputs = {name: None if value is None else value.float() for name, value in case.inputs().items()}
    launch = triton_scan._Launch(*(inputs[name] for name in INPUT_NAMES), delta_softplus=True)
    out, last_state, checkpoints = launch.forward(save_checkpoints=False)
    assert checkpoints.numel() == 1
    with_grad = triton_scan.selective_scan_triton(*(inputs[name] for name in INPUT_NAMES), delta_softplus=True,
                                                  return_last_state=True)
    assert torch.equal(out, with_grad[0]) and torch.equal(last_state, with_grad[1])


def test_mamba_mixer_on_the_triton_backend_matches_the_torch_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    mixer = Mamba(d_model=8, d_state=4)
    x = torch.randn(2, 6, 8)
    results = {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv(BACKEND_ENV, backend)
        leaf = x.clone().requires_grad_()
        out = mixer.forward_bidirectional(leaf)
        results[backend] = (out, *torch.autograd.grad(out.square().sum(), [leaf, *mixer.parameters()]))
    for ours, reference in zip(results["triton"], results["torch"]):
        assert (ours - reference).abs().max() <= FLOAT32_TOLERANCE * reference.abs().max()


def test_complex_A_is_refused() -> None:
    u = torch.zeros(1, 2, 3)
    with pytest.raises(NotImplementedError, match="real A only"):
        triton_scan.selective_scan_triton(u, u, torch.zeros(2, 2, dtype=torch.complex64), torch.zeros(1, 2, 3),
                                          torch.zeros(1, 2, 3))


def test_malformed_B_is_a_clear_error() -> None:
    u = torch.zeros(1, 4, 5)
    with pytest.raises(ValueError, match="3 groups, which does not divide dim=4"):
        triton_scan.selective_scan_triton(u, u, -torch.ones(4, 3), torch.zeros(1, 3, 3, 5), torch.zeros(1, 3, 5))
