"""Fail open around a budget preflight: costwatch's own failure lets the call go ahead, a
budget's refusal stops it."""

from __future__ import annotations

from costwatch._core.errors import BudgetExceeded
from costwatch._core.failopen import errors


class FailOpen:
    """``with FailOpen(component):`` around costwatch's own work before a provider call.

    An ``Exception`` raised inside is costwatch's own failure: it is reported under
    ``component`` (``errors.report``, which re-raises only in strict mode) and the block is
    left as if it had finished, so the code after it runs.  A budget's refusal
    (``BudgetExceeded``) and what is not an ``Exception`` (cancellation, ``KeyboardInterrupt``)
    propagate.  Holds no state of its own: one instance may serve any number of blocks.
    """

    __slots__ = ("component",)

    def __init__(self, component: str) -> None:
        self.component = component

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, traceback: object) -> bool:
        if not isinstance(exc, Exception) or isinstance(exc, BudgetExceeded):
            return False
        errors.report(self.component, exc)
        return True
