"""``@generation``, ``@embedding`` and ``@retrieval``: record calls that already exist.

The wrapper kind (async generator, generator, coroutine, plain) is chosen once, at decoration
time.  Each call is recorded exactly once; the host's return value and exceptions pass through
untouched; costwatch's own failures are reported by ``errors.report`` (raised only in strict mode).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping, Sequence
from decimal import Decimal
from time import perf_counter
from types import AsyncGeneratorType, GeneratorType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from costwatch._core import context as _context
from costwatch._core import runtime as _runtime
from costwatch._core.context import recorded_var
from costwatch._core.errors import ConfigError
from costwatch._core.failopen import FailOpen, errors
from costwatch._core.record import EMPTY_USAGE, InvalidUsage
from costwatch.accounting._recorder import CallSpec
from costwatch.capture._streams import is_stream, watch_generator, wrap_stream
from costwatch.capture._usage import cached_reader, extract_tokens, extract_usage, record_invalid

if TYPE_CHECKING:
    from costwatch.budgets._budget import Reservation
    from costwatch.cache._retrieval_cache import RetrievalCache

P = ParamSpec("P")
R = TypeVar("R")

_PROMPT_KWARGS = ("messages", "prompt", "input", "query", "text", "texts", "question")
_MAX_OUTPUT_KWARGS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_DOC_TEXT_KEYS = ("page_content", "text", "content", "document", "chunk", "body")
_BUDGET_FAILS_OPEN = FailOpen("budget")


class _Site:
    """One decorated function: its spec and how to read its inputs and outputs."""

    __slots__ = ("spec", "hit_spec", "retrieval", "embedding", "cache_name", "fast")

    def __init__(self, spec: CallSpec, *, cache_name: str = "") -> None:
        self.spec = spec
        # A cache hit calls no provider: recorded with no tokens and no fixed price.
        self.hit_spec = CallSpec(
            spec.provider,
            spec.model,
            spec.stage,
            spec.operation,
            spec.source,
            None if spec.price_usd is None else Decimal(0),
            spec.batch,
        )
        self.retrieval = spec.stage == "retrieval"
        self.embedding = spec.stage == "embedding"
        self.cache_name = cache_name
        self.fast = not cache_name and not self.retrieval
        """Usage read straight from the result: no cache flag, no documents to collect."""

    def own_cost(self, value: object) -> Decimal | None:
        """What this site's own record charges for a computed (missed) value.

        The cache stores it beside the value, with the cost of the calls made inside the
        function, so that each hit counts the whole avoided cost as saved.
        """
        spec = self.spec
        if spec.price_usd is not None:
            return spec.price_usd
        extracted = extract_usage(value)
        if extracted is None or not spec.model:
            return None
        price = _runtime.runtime().catalog.resolve(spec.provider, spec.model)
        return price.cost(extracted[0]) if price is not None else None

    # -- before the call -------------------------------------------------------------------
    def preflight(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Reservation | None:
        """Budget reservation; only reached when a budget is registered.  ``BudgetExceeded``
        propagates; costwatch's own failure is reported and reserves nothing."""
        with _BUDGET_FAILS_OPEN:
            call = self._budget_args(args, kwargs)
            return None if call is None else self.spec.preflight(*call)
        return None

    async def apreflight(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Reservation | None:
        """The asyncio twin of :meth:`preflight`: differs only by ``await`` (through
        ``redis.asyncio``, never blocking the event loop)."""
        with _BUDGET_FAILS_OPEN:
            call = self._budget_args(args, kwargs)
            return None if call is None else await self.spec.apreflight(*call)
        return None

    def _budget_args(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[str, int, int | None] | None:
        """(model, prompt tokens, max output tokens) a reservation is priced at; None: this
        call reserves nothing (a retrieval without a fixed price)."""
        if self.retrieval and self.spec.price_usd is None:
            return None
        model = self.spec.model_for(kwargs)
        from costwatch._core.tokens import count_prompt_tokens

        tokens = count_prompt_tokens(_prompt_of(args, kwargs), model)
        max_out: int | None = None
        for key in _MAX_OUTPUT_KWARGS:
            value = kwargs.get(key)
            if isinstance(value, int):
                max_out = value
                break
        if self.embedding:
            max_out = 0
        return model, tokens, max_out

    # -- after the call --------------------------------------------------------------------
    def finish(
        self,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        result: object,
        latency_s: float,
        reservation: Reservation | None,
        cache_hit: bool = False,
    ) -> None:
        spec = self.spec
        model = spec.model_for(kwargs)
        if cache_hit or self.retrieval:
            # No tokens: a cache hit called no provider (and is recorded with no price of its
            # own); a retrieval's documents become the request's context.
            (self.hit_spec if cache_hit else spec).emit(
                model,
                EMPTY_USAGE,
                latency_s,
                usage_source="none",
                reservation=reservation,
                cache_hit=cache_hit,
                context_texts=_document_texts(result) if self.retrieval else (),
            )
            return
        extracted = extract_usage(result)
        if extracted is not None:
            usage, response_model = extracted
            spec.emit(
                model,
                usage,
                latency_s,
                response_model=response_model,
                reservation=reservation,
            )
            return
        spec.emit(
            model,
            None,
            latency_s,
            prompt=_prompt_of(args, kwargs),
            estimate_text=result if isinstance(result, str) and not self.embedding else None,
            reservation=reservation,
        )


def _is_str_list(value: object) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)


def _is_token_ids(value: object) -> bool:
    """Pre-tokenised input: a list of token ids, or a batch of such lists."""
    if not isinstance(value, list) or not value:
        return False
    if all(type(v) is int for v in value):
        return True
    return all(isinstance(v, list) and v and all(type(t) is int for t in v) for v in value)


def _prompt_of(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """The prompt a call's reservation and estimated usage count (``count_prompt_tokens``):
    a prompt keyword, else the first positional text, texts, chat messages or token ids."""
    for key in _PROMPT_KWARGS:
        value = kwargs.get(key)
        if value is not None:
            return value
    for value in args:
        if isinstance(value, str) or _is_str_list(value) or _is_token_ids(value):
            return value
        if isinstance(value, list) and value and isinstance(value[0], Mapping):
            return value
    return None


def _document_texts(result: object) -> list[str]:
    """The text of the documents a retrieval returned (str, dicts, LangChain-style objects)."""
    if result is None:
        return []
    items: Sequence[Any]
    if isinstance(result, str):
        return [result]
    if isinstance(result, Mapping):
        for key in ("documents", "matches", "results", "hits"):
            inner = result.get(key)
            if isinstance(inner, list):
                return _document_texts(inner)
        items = [result]
    elif isinstance(result, list | tuple):
        items = result
    else:
        return []
    texts: list[str] = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
            continue
        if isinstance(item, tuple) and item:  # (document, score) pairs
            item = item[0]
        text = _text_of(item)
        if text is None and isinstance(item, Mapping):
            metadata = item.get("metadata")
            if isinstance(metadata, Mapping):
                text = _text_of(metadata)
        if text is not None:
            texts.append(text)
    return texts


def _text_of(document: object) -> str | None:
    """The first str a document holds under one of ``_DOC_TEXT_KEYS``: a mapping's keys, or
    another object's attributes (LangChain's ``page_content``)."""
    if isinstance(document, Mapping):
        values = (document.get(key) for key in _DOC_TEXT_KEYS)
    else:
        values = (getattr(document, key, None) for key in _DOC_TEXT_KEYS)
    return next((value for value in values if isinstance(value, str)), None)


def _wrap(site: _Site, fn: Callable[P, R]) -> Callable[P, R]:
    """Pick the wrapper kind once, here, at decoration time."""
    if inspect.isasyncgenfunction(fn):
        return cast(Callable[P, R], _wrap_async_gen(site, fn))
    if inspect.isgeneratorfunction(fn):
        return cast(Callable[P, R], _wrap_gen(site, fn))
    if inspect.iscoroutinefunction(fn):
        return cast(Callable[P, R], _wrap_coroutine(site, cast(Any, fn)))
    return _wrap_plain(site, fn)


def _cache_hit(site: _Site) -> bool:
    if not site.cache_name:
        return False
    from costwatch.cache._retrieval_cache import last_lookup_var

    return last_lookup_var.get() == "hit"


def _wrap_plain(site: _Site, fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        rt = _runtime.current or _runtime.runtime()
        reservation = site.preflight(args, kwargs) if rt.budgets.active else None
        t0 = perf_counter()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            _failed(site, kwargs, exc, t0, reservation)
            raise
        return _returned(site, rt, args, kwargs, result, t0, reservation)

    return wrapper


# The asyncio twin of _wrap_plain(): differs only by await (of the call, and of the site's
# asyncio preflight, itself the twin of preflight()).
def _wrap_coroutine(site: _Site, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        rt = _runtime.current or _runtime.runtime()
        reservation = await site.apreflight(args, kwargs) if rt.budgets.active else None
        t0 = perf_counter()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            _failed(site, kwargs, exc, t0, reservation)
            raise
        return _returned(site, rt, args, kwargs, result, t0, reservation)

    return wrapper


def _returned(
    site: _Site,
    rt: _runtime.Runtime,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    result: R,
    t0: float,
    reservation: Reservation | None,
) -> R:
    """Record a call that returned; the result goes back untouched (a stream hooked in place,
    a returned generator watched by the one stream watcher)."""
    latency = perf_counter() - t0
    try:
        # An instrumented client inside recorded it.
        if _context.recorded and recorded_var.get() is result:
            _release(reservation)
            return result
        spec = site.spec
        if site.fast:
            read = cached_reader(type(result))
            extracted = read(result) if read is not None else extract_tokens(result)
            if extracted is not None:
                spec.record_usage(rt, spec.model_for(kwargs), extracted, latency, reservation)
                return result
        # An SDK stream, or a plain generator of chunks (google-genai's streams).
        if is_stream(result) or (
            not site.retrieval and isinstance(result, GeneratorType | AsyncGeneratorType)
        ):
            return cast(R, _watch(site, result, args, kwargs, t0, reservation))
        site.finish(args, kwargs, result, latency, reservation, _cache_hit(site))
    except InvalidUsage as invalid:
        record_invalid(site.spec, site.spec.model_for(kwargs), invalid, latency, reservation)
    except Exception as internal:
        errors.report("decorator", internal)
    return result


def _failed(
    site: _Site,
    kwargs: Mapping[str, Any],
    exc: BaseException,
    t0: float,
    reservation: Reservation | None,
) -> None:
    try:
        # An instrumented client inside recorded the failure.
        if _context.recorded and recorded_var.get() is exc:
            _release(reservation)
            return
        site.spec.emit_failure(site.spec.model_for(kwargs), exc, perf_counter() - t0, reservation)
    except Exception as internal:
        errors.report("decorator", internal)


def _release(reservation: Reservation | None) -> None:
    """Our own budget hold is not needed: the inner call settled its own."""
    if reservation is not None:
        reservation.settle(Decimal(0))


def _watch(
    site: _Site,
    result: Any,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    t0: float,
    reservation: Reservation | None,
) -> Any:
    """A streamed call, recorded once when it ends, fails or is closed: a generator is watched
    by the one stream watcher (a generator returned in its place), an SDK stream is hooked in
    place (returned as is)."""
    spec = site.spec
    model = spec.model_for(kwargs)
    prompt = _prompt_of(args, kwargs)
    if isinstance(result, GeneratorType | AsyncGeneratorType):
        return watch_generator(result, spec, model, t0, reservation=reservation, prompt=prompt)
    wrap_stream(result, spec, model, t0, reservation=reservation, prompt=prompt)
    return result


def _wrap_gen(
    site: _Site, fn: Callable[P, Generator[Any, Any, Any]]
) -> Callable[P, Generator[Any, Any, Any]]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Generator[Any, Any, Any]:
        rt = _runtime.current or _runtime.runtime()
        reservation = site.preflight(args, kwargs) if rt.budgets.active else None
        t0 = perf_counter()
        return (yield from _watch(site, fn(*args, **kwargs), args, kwargs, t0, reservation))

    return wrapper


def _wrap_async_gen(
    site: _Site, fn: Callable[P, AsyncGenerator[Any, Any]]
) -> Callable[P, AsyncGenerator[Any, Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[Any, Any]:
        rt = _runtime.current or _runtime.runtime()
        reservation = await site.apreflight(args, kwargs) if rt.budgets.active else None
        t0 = perf_counter()
        watched = _watch(site, fn(*args, **kwargs), args, kwargs, t0, reservation)
        # An async generator cannot ``yield from``: forward to the watcher by hand.
        try:
            item = await watched.__anext__()
            while True:
                try:
                    sent = yield item
                except GeneratorExit:
                    await watched.aclose()
                    raise
                except BaseException as exc:
                    item = await watched.athrow(exc)
                else:
                    item = await watched.asend(sent)
        except StopAsyncIteration:
            return

    return wrapper


@overload
def generation(provider: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def generation(
    provider: str = "",
    model: str = "",
    *,
    stage: str = "generation",
    operation: str = "chat",
    price_usd: Decimal | float | str | None = None,
    batch: bool = False,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def generation(
    provider: str | Callable[..., Any] = "",
    model: str = "",
    *,
    stage: str = "generation",
    operation: str = "chat",
    price_usd: Decimal | float | str | None = None,
    batch: bool = False,
) -> Any:
    """Record every call of the decorated function as a priced generation.

    Usage is read from the returned SDK object or dict (OpenAI, Anthropic), from the chunks a
    generator yields, or from a returned SDK stream; when there is none, it is estimated with
    tiktoken (``usage_source="estimated"``).  ``model`` may be omitted when the function is called
    with ``model=...``.  ``stage`` may be ``rerank`` or ``tool``; ``price_usd`` gives a fixed
    per-call price (rerankers priced per search).  ``batch=True`` prices at the model's batch
    rate (a function that reads Batch API results).  Also usable bare, ``@generation``: the
    provider and model then come from the response and the call's ``model=``.
    Wrong argument types raise ``TypeError`` naming the argument, here, at decoration time.
    """
    if callable(provider):  # bare ``@generation``
        return generation()(provider)
    _strings(provider=provider, model=model, stage=stage, operation=operation)
    _flag("batch", batch)
    spec = CallSpec(provider, model, stage, operation, price_usd=_money(price_usd), batch=batch)
    return _decorator("generation", spec)


@overload
def embedding(provider: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def embedding(
    provider: str = "",
    model: str = "",
    *,
    cache: RetrievalCache | None = None,
    operation: str = "embeddings",
    batch: bool = False,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def embedding(
    provider: str | Callable[..., Any] = "",
    model: str = "",
    *,
    cache: RetrievalCache | None = None,
    operation: str = "embeddings",
    batch: bool = False,
) -> Any:
    """Record every call of the decorated function as a priced embedding (optionally cached);
    ``batch=True`` prices at the model's batch rate.  Also usable bare, ``@embedding``."""
    if callable(provider):  # bare ``@embedding``
        return embedding()(provider)
    _strings(provider=provider, model=model, operation=operation)
    _flag("batch", batch)
    _cache(cache)
    spec = CallSpec(provider, model, "embedding", operation, batch=batch)
    return _decorator("embedding", spec, cache)


def retrieval(
    source: str,
    *,
    cache: RetrievalCache | None = None,
    provider: str = "vectorstore",
    price_usd: Decimal | float | str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Record every call as a retrieval from ``source``; its documents become request context.

    Inside a ``costwatch.request``, the tokens of the returned documents are attributed to the
    next generation in that request as context tokens (with their share of its input cost).
    Retrieval costs ``price_usd`` per call when given (a managed vector store's per-query
    price), else nothing of its own.  ``cache`` serves repeated retrievals from Redis.
    """
    if callable(source):
        raise TypeError(
            "costwatch.retrieval needs the name of the source it reads: write "
            '@costwatch.retrieval("docs") (with parentheses), not a bare @costwatch.retrieval'
        )
    _strings(source=source, provider=provider)
    if not source:
        raise ConfigError("source", source, "name the store this retrieval reads from")
    _cache(cache)
    spec = CallSpec(
        provider,
        source,
        "retrieval",
        "retrieval",
        source=source,
        price_usd=_money(price_usd) if price_usd is not None else Decimal(0),
    )
    return _decorator("retrieval", spec, cache)


def _decorator(
    name: str, spec: CallSpec, cache: RetrievalCache | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """What ``@generation(...)``, ``@embedding(...)`` and ``@retrieval(...)`` return: records
    each call of the function it decorates; with a ``cache``, the cache sits inside the
    recording (a hit is recorded as one, with the cost it saved), named by the cache's name,
    else by ``spec.model`` (the model, or the retrieval's source), else by the function."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        fn = _callable(name, fn)
        if cache is None:
            return _wrap(_Site(spec), fn)
        cache_name = cache.name or spec.model or fn.__qualname__
        site = _Site(spec, cache_name=cache_name)
        fn = cache.wrap(fn, source=cache_name, stage=spec.stage, own_cost=site.own_cost)
        return _wrap(site, fn)

    return decorate


# --- checking the arguments at decoration time -------------------------------------------------


def _strings(**arguments: object) -> None:
    for name, value in arguments.items():
        if not isinstance(value, str):
            raise TypeError(
                f"costwatch: {name} must be a str, got {type(value).__name__} {value!r}"
            )


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"costwatch: {name} must be True or False, got {value!r}")


def _cache(cache: object) -> None:
    from costwatch.cache._retrieval_cache import RetrievalCache

    if cache is not None and not isinstance(cache, RetrievalCache):
        raise TypeError(
            "costwatch: cache must be a costwatch.RetrievalCache (or None), got "
            f"{type(cache).__name__} {cache!r}"
        )


def _callable(decorator: str, fn: Callable[P, R]) -> Callable[P, R]:
    if not callable(fn):
        raise TypeError(
            f"costwatch.{decorator}(...) decorates a function, got {type(fn).__name__} {fn!r}"
        )
    return fn


def _money(value: Decimal | float | str | None) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | float | int | str):
        raise TypeError(
            f"costwatch: price_usd must be a Decimal, float, int or str amount, got {value!r}"
        )
    try:
        money = Decimal(str(value))
    except ArithmeticError:
        raise ConfigError("price_usd", value, "not a number") from None
    if not money.is_finite() or money < 0:
        raise ConfigError("price_usd", value, "must be a finite amount >= 0")
    return money
