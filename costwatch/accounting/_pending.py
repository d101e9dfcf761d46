"""Events kept on the request path by one ``append``, added up later in batches.

A list ``append`` is atomic under the GIL and costs a fraction of taking a lock and updating
totals; the owner drains the list (under its own lock) every ``FOLD_EVERY`` events and before
it is read, so every event is counted exactly once.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

FOLD_EVERY = 256
"""Events held before the owner adds them up: few enough to stay small, enough to amortise."""


def drain(pending: list[T]) -> list[T]:
    """What ``pending`` holds, removed from it.  An event appended meanwhile lands after the
    ones taken and stays.  The caller serialises drains of one list (two at once could each
    remove what the other took)."""
    held = pending[:]
    del pending[: len(held)]
    return held
