"""The Triton selective scan under Triton's interpreter on the CPU (TRITON_INTERPRET=1, set by conftest.py before
triton is imported): output, last state and the gradient of every input against the pure-PyTorch scan and
upstream's `selective_scan_ref`, in float32, at tiny shapes (the interpreter runs each kernel op in numpy).

The kernels checkpoint the state every CHUNK steps; most cases shrink CHUNK to 4 so that a few steps cross
several chunk boundaries (and end inside a chunk), and one runs the default CHUNK. The interpreter does not check
what Triton's compiler would reject, so one test compiles the kernels for real GPU targets (no GPU needed).
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import torch

from helpers.scan_cases import (FLOAT32_TOLERANCE, INPUT_NAMES, ScanCase, assert_matches, outputs_and_gradients,
                                run_ours, run_upstream)
from nnunetv2_msvmamba.ssm import BACKEND_ENV, Mamba

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


def test_a_batch_beyond_32_bit_offsets_is_scanned_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels index with 32-bit offsets; a batch whose tensors would exceed them is cut into slices (here the
    limit is lowered so that each row is its own launch), with the same outputs and gradients."""
    case = ScanCase(batch=3, dim=4, length=6, dstate=2, b_layout="grouped", c_layout="constant", groups=2)
    inputs = case.inputs()
    whole = run_triton(case, inputs)
    shapes = (inputs["u"], inputs["A"], inputs["B"], inputs["C"])
    assert triton_scan._rows_per_launch(*shapes) >= 3
    monkeypatch.setattr(triton_scan, "INT32_OFFSETS", triton_scan._elements_per_row(*shapes))
    assert triton_scan._rows_per_launch(*shapes) == 1
    assert_matches(case, run_triton(case, inputs), whole, 1e-6)


# Compiles the kernels for real NVIDIA targets (Triton's own compiler down to a cubin, as on a GPU) in a process
# without the interpreter: no GPU is needed to find what the interpreter lets pass but the compiler rejects.
COMPILE_FOR_GPUS = r"""
import itertools
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import nnunetv2_msvmamba.ssm.selective_scan_triton as scan

def compile_for(kernel, flags, architecture):
    names = kernel.arg_names
    signature = {name: "constexpr" if name in flags else "*fp32" if name.endswith("_ptr") else "i32"
                 for name in names}
    constexprs = {(names.index(name),): value for name, value in flags.items()}
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", architecture, 32))
    assert compiled.asm["cubin"], (kernel, flags, architecture)

for architecture, (d_z_bias, constant) in itertools.product((75, 90), ((True, False), (False, True))):
    flags = dict(HAS_D=d_z_bias, HAS_Z=d_z_bias, HAS_BIAS=d_z_bias, DELTA_SOFTPLUS=d_z_bias, B_CONSTANT=constant,
                 C_CONSTANT=False, CHUNK_STEPS=scan.CHUNK, BLOCK_D=scan.MAX_BLOCK_D, BLOCK_N=16)
    compile_for(scan._selective_scan_forward_kernel, dict(flags, SAVE_CHECKPOINTS=True), architecture)
    compile_for(scan._selective_scan_backward_kernel, flags, architecture)
print("compiled")
"""


def test_kernels_compile_for_nvidia_gpus(tmp_path) -> None:
    environment = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    environment["TRITON_CACHE_DIR"] = str(tmp_path)  # a fresh cache: really compile
    completed = subprocess.run([sys.executable, "-c", COMPILE_FOR_GPUS], capture_output=True, text=True,
                               env=environment, timeout=1800)
    assert completed.returncode == 0 and completed.stdout.strip() == "compiled", completed.stderr[-3000:]
