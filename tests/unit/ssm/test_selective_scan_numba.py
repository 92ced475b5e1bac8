"""The Numba selective scan (the CPU backend): output, last state and the gradient of every input against the package's
float64 reference (`selective_scan_ref`, the scan itself running on float64 inputs) and against upstream's
`selective_scan_ref` (float32), over the options, the B/C layouts and odd shapes; under autocast; in half precision;
with 1 and 2 threads; through the custom op under torch.compile; and its on-disk compile cache.

The kernels are compiled once per dtype (or loaded from Numba's on-disk cache) by a module fixture that every test
shares. They checkpoint the state every CHUNK steps; most cases shrink CHUNK (a runtime argument of the kernels,
so nothing recompiles) so that a few dozen steps cross several chunk boundaries and end inside a chunk.
"""
from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
import os
import subprocess
import sys
from typing import Optional

import numpy as np
import pytest
import torch

from helpers.scan_cases import (FLOAT32_TOLERANCE, FLOAT64_TOLERANCE, INPUT_NAMES, ScanCase, assert_matches,
                                outputs_and_gradients, run_float64_reference, run_upstream)
from nnunetv2_msvmamba.ssm import BACKEND_ENV, Mamba, selective_scan_numba, selective_scan_ref

numba_scan = importlib.import_module("nnunetv2_msvmamba.ssm.selective_scan_numba")
SMALL_CHUNK = 8
DEFAULT_CHUNK = numba_scan.CHUNK


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels():
    """Both dtypes' kernels, compiled or loaded from the cache once for the whole module."""
    return {dtype: numba_scan._kernels(dtype) for dtype in (torch.float32, torch.float64)}


