"""Run one function on many threads released together (a barrier), and collect the results."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def all_at_once(fn: Callable[[], T], threads: int) -> list[T]:
    """``fn()`` on ``threads`` threads that start it at the same moment; every result, in the
    order the calls returned."""
    barrier = threading.Barrier(threads)
    results: list[T] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        result = fn()
        with lock:
            results.append(result)

    started = [threading.Thread(target=worker) for _ in range(threads)]
    for t in started:
        t.start()
    for t in started:
        t.join()
    return results
