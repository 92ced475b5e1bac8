"""Work over many items in worker processes, in order, with a progress bar."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(function: Callable[[T], R], items: Sequence[T], num_processes: int, desc: str) -> list[R]:
    """`[function(i) for i in items]` over `num_processes` worker processes, in order, with a progress bar.
    The first exception raised by any item is re-raised here."""
    if num_processes <= 1 or len(items) <= 1:
        return [function(item) for item in tqdm(items, desc=desc, unit="item")]
    with ProcessPoolExecutor(max_workers=num_processes) as pool:
        return list(tqdm(pool.map(function, items), total=len(items), desc=desc, unit="item"))
