"""The Numba scan kernels' prefetches: while a chunk's recurrence computes, they ask the cache for the rows of the
chunk that the same thread runs next. A prefetch is a hint that changes nothing and never faults; a row is asked for
line by line; and the chunk named as the next is the one the kernel's loops run next. (The kernels' outputs with the
prefetches in them are held against the references in test_selective_scan_numba.)"""
from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

kernels = pytest.importorskip("nnunetv2_msvmamba.ssm._numba_kernels")


@numba.njit
def prefetch_far_and_near(row):
    kernels.prefetch_for_reading(row, 1 << 34)  # 64 GiB past the row: no memory there
    kernels.prefetch_for_reading(row, -(1 << 34))
    kernels.prefetch_for_reading(row, 0)
    return row.sum()


def test_a_prefetch_changes_nothing_and_never_faults_whatever_the_address():
    row = np.arange(40, dtype=np.float32)
    assert prefetch_far_and_near(row) == np.arange(40).sum()
    assert np.array_equal(row, np.arange(40, dtype=np.float32))


def test_a_row_of_a_block_is_asked_for_at_each_of_its_two_lines(monkeypatch):
    asked = []
    monkeypatch.setattr(kernels, "prefetch_for_reading", lambda row, index: asked.append((row.ctypes.data, index)))
    # (batch, L, blocks, lanes) as the kernels get it, from PyTorch's memory (aligned to 64 bytes); 32 float32 lanes
    blocked = torch.zeros(2, 3, 4, 32).numpy()
    row, line = blocked[1, 2, 3], kernels.CACHE_LINE_BYTES
    assert blocked.ctypes.data % 64 == 0
    kernels._prefetch_row(row)
    assert {(row.ctypes.data + index * 4) // line for _, index in asked} == {
        (row.ctypes.data + byte) // line for byte in range(0, row.nbytes)}


def chunks_in_forward_order(batch: int, blocks: int, length: int, chunk: int) -> list[tuple[int, int, int, int]]:
    """(task, b, j, start, steps) as the forward kernel's loops run them, tasks in order (one thread)."""
    return [(task, task // blocks, task % blocks, start, min(chunk, length - start))
            for task in range(batch * blocks) for start in range(0, length, chunk)]


@pytest.mark.parametrize("batch, blocks, length, chunk", [(3, 2, 256, 128), (2, 3, 300, 128), (1, 1, 40, 128),
                                                          (2, 1, 128, 128)])
def test_the_forward_kernel_asks_for_the_chunk_it_runs_next(batch, blocks, length, chunk):
    order = chunks_in_forward_order(batch, blocks, length, chunk)
    for (task, _, _, start, _), following in zip(order, order[1:] + [None]):
        named = kernels._next_forward_chunk(task, start, chunk, length, blocks, batch)
        if following is None:
            assert named[3] == 0
        else:
            assert named == following[1:]


def chunks_in_backward_order(batch: int, block_starts: np.ndarray, length: int, chunk: int) -> list[tuple]:
    """(task, b, j, c, steps) as the backward kernel's loops run them: each task a batch row and a run of blocks,
    each block's chunks from the last to the first."""
    parts, chunks = len(block_starts) - 1, -(-length // chunk)
    return [(task, task // parts, j, c, min(chunk, length - c * chunk)) for task in range(batch * parts)
            for j in range(block_starts[task % parts], block_starts[task % parts + 1])
            for c in range(chunks - 1, -1, -1)]


@pytest.mark.parametrize("batch, block_starts, length, chunk", [(2, [0, 2, 4], 256, 128), (3, [0, 1, 3], 300, 128),
                                                                (1, [0, 1], 40, 128), (2, [0, 3], 129, 128)])
def test_the_backward_kernel_asks_for_the_chunk_it_runs_next(batch, block_starts, length, chunk):
    starts = np.array(block_starts, dtype=np.int64)
    order = chunks_in_backward_order(batch, starts, length, chunk)
    for (task, _, j, c, _), following in zip(order, order[1:] + [None]):
        named = kernels._next_backward_chunk(task, j, c, chunk, length, starts, batch)
        if following is None:
            assert named[3] == 0
        else:
            assert tuple(int(x) for x in named) == following[1:]
