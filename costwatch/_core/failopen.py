"""Fail open around costwatch's own code: log rate-limited, count, re-raise only in strict mode."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from costwatch._core.errors import BudgetExceeded
from costwatch._core.forks import new_lock

logger = logging.getLogger("costwatch")

_LOG_INTERVAL_S = 60.0


class InternalErrors:
    """Counts costwatch's own failures per component and rate-limits their log lines."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = new_lock()
        self._counts: dict[str, int] = {}
        self._last_logged: dict[str, float] = {}
        self.strict = False
        self.listeners: list[Callable[[str], None]] = []

    def report(self, component: str, exc: BaseException) -> None:
        """Count and maybe log ``exc``; raise it again in strict mode."""
        now = self._clock()
        with self._lock:
            last = self._last_logged.get(component)
            should_log = last is None or now - last >= _LOG_INTERVAL_S
            if should_log:
                self._last_logged[component] = now
        self.count(component)
        if should_log:
            logger.warning(
                "costwatch internal error in %s (further errors of this component are "
                "counted and logged at most once a minute): %r",
                component,
                exc,
            )
        if self.strict:
            raise exc

    def count(self, component: str) -> None:
        """Count one error of ``component`` (whoever calls this has logged it already)."""
        with self._lock:
            self._counts[component] = self._counts.get(component, 0) + 1
        for listener in self.listeners:
            with contextlib.suppress(Exception):  # a broken sink must not hide the error
                listener(component)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


errors = InternalErrors()
"""The process-wide default; ``configure()`` sets ``strict`` and wires the listeners."""


class FailOpen:
    """``with FailOpen(component):`` around costwatch's own work before a provider call (a
    budget reservation, the instrumented call's preparation).

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
