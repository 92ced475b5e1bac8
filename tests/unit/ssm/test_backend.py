"""Backend choice: MSVMAMBA_SSM_BACKEND=auto|torch|numba|triton|cuda (auto on CUDA tensors: mamba_ssm's kernels,
else Triton, else PyTorch; on CPU tensors: the Numba kernels, else PyTorch), clear errors where the choice cannot be
honoured, one log line per choice, the dispatcher's handling of the CUDA kernel's dtypes, and the pure-PyTorch scan's
batch slicing per device. A CUDA device is mocked: these tests run on the CPU."""
from __future__ import annotations

import importlib
import sys
from types import SimpleNamespace

import pytest
import torch

import nnunetv2_msvmamba.ssm.backend as backend
from nnunetv2_msvmamba.ssm import BACKEND_ENV, Mamba, resolve_backend, selective_scan, selective_scan_torch

# the modules (the package exports a function of the same name as the first)
torch_scan_module = importlib.import_module("nnunetv2_msvmamba.ssm.selective_scan_torch")
triton_scan_module = importlib.import_module("nnunetv2_msvmamba.ssm.selective_scan_triton")

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
LOG_PREFIX = "[nnunetv2_msvmamba] selective scan backend:"


@pytest.fixture(autouse=True)
def fresh_backend_state(monkeypatch: pytest.MonkeyPatch):
    """No backend forced, nothing announced yet, and kernel detection redone (it is cached per process)."""
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    monkeypatch.setattr(backend, "_announced", set())
    # a test may replace the detectors; the cached originals are cleared either way
    detectors = (backend.cuda_kernels, backend.triton_support, backend.numba_support)
    for detect in detectors:
        detect.cache_clear()
    yield
    for detect in detectors:
        detect.cache_clear()


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


@pytest.fixture
def no_kernels_but_triton(monkeypatch: pytest.MonkeyPatch) -> list:
    """mamba_ssm's kernels missing, Triton able to run; the Triton scan stand-in records its calls."""
    calls = []
    monkeypatch.setattr(backend, "cuda_kernels", lambda: SimpleNamespace(available=False, reason="no mamba_ssm"))
    monkeypatch.setattr(backend, "triton_support", lambda: SimpleNamespace(available=True, reason=""))

    def recording_triton_scan(*args, **kwargs):
        calls.append(args)
        return selective_scan_torch(*args, **kwargs)
    monkeypatch.setattr(triton_scan_module, "selective_scan_triton", recording_triton_scan)
    return calls


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


