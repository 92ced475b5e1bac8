"""Work over many items in worker processes, in order, with a progress bar."""
from __future__ import annotations

import signal
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def _leave_interrupts_to_the_main_process() -> None:
    """Ctrl-C reaches every process of the terminal's group; the main process alone handles it, so that the
    workers print no tracebacks of their own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def parallel_map(function: Callable[[T], R], items: Sequence[T], num_processes: int, desc: str) -> list[R]:
    """`[function(i) for i in items]` over `num_processes` worker processes, in order, with a progress bar.
    The first exception raised by any item (or a Ctrl-C) is re-raised here once the bar is closed, so that the
    error line a command prints next stands on its own line; items not yet started are cancelled, and the
    workers have finished before it is re-raised (nothing keeps writing into an output being removed)."""
    items = list(items)
    with tqdm(total=len(items), desc=desc, unit="item") as bar:
        if num_processes <= 1 or len(items) <= 1:
            results = []
            for item in items:
                results.append(function(item))
                bar.update()
            return results
        with ProcessPoolExecutor(max_workers=num_processes,
                                 initializer=_leave_interrupts_to_the_main_process) as pool:
            futures = [pool.submit(function, item) for item in items]
            try:
                results = []
                for future in futures:
                    results.append(future.result())
                    bar.update()
                return results
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
