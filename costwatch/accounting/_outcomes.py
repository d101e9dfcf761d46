"""How requests ended: ``req.outcome(...)`` inside the block, ``costwatch.outcome(id, ...)`` later.

The fair unit of an LLM feature is the cost of one *successful* answer: the cost of a
pipeline's requests divided by the ones that succeeded.  An outcome said inside the request is
sent with its end.  A request that ended without one is remembered by its id in an
``OutcomeBook`` (bounded by count and age, under the runtime clock) until feedback says how it
ended; an id that is unknown, expired or already settled is counted
(``costwatch_outcomes_unmatched_total``), never raised into the host.

Request ids are those of the process that ran the request (``req.request_id``): feedback must
reach that process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from itertools import islice
from typing import Any

from costwatch._core import runtime as _runtime
from costwatch._core.context import check_outcome
from costwatch._core.failopen import errors
from costwatch._core.record import ZERO
from costwatch._core.sink import Outcome, RequestEnd
from costwatch.accounting._pending import FOLD_EVERY, drain

DEFAULT_CAPACITY = 10_000
"""Requests remembered for a late outcome; the oldest is forgotten first."""
DEFAULT_TTL_S = 24 * 3600.0
"""A request older than this can no longer be given an outcome (feedback a day late)."""


def outcome_of(event: RequestEnd, value: str, service: str) -> Outcome:
    return Outcome(
        outcome=value,
        pipeline=event.pipeline,
        strategy=event.strategy,
        cost_usd=event.cost_usd,
        request_id=event.request_id,
        service=event.service or service,
        feature=event.feature,
        team=event.team,
        tenant=event.tenant,
    )


class OutcomeBook:
    """Finished requests awaiting an outcome, by request id; thread-safe and bounded.

    At most ``capacity`` requests are waiting (the oldest is forgotten first) and at most
    ``capacity`` settled or forgotten ids are kept to tell a late duplicate or an expired id
    from an unknown one.  A request older than ``ttl_s`` is expired when its outcome arrives:
    remembering a request costs one list append on the request path (the book takes the
    requests in by the batch, and before it is read: see ``_pending``).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        capacity: int = DEFAULT_CAPACITY,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self.clock = clock
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._waiting: dict[str, tuple[float, RequestEnd]] = {}
        """Id -> (when it ended, how), oldest first (a dict keeps insertion order)."""
        self._gone: dict[str, str] = {}
        """Id -> ``expired`` or ``duplicate``: why a late outcome for it matches nothing."""
        self._ended: list[tuple[str, tuple[float, RequestEnd]]] = []
        """Requests remembered since the book last took them in, as ``_waiting`` items."""
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._take_in()
            return len(self._waiting)

    def remember(self, event: RequestEnd) -> None:
        """A request ended without an outcome: wait for one."""
        ended = self._ended
        ended.append((event.request_id, (self.clock(), event)))
        if len(ended) >= FOLD_EVERY:
            with self._lock:
                self._take_in()

    def _take_in(self) -> None:
        """Holds the lock: the requests remembered since the last time, in one ``update``;
        past ``capacity``, the oldest are forgotten, as if taken in one at a time."""
        waiting = self._waiting
        waiting.update(drain(self._ended))
        forgotten = _oldest(waiting, len(waiting) - self.capacity)
        if forgotten:
            for request_id in forgotten:
                del waiting[request_id]
            self._gone.update(dict.fromkeys(forgotten, "expired"))
            self._trim_gone()

    def settled(self, request_id: str) -> None:
        """A request ended with its outcome said: a later one for its id is a duplicate."""
        with self._lock:
            self._take_in()
            self._forget(request_id, "duplicate")

    def settle(self, request_id: str, value: str, service: str) -> Outcome:
        """The outcome of a remembered request, or an unmatched one saying why not."""
        now = self.clock()
        with self._lock:
            self._take_in()
            waiting = self._waiting.pop(request_id, None)
            if waiting is not None and now - waiting[0] > self.ttl_s:
                self._forget(request_id, "expired")
                waiting = None
                reason = "expired"
            elif waiting is None:
                reason = self._gone.get(request_id, "unknown")
            else:
                self._forget(request_id, "duplicate")
            if waiting is None:
                return Outcome(value, "", "", ZERO, request_id, service, unmatched=reason)
        return outcome_of(waiting[1], value, service)

    def _forget(self, request_id: str, reason: str) -> None:
        gone = self._gone
        gone.pop(request_id, None)  # said again: now the newest
        gone[request_id] = reason
        self._trim_gone()

    def _trim_gone(self) -> None:
        gone = self._gone
        for request_id in _oldest(gone, len(gone) - self.capacity):
            del gone[request_id]


def _oldest(ids: dict[str, Any], count: int) -> list[str]:
    """The ``count`` oldest keys of ``ids`` (none when ``count`` is not positive)."""
    return list(islice(ids, count)) if count > 0 else []


def outcome(request_id: str, value: str) -> bool:
    """Say how a finished request ended, when feedback arrives: ``"success"`` or ``"failure"``.

    Returns whether ``request_id`` matched a request still waiting for its outcome.  An
    unknown, expired or already settled id is counted and never raises; an ``value`` that is
    not an outcome raises :class:`costwatch.ConfigError`.
    """
    check_outcome(value)
    try:
        rt = _runtime.runtime()
        event = rt.outcomes.settle(str(request_id), value, rt.service)
        for sink in rt.sinks:
            sink.on_outcome(event)
        return not event.unmatched
    except Exception as exc:
        errors.report("outcome", exc)
        return False
