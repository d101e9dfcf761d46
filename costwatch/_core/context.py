"""Attribution on contextvars: ``tags(...)``, ``request(...)`` and cost scopes.

Everything here is correct across threads (each thread has its own context) and asyncio tasks
(each task copies the context it was created in).  Work handed to a thread pool or to
``loop.run_in_executor`` does not carry its context: ``wrap(fn)`` and ``context_executor()``
carry it there.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar, Token
from decimal import Decimal
from types import MappingProxyType
from typing import Any, ParamSpec, TypeVar

from costwatch._core.labels import tag_value
from costwatch._core.memo import BoundedMemo
from costwatch._core.record import ZERO

STRATEGIES = ("rag", "fine_tuned", "hybrid", "base")

P = ParamSpec("P")
R = TypeVar("R")


ATTRIBUTION_TAGS = ("feature", "team", "tenant", "strategy")
"""The tags that totals are kept by (other tags reach per-call records and budget matching)."""


class TagSet(dict[str, str]):
    """The tags in force: a dict (never mutated once set) that also carries ``attribution``,
    the values of ``ATTRIBUTION_TAGS`` ("" when unset).  The recorder totals calls by it, so
    every block entered with the same attribution adds to the same totals, and tags of
    unbounded cardinality (a user or request id) never multiply them."""

    __slots__ = ("attribution",)

    def __init__(self, values: Mapping[str, str] = MappingProxyType({})) -> None:
        super().__init__(values)
        self.attribution: tuple[str, ...] = tuple([self.get(k, "") for k in ATTRIBUTION_TAGS])


NO_TAGS = TagSet()
NO_ATTRIBUTION = NO_TAGS.attribution
tags_var: ContextVar[TagSet] = ContextVar("costwatch_tags", default=NO_TAGS)
request_var: ContextVar[RequestState | None] = ContextVar("costwatch_request", default=None)
scopes_var: ContextVar[tuple[CostScope, ...]] = ContextVar("costwatch_scopes", default=())
recorded_var: ContextVar[object] = ContextVar("costwatch_recorded", default=None)
"""The last response (or exception) an instrumented client recorded in this context: a
decorated function that returns it (or lets it propagate) does not record the call again."""

# Sticky flags: a plain call skips reading the contextvars of a feature this process has never
# used (each read costs a few hundred instructions on the call path).  Once set, never unset.
tagged = False
"""A ``costwatch.tags`` block has been entered: ``tags_var`` may hold other tags than
``NO_TAGS``."""
scoped = False
"""A ``costwatch.request`` or a cost scope has been entered: ``request_var`` and
``scopes_var`` may hold something."""
recorded = False
"""An instrumented client has recorded a call: ``recorded_var`` may hold something."""


def note_tagged() -> None:
    """Called before ``tags_var`` is first set."""
    global tagged
    tagged = True


def note_scoped() -> None:
    """Called before ``request_var`` or ``scopes_var`` is first set."""
    global scoped
    scoped = True


def set_recorded(value: object) -> None:
    """``recorded_var.set(value)``, and note that it may now hold something."""
    global recorded
    recorded = True
    recorded_var.set(value)


_request_ids = itertools.count(1)


_merged: BoundedMemo[tuple[int, tuple[tuple[str, str], ...]], tuple[TagSet, TagSet]] = BoundedMemo(
    4096
)
"""(outer tag set's id, a block's values) -> (that outer set, the merged set): a block entered
again with the same values inside the same tags gets the same ``TagSet``, built once (its
attribution is then the same object too, which the recorder's kept tally entry compares by
identity).  The outer set is kept with it, so its id cannot be reused while the entry lives."""


class tags:  # noqa: N801 - a context manager used like a function, as in contextlib
    """Attach attribution tags (feature, team, tenant, ...) to every call inside the block.

    Nestable: inner values override outer ones for the duration of the inner block.
    """

    __slots__ = ("_values", "_token")

    def __init__(self, **values: object) -> None:
        self._values = tuple([(k, tag_value(k, v)) for k, v in values.items() if v is not None])
        self._token: Token[TagSet] | None = None

    def __enter__(self) -> Mapping[str, str]:
        outer = tags_var.get()
        key = (id(outer), self._values)
        known = _merged.get(key)
        if known is not None and known[0] is outer:
            merged = known[1]
        else:
            merged = TagSet({**outer, **dict(self._values)})
            _merged.remember(key, (outer, merged))
        global tagged
        tagged = True  # note_tagged(), without a call
        self._token = tags_var.set(merged)
        return merged

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._token is not None:
            tags_var.reset(self._token)
            self._token = None


def current_tags() -> Mapping[str, str]:
    return tags_var.get()


class CostScope:
    """Collects the cost of every record made inside it (used by the cache to price a miss)."""

    __slots__ = ("cost_usd", "unpriced", "_lock")

    def __init__(self) -> None:
        self.cost_usd = ZERO
        self.unpriced = 0
        self._lock = threading.Lock()

    def add(self, cost: Decimal | None) -> None:
        with self._lock:
            if cost is None:
                self.unpriced += 1
            else:
                self.cost_usd += cost


@contextmanager
def cost_scope() -> Iterator[CostScope]:
    scope = CostScope()
    note_scoped()
    token = scopes_var.set((*scopes_var.get(), scope))
    try:
        yield scope
    finally:
        scopes_var.reset(token)


class RequestState:
    """One user-facing request: groups its calls and carries retrieved context forward."""

    __slots__ = (
        "name",
        "strategy",
        "request_id",
        "tags",
        "cost_usd",
        "unpriced",
        "calls",
        "started",
        "pending_context",
        "strategies",
        "retrieved",
        "said_outcome",
        "_lock",
    )

    def __init__(self, name: str, strategy: str | None, tags: Mapping[str, str]) -> None:
        self.name = name
        self.strategy = strategy
        self.request_id = f"{name}-{next(_request_ids)}"
        self.tags = tags
        self.cost_usd = ZERO
        self.unpriced = 0
        self.calls = 0
        self.started = time.perf_counter()
        self.pending_context: dict[str, list[str]] = {}
        self.strategies: set[str] = set()
        self.retrieved = False
        self.said_outcome = ""
        """What ``outcome()`` said inside the block ("" when nothing was said)."""
        self._lock = threading.Lock()

    def outcome(self, value: str) -> None:
        """How this request ended: ``"success"`` or ``"failure"`` (the last one said counts).

        Said inside the block; once the block has ended, say it with
        ``costwatch.outcome(request_id, value)``.
        """
        check_outcome(value)
        self.said_outcome = value

    def add_context(self, source: str, texts: list[str]) -> None:
        """A retrieval returned these documents: the next generation in the request consumes them.

        Their tokens are counted then, with the generating model's tokenizer.
        """
        if not texts:
            return
        with self._lock:
            self.retrieved = True
            self.pending_context.setdefault(source, []).extend(texts)

    def take_context(self) -> dict[str, list[str]]:
        with self._lock:
            pending, self.pending_context = self.pending_context, {}
        return pending

    def add_call(self, stage: str, strategy: str, cost: Decimal | None) -> None:
        """One call made inside the request: its stage, resolved strategy and cost (``None``:
        unpriced)."""
        with self._lock:
            self.calls += 1
            if stage == "generation":
                self.strategies.add(strategy)
            if cost is None:
                self.unpriced += 1
            else:
                self.cost_usd += cost


def check_outcome(value: str) -> None:
    from costwatch._core.errors import ConfigError
    from costwatch._core.sink import OUTCOMES

    if value not in OUTCOMES:
        raise ConfigError("outcome", value, f"must be one of {', '.join(OUTCOMES)}")


def resolve_strategy(
    model_fine_tuned: bool, request: RequestState | None, tag_values: Mapping[str, str]
) -> str:
    """docs/design.md: a fine-tuned model is ``fine_tuned`` unless the request says ``hybrid``."""
    declared = request.strategy if request is not None and request.strategy else None
    if declared is None:
        declared = tag_values.get("strategy")
    if declared == "hybrid":
        return "hybrid"
    if model_fine_tuned:
        return "fine_tuned"
    if declared is None and request is not None and request.retrieved:
        return "rag"
    return declared or "base"


# ------------------------------------------------------------------------------------------
# Carrying the context into other threads
# ------------------------------------------------------------------------------------------


def wrap(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` bound to the context in force where ``wrap`` is called: its ``costwatch.tags``
    (the tenant above all), ``costwatch.request`` and cost scopes go wherever it runs.

    For work handed to another thread, which starts with an empty context::

        with costwatch.tags(tenant="acme"):
            pool.submit(costwatch.wrap(search), "price list")
            await loop.run_in_executor(None, costwatch.wrap(search), "price list")

    Each call runs in its own copy of that context (so calls on several threads at once are
    fine, and what one call sets does not reach the next).
    """
    context = contextvars.copy_context()

    @functools.wraps(fn)
    def in_context(*args: P.args, **kwargs: P.kwargs) -> R:
        return context.copy().run(fn, *args, **kwargs)

    return in_context


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in the context of the code that submitted them
    (also through ``map`` and ``loop.run_in_executor``; usable as the loop's default executor)."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


class ContextExecutor(Executor):
    """Another executor's tasks, each run in the context of the code that submitted it."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        return self.executor.submit(contextvars.copy_context().run, fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.executor.shutdown(wait, cancel_futures=cancel_futures)


def context_executor(executor: Executor | None = None, /, **pool_options: Any) -> Executor:
    """An executor whose tasks run in the context of the code that submits them.

    ``context_executor(max_workers=8)`` is a new ``ThreadPoolExecutor`` (``pool_options`` are
    its arguments) that can also be the loop's default executor
    (``loop.set_default_executor``); ``context_executor(pool)`` wraps an executor you have.
    Without it, a task submitted inside ``costwatch.tags(tenant=...)`` runs with no tags.
    """
    if executor is None:
        return ContextThreadPoolExecutor(**pool_options)
    if pool_options:
        raise TypeError("context_executor(executor) takes no pool options")
    if not isinstance(executor, Executor):
        raise TypeError(f"context_executor() needs a concurrent.futures.Executor, not {executor!r}")
    return ContextExecutor(executor)
