"""Backend choice: MSVMAMBA_SSM_BACKEND=auto|torch|cuda, clear errors where the choice cannot be honoured, one
log line per choice, and the dispatcher's handling of the CUDA kernel's dtypes."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

import nnunetv2_msvmamba.ssm.backend as backend
from nnunetv2_msvmamba.ssm import BACKEND_ENV, Mamba, resolve_backend, selective_scan, selective_scan_torch

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
LOG_PREFIX = "[nnunetv2_msvmamba] selective scan backend:"


@pytest.fixture(autouse=True)
def fresh_backend_state(monkeypatch: pytest.MonkeyPatch):
    """No backend forced, nothing announced yet, and kernel detection redone (it is cached per process)."""
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    monkeypatch.setattr(backend, "_announced", set())
    detect_kernels = backend.cuda_kernels  # a test may replace it; the cached original is cleared either way
    detect_kernels.cache_clear()
    yield
    detect_kernels.cache_clear()


@pytest.fixture
def no_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_kernels(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Kernels that report themselves available; the scan stand-in records the dtypes it was given."""
    calls = []

    def recording_scan(*args, **kwargs):
        calls.append([None if a is None else a.dtype for a in args[:8]])
        return selective_scan_torch(*args, **kwargs)

    kernels = SimpleNamespace(available=True, reason="", selective_scan_fn=recording_scan, mamba_inner_fn=None,
                              calls=calls)
    monkeypatch.setattr(backend, "cuda_kernels", lambda: kernels)
    return kernels


def scan_inputs(dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    batch, dim, dstate, length = 2, 4, 3, 9
    return [torch.randn(batch, dim, length, generator=generator).to(dtype),  # u
            torch.rand(batch, dim, length, generator=generator).to(dtype),  # delta
            -torch.rand(dim, dstate, generator=generator) - 0.5,  # A, float32 as upstream's mixer passes it
            torch.randn(batch, dstate, length, generator=generator).to(dtype),  # B
            torch.randn(batch, dstate, length, generator=generator).to(dtype),  # C
            torch.ones(dim),  # D
            torch.randn(batch, dim, length, generator=generator).to(dtype),  # z
            torch.zeros(dim)]  # delta_bias


def announcements(captured: str) -> list[str]:
    return [line for line in captured.splitlines() if line.startswith(LOG_PREFIX)]


@pytest.mark.parametrize("value", [None, "", "auto", " AUTO "])
def test_auto_on_cpu_picks_torch_and_says_so_once(value, monkeypatch, capsys) -> None:
    if value is not None:
        monkeypatch.setenv(BACKEND_ENV, value)
    assert resolve_backend(CPU) == "torch"
    assert resolve_backend(CPU) == "torch"
    selective_scan(*scan_inputs())
    assert announcements(capsys.readouterr().err) == [f"{LOG_PREFIX} torch (pure PyTorch: tensors not on CUDA)"]


def test_auto_on_cuda_tensors_without_kernels_falls_back_and_gives_the_reason(no_cuda_device, capsys) -> None:
    assert resolve_backend(CUDA) == "torch"
    (line,) = announcements(capsys.readouterr().err)
    assert "PyTorch sees no CUDA device" in line


def test_auto_on_cuda_tensors_with_kernels_picks_cuda(fake_kernels, capsys) -> None:
    assert resolve_backend(CUDA) == "cuda"
    assert resolve_backend(CPU) == "torch"  # CPU tensors never go to the kernels
    assert announcements(capsys.readouterr().err) == [
        f"{LOG_PREFIX} cuda (mamba_ssm fused kernels, CUDA tensors)",
        f"{LOG_PREFIX} torch (pure PyTorch: tensors not on CUDA)"]


def test_forced_torch_is_honoured_even_where_kernels_exist(fake_kernels, monkeypatch, capsys) -> None:
    monkeypatch.setenv(BACKEND_ENV, "torch")
    assert resolve_backend(CUDA) == "torch"
    assert announcements(capsys.readouterr().err) == [f"{LOG_PREFIX} torch (forced by {BACKEND_ENV}=torch)"]


def test_forced_cuda_without_cuda_is_a_clear_error(no_cuda_device, monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "cuda")
    expected = rf"{BACKEND_ENV}=cuda, but the CUDA backend cannot run: PyTorch sees no CUDA device"
    with pytest.raises(RuntimeError, match=expected):
        selective_scan(*scan_inputs())
    with pytest.raises(RuntimeError, match=expected):
        Mamba(d_model=8)(torch.zeros(1, 5, 8))


def test_forced_cuda_without_kernels_names_the_install_command(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "selective_scan_cuda", None)  # makes `import selective_scan_cuda` fail
    monkeypatch.setenv(BACKEND_ENV, "cuda")
    with pytest.raises(RuntimeError, match=r"kernels do not import .*pip install nnunetv2-msvmamba\[cuda\]"):
        resolve_backend(CUDA)


def test_forced_cuda_with_cpu_tensors_is_a_clear_error(fake_kernels, monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "cuda")
    with pytest.raises(RuntimeError, match=f"tensors are on cpu; .*unset {BACKEND_ENV}"):
        resolve_backend(CPU)


def test_unknown_backend_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "triton")
    with pytest.raises(ValueError, match=f"{BACKEND_ENV}='triton' is not one of auto, torch, cuda"):
        selective_scan(*scan_inputs())


def test_torch_backend_is_the_pure_pytorch_scan() -> None:
    inputs = scan_inputs()
    out, last_state = selective_scan(*inputs, delta_softplus=True, return_last_state=True)
    expected_out, expected_last_state = selective_scan_torch(*inputs, delta_softplus=True, return_last_state=True)
    assert torch.equal(out, expected_out) and torch.equal(last_state, expected_last_state)


def test_cuda_backend_gets_float32_and_returns_the_input_dtype(fake_kernels, monkeypatch) -> None:
    """The fused kernel is fed float32 (half-precision recurrences produce NaNs) and its output cast back."""
    monkeypatch.setattr(backend, "resolve_backend", lambda device: "cuda")
    inputs = scan_inputs(torch.bfloat16)
    out, last_state = selective_scan(*inputs, delta_softplus=True, return_last_state=True)
    assert fake_kernels.calls == [[torch.float32] * 8]
    expected_out, expected_last_state = selective_scan_torch(*[t.float() for t in inputs], delta_softplus=True,
                                                             return_last_state=True)
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected_out.to(torch.bfloat16))
    assert last_state.dtype == torch.float32 and torch.equal(last_state, expected_last_state)
