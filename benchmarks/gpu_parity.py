"""Parity of the selective-scan backends on a device, for benchmarks/gpu_check.sh.

1. Every backend that can run there (`torch`, `triton`, and `cuda` = mamba_ssm's fused kernel where it imports)
   against the package's readable float64 reference, `nnunetv2_msvmamba.ssm.selective_scan_ref`, over shapes that
   cover L = 1, L not a multiple of the Triton scan's chunk, grouped and constant B/C, with and without D, z,
   delta_bias and softplus: the output, the last state and the gradient of every input.
2. A small MSV-Mamba network (LMS on every decoder stage) under fp16 autocast, as nnU-Net trains: its outputs
   and gradients with each backend against the pure-PyTorch backend.

Prints one line per check with its largest relative error (max|ours - ref| / max|ref|) and PASS/FAIL; exits with
status 1 when a check fails. On a CPU (`--device cpu`, a dry run of the script) the Triton kernels run under
Triton's interpreter at tiny shapes.

    python benchmarks/gpu_parity.py                    # CUDA
    TRITON_INTERPRET=1 python benchmarks/gpu_parity.py --device cpu --quick
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(1, str(REPOSITORY / "tests"))  # helpers.network_fixtures: nnU-Net plans of a small 2D network

import torch  # noqa: E402

from nnunetv2_msvmamba.ssm import backend  # noqa: E402
from nnunetv2_msvmamba.ssm.selective_scan_ref import relative_error, selective_scan_ref  # noqa: E402

SCAN_TOLERANCE = 1e-4  # float32 scans against the float64 reference
NETWORK_TOLERANCE = 1e-2  # whole network under fp16 autocast, one backend against another
INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
# (batch, dim, L, n, B layout, C layout, groups, with D / z / delta_bias, softplus)
SHAPES = [
    (2, 64, 300, 16, "shared", "shared", 1, True, True),
    (3, 40, 1, 16, "shared", "shared", 1, True, True),
    (2, 48, 77, 8, "grouped", "grouped", 3, False, False),
    (1, 32, 45, 4, "constant", "grouped", 2, True, False),
]
QUICK_SHAPES = [
    (1, 8, 9, 4, "shared", "shared", 1, True, True),
    (1, 6, 1, 2, "shared", "shared", 1, True, True),
    (1, 6, 5, 2, "grouped", "constant", 3, False, False),
]


def scan_inputs(shape: tuple, device: str) -> tuple[dict, bool]:
    batch, dim, length, dstate, b_layout, c_layout, groups, optional, softplus = shape
    generator = torch.Generator().manual_seed(0)

    def coefficient(layout: str) -> torch.Tensor:
        size = {"constant": (dim, dstate), "shared": (batch, dstate, length),
                "grouped": (batch, groups, dstate, length)}[layout]
        return torch.randn(size, generator=generator)
    sequence = (batch, dim, length)
    inputs = dict(u=torch.randn(sequence, generator=generator), delta=0.5 * torch.rand(sequence, generator=generator),
                  A=-0.5 - torch.rand(dim, dstate, generator=generator), B=coefficient(b_layout),
                  C=coefficient(c_layout), D=torch.randn(dim, generator=generator) if optional else None,
                  z=torch.randn(sequence, generator=generator) if optional else None,
                  delta_bias=0.2 * torch.rand(dim, generator=generator) if optional else None)
    return {name: None if value is None else value.to(device) for name, value in inputs.items()}, softplus


def outputs_and_gradients(scan, inputs: dict, softplus: bool, dtype: torch.dtype) -> list[torch.Tensor]:
    leaves = {name: None if value is None else value.to(dtype).requires_grad_() for name, value in inputs.items()}
    out, last_state = scan(*(leaves[name] for name in INPUT_NAMES), delta_softplus=softplus, return_last_state=True)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device, out.dtype)
    present = [leaf for leaf in leaves.values() if leaf is not None]
    return [out, last_state, *torch.autograd.grad((out * weights).sum(), present)]


def scan_backends(device: str) -> dict:
    """The backends that can run on `device`, by their MSVMAMBA_SSM_BACKEND name."""
    from nnunetv2_msvmamba.ssm import selective_scan_torch
    found = {"torch": selective_scan_torch}
    if device == "cuda" and backend.cuda_kernels().available:
        found["cuda"] = backend.cuda_kernels().selective_scan_fn
    if (device == "cuda" and backend.triton_support().available) or (device == "cpu" and
                                                                       backend.triton_interpreter_on()):
        from nnunetv2_msvmamba.ssm.selective_scan_triton import selective_scan_triton
        found["triton"] = selective_scan_triton
    return found


def check(title: str, error: float, tolerance: float) -> bool:
    passes = error <= tolerance
    print(f"  {title:<64} {error:.1e} {'PASS' if passes else 'FAIL'}", flush=True)
    return passes


def check_scans(device: str, shapes: list) -> bool:
    print(f"scans against selective_scan_ref (float64), output, last state and every gradient "
          f"(target <= {SCAN_TOLERANCE:g}):")
    backends = scan_backends(device)
    missing = {"triton", "cuda"} - set(backends)
    if missing:
        print(f"  not on this machine: {', '.join(sorted(missing))}")
    all_pass = True
    for shape in shapes:
        inputs, softplus = scan_inputs(shape, device)
        reference = outputs_and_gradients(selective_scan_ref, inputs, softplus, torch.float64)
        for name, scan in backends.items():
            ours = outputs_and_gradients(scan, inputs, softplus, torch.float32)
            error = max(relative_error(a, b) for a, b in zip(ours, reference))
            batch, dim, length, dstate, b_layout, c_layout, groups, optional, _ = shape
            title = (f"{name:<7}{batch}x{dim}x{length} n{dstate} B:{b_layout} C:{c_layout}"
                     f"{f' g{groups}' if 'grouped' in (b_layout, c_layout) else ''}"
                     f"{' D+z+bias' if optional else ''}{' softplus' if softplus else ''}")
            all_pass &= check(title, error, SCAN_TOLERANCE)
    return all_pass


def network_outputs_and_gradients(network: torch.nn.Module, x: torch.Tensor, device: str) -> list[torch.Tensor]:
    network.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.float16 if device == "cuda" else torch.bfloat16):
        outputs = network(x)
    loss = sum(output.float().square().mean() for output in outputs)
    loss.backward()
    return [output.detach().float() for output in outputs] + [p.grad.float() for p in network.parameters()
                                                                  if p.grad is not None]


def check_network(device: str, quick: bool) -> bool:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from helpers.network_fixtures import RESENC_2D, plans
    from nnunetv2_msvmamba.training.network_from_plans import msvmamba_from_plans

    size = 32 if quick else 128
    torch.manual_seed(0)
    configuration = PlansManager(plans(RESENC_2D, "2d", (size, size))).get_configuration("2d")
    network = msvmamba_from_plans(configuration, 1, 3, True, lms_max_positions=None).to(device)
    x = torch.randn(2, 1, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    names = [name for name in scan_backends(device) if name != "torch"]
    print(f"MSV-Mamba network ({size}x{size}, LMS on every stage, autocast), outputs and gradients against the torch "
          f"backend (target <= {NETWORK_TOLERANCE:g}):")
    if not names:
        print("  no other backend on this machine")
        return True
    results = {}
    previous = os.environ.get(backend.BACKEND_ENV)
    try:
        for name in ["torch", *names]:
            os.environ[backend.BACKEND_ENV] = name
            results[name] = network_outputs_and_gradients(network, x, device)
    finally:
        if previous is None:
            os.environ.pop(backend.BACKEND_ENV, None)
        else:
            os.environ[backend.BACKEND_ENV] = previous
    all_pass = True
    for name in names:
        # each tensor at its own scale, one that should be zero (a bias before a normalisation) at a hundredth of
        # the largest one's
        largest = max(t.abs().max().item() for t in results["torch"])
        error = max((a - b).abs().max().item() / max(b.abs().max().item(), 1e-2 * largest)
                    for a, b in zip(results[name], results["torch"]))
        all_pass &= check(f"{name} vs torch", error, NETWORK_TOLERANCE)
    return all_pass


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Parity of the selective-scan backends (and of an MSV-Mamba network "
                                                 "on each) against the float64 reference, on CUDA or, as a dry run "
                                                 "under TRITON_INTERPRET=1, on the CPU.")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (for the CPU dry run)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: PyTorch sees no CUDA device", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}")
    scans_pass = check_scans(args.device, QUICK_SHAPES if args.quick else SHAPES)
    network_pass = check_network(args.device, args.quick)
    return 0 if scans_pass and network_pass else 1


if __name__ == "__main__":
    sys.exit(main())
