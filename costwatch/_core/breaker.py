"""A small circuit breaker for calls to Redis (cache and budgets).

Closed: every call goes to the backend.  After ``failure_threshold`` consecutive failures it
opens: calls skip the backend (costing a lock and a clock read, well under a microsecond) for
``cooldown_s``.  Then it is half-open: one probe call goes through; its success closes the
breaker, its failure opens it for another cooldown.  A probe that never reports back (its caller
died) is replaced by another one after a further cooldown, so the breaker cannot stick open.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from costwatch._core.forks import new_lock

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Thread-safe; share one per backend.  ``clock`` (monotonic seconds) is injectable."""

    __slots__ = (
        "failure_threshold",
        "cooldown_s",
        "_clock",
        "_lock",
        "_state",
        "_failures",
        "_opened_at",
        "_probe_at",
        "opened_count",
    )

    def __init__(
        self,
        failure_threshold: int = 3,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown_s <= 0:
            raise ValueError("cooldown_s must be positive")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = new_lock()
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_at = 0.0
        self.opened_count = 0
        """How many times the breaker has opened (for tests and diagnostics)."""

    @property
    def state(self) -> BreakerState:
        return self._state

    def allow(self) -> bool:
        """May this call use the backend?  Closed: yes; open: no; half-open: one probe at a time."""
        if self._state == "closed":
            return True
        with self._lock:
            now = self._clock()
            state: BreakerState = self._state  # re-read under the lock
            if state == "closed":
                return True
            if state == "open":
                if now - self._opened_at < self.cooldown_s:
                    return False
                self._state = "half_open"
                self._probe_at = now
                return True
            if now - self._probe_at >= self.cooldown_s:  # the previous probe never reported
                self._probe_at = now
                return True
            return False

    def record_success(self) -> None:
        if self._state == "closed" and self._failures == 0:
            return
        with self._lock:
            self._state = "closed"
            self._failures = 0

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state == "half_open" or (
                self._state == "closed" and self._failures >= self.failure_threshold
            ):
                self._state = "open"
                self._opened_at = self._clock()
                self.opened_count += 1

    def twin(self) -> CircuitBreaker:
        """A new, closed breaker with the same settings (one per node of a Redis Cluster)."""
        return CircuitBreaker(self.failure_threshold, self.cooldown_s, self._clock)

    def reset(self) -> None:
        with self._lock:
            self._state = "closed"
            self._failures = 0
