"""Our `Mamba` mixer is interchangeable with `mamba_ssm.modules.mamba_simple.Mamba`: same parameters and
initialisation, state dicts that load strictly both ways, the same outputs and gradients; and it stays
finite and close to float32 under bfloat16 and float16 autocast.

Upstream's module runs its non-fused path (`use_fast_path=False`) with its module-level `selective_scan_fn`
bound to `selective_scan_ref` and `causal_conv1d_fn` set to None (the CPU build of causal-conv1d has no
kernels), so it runs on a CPU. Errors are max|ours - upstream| / max|upstream| per tensor.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import nnunetv2_msvmamba.ssm.mamba as mamba_module
from helpers.upstream_mamba import mamba_simple, selective_scan_interface
from nnunetv2_msvmamba.ssm import BACKEND_ENV, Mamba
from nnunetv2_msvmamba.ssm.selective_scan_ref import relative_error

PARITY_TOLERANCE = 1e-4  # both compute in float32, in different orders
# on the pure-PyTorch path the projections and the convolution around the scan run in the autocast dtype: bfloat16
# keeps 8 significant bits (measured error 7e-3), float16 11 (measured 8e-4); the scan itself runs in float32, as
# does everything between in_proj and out_proj on the Numba path
AUTOCAST_TOLERANCES = {torch.bfloat16: 2e-2, torch.float16: 5e-3}

CONFIGURATIONS = [
    dict(d_model=16),
    dict(d_model=24, d_state=8, d_conv=3, expand=1, dt_rank=5, bias=True, conv_bias=False),
    dict(d_model=8, dt_init="constant", dt_min=0.01, dt_max=0.2, dt_scale=2.0),
]


def configuration_id(config: dict) -> str:
    return ",".join(f"{name}={value}" for name, value in config.items())


@pytest.fixture
def upstream_mamba(monkeypatch: pytest.MonkeyPatch):
    """Upstream's `Mamba` class, its scan bound to the reference implementation."""
    module = mamba_simple()
    monkeypatch.setattr(module, "selective_scan_fn", selective_scan_interface().selective_scan_ref)
    monkeypatch.setattr(module, "causal_conv1d_fn", None)
    return module.Mamba