@pytest.fixture(autouse=True)
def small_chunk(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(numba_scan, "CHUNK", SMALL_CHUNK)


def run_numba(case: ScanCase, inputs: dict, dtype: torch.dtype = torch.float32):
    return outputs_and_gradients(selective_scan_numba, case, inputs, dtype, return_last_state=case.return_last_state)


# every combination of the options, at a length that ends inside a chunk and a batch of 1 for half of them
OPTION_CASES = [ScanCase(batch=1 + D, dim=5, length=19, with_D=D, with_z=z, with_delta_bias=bias,
                         delta_softplus=softplus, b_layout="shared", c_layout="grouped", groups=5)
                for D, z, bias, softplus in itertools.product((False, True), repeat=4)]
LAYOUT_CASES = [ScanCase(batch=batch, dim=6, length=length, dstate=3, b_layout=b_layout, c_layout=c_layout, groups=3,
                         return_last_state=length > 1)
                for (b_layout, c_layout), length, batch in itertools.product(
                    (("constant", "constant"), ("shared", "shared"), ("grouped", "grouped"), ("shared", "grouped"),
                     ("constant", "shared"), ("grouped", "constant")),
                    (1, 8, 17), (1, 3))]
# Mamba's d_state 16, channels that are no multiple of a vector, and a length of several default chunks
ODD_CASES = [ScanCase(batch=1, dim=7, length=45, dstate=16, b_layout="shared", c_layout="shared"),
             ScanCase(batch=2, dim=3, length=33, dstate=5, b_layout="grouped", c_layout="grouped", groups=3)]
# channels in whole blocks of LANES (no padding): two blocks, in one group and in two groups of one block each
WHOLE_BLOCK_CASES = [ScanCase(batch=2, dim=2 * numba_scan.LANES, length=21, dstate=16, b_layout="shared",
                              c_layout="grouped", groups=2),
                     ScanCase(batch=1, dim=2 * numba_scan.LANES, length=19, dstate=4, b_layout="shared",
                              c_layout="shared", return_last_state=True)]
GRID = OPTION_CASES + LAYOUT_CASES + ODD_CASES + WHOLE_BLOCK_CASES


@pytest.mark.parametrize("case", GRID, ids=str)
def test_matches_float64_reference_and_upstream(case: ScanCase) -> None:
    inputs = case.inputs()
    ours64 = run_numba(case, inputs, torch.float64)
    assert ours64[0].dtype == torch.float64 and all(g.dtype == torch.float64 for g in ours64[2].values())
    assert_matches(case, ours64, run_float64_reference(case, inputs), FLOAT64_TOLERANCE)
    ours32 = run_numba(case, inputs)
    assert ours32[0].dtype == torch.float32 and all(g.dtype == torch.float32 for g in ours32[2].values())
    assert_matches(case, ours32, run_upstream(case, inputs), FLOAT32_TOLERANCE)


def reversed_by_flipping(scan):
    """`scan` run on every time-dependent input flipped along L, its output flipped back: what a reverse scan is."""
    def in_time(t):
        return t if t is None or t.dim() == 2 else t.flip(-1)  # a constant (dim, n) B or C has no time axis

    def run(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False):
        result = scan(in_time(u), in_time(delta), A, in_time(B), in_time(C), D, in_time(z), delta_bias,
                      delta_softplus, return_last_state)
        return (result[0].flip(-1), result[1]) if return_last_state else result.flip(-1)
    return run


REVERSE_CASES = [ScanCase(batch=2, dim=5, length=19, dstate=4, b_layout="shared", c_layout="grouped", groups=5),
                 ScanCase(batch=1, dim=6, length=17, dstate=3, b_layout="constant", c_layout="shared",
                          with_z=False, delta_softplus=False),
                 ScanCase(batch=3, dim=4, length=8, dstate=16, b_layout="grouped", c_layout="constant", groups=2,
                          with_D=False, with_delta_bias=False, return_last_state=False)]


@pytest.mark.parametrize("case", REVERSE_CASES, ids=str)
def test_reverse_scan_is_the_scan_of_the_flipped_sequence_flipped_back(case: ScanCase) -> None:
    """reverse=True reads every input from the last step to the first (negative-stride views, nothing flipped):
    output, last state and every gradient as the float64 reference run on flipped inputs, its output flipped back;
    and in float32 as the Numba scan run that way."""
    inputs = case.inputs()
    options = dict(return_last_state=case.return_last_state, reverse=True)
    reverse = outputs_and_gradients(selective_scan_numba, case, inputs, torch.float64, **options)
    flipped = outputs_and_gradients(reversed_by_flipping(selective_scan_ref), case, inputs, torch.float64,
                                    return_last_state=case.return_last_state)
    assert_matches(case, reverse, flipped, FLOAT64_TOLERANCE)
    reverse32 = outputs_and_gradients(selective_scan_numba, case, inputs, torch.float32, **options)
    flipped32 = outputs_and_gradients(reversed_by_flipping(selective_scan_numba), case, inputs, torch.float32,
                                      return_last_state=case.return_last_state)
    assert_matches(case, reverse32, flipped32, 1e-6)


def shared_by_the_directions(name: str, value: Optional[torch.Tensor]) -> bool:
    """Whether stacked directions share an input rather than stack it: A, D, z, delta_bias and a constant (dim, n) B
    or C."""
    return name in ("A", "D", "z", "delta_bias") or value.dim() == 2


def stacked_directions(first: dict, second: dict) -> dict:
    """Two directions' inputs as the kernels take them: u, delta, B and C stacked (directions first); the shared ones
    the first direction's."""
    return {name: value if shared_by_the_directions(name, value) else torch.stack([value, second[name]])
            for name, value in first.items()}


def one_direction(stacked: dict, s: int) -> dict:
    """Direction s's own inputs out of `stacked_directions`' (the shared ones as they are)."""
    return {name: value if shared_by_the_directions(name, value) else value[s] for name, value in stacked.items()}


def stacked_directions_through_the_kernels(case: ScanCase, stacked: dict) -> tuple:
    """`scan_forward` and `scan_backward` (what the mixer's node runs) on two stacked directions, forward and
    reversed, with the output gradient that `outputs_and_gradients` uses: (out, None, {name: gradient}) as it
    returns them, the gradients of B and C stacked as the inputs are, or summed for a constant (dim, n) one."""
    inputs = [stacked[name] for name in INPUT_NAMES]
    out, _, checkpoints, gate_inputs = numba_scan.scan_forward(*inputs, case.delta_softplus, (False, True), True)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = numba_scan.scan_backward(*inputs, case.delta_softplus, (False, True), checkpoints, gate_inputs, dout)

    def over_directions(gradients: list, like: torch.Tensor) -> torch.Tensor:
        return sum(gradients) if like.dim() == 2 else torch.stack(gradients)
    gradients = dict(u=grads.du, delta=grads.ddelta, A=grads.dA, B=over_directions(grads.dB, stacked["B"]),
                     C=over_directions(grads.dC, stacked["C"]), D=grads.dD, z=grads.dz, delta_bias=grads.ddelta_bias)
    return out, None, {name: gradients[name] for name in INPUT_NAMES if stacked[name] is not None}


def test_last_state_is_taken_into_pytorch_only_where_asked_for() -> None:
    """`scan_forward` gives each direction's last state with `with_last_state` (the state after its last step: step 0
    for the reversed one), and None without (the mixer's node never asks, and taking it into PyTorch's layout is
    serial time after the kernels)."""
    case = REVERSE_CASES[0]
    stacked = stacked_directions(case.inputs(seed=0), case.inputs(seed=1))
    inputs = [stacked[name] for name in INPUT_NAMES]
    with_state = numba_scan.scan_forward(*inputs, True, (False, True), False, with_last_state=True)
    without_state = numba_scan.scan_forward(*inputs, True, (False, True), False)
    assert without_state[1] is None and torch.equal(without_state[0], with_state[0])
    for s in range(2):
        own = one_direction(stacked, s)
        _, last_state = selective_scan_numba(*(own[name] for name in INPUT_NAMES), delta_softplus=True,
                                             return_last_state=True, reverse=s == 1)
        assert torch.allclose(with_state[1][s], last_state, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", REVERSE_CASES[:2], ids=str)
def test_directions_sum_the_scans_of_each_direction_with_their_gradients(case: ScanCase) -> None:
    """The kernels on stacked directions (a bidirectional mixer's two scans, the second one adding to the first's
    output in the kernels, and only the first writing dz) equal the sum of two separate scans, forward and
    reversed, on each direction's own u, delta, B, C, in float64."""
    stacked = stacked_directions(case.inputs(seed=0), case.inputs(seed=1))

    def two_scans(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        def direction(s: int, x: torch.Tensor) -> torch.Tensor:
            return x if x.dim() == 2 else x[s]
        return sum(selective_scan_numba(u[s], delta[s], A, direction(s, B), direction(s, C), D, z, delta_bias,
                                        delta_softplus, reverse=s == 1) for s in range(2))
    summed = stacked_directions_through_the_kernels(case, stacked)
    separate = outputs_and_gradients(two_scans, case, stacked, torch.float64)
    assert_matches(dataclasses.replace(case, return_last_state=False), summed, separate, FLOAT64_TOLERANCE)


def test_output_and_input_gradients_keep_the_inputs_channels_last_layout() -> None:
    """u, delta and z as transposed (batch, L, dim) tensors (the Numba mixer's layout): out and du, ddelta, dz come
    back channels last too, so out_proj reads out without a copy."""
    u, delta, z = (torch.randn(2, 9, 4).transpose(1, 2).requires_grad_() for _ in range(3))
    out = selective_scan_numba(u, delta.detach().abs().requires_grad_(), -torch.ones(4, 3), torch.randn(2, 3, 9),
                               torch.randn(2, 3, 9), z=z, reverse=True)
    assert out.stride() == u.stride() and out.transpose(1, 2).is_contiguous()
    du, dz = torch.autograd.grad(out.sum(), [u, z])
    assert du.stride() == u.stride() and dz.stride() == z.stride()


def test_default_chunk_across_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numba_scan, "CHUNK", DEFAULT_CHUNK)
    case = ScanCase(batch=1, dim=3, length=2 * DEFAULT_CHUNK + 22, dstate=4, b_layout="shared", c_layout="shared")
    inputs = case.inputs()
    assert_matches(case, run_numba(case, inputs), run_upstream(case, inputs), FLOAT32_TOLERANCE)


def test_long_sequence_state_is_carried_to_the_end() -> None:
    """The last output still depends on the first input across 2048 steps (256 chunks)."""
    case = ScanCase(batch=1, dim=2, length=2048, dstate=4, b_layout="shared", c_layout="shared", with_z=False,
                    with_D=False)
    inputs = case.inputs()
    inputs["A"] = torch.full_like(inputs["A"], -1e-4)  # almost no decay
    u = inputs["u"].float().requires_grad_()
    out = selective_scan_numba(u, *(inputs[name].float() for name in ("delta", "A", "B", "C")),
                               delta_bias=inputs["delta_bias"].float(), delta_softplus=True)
    (gradient,) = torch.autograd.grad(out[:, :, -1].sum(), u)
    assert gradient[:, :, 0].abs().min() > 1e-3


def test_runs_in_float32_under_autocast() -> None:
    """Under bfloat16 autocast the scan neither lowers its precision nor changes its results."""
    case = ScanCase(b_layout="shared", c_layout="shared", length=21)
    inputs = case.inputs()
    plain = run_numba(case, inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = run_numba(case, inputs)
    assert autocast[0].dtype == torch.float32 and autocast[1].dtype == torch.float32
    assert torch.equal(autocast[0], plain[0]) and torch.equal(autocast[1], plain[1])
    for name, gradient in plain[2].items():
        assert torch.equal(autocast[2][name], gradient), name


def test_half_precision_inputs_come_back_in_their_dtype_computed_in_float32() -> None:
    """bfloat16 inputs: out and every gradient in bfloat16, equal to the float32 scan of the same (rounded) inputs
    rounded to bfloat16; the last state in float32."""
    case = ScanCase(batch=1, dim=4, length=11, dstate=2, b_layout="shared", c_layout="grouped")
    rounded = {name: None if value is None else value.to(torch.bfloat16).double() for name, value in
               case.inputs().items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, last_state, gradients = run_numba(case, rounded, torch.bfloat16)
    expected_out, expected_last_state, expected_gradients = run_numba(case, rounded, torch.float32)
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected_out.to(torch.bfloat16))
    assert last_state.dtype == torch.float32 and torch.equal(last_state, expected_last_state)
    for name, gradient in gradients.items():
        assert gradient.dtype == torch.bfloat16, name
        # the output gradient itself is rounded to bfloat16 on the half-precision side
        assert (gradient.float() - expected_gradients[name]).abs().max() <= 2e-2 * expected_gradients[name].abs().max()


def test_strided_inputs_as_mamba_passes_them() -> None:
    """delta, z and B, C arrive as transposed views of (batch, L, ...) tensors: read in place, same results."""
    case = ScanCase(batch=2, dim=6, length=13, dstate=4, b_layout="shared", c_layout="shared")
    inputs = case.inputs()
    strided = {name: None if value is None else
               (value.transpose(1, 2).contiguous().transpose(1, 2) if value.dim() == 3 else value)
               for name, value in inputs.items()}
    assert not strided["delta"].is_contiguous()
    assert_matches(case, run_numba(case, strided), run_numba(case, inputs), 0.0)


def test_threads_follow_pytorch_and_do_not_change_the_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.set_num_threads sets Numba's threads at each call. The backward sums B/C's gradient per block of
    channels, and the number of blocks follows the threads: other threads or blocks change only the order of
    that sum (rounding), never a race."""
    import numba
    case = ScanCase(batch=1, dim=8, length=20, dstate=4, b_layout="shared", c_layout="grouped", groups=2)
    inputs = case.inputs()
    results = {}
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results[threads] = run_numba(case, inputs)
            assert numba.get_num_threads() == min(threads, numba.config.NUMBA_NUM_THREADS)
    finally:
        torch.set_num_threads(before)
    monkeypatch.setattr(numba_scan, "TASKS_PER_THREAD", 64)  # every channel its own backward task
    results["blocks"] = run_numba(case, inputs)
    for other in (2, "blocks"):
        assert_matches(case, results[other], results[1], 1e-6)


# Numba's OpenMP threading layer shares PyTorch's OpenMP runtime; starting it sets that runtime to all cores
PYTORCH_THREADS_KEPT = r"""
import importlib, torch
scan = importlib.import_module("nnunetv2_msvmamba.ssm.selective_scan_numba")
u = torch.randn(1, 4, 9)
scan.selective_scan_numba(u, torch.rand(1, 4, 9), -torch.ones(4, 16), torch.randn(1, 16, 9), torch.randn(1, 16, 9))
import numba
print(torch.get_num_threads(), numba.get_num_threads())
"""


def test_starting_numbas_threads_keeps_pytorchs_thread_setting() -> None:
    """PyTorch told to use 1 thread (OMP_NUM_THREADS, as nnU-Net's worker processes are) still uses 1 after the
    first Numba scan started Numba's threads, and so does the scan."""
    completed = subprocess.run([sys.executable, "-c", PYTORCH_THREADS_KEPT], capture_output=True, text=True,
                               timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.split() == ["1", "1"]


BOUND_WARNING = "the Numba selective scan runs on 1 CPU(s) while PyTorch uses 2 threads"


def run_small_scan() -> None:
    selective_scan_numba(torch.randn(1, 4, 9), torch.rand(1, 4, 9), -torch.ones(4, 16), torch.randn(1, 16, 9),
                         torch.randn(1, 16, 9))


def test_a_thread_bound_to_fewer_cpus_than_pytorchs_threads_is_named_once(monkeypatch, capsys) -> None:
    """Checked once per process, at the first launch (each half of this test starts as a new process would)."""
    monkeypatch.setattr(numba_scan, "_binding_checked", False)
    monkeypatch.setenv("OMP_PROC_BIND", "true")
    monkeypatch.setattr(numba_scan, "_cpus_of_this_thread", lambda: {1, 2, 3})
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        run_small_scan()
        assert "[nnunetv2_msvmamba]" not in capsys.readouterr().err  # 3 CPUs for 3 threads
        monkeypatch.setattr(numba_scan, "_binding_checked", False)
        monkeypatch.setattr(numba_scan, "_cpus_of_this_thread", lambda: {1})
        torch.set_num_threads(2)
        run_small_scan()
        run_small_scan()
    finally:
        torch.set_num_threads(before)
    err = capsys.readouterr().err
    assert err.count("[nnunetv2_msvmamba]") == 1, err
    assert BOUND_WARNING in err and "bound to CPU(s) [1] (OMP_PROC_BIND=true)" in err, err


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="binding to one CPU needs a machine with two")
def test_openmp_binding_of_the_main_thread_is_reported_for_real() -> None:
    """OMP_PROC_BIND=true makes PyTorch's OpenMP runtime bind the main thread to one CPU as it loads, and the Numba
    scan started from it runs on that CPU alone: reported; unbound, nothing is."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("OMP_PROC_BIND", "GOMP_CPU_AFFINITY", "OMP_PLACES")}
    environment["OMP_NUM_THREADS"] = "2"
    reports = {}
    for bind in ("true", None):
        completed = subprocess.run([sys.executable, "-c", PYTORCH_THREADS_KEPT], capture_output=True, text=True,
                                   timeout=600, env=dict(environment, **({"OMP_PROC_BIND": bind} if bind else {})))
        assert completed.returncode == 0, completed.stderr[-3000:]
        reports[bind] = completed.stderr
    assert BOUND_WARNING in reports["true"] and "(OMP_PROC_BIND=true)" in reports["true"], reports["true"]
    assert "[nnunetv2_msvmamba]" not in reports[None], reports[None]


def test_channel_blocks_pad_each_group_and_unpad_back() -> None:
    """Channels in blocks of LANES per group, as numpy arrays (the kernels' inputs and outputs are arranged in numpy):
    a group of 5 channels takes one block, its last LANES - 5 channels zero; unpadding gives the channels back,
    contiguous; with whole blocks both are views, and a padded array is C-contiguous whatever its input."""
    lanes = numba_scan.LANES
    layout = numba_scan.ChannelBlocks(dim=10, groups=2)
    assert (layout.blocks, layout.padded) == (2, True)
    x = np.arange(30.0).reshape(3, 10)
    blocks = layout.pad(x)
    assert blocks.shape == (3, 2, lanes) and blocks.flags.c_contiguous
    assert np.array_equal(blocks[:, 1, :5], x[:, 5:]) and not blocks[:, :, 5:].any()
    unpadded = layout.unpad(blocks)
    assert np.array_equal(unpadded, x) and unpadded.flags.c_contiguous
    whole = numba_scan.ChannelBlocks(dim=2 * lanes, groups=1)
    y = torch.randn(3, 2 * lanes)
    assert not whole.padded and np.shares_memory(whole.pad(y.numpy()), y.numpy())
    assert np.shares_memory(whole.unpad(whole.pad(y.numpy())), y.numpy())
    reversed_channels = whole.pad(y.numpy()[:, ::-1])
    assert reversed_channels.flags.c_contiguous and np.array_equal(reversed_channels.reshape(3, -1),
                                                                   y.flip(1).numpy())


def test_z_and_dz_are_read_and_written_where_they_lie_when_whole_blocks_allow() -> None:
    """The second half of a contiguous (batch, L, 2 dim) tensor (z and dz in the mixer) is used in place, from its
    first block on; a row or an offset that is no multiple of LANES, another dtype, or padded channels give None
    (the scan then copies)."""
    lanes = numba_scan.LANES
    layout = numba_scan.ChannelBlocks(dim=2 * lanes, groups=1)
    in_proj_output = torch.randn(3, 7, 4 * lanes)
    z = in_proj_output[..., 2 * lanes:].transpose(1, 2)
    array, first = layout.blocked_in_place(z, torch.float32)
    assert first == 2 and array.shape == (3, 7, 4, lanes)
    assert np.shares_memory(array, in_proj_output.numpy())
    assert np.array_equal(array[:, :, first:first + 2].reshape(3, 7, 2 * lanes), z.transpose(1, 2).numpy())
    odd_rows = torch.randn(3, 7, 4 * lanes + 1)[..., 2 * lanes:4 * lanes].transpose(1, 2)
    odd_offset = torch.randn(3, 7, 3 * lanes)[..., lanes // 2:lanes // 2 + 2 * lanes].transpose(1, 2)
    assert layout.blocked_in_place(odd_rows, torch.float32) is None
    assert layout.blocked_in_place(odd_offset, torch.float32) is None
    assert layout.blocked_in_place(z, torch.float64) is None
    assert numba_scan.ChannelBlocks(dim=lanes + 1, groups=1).blocked_in_place(z[:, :lanes + 1], torch.float32) is None


@pytest.mark.parametrize("threads", [1, 8])
def test_channels_last_copies_by_matrix_or_whole_and_gives_the_same_tensor(monkeypatch: pytest.MonkeyPatch,
                                                                           threads: int) -> None:
    """One copy per batch row's (dim, L) matrix, which PyTorch transposes in blocks, where the matrices are large
    and the threads few; the whole tensor's copy otherwise: the same values, channels last, either way."""
    monkeypatch.setattr(numba_scan, "MATRIX_COPY_MIN_ELEMENTS", 6 * 40)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    copies = []
    copy = torch.Tensor.copy_
    monkeypatch.setattr(torch.Tensor, "copy_",
                        lambda target, source: copies.append(source.dim()) or copy(target, source))
    for shape in ((3, 6, 40), (3, 5, 40)):  # 240 elements per matrix: by matrix (on few threads); 200: whole
        x = torch.randn(shape)
        channels_last = numba_scan._channels_last(x)
        assert torch.equal(channels_last, x) and channels_last.transpose(1, 2).is_contiguous()
    assert copies == ([2, 2, 2, 3] if threads <= numba_scan.MATRIX_COPY_MAX_THREADS else [3, 3])
    rows = torch.randn(3, 40, 6).transpose(1, 2)
    assert numba_scan._channels_last(rows) is rows


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reverse", [False, True])
def test_a_channels_first_u_in_whole_blocks_is_read_where_it_lies(monkeypatch: pytest.MonkeyPatch,
                                                                   dtype: torch.dtype, reverse: bool) -> None:
    """A contiguous (batch, dim, L) u (the generic mixer's convolution output) in whole blocks of LANES channels:
    the kernels read it a chunk at a time instead of PyTorch making it channels last, and the forward keeps no copy
    of it for the backward (u itself is kept): the output, last state and every gradient exactly as for the same u
    channels last, over several chunks and ending inside one."""
    case = ScanCase(batch=2, dim=2 * numba_scan.LANES, length=3 * SMALL_CHUNK + 5, dstate=4, b_layout="shared",
                    c_layout="grouped", groups=2, delta_softplus=True, return_last_state=True)
    inputs = case.inputs()
    layout = numba_scan._layout(case.dim, inputs["B"][None], inputs["C"][None])
    assert numba_scan._reads_channels_first(layout, inputs["u"].to(dtype)[None], dtype)
    copies = []  # whether PyTorch copied each (batch, dim, L) tensor made channels last
    channels_last = numba_scan._channels_last
    monkeypatch.setattr(numba_scan, "_channels_last", lambda x: copies.append(not x.transpose(1, 2).is_contiguous())
                        or channels_last(x))
    as_it_lies = outputs_and_gradients(selective_scan_numba, case, inputs, dtype, return_last_state=True,
                                       reverse=reverse)
    copies_with_u_as_it_lies, copies[:] = sum(copies), []
    rows = dict(inputs, u=inputs["u"].transpose(1, 2).contiguous().transpose(1, 2))
    from_channels_last = outputs_and_gradients(selective_scan_numba, case, rows, dtype, return_last_state=True,
                                               reverse=reverse)
    assert copies_with_u_as_it_lies == sum(copies) > 0  # delta's, z's, the output gradient's; u's no more
    assert_matches(case, as_it_lies, from_channels_last, 0.0)
    kept = []
    monkeypatch.setattr(torch.autograd.function.FunctionCtx, "save_for_backward",
                        lambda ctx, *tensors: kept.extend(tensors))
    u = inputs["u"].to(dtype).requires_grad_()
    selective_scan_numba(u, *(inputs[name].to(dtype) for name in INPUT_NAMES[1:]), delta_softplus=True,
                         reverse=reverse)
    assert kept[0].data_ptr() == u.data_ptr()  # u as it lies is kept for the backward, not a copy of it


def test_backward_runs_of_blocks_stay_inside_a_group_and_cover_every_block() -> None:
    starts = numba_scan._channel_blocks(batch=1, blocks=12, groups=3, threads=4).tolist()
    assert starts == [0, 1, 2, 4, 5, 6, 8, 9, 10, 12]  # 3 groups of 4 blocks in 3 runs: 9 tasks >= 2 per thread
    assert numba_scan._channel_blocks(batch=64, blocks=12, groups=1, threads=2).tolist() == [0, 12]
    assert numba_scan._channel_blocks(batch=1, blocks=3, groups=1, threads=16).tolist() == [0, 1, 2, 3]


def test_gradients_of_B_and_C_are_views_of_each_groups_first_partial_sums() -> None:
    """dB is the kernel's partial sums seen in B's layout, not a copy: each group's first part, into which the kernel
    has added the group's other parts where its blocks ran as several backward tasks."""
    like = torch.randn(3, 5, 4).transpose(1, 2)  # (batch, n, L) as the mixer passes B
    partial = torch.randn(3, 1, 5, 4)  # (batch, parts, L, n)
    grad = numba_scan._sum_blocks(partial.numpy(), like)
    assert grad.data_ptr() == partial.data_ptr() and grad.stride() == like.stride()
    assert torch.equal(grad, partial[:, 0].transpose(1, 2))
    grouped_like, grouped_partial = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 5, 4)  # groups = parts = 2
    assert numba_scan._sum_blocks(grouped_partial.numpy(), grouped_like).data_ptr() == grouped_partial.data_ptr()
    two_runs = torch.randn(3, 4, 5, 4)  # two groups, each in two runs of blocks: parts 0 and 2 hold the sums
    assert torch.equal(numba_scan._sum_blocks(two_runs.numpy(), grouped_like), two_runs[:, ::2].transpose(2, 3))
    constant_like = torch.randn(2 * numba_scan.LANES, 5)  # (dim, n): every channel a group, summed over the batch
    per_channel = torch.randn(3, 2 * numba_scan.LANES, 1, 5)
    assert torch.allclose(numba_scan._sum_blocks(per_channel.numpy(), constant_like), per_channel.sum(0)[:, 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_group_whose_blocks_run_as_several_tasks_has_its_parts_summed_by_the_kernel(
        monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    """A batch too small for the threads splits each B/C group's blocks into several backward tasks, each with its
    own partial sums of dB and dC: the backward kernel adds them up (B shared: 4 parts into 1; C in 2 groups: 2 parts
    each), and every gradient is the one with a single task per group, and the reference's."""
    case = ScanCase(batch=1, dim=4 * numba_scan.LANES, length=21, dstate=4, b_layout="shared", c_layout="grouped",
                    groups=2)
    inputs = case.inputs()
    parts = []
    sum_blocks = numba_scan._sum_blocks
    monkeypatch.setattr(numba_scan, "_sum_blocks", lambda partial, like: parts.append(partial.shape[1])
                        or sum_blocks(partial, like))
    monkeypatch.setattr(numba_scan, "TASKS_PER_THREAD", 0)  # one task per group
    one_task_per_group = run_numba(case, inputs, dtype)
    monkeypatch.setattr(numba_scan, "TASKS_PER_THREAD", 64)  # every block a task of its own
    task_per_block = run_numba(case, inputs, dtype)
    assert parts == [2, 2, 4, 4]  # dB's and dC's partial sums: one part per group of 2 blocks, then one per block
    float64 = dtype == torch.float64
    assert_matches(case, task_per_block, one_task_per_group, 1e-12 if float64 else 1e-6)
    assert_matches(case, task_per_block, run_float64_reference(case, inputs) if float64 else run_upstream(case, inputs),
                   FLOAT64_TOLERANCE if float64 else FLOAT32_TOLERANCE)


def test_no_gradient_needed_runs_no_autograd_node_keeps_no_checkpoints_and_gives_the_same_output(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torch.no_grad (inputs that require a gradient included) and with no input that requires one, the scan
    runs without an autograd node and keeps no checkpoints; its output is the one it gives with a gradient."""
    case = ScanCase(batch=1, dim=4, length=9, dstate=2, b_layout="shared", c_layout="shared")
    inputs = {name: None if value is None else value.float() for name, value in case.inputs().items()}
    leaves = {name: value.clone().requires_grad_() for name, value in inputs.items()}

    def scan(arguments: dict):
        return selective_scan_numba(*(arguments[name] for name in INPUT_NAMES), delta_softplus=True,
                                    return_last_state=True)
    with_grad = scan(leaves)
    assert with_grad[0].requires_grad and not with_grad[1].requires_grad
    kept, scan_forward = [], numba_scan.scan_forward
    monkeypatch.setattr(numba_scan, "scan_forward", lambda *args, **kwargs: kept.append(args[-1])
                        or scan_forward(*args, **kwargs))
    monkeypatch.setattr(numba_scan._SelectiveScanNumba, "apply",
                        staticmethod(lambda *args: pytest.fail("an autograd node ran without a gradient to take")))
    with torch.no_grad():
        under_no_grad = scan(leaves)
    without_leaves = scan(inputs)
    for out, last_state in (under_no_grad, without_leaves):
        assert out.grad_fn is None and not out.requires_grad
        assert torch.equal(out, with_grad[0]) and torch.equal(last_state, with_grad[1])
    assert kept == [False, False]


def test_mamba_mixer_on_the_numba_backend_matches_the_torch_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    mixer = Mamba(d_model=8, d_state=4)
    x = torch.randn(2, 11, 8)
    results = {}
    for backend in ("torch", "numba"):
        monkeypatch.setenv(BACKEND_ENV, backend)
        leaf = x.clone().requires_grad_()
        out = mixer.forward_bidirectional(leaf)
        results[backend] = (out, *torch.autograd.grad(out.square().sum(), [leaf, *mixer.parameters()]))
    for ours, reference in zip(results["numba"], results["torch"]):
        assert (ours - reference).abs().max() <= FLOAT32_TOLERANCE * reference.abs().max()


def test_compiled_mixer_runs_the_numba_kernels_through_the_custom_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torch.compile the custom op dispatches to the Numba scan on the CPU: same outputs and gradients as
    eager, and the Numba scan is what ran."""
    monkeypatch.setenv(BACKEND_ENV, "numba")
    calls = []
    original = numba_scan._SelectiveScanNumba.apply
    monkeypatch.setattr(numba_scan._SelectiveScanNumba, "apply",
                        staticmethod(lambda *args: calls.append(args[0].shape) or original(*args)))
    torch.manual_seed(0)
    mixer = Mamba(d_model=8, d_state=4)
    x = torch.randn(2, 7, 8)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(mixer.forward_bidirectional, backend="aot_eager", fullgraph=True)
        results = []
        for function in (compiled, mixer.forward_bidirectional):
            leaf = x.clone().requires_grad_()
            out = function(leaf)
            results.append((out, *torch.autograd.grad(out.square().sum(), [leaf, *mixer.parameters()])))
    finally:
        torch._dynamo.reset()
    assert calls, "the compiled mixer did not run the Numba scan"
    for ours, reference in zip(*results):
        assert (ours - reference).abs().max() <= 1e-5 * max(reference.abs().max().item(), 1e-12)


def test_complex_A_is_refused() -> None:
    u = torch.zeros(1, 2, 3)
    with pytest.raises(NotImplementedError, match="real A only"):
        selective_scan_numba(u, u, torch.zeros(2, 2, dtype=torch.complex64), torch.zeros(1, 2, 3),
                             torch.zeros(1, 2, 3))


def test_malformed_B_is_a_clear_error() -> None:
    u = torch.zeros(1, 4, 5)
    with pytest.raises(ValueError, match="3 groups, which does not divide dim=4"):
        selective_scan_numba(u, u, -torch.ones(4, 3), torch.zeros(1, 3, 3, 5), torch.zeros(1, 3, 5))


# A fresh process: importing the package compiles nothing and does not even import numba; the first scan loads
# the kernels from Numba's on-disk cache (filled by this module's fixture, for the installed package).
FRESH_PROCESS = r"""
import importlib, json, sys, torch
import nnunetv2_msvmamba.ssm as ssm
imported_numba = "numba" in sys.modules
numba_scan = importlib.import_module("nnunetv2_msvmamba.ssm.selective_scan_numba")
u = torch.randn(1, 4, 9, requires_grad=True)
out = ssm.selective_scan_numba(u, torch.rand(1, 4, 9), -torch.ones(4, 16), torch.randn(1, 16, 9), torch.randn(1, 16, 9))
out.sum().backward()
kernels = numba_scan._kernels(torch.float32)
print(json.dumps({"imported_numba_at_import": imported_numba,
                  "cache_hits": sum(sum(k.stats.cache_hits.values()) for k in (kernels.forward, kernels.backward)),
                  "cache_misses": sum(sum(k.stats.cache_misses.values()) for k in (kernels.forward, kernels.backward)),
                  "cache_path": kernels.forward.stats.cache_path}))
"""


def test_import_compiles_nothing_and_a_new_process_loads_the_kernels_from_the_cache() -> None:
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_DISABLE_JIT"}
    completed = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True, env=env,
                               timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert not report["imported_numba_at_import"]
    assert report["cache_hits"] == 2 and report["cache_misses"] == 0, report
