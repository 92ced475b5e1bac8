"""The scan's large output tensors ask Linux for transparent huge pages (`ssm/_huge_pages.py`): the flag is checked
where the kernel keeps it, in /proc/self/smaps."""
from __future__ import annotations

from pathlib import Path

import torch

from nnunetv2_msvmamba.ssm._huge_pages import HUGE_PAGE, empty_on_huge_pages

THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def vm_flags_at(address: int) -> list[str]:
    """The VmFlags of the mapping of this process that holds `address`."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:
            start, end = (int(value, 16) for value in fields[0].split("-"))
            inside = start <= address < end
        elif inside and fields[0] == "VmFlags:":
            return fields[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def test_large_tensors_are_marked_for_huge_pages_and_small_ones_are_left_alone() -> None:
    large = empty_on_huge_pages((4, 1024, 1024), torch.float32)  # 16 MiB
    small = empty_on_huge_pages((1024,), torch.float64)
    assert (large.shape, large.dtype, small.shape, small.dtype) == ((4, 1024, 1024), torch.float32, (1024,),
                                                                    torch.float64)
    large.fill_(1.5)
    assert float(large.sum()) == 1.5 * large.numel()
    if THP_SETTING.exists() and "[never]" not in THP_SETTING.read_text():
        interior = -(-large.data_ptr() // HUGE_PAGE) * HUGE_PAGE
        assert "hg" in vm_flags_at(interior)