def trained_looking_state(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's state with every entry perturbed, so that parity does not rest on D = 1 or A's regular
    initialisation."""
    generator = torch.Generator().manual_seed(seed)
    return {name: value + 0.1 * torch.randn(value.shape, generator=generator)
            for name, value in model.state_dict().items()}


@pytest.mark.parametrize("config", CONFIGURATIONS, ids=configuration_id)
def test_initialisation_matches_upstream(config: dict, upstream_mamba) -> None:
    torch.manual_seed(7)
    reference = upstream_mamba(**config, use_fast_path=False)
    torch.manual_seed(7)
    ours = Mamba(**config)
    ours_state, reference_state = ours.state_dict(), reference.state_dict()
    assert list(ours_state) == list(reference_state)
    for name, value in reference_state.items():
        assert ours_state[name].dtype == value.dtype, name
        assert torch.equal(ours_state[name], value), name
    assert {name for name, p in ours.named_parameters() if getattr(p, "_no_weight_decay", False)} == {"A_log", "D"}
    assert getattr(ours.dt_proj.bias, "_no_reinit", False)
    for attribute in ("d_model", "d_state", "d_conv", "expand", "d_inner", "dt_rank"):
        assert getattr(ours, attribute) == getattr(reference, attribute), attribute


@pytest.fixture(params=["numba", "torch"])
def cpu_path(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each of the mixer's CPU paths: the Numba kernels (channels last, the reverse direction read in place) and the
    pure-PyTorch one (PyTorch's conv1d and the pure-PyTorch scan)."""
    monkeypatch.setenv(BACKEND_ENV, request.param)
    return request.param


@pytest.mark.parametrize("config", CONFIGURATIONS, ids=configuration_id)
def test_state_dict_moves_both_ways_with_the_same_outputs_and_gradients(config: dict, upstream_mamba,
                                                                        cpu_path: str) -> None:
    reference = upstream_mamba(**config, use_fast_path=False)
    reference.load_state_dict(trained_looking_state(reference, seed=3), strict=True)
    ours = Mamba(**config)
    ours.load_state_dict(reference.state_dict(), strict=True)
    round_trip = upstream_mamba(**config, use_fast_path=False)
    round_trip.load_state_dict(ours.state_dict(), strict=True)
    for name, value in reference.state_dict().items():
        assert torch.equal(round_trip.state_dict()[name], value), name

    hidden = torch.randn(2, 37, config["d_model"], generator=torch.Generator().manual_seed(5))
    weights = torch.randn(2, 37, config["d_model"], generator=torch.Generator().manual_seed(6))
    results = {}
    for label, model in (("ours", ours), ("upstream", reference)):
        inputs = hidden.clone().requires_grad_()
        out = model(inputs)
        (out * weights).sum().backward()
        results[label] = {"out": out.detach(), "d_input": inputs.grad,
                          **{f"d_{name}": p.grad for name, p in model.named_parameters()}}
    errors = {name: relative_error(value, results["upstream"][name]) for name, value in results["ours"].items()}
    assert results["ours"]["out"].shape == hidden.shape
    assert max(errors.values()) <= PARITY_TOLERANCE, {name: f"{error:.1e}" for name, error in errors.items()}


@pytest.mark.parametrize("dtype", list(AUTOCAST_TOLERANCES), ids=str)
def test_autocast_is_finite_and_close_to_float32(dtype: torch.dtype, cpu_path: str) -> None:
    torch.manual_seed(0)
    model = Mamba(d_model=32)
    model.load_state_dict(trained_looking_state(model, seed=1))
    hidden = torch.randn(4, 256, 32, generator=torch.Generator().manual_seed(2))
    expected = model(hidden)
    inputs = hidden.clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype):
        out = model(inputs)
    out.float().square().sum().backward()
    assert out.dtype == dtype  # autocast's choice for the final Linear
    assert torch.isfinite(out).all() and torch.isfinite(inputs.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert relative_error(out.float(), expected) <= AUTOCAST_TOLERANCES[dtype]


def causal_depthwise_conv1d_silu(x, weight, bias=None, activation=None):
    """What `causal_conv1d_fn` computes: a depthwise convolution that sees only the past, then SiLU."""
    assert activation == "silu"
    width = weight.shape[-1]
    return F.silu(F.conv1d(F.pad(x, (width - 1, 0)), weight.unsqueeze(1), bias, groups=x.shape[1]))


def test_fused_path_hands_upstream_kernel_the_same_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the CUDA backend chosen, the mixer calls `mamba_inner_fn` exactly as upstream's fast path does:
    checked with upstream's own `mamba_inner_ref` standing in for the kernel (on CPU tensors)."""
    interface = selective_scan_interface()
    monkeypatch.setattr(interface, "causal_conv1d_fn", causal_depthwise_conv1d_silu)
    monkeypatch.setattr(interface, "selective_scan_fn", interface.selective_scan_ref)
    model = Mamba(d_model=16, bias=True)
    model.load_state_dict(trained_looking_state(model, seed=4))
    hidden = torch.randn(2, 19, 16, generator=torch.Generator().manual_seed(8))
    expected = model(hidden)

    monkeypatch.setattr(mamba_module, "resolve_backend", lambda device: "cuda")
    monkeypatch.setattr(mamba_module, "cuda_kernels", lambda: SimpleNamespace(mamba_inner_fn=interface.mamba_inner_ref))
    fused = model(hidden)
    assert relative_error(fused, expected) <= PARITY_TOLERANCE


def two_passes(model: Mamba, hidden: torch.Tensor) -> torch.Tensor:
    """What `forward_bidirectional` stands for: the mixer over each sequence plus over its reverse, turned back."""
    return model(hidden) + model(hidden.flip(1)).flip(1)


@pytest.mark.parametrize("path", ["numba", "torch", "fused"])
@pytest.mark.parametrize("bias", [False, True], ids=["no bias", "bias"])
def test_bidirectional_forward_equals_two_passes_with_their_gradients(path: str, bias: bool,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Sharing in_proj and out_proj between the directions (and, on the Numba path, reading the reverse direction
    in place) changes nothing but the cost: outputs and the gradients of the input and of every parameter equal
    those of two separate passes. The fused path runs with upstream's `mamba_inner_ref` standing in for the
    kernel."""
    monkeypatch.setenv(BACKEND_ENV, "torch" if path == "torch" else "numba")
    if path == "fused":
        interface = selective_scan_interface()
        monkeypatch.setattr(interface, "causal_conv1d_fn", causal_depthwise_conv1d_silu)
        monkeypatch.setattr(interface, "selective_scan_fn", interface.selective_scan_ref)
        monkeypatch.setattr(mamba_module, "resolve_backend", lambda device: "cuda")
        monkeypatch.setattr(mamba_module, "cuda_kernels",
                            lambda: SimpleNamespace(mamba_inner_fn=interface.mamba_inner_ref))
    model = Mamba(d_model=16, bias=bias)
    model.load_state_dict(trained_looking_state(model, seed=5))
    hidden = torch.randn(3, 21, 16, generator=torch.Generator().manual_seed(9))

    results = []
    for run in (two_passes, Mamba.forward_bidirectional):
        model.zero_grad()
        leaf = hidden.clone().requires_grad_()
        out = run(model, leaf)
        out.backward(torch.cos(torch.arange(out.numel(), dtype=out.dtype)).reshape(out.shape))
        results.append({"output": out.detach(), "input grad": leaf.grad,
                        **{name: p.grad.clone() for name, p in model.named_parameters()}})
    expected, shared = results
    for name in expected:
        assert relative_error(shared[name], expected[name]) <= PARITY_TOLERANCE, name
