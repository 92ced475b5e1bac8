"""The Numba kernels' outputs in recycled memory (`ssm/_recycled_memory.py`): a dead output's memory is what the next
output of its size gets, never while a view or a numpy array still holds it; the tensors are what torch.empty would
give; the pool never holds more than twice what its outputs held at once, keeps a training step's forward and
backward sizes both, and gives back what no tensor uses; threads never get the same memory; a forked child can take
memory while its parent holds the lock; and the scan's training steps, after the first, take all their outputs'
memory from the pool."""
from __future__ import annotations

import os
import random
import threading

import pytest
import torch

import nnunetv2_msvmamba.ssm._recycled_memory as recycled_memory_module
from helpers.recycled_memory import PoisonedMemory
from nnunetv2_msvmamba.ssm import release_recycled_memory, selective_scan_numba
from nnunetv2_msvmamba.ssm._recycled_memory import (ALIGNMENT, KEPT_PER_MOST_USED, RECYCLED_MIN_BYTES, RecycledMemory,
                                                     empty_output)

SIZE = (256, 1024)  # 1 MiB of float32


def test_a_dead_outputs_memory_is_what_the_next_output_of_its_size_gets() -> None:
    pool = PoisonedMemory()
    first = pool.empty(SIZE, torch.float32)
    address = first.data_ptr()
    other_size = pool.empty((2, *SIZE), torch.float32)
    del first
    again = pool.empty(SIZE, torch.float32)
    assert again.data_ptr() == address
    assert pool.allocations == 2
    assert other_size.data_ptr() != address


@pytest.mark.parametrize("holder", ["view", "numpy array"])
def test_memory_a_view_or_a_numpy_array_still_holds_is_not_handed_out(holder: str) -> None:
    pool = RecycledMemory()
    output = pool.empty(SIZE, torch.float32)
    address = output.data_ptr()
    kept = output[3:] if holder == "view" else output.numpy()
    del output
    while_held = pool.empty(SIZE, torch.float32)
    assert while_held.data_ptr() != address
    del kept
    assert pool.empty(SIZE, torch.float32).data_ptr() == address


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_a_recycled_tensor_is_what_torch_empty_would_give(dtype: torch.dtype) -> None:
    pool = RecycledMemory(min_bytes=1)
    shape = (3, 5, 7)
    addresses = []
    for _ in range(2):  # fresh, then recycled
        tensor = pool.empty(shape, dtype)
        addresses.append(tensor.data_ptr())
        assert (tensor.shape, tensor.dtype, tensor.device.type, tensor.is_contiguous()) == (shape, dtype, "cpu", True)
        assert tensor.data_ptr() % ALIGNMENT == 0
        tensor.copy_(torch.arange(tensor.numel()).reshape(shape))
        assert torch.equal(tensor, torch.arange(tensor.numel(), dtype=dtype).reshape(shape))
        del tensor
    assert addresses[0] == addresses[1]


