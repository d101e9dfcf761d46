"""``costwatch.request(...)``: one user-facing request that groups its calls."""

from __future__ import annotations

import time
from contextvars import Token
from typing import Any

from costwatch._core import runtime as _runtime
from costwatch._core.asyncwith import AsyncToo
from costwatch._core.context import (
    STRATEGIES,
    RequestState,
    note_scoped,
    request_var,
    tags,
    tags_var,
)
from costwatch._core.errors import ConfigError
from costwatch._core.failopen import errors
from costwatch._core.sink import RequestEnd
from costwatch.accounting._outcomes import outcome_of


class request(AsyncToo[RequestState]):  # noqa: N801 - used like a function: ``with costwatch.request("answer"):``
    """Group the calls of one user-facing request: cost per request and context attribution.

    Usable as ``with`` and ``async with``.  ``strategy`` is ``rag``, ``fine_tuned``, ``hybrid``
    or ``base``; extra keyword arguments are tags for the calls inside.
    """

    __slots__ = ("_name", "_strategy", "_tags", "_state", "_req_token")

    def __init__(self, name: str, strategy: str | None = None, **tag_values: Any) -> None:
        if strategy is not None and strategy not in STRATEGIES:
            raise ConfigError("strategy", strategy, f"must be one of {', '.join(STRATEGIES)}")
        self._name = name
        self._strategy = strategy
        self._tags = tags(**tag_values) if tag_values else None
        """The block's own tags, entered around the request like ``costwatch.tags``."""
        self._state: RequestState | None = None
        self._req_token: Token[RequestState | None] | None = None

    @property
    def state(self) -> RequestState | None:
        return self._state

    def __enter__(self) -> RequestState:
        tag_values = self._tags.__enter__() if self._tags is not None else tags_var.get()
        state = RequestState(self._name, self._strategy, tag_values)
        self._state = state
        note_scoped()
        self._req_token = request_var.set(state)
        return state

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        state = self._state
        if self._req_token is not None:
            request_var.reset(self._req_token)
            self._req_token = None
        if self._tags is not None:
            self._tags.__exit__(exc_type, exc, tb)
        if state is not None:
            _finish(state, "error" if exc_type is not None else "ok")


def _finish(state: RequestState, status: str) -> None:
    try:
        rt = _runtime.current or _runtime.runtime()
        strategy = state.strategy or _inferred_strategy(state)
        tags = state.tags
        event = RequestEnd(
            pipeline=state.name,
            strategy=strategy,
            cost_usd=state.cost_usd,
            unpriced_calls=state.unpriced,
            latency_s=time.perf_counter() - state.started,
            status=status,
            service=rt.service,
            feature=tags.get("feature", ""),
            team=tags.get("team", ""),
            tenant=tags.get("tenant", ""),
            request_id=state.request_id,
        )
        for sink in rt.sinks:
            sink.on_request_end(event)
        said = state.said_outcome
        if said:
            rt.outcomes.settled(state.request_id)
            settled = outcome_of(event, said, rt.settings.service)
            for sink in rt.sinks:
                sink.on_outcome(settled)
        else:
            rt.outcomes.remember(event)
    except Exception as exc:
        errors.report("request", exc)


def _inferred_strategy(state: RequestState) -> str:
    """No declared strategy: what its generations resolved to (mixed ones make ``hybrid``)."""
    seen = state.strategies
    if not seen:
        return "rag" if state.retrieved else "base"
    if len(seen) == 1:
        return next(iter(seen))
    return "hybrid"