@pytest.fixture
def no_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` fail


@pytest.mark.parametrize("value", [None, "", "auto", " AUTO "])
def test_auto_on_cpu_picks_numba_and_says_so_once(value, monkeypatch, capsys) -> None:
    if value is not None:
        monkeypatch.setenv(BACKEND_ENV, value)
    assert resolve_backend(CPU) == "numba"
    assert resolve_backend(CPU) == "numba"
    selective_scan(*scan_inputs())
    assert announcements(capsys.readouterr().err) == [f"{LOG_PREFIX} numba (Numba kernels, CPU tensors)"]


def test_auto_on_cpu_without_numba_falls_back_to_torch_and_gives_the_reason(no_numba, capsys) -> None:
    assert resolve_backend(CPU) == "torch"
    inputs = scan_inputs()
    assert torch.equal(selective_scan(*inputs, delta_softplus=True), selective_scan_torch(*inputs, delta_softplus=True))
    (line,) = announcements(capsys.readouterr().err)
    assert line.startswith(f"{LOG_PREFIX} torch (pure PyTorch, CPU tensors: numba does not import (")
    assert line.endswith("`pip install numba` for the compiled CPU kernels)")


def test_auto_on_other_devices_picks_torch() -> None:
    assert resolve_backend(torch.device("meta")) == "torch"


def test_numba_backend_calls_the_numba_scan_with_every_argument(monkeypatch) -> None:
    calls = []

    def recording_numba_scan(*args, **kwargs):
        calls.append(args)
        return selective_scan_torch(*args, **kwargs)
    monkeypatch.setattr(backend, "selective_scan_numba", recording_numba_scan)
    inputs = scan_inputs()
    out = selective_scan(*inputs, delta_softplus=True, return_last_state=True)
    (call,) = calls
    assert all(a is b for a, b in zip(call[:8], inputs)) and call[8:] == (True, True)
    assert torch.equal(out[0], selective_scan_torch(*inputs, delta_softplus=True))


def test_forced_numba_is_honoured_and_said_once(monkeypatch, capsys) -> None:
    monkeypatch.setenv(BACKEND_ENV, "numba")
    assert resolve_backend(CPU) == "numba"
    assert resolve_backend(CPU) == "numba"
    assert announcements(capsys.readouterr().err) == [f"{LOG_PREFIX} numba (forced by {BACKEND_ENV}=numba)"]


def test_forced_numba_without_numba_is_a_clear_error(no_numba, monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "numba")
    with pytest.raises(RuntimeError, match=f"{BACKEND_ENV}=numba, but the Numba backend cannot run: numba does not "
                                           f"import"):
        selective_scan(*scan_inputs())


def test_forced_numba_with_cuda_tensors_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "numba")
    with pytest.raises(RuntimeError, match=f"tensors are on cuda; the Numba kernels need CPU tensors .*unset "
                                           f"{BACKEND_ENV}"):
        resolve_backend(CUDA)


def test_auto_on_cuda_tensors_without_kernels_falls_back_and_gives_the_reason(no_cuda_device, capsys) -> None:
    assert resolve_backend(CUDA) == "torch"
    (line,) = announcements(capsys.readouterr().err)
    assert "PyTorch sees no CUDA device" in line


def test_auto_on_cuda_tensors_with_kernels_picks_cuda(fake_kernels, capsys) -> None:
    assert resolve_backend(CUDA) == "cuda"
    assert resolve_backend(CPU) == "numba"  # CPU tensors never go to the kernels
    assert announcements(capsys.readouterr().err) == [
        f"{LOG_PREFIX} cuda (mamba_ssm fused kernels, CUDA tensors)",
        f"{LOG_PREFIX} numba (Numba kernels, CPU tensors)"]


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
    install_line = r'the cuda extra: `pip install "\.\[cuda\]"` in a clone'
    with pytest.raises(RuntimeError, match=r"kernels do not import .*" + install_line):
        resolve_backend(CUDA)


def test_forced_cuda_with_cpu_tensors_is_a_clear_error(fake_kernels, monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "cuda")
    with pytest.raises(RuntimeError, match=f"tensors are on cpu; .*unset {BACKEND_ENV}"):
        resolve_backend(CPU)


def test_unknown_backend_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "cudnn")
    with pytest.raises(ValueError, match=f"{BACKEND_ENV}='cudnn' is not one of auto, torch, numba, triton, cuda"):
        selective_scan(*scan_inputs())


def test_auto_on_cuda_tensors_without_kernels_picks_triton(no_kernels_but_triton, capsys) -> None:
    assert resolve_backend(CUDA) == "triton"
    assert resolve_backend(CPU) == "numba"  # CPU tensors never go to Triton unless forced
    assert announcements(capsys.readouterr().err) == [
        f"{LOG_PREFIX} triton (Triton kernels, CUDA tensors; mamba_ssm's fused kernels unavailable: no mamba_ssm)",
        f"{LOG_PREFIX} numba (Numba kernels, CPU tensors)"]


def test_auto_prefers_mamba_ssm_kernels_over_triton(fake_kernels, monkeypatch) -> None:
    monkeypatch.setattr(backend, "triton_support", lambda: SimpleNamespace(available=True, reason=""))
    assert resolve_backend(CUDA) == "cuda"


def test_auto_on_cuda_tensors_without_kernels_or_triton_gives_both_reasons(monkeypatch, capsys) -> None:
    monkeypatch.setattr(backend, "cuda_kernels", lambda: SimpleNamespace(available=False, reason="no mamba_ssm"))
    monkeypatch.setattr(backend, "triton_support", lambda: SimpleNamespace(available=False, reason="no triton"))
    assert resolve_backend(CUDA) == "torch"
    assert announcements(capsys.readouterr().err) == [f"{LOG_PREFIX} torch (pure PyTorch: no mamba_ssm; Triton: "
                                                      f"no triton)"]


def test_triton_needs_a_recent_enough_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *device: (7, 0))
    support = backend.triton_support()
    assert not support.available and "compute capability 7.0 is below the 7.5 Triton needs" in support.reason
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *device: (9, 0))
    backend.triton_support.cache_clear()
    assert backend.triton_support().available


def test_triton_that_does_not_import_is_reported(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` fail
    support = backend.triton_support()
    assert not support.available and "triton does not import" in support.reason


def test_forced_triton_where_it_cannot_run_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "triton")
    monkeypatch.setattr(backend, "triton_support", lambda: SimpleNamespace(available=False, reason="no triton"))
    with pytest.raises(RuntimeError, match=f"{BACKEND_ENV}=triton, but the Triton backend cannot run: no triton"):
        resolve_backend(CUDA)


def test_forced_triton_on_cpu_tensors_needs_the_interpreter(monkeypatch, capsys) -> None:
    monkeypatch.setenv(BACKEND_ENV, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match=f"tensors are on cpu; .*TRITON_INTERPRET=1 .*unset {BACKEND_ENV}"):
        resolve_backend(CPU)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend(CPU) == "triton"
    assert announcements(capsys.readouterr().err) == [
        f"{LOG_PREFIX} triton (forced by {BACKEND_ENV}=triton, Triton's interpreter on CPU tensors)"]


def test_triton_backend_calls_the_triton_scan_with_every_argument(no_kernels_but_triton, monkeypatch) -> None:
    monkeypatch.setattr(backend, "resolve_backend", lambda device: "triton")
    inputs = scan_inputs()
    out = selective_scan(*inputs, delta_softplus=True)
    (call,) = no_kernels_but_triton
    assert all(a is b for a, b in zip(call[:8], inputs)) and call[8:] == (True, False)
    assert torch.equal(out, selective_scan_torch(*inputs, delta_softplus=True))


def test_torch_scan_slices_the_batch_for_the_cache_on_cpu_only() -> None:
    """On a CPU the batch is cut into cache-sized slices; on a GPU (one launch per op) it is not, until memory
    would be at stake."""
    row_elements = 16 * 64  # n x channels of one batch row
    cpu_slices = torch_scan_module._row_bounds(4096, row_elements, CPU)
    assert len(cpu_slices) > 1
    assert torch_scan_module._row_bounds(4096, row_elements, CUDA) == [(0, 4096)]
    huge_batch = 8 * torch_scan_module.GPU_CHUNK_BUFFER_ELEMENTS // (torch_scan_module.CHUNK * row_elements)
    assert len(torch_scan_module._row_bounds(huge_batch, row_elements, CUDA)) == 8


def test_torch_backend_is_the_pure_pytorch_scan(monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "torch")
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