def test_small_outputs_and_empty_ones_are_plain_tensors() -> None:
    pool = RecycledMemory()
    small = pool.empty((RECYCLED_MIN_BYTES // 4 - 1,), torch.float32)
    nothing = RecycledMemory(min_bytes=0).empty((0, 4), torch.float32)
    assert (small.numel(), nothing.shape) == (RECYCLED_MIN_BYTES // 4 - 1, (0, 4))
    assert (pool.used_bytes, pool.most_used_bytes) == (0, 0)


def test_the_pool_never_holds_more_than_twice_what_its_outputs_held_at_once() -> None:
    """Outputs of four sizes made and dropped in a random order: after every request, the memory in use and the free
    memory kept together are at most KEPT_PER_MOST_USED times the most that was in use at once."""
    pool = PoisonedMemory()
    generator = random.Random(0)
    alive = []
    for _ in range(400):
        if alive and generator.random() < 0.5:
            alive.pop(generator.randrange(len(alive)))
        else:
            alive.append(pool.empty((generator.choice((100, 200, 300, 1000)),), torch.float32))
            assert pool.used_bytes + pool.free_bytes <= KEPT_PER_MOST_USED * pool.most_used_bytes
    assert pool.allocations < 400 / 2  # and it recycled: far fewer allocations than requests
    pool.release()
    assert pool.used_bytes == sum(tensor.numel() * 4 for tensor in alive)


def hold_and_drop(pool: RecycledMemory, sizes: tuple) -> dict:
    """Outputs of `sizes` floats held at once, then dropped in that order; their addresses by size."""
    outputs = {elements: pool.empty((elements,), torch.float32) for elements in sizes}
    addresses = {elements: output.data_ptr() for elements, output in outputs.items()}
    for elements in sizes:
        del outputs[elements]
    return addresses


def test_a_training_steps_forward_and_backward_sizes_are_both_kept() -> None:
    """A step's forward holds outputs of some sizes at once, its backward of others: after the first step, the pool
    serves both without allocating (with room for only the most in use at once, each phase would give back what the
    other needs, and allocate it again at every step)."""
    pool = PoisonedMemory()
    forward_sizes, backward_sizes = (1000, 3000), (1500, 2000, 400)
    for step in range(3):
        hold_and_drop(pool, forward_sizes)
        hold_and_drop(pool, backward_sizes)
        if step == 0:
            allocations = pool.allocations
    assert pool.allocations == allocations == 5


def test_a_miss_gives_back_the_sizes_longest_unused_first() -> None:
    """Three sets of sizes, each held at once and then dropped: the third set's first output would take the pool
    above its limit, so the first set's buffers go, oldest first, and the second set's stay."""
    pool = PoisonedMemory()
    first = hold_and_drop(pool, (100, 200, 300))
    second = hold_and_drop(pool, (101, 201, 301))
    assert pool.allocations == 6
    third = pool.empty((250,), torch.float32)
    assert pool.used_bytes + pool.free_bytes <= KEPT_PER_MOST_USED * pool.most_used_bytes
    assert pool.free_bytes == 4 * (300 + 101 + 201 + 301)  # 100's and 200's buffers went, the oldest
    assert pool.empty((300,), torch.float32).data_ptr() == first[300]
    assert [pool.empty((elements,), torch.float32).data_ptr() for elements in (101, 201)] == [second[101], second[201]]
    allocations = pool.allocations
    pool.empty((200,), torch.float32)
    assert pool.allocations == allocations + 1
    assert third.numel() == 250


def test_release_gives_back_what_no_tensor_uses_and_keeps_what_one_does() -> None:
    pool = RecycledMemory()
    kept = pool.empty(SIZE, torch.float32)
    pool.empty((2, *SIZE), torch.float32)
    pool.release()
    assert pool.free_bytes == 0
    assert pool.used_bytes == pool.most_used_bytes == kept.numel() * 4
    kept.fill_(2.0)
    assert float(kept.sum()) == 2.0 * kept.numel()


def test_the_packages_release_empties_the_pool_the_kernels_use(poisoned_kernel_outputs: PoisonedMemory) -> None:
    output = empty_output(SIZE, torch.float32)
    assert poisoned_kernel_outputs.used_bytes > 0
    del output
    release_recycled_memory()
    assert (poisoned_kernel_outputs.used_bytes, poisoned_kernel_outputs.free_bytes) == (0, 0)


def test_threads_never_hold_the_same_memory() -> None:
    """Each round, every thread takes an output, and only after all have taken theirs (a barrier), fills it with its
    own number; after a second barrier it checks that its output still holds only that number, and drops it."""
    pool = RecycledMemory(min_bytes=1)
    threads, rounds = 4, 50
    barrier = threading.Barrier(threads)
    failures = []

    def work(number: int) -> None:
        for _ in range(rounds):
            output = pool.empty((1000,), torch.float32)
            barrier.wait()
            output.fill_(number)
            barrier.wait()
            if not bool((output == number).all()):
                failures.append(number)
            del output
            barrier.wait()
    workers = [threading.Thread(target=work, args=(number,)) for number in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    pool.release()
    assert (pool.used_bytes, pool.free_bytes) == (0, 0)  # every output came back


def test_a_child_forked_while_the_lock_is_held_has_its_own_lock() -> None:
    pool = recycled_memory_module.recycled_memory
    with pool._lock:
        child = os.fork()
        if child == 0:
            os._exit(0 if pool._lock.acquire(blocking=False) else 1)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_training_steps_after_the_first_take_every_output_from_the_pool(
        poisoned_kernel_outputs: PoisonedMemory) -> None:
    """The scan's forward + backward three times, every output in recycled memory full of NaN bytes (the fixture's
    pool): the second and third allocate nothing, and give the first's results."""
    pool = poisoned_kernel_outputs
    generator = torch.Generator().manual_seed(0)
    batch, dim, length, dstate = 2, 64, 300, 16
    inputs = {"u": torch.randn(batch, dim, length, generator=generator),
              "delta": torch.rand(batch, dim, length, generator=generator) * 0.1,
              "A": -torch.rand(dim, dstate, generator=generator),
              "B": torch.randn(batch, dstate, length, generator=generator),
              "C": torch.randn(batch, dstate, length, generator=generator),
              "D": torch.randn(dim, generator=generator), "z": torch.randn(batch, dim, length, generator=generator)}
    for tensor in inputs.values():
        tensor.requires_grad_(True)
    results, allocations = [], []
    for _ in range(3):
        out = selective_scan_numba(**inputs, delta_softplus=True)
        gradients = torch.autograd.grad(out, list(inputs.values()), torch.ones_like(out))
        results.append([tensor.clone() for tensor in (out.detach(), *gradients)])
        allocations.append(pool.allocations)
        del out, gradients
    assert allocations[0] > 0 and allocations[0] == allocations[1] == allocations[2]
    for later in results[1:]:
        for first_result, later_result in zip(results[0], later):
            assert torch.equal(first_result, later_result)
