"""The Numba kernels' large output tensors ask Linux for transparent huge pages only where MSVMAMBA_HUGE_PAGES=1
asks for them (`ssm/_huge_pages.py`): the flag is checked where the kernel keeps it, in /proc/self/smaps."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nnunetv2_msvmamba.ssm import _huge_pages as huge_pages
from nnunetv2_msvmamba.ssm._huge_pages import HUGE_PAGE, HUGE_PAGES_ENV
from nnunetv2_msvmamba.ssm._recycled_memory import empty_output

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


def huge_page_flag_at_the_interior_of(tensor: torch.Tensor) -> bool:
    return "hg" in vm_flags_at(-(-tensor.data_ptr() // HUGE_PAGE) * HUGE_PAGE)


THP_AVAILABLE = THP_SETTING.exists() and "[never]" not in THP_SETTING.read_text()


def test_asked_for_large_tensors_are_marked_for_huge_pages_and_small_ones_are_left_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HUGE_PAGES_ENV, "1")
    large = empty_output((4, 1024, 1024), torch.float32)  # 16 MiB
    small = empty_output((1024,), torch.float64)
    assert (large.shape, large.dtype, small.shape, small.dtype) == ((4, 1024, 1024), torch.float32, (1024,),
                                                                    torch.float64)
    large.fill_(1.5)
    assert float(large.sum()) == 1.5 * large.numel()
    if THP_AVAILABLE:
        assert huge_page_flag_at_the_interior_of(large)


@pytest.mark.parametrize("setting", [None, "0", "1"])
def test_only_msvmamba_huge_pages_1_asks_for_huge_pages(monkeypatch: pytest.MonkeyPatch, setting) -> None:
    """Off unless asked for: on a Xeon VM huge pages made a CPU training step 1.95x slower (see _huge_pages). The
    calls to madvise are what is checked, as a heap region that an earlier test marked may be handed out again."""
    if setting is None:
        monkeypatch.delenv(HUGE_PAGES_ENV, raising=False)
    else:
        monkeypatch.setenv(HUGE_PAGES_ENV, setting)
    calls = []
    monkeypatch.setattr(huge_pages, "_madvise", lambda: lambda *args: calls.append(args) or 0)
    large = empty_output((4, 1024, 1024), torch.float32)
    large.fill_(0.5)
    assert float(large.sum()) == 0.5 * large.numel()
    assert len(calls) == (1 if setting == "1" else 0)


def test_an_unknown_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HUGE_PAGES_ENV, "yes")
    with pytest.raises(ValueError, match="MSVMAMBA_HUGE_PAGES must be 1 .* or 0 .*, got 'yes'"):
        empty_output((4, 1024, 1024), torch.float32)
