"""The explicit vector code of the Numba scan's steps (`_numba_vectors`) against the plain loops it stands for
(`_numba_kernels.recurrence_step` and `adjoint_step`, compiled by Numba as written): every output, for numbers of
states that are and are not a multiple of a vector's lanes, blocks of one and two vectors, each optional input absent
and present, and NaN or infinite inputs, which must come out as the plain loops give them."""
from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import pytest

kernels = pytest.importorskip("nnunetv2_msvmamba.ssm._numba_kernels")
vectors = pytest.importorskip("nnunetv2_msvmamba.ssm._numba_vectors")

EXP2_CONSTANTS = tuple(kernels.EXP2_CONSTANTS)
STATES = (5, 16)  # fewer than a vector's lanes, and Mamba's d_state
LANES = (vectors.VECTOR, 2 * vectors.VECTOR)  # one and two vectors (the scan's LANES)


def plain(function):
    """The plain loops, compiled as written (not through their vector overload)."""
    return numba.njit(fastmath=kernels.FASTMATH, error_model="numpy")(function)


def through_overload(step: str, lanes: int):
    """The step as a kernel calls it, with `lanes` a literal (a closure's constant, passed by name: through *args
    Numba would not see it as one): the float32 vector code."""
    if step == "recurrence_step":
        def call(deltas, delta_us, B_t, C_t, A, h_before, h_after, decays, ys, exp2_constants):
            kernels.recurrence_step(deltas, delta_us, B_t, C_t, A, h_before, h_after, decays, ys, exp2_constants,
                                    lanes)
    else:
        def call(dys, delta_us, deltas, B_t, C_t, decays, states, A, carry, dA, dB_t, d_delta_us, d_exponents):
            kernels.adjoint_step(dys, delta_us, deltas, B_t, C_t, decays, states, A, carry, dA, dB_t, d_delta_us,
                                 d_exponents, lanes)
    return numba.njit(fastmath=kernels.FASTMATH, error_model="numpy")(call)


def rows(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def assert_same(vector_outputs: list, plain_outputs: list) -> None:
    for vector_output, plain_output in zip(vector_outputs, plain_outputs):
        np.testing.assert_allclose(vector_output, plain_output, rtol=2e-6, atol=1e-6, equal_nan=True)


def recurrence_inputs(rng: np.random.Generator, states: int, lanes: int, *, delta_us: bool, ys: bool, decays: bool,
                      in_place: bool) -> list:
    h_before = rows(rng, states, lanes)
    return [np.abs(rows(rng, lanes)), rows(rng, lanes) if delta_us else None, rows(rng, states), rows(rng, states),
            -np.abs(rows(rng, states, lanes, scale=3.0)), h_before, h_before if in_place else rows(rng, states, lanes),
            rows(rng, states, lanes) if decays else None, rows(rng, lanes) if ys else None, EXP2_CONSTANTS]


def run_both(step: str, lanes: int, make_inputs) -> tuple:
    """(vector outputs, plain outputs): the same inputs, copied (an array passed twice stays one array), through
    both; the outputs are every array."""
    plain_step = plain(getattr(kernels, step))
    results = []
    for run in (through_overload(step, lanes), lambda *args: plain_step(*args, lanes)):
        copies = {}
        inputs = [copies.setdefault(id(x), x.copy()) if isinstance(x, np.ndarray) else x for x in make_inputs()]
        run(*inputs)
        results.append([x for x in inputs if isinstance(x, np.ndarray)])
    return results[0], results[1]


# the forward (y summed, the state updated in place), the backward's recomputation (decays kept, the states written
# to the next row), and the arithmetic limit (no input term's product)
RECURRENCE_USES = {"forward": dict(delta_us=True, ys=True, decays=False, in_place=True),
                   "recomputation": dict(delta_us=True, ys=False, decays=True, in_place=False),
                   "limit": dict(delta_us=False, ys=True, decays=False, in_place=True)}


@pytest.mark.parametrize("states", STATES)
@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("use", RECURRENCE_USES)
def test_recurrence_step_vectors_give_what_the_plain_loops_give(states: int, lanes: int, use: str) -> None:
    vector_outputs, plain_outputs = run_both(
        "recurrence_step", lanes,
        lambda: recurrence_inputs(np.random.default_rng([states, lanes, len(use)]), states, lanes,
                                  **RECURRENCE_USES[use]))
    assert_same(vector_outputs, plain_outputs)
    if RECURRENCE_USES[use]["decays"]:
        decays = vector_outputs[-1]
        assert (decays > 0).all() and (decays <= 1).all()  # exp2 of a non-positive exponent was written


def adjoint_inputs(rng: np.random.Generator, states: int, lanes: int) -> list:
    return [rows(rng, lanes), rows(rng, lanes), np.abs(rows(rng, lanes)), rows(rng, states), rows(rng, states),
            np.abs(rows(rng, states, lanes)), rows(rng, states, lanes), rows(rng, states, lanes),
            rows(rng, states, lanes), rows(rng, states, lanes), rows(rng, states), rows(rng, lanes), rows(rng, lanes)]


@pytest.mark.parametrize("states", STATES)
@pytest.mark.parametrize("lanes", LANES)
def test_adjoint_step_vectors_give_what_the_plain_loops_give(states: int, lanes: int) -> None:
    vector_outputs, plain_outputs = run_both("adjoint_step", lanes,
                                             lambda: adjoint_inputs(np.random.default_rng([states, lanes]), states,
                                                                    lanes))
    assert_same(vector_outputs, plain_outputs)
    carry_before = adjoint_inputs(np.random.default_rng([states, lanes]), states, lanes)[8]
    assert not np.allclose(vector_outputs[8], carry_before)  # the carry was written


def test_nan_and_infinite_inputs_come_out_as_in_the_plain_loops() -> None:
    """exp2's clamp keeps a NaN a NaN and takes an infinite exponent to its range's end in both."""
    def inputs() -> list:
        values = recurrence_inputs(np.random.default_rng(7), 16, 32, **RECURRENCE_USES["recomputation"])
        values[0][:4] = [np.nan, np.inf, -np.inf, 0.0]
        values[4][:, :4] = 1.0
        return values
    vector_outputs, plain_outputs = run_both("recurrence_step", 32, inputs)
    assert_same(vector_outputs, plain_outputs)
    decays = vector_outputs[-1]
    assert np.isnan(decays[:, 0]).all() and np.isnan(vector_outputs[6][:, 0]).all()  # decays, h_after
    assert (decays[:, 1] == np.float32(2.0 ** 127)).all() and (decays[:, 2] == np.float32(2.0 ** -126)).all()


def test_a_float64_step_takes_the_plain_loops() -> None:
    """The vector code is float32 only: a float64 kernel (the scan on float64 inputs) computes its steps in float64
    as the plain loops do, with the exact exp2."""
    rng = np.random.default_rng(3)
    inputs = [x.astype(np.float64) if isinstance(x, np.ndarray) else x
              for x in recurrence_inputs(rng, 5, 32, **RECURRENCE_USES["recomputation"])]
    inputs[8] = rng.standard_normal(32)  # ys as well
    deltas, delta_us, B_t, C_t, A, h_before, _, _, ys, _ = inputs
    expected_h = np.exp2(deltas * A) * h_before + delta_us * B_t[:, None]
    expected_ys = ys + (expected_h * C_t[:, None]).sum(axis=0)
    through_overload("recurrence_step", 32)(*inputs)
    np.testing.assert_allclose(inputs[6], expected_h, rtol=1e-14)
    np.testing.assert_allclose(inputs[7], np.exp2(deltas * A), rtol=1e-15)
    np.testing.assert_allclose(inputs[8], expected_ys, rtol=1e-13)


def test_the_kernels_cache_key_follows_the_vector_code() -> None:
    """Numba's on-disk cache keys a kernel on its own file and on the values its closure holds: the kernels hold the
    digest of the vector code's source, so that editing that file recompiles them instead of loading stale ones."""
    functions = kernels._scan_kernel_functions(32)
    for kernel in (functions.forward, functions.backward, kernels._arithmetic_limit_function(32)):
        closure = [cell.cell_contents for cell in kernel.__closure__]
        assert vectors.source_digest() in closure
    assert len(vectors.source_digest()) == 64


@numba.njit
def read_through_overload(rows, first_row, start, steps, reverse, steps_by_row):
    kernels.read_channels_first(rows, first_row, start, steps, reverse, steps_by_row)


@pytest.mark.parametrize("length, start, steps, first_row, lanes", [
    (1024, 256, 128, 0, 32),  # whole tiles, a power-of-two row stride
    (40, 3, 37, 32, 32),  # steps beyond the last whole tile
    (33, 0, 33, 16, 16),  # one vector of lanes, a sequence of odd length
    (50, 30, 20, 8, 24)])  # lanes beyond the last whole tile
@pytest.mark.parametrize("reverse", [False, True])
def test_a_channels_first_chunk_is_read_transposed(length: int, start: int, steps: int, first_row: int, lanes: int,
                                                   reverse: bool) -> None:
    """The forward kernel's read of a chunk of a channels-first u: tiles transposed in registers and the rest
    element by element, in the scan's order of steps (from the end for a reverse scan), float32 and float64."""
    rng = np.random.default_rng(length)
    times = [length - 1 - (start + s) if reverse else start + s for s in range(steps)]
    for dtype in (np.float32, np.float64):
        rows = rng.standard_normal((64, length)).astype(dtype)
        steps_by_row = np.full((128, lanes), np.nan, dtype=dtype)
        read_through_overload(rows, first_row, start, steps, reverse, steps_by_row)
        np.testing.assert_array_equal(steps_by_row[:steps], rows[first_row:first_row + lanes][:, times].T)
        assert np.isnan(steps_by_row[steps:]).all()  # nothing written beyond the chunk's steps


def test_the_convolution_kernels_cache_key_follows_the_files_they_inline_from(tmp_path: Path) -> None:
    """The convolution's kernels inline _numba_kernels' sigmoid and exp2 (and through them the vector code's file):
    they hold the digest of both files, so that an edit to either recompiles them; that digest changes with each."""
    convolution = pytest.importorskip("nnunetv2_msvmamba.ssm._numba_conv_kernels")
    functions = convolution._kernel_functions()
    digest = vectors.source_digest(Path(kernels.__file__), Path(vectors.__file__))
    assert kernels.INLINED_CODE_DIGEST == digest
    for kernel in (functions.forward, functions.backward):
        assert digest in [cell.cell_contents for cell in kernel.__closure__]
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    first.write_text("ONE = 1.0\n")
    second.write_text("TWO = 2.0\n")
    before = vectors.source_digest(first, second)
    for edited in (first, second):
        edited.write_text(edited.read_text() + "# edited\n")
        assert vectors.source_digest(first, second) != before
        before = vectors.source_digest(first, second)
