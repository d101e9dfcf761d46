"""Record streamed provider calls exactly once, without changing what the caller receives.

An SDK stream (``openai``/``anthropic`` ``Stream`` and ``AsyncStream``) is hooked *in place*:
its item iterator is replaced by one that watches each item on its way to the caller, and its
``close()`` by one that records after closing.  The caller keeps the very object the SDK
returned (same type, ``response``, context-manager protocol, helpers).  The higher-level
helpers (``messages.stream()``, ``chat.completions.stream()``, ``responses.stream()``) are hooked
through the raw stream they wrap, or through the request their manager makes on ``__enter__``.

The call is recorded once, whichever comes first: normal exhaustion; ``close()`` (also from a
``with`` block) or garbage collection of an unfinished stream (``incomplete=True``); an exception
while streaming (``status="error"``).  What is known is recorded: usage the provider reported,
else tokens estimated from the prompt and the text seen.  The record is made in the context
(tags, request) where the call started, whichever thread or task finishes the stream.

Usage arrives as follows: OpenAI chat streams on a final usage-only chunk (when
``stream_options.include_usage`` is set; ``instrument()`` sets it when the caller did not and the
server is known to send that chunk only when asked, and this module then hides that chunk, so
the caller sees exactly the chunks the server would have sent: see ``providers.openai``);
Responses API streams on ``response.completed`` (or ``.incomplete`` / ``.failed``); Anthropic
streams on ``message_start`` (input and cache) and ``message_delta`` (cumulative output).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import functools
import os
import queue
import threading
import time
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
)
from dataclasses import KW_ONLY, dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any

from costwatch._core import runtime as _runtime
from costwatch._core.failopen import errors
from costwatch._core.memo import BoundedMemo
from costwatch._core.record import EMPTY_USAGE, InvalidUsage, TokenUsage, UsageSource
from costwatch.capture._observed import Observed
from costwatch.capture._usage import extract_tokens
from costwatch.capture.providers import anthropic, gemini, openai

if TYPE_CHECKING:
    from costwatch.accounting._recorder import CallSpec
    from costwatch.budgets._budget import Reservation

_MARK = "_costwatch_recording"
"""Attribute set on a hooked stream: hooking again (decorator around an instrumented client)
must not record the call twice."""

# --- watching items ------------------------------------------------------------------------

Handler = Callable[[Observed, Any], bool]
"""Looks at one item; True: the item is costwatch's own (the usage-only chunk it asked for) and
the caller must not see it."""


def _on_text(obs: Observed, text: str) -> bool:
    obs.texts.append(text)
    return False


def _on_any(obs: Observed, item: Any) -> bool:
    """Any other item: a whole response or a JSON chunk that may carry usage."""
    found = extract_tokens(item)
    if found is not None:
        obs.tokens = found[0]
        obs.response_model = found[1] or obs.response_model
    return False


_EVENT_HANDLERS = {**openai.EVENT_HANDLERS, **anthropic.EVENT_HANDLERS}


def _on_typed_event(obs: Observed, event: Any) -> bool:
    handler = _EVENT_HANDLERS.get(event.type)
    if handler is None:
        return _on_any(obs, event)  # an event we do not follow, or a whole typed response
    handler(obs, event)
    return False


def _handler_for(item: object) -> Handler:
    kind = getattr(item, "object", None)
    if kind == "chat.completion.chunk":
        return openai.on_chat_chunk
    if kind == "text_completion":
        return openai.on_text_completion_chunk
    if type(item).__name__ == "GenerateContentResponse":
        return gemini.on_chunk
    if isinstance(item, str):
        return _on_text
    if isinstance(getattr(item, "type", None), str):
        return _on_typed_event
    return _on_any


_item_handlers: BoundedMemo[type, Handler] = BoundedMemo()


def observe(obs: Observed, item: object) -> bool:
    """Let the item's provider update ``obs``; True: hide the item from the caller."""
    handler = _item_handlers.get(type(item))
    if handler is None:
        handler = _item_handlers.remember(type(item), _handler_for(item))
    return handler(obs, item)


def outcome(obs: Observed, model: str, estimate: bool) -> tuple[TokenUsage | None, UsageSource]:
    """Usage to record now: reported, partly estimated (a stream cut short before its final
    count, with ``estimate`` on), invalid (a count the stream reported is not one: no
    tokens, ``obs.invalid`` says which), or None."""
    if obs.invalid is None:
        try:
            return _outcome(obs, model, estimate)
        except InvalidUsage as exc:
            obs.invalid = exc
    return EMPTY_USAGE, "invalid"


def _outcome(obs: Observed, model: str, estimate: bool) -> tuple[TokenUsage | None, UsageSource]:
    if obs.tokens is not None:
        return TokenUsage.of(obs.tokens), "reported"
    state = obs.provider_state
    if state is None:
        return None, "none"
    if not state.final and obs.texts and estimate:
        from costwatch._core.tokens import count_tokens

        return TokenUsage.of(state.tokens(count_tokens(obs.text, model)[0])), "estimated"
    return TokenUsage.of(state.tokens()), "reported"


# --- recording once ------------------------------------------------------------------------

_COMPLETE, _CLOSED, _FAILED = 0, 1, 2


@dataclass(slots=True, eq=False)
class StreamRecording:
    """One streamed call: records it exactly once, in the context where it started."""

    spec: CallSpec
    model: str
    t0: float
    _: KW_ONLY
    reservation: Reservation | None = None
    prompt: object = None
    observed: Observed = field(default_factory=Observed)
    started: bool = True
    """False until a stream manager actually makes its request."""
    context: contextvars.Context = field(default_factory=contextvars.copy_context, init=False)
    defer_close: bool = field(default=False, init=False)
    """A close of the watched items may come from the garbage collector (a hooked SDK
    iterator, whose explicit ``close()`` records through its own hook): record it later."""
    ended: float = field(default=0.0, init=False)
    """When a stream dropped by the garbage collector ended (its record is deferred)."""
    _done: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def done(self) -> bool:
        return self._done

    def discard(self) -> None:
        """Never record (hooking failed: the call is left to be recorded some other way)."""
        self._done = True

    def release(self) -> None:
        """Never record, and free the budget hold: an inner hook records this call."""
        self._done = True
        if self.reservation is not None:
            self.reservation.settle(None)

    def finish(self, how: int, exc: BaseException | None = None) -> None:
        """Record the call (once); ``how`` is complete, closed early, or failed."""
        with self._lock:
            if self._done:
                return
            self._done = True
        try:
            self._record(how, exc)
        except Exception as internal:
            errors.report("streams", internal)

    def _record(self, how: int, exc: BaseException | None) -> None:
        if not self.started:  # a stream manager never entered: no call was made
            if self.reservation is not None:
                self.reservation.settle(None)
            return
        latency = (self.ended or perf_counter()) - self.t0
        obs = self.observed
        if obs.probe and how == _COMPLETE:
            openai.learn_usage_unasked(obs.probe, obs.tokens is not None or obs.invalid is not None)
        usage, source = outcome(obs, self.model, _runtime.runtime().estimate)
        failed = how == _FAILED and isinstance(exc, Exception)
        error_type = type(exc).__name__ if failed and exc is not None else obs.error_type
        # Priced at the tier the stream said served it, whatever it asked for.
        spec = self.spec.at_tier(obs.service_tier) if obs.service_tier else self.spec
        self.context.run(
            spec.emit,
            self.model,
            usage,
            latency,
            status="error" if failed or obs.error_type else "ok",
            error_type=error_type,
            response_model=obs.response_model,
            usage_source=source,
            incomplete=how != _COMPLETE,
            prompt=self.prompt if usage is None else None,
            estimate_text=obs.text if usage is None and obs.texts else None,
            reservation=self.reservation,
        )
        if obs.invalid is not None:
            errors.report("usage", obs.invalid)

    def observe(self, item: object) -> bool:
        try:
            return observe(self.observed, item)
        except InvalidUsage as exc:  # recorded as invalid when the stream ends
            self.observed.invalid = exc
            return False
        except Exception as internal:
            errors.report("streams", internal)
            return False

    def closed(self) -> None:
        """The watched items were closed before their end."""
        if self.defer_close:
            self.defer(_CLOSED)
        else:
            self.finish(_CLOSED)

    def defer(self, how: int) -> None:
        """Finish later, from a safe place: we may be inside the garbage collector."""
        if not self._done:
            self.ended = perf_counter()
            _deferred.put((self, how))

    def __del__(self) -> None:
        if not self._done:
            # Resurrected by the queue until the record is made.  At interpreter shutdown
            # the module may already be torn down: nothing can be recorded then.
            with contextlib.suppress(Exception):
                self.defer(_CLOSED)


# --- records of streams the garbage collector finished ------------------------------------------
#
# A dropped stream is finalized by the garbage collector, which can run at any allocation,
# also while this thread holds a sink's or the ledger's lock: recording right there could
# deadlock.  Finalizers only put the recording on a queue whose ``put`` is reentrant; the
# records are made by ``drain()``: at the next hooked stream, by a daemon thread within a
# second, at exit, or when a test calls it.

_deferred: queue.SimpleQueue[tuple[StreamRecording, int]] = queue.SimpleQueue()
_drain_lock = threading.RLock()
_poller_lock = threading.Lock()
_poller_started = False
_POLL_S = 1.0


def drain() -> None:
    """Make the records of streams finished by garbage collection (safe to call any time).

    Returns once every record queued before the call is made, also one the poller thread
    took off the queue and is still making: the lock is taken even when the queue is empty.
    """
    with _drain_lock:
        while True:
            try:
                rec, how = _deferred.get_nowait()
            except queue.Empty:
                return
            rec.finish(how)


def _poll() -> None:
    while True:
        time.sleep(_POLL_S)
        try:
            drain()
        except Exception as internal:  # strict mode re-raises: nowhere to raise to here
            with contextlib.suppress(Exception):
                errors.report("streams", internal)


def _after_fork_in_child() -> None:
    """A forked worker (gunicorn, multiprocessing) has no poller thread and fresh locks."""
    global _poller_started, _drain_lock, _poller_lock
    _poller_started = False
    _drain_lock = threading.RLock()
    _poller_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _ensure_drained() -> None:
    """At each hooked stream: make deferred records, and make sure something will later."""
    global _poller_started
    if not _deferred.empty():
        drain()
    if _poller_started:
        return
    with _poller_lock:
        if _poller_started:
            return
        threading.Thread(target=_poll, name="costwatch-stream-records", daemon=True).start()
        atexit.register(drain)
        _poller_started = True


# The one mechanism that watches what a call yields: SDK streams' item iterators, plain
# generators of chunks an SDK returns (google-genai), and decorated generator functions alike.
# It forwards ``send``/``throw``/``close`` and the return value, so the caller cannot tell it
# is there.  The async twin differs only by ``await`` and the async protocol's names.


def _as_generator(items: Iterator[Any]) -> Generator[Any, Any, Any]:
    return (yield from items)


async def _as_async_generator(items: AsyncIterator[Any]) -> AsyncGenerator[Any, Any]:
    async for item in items:
        yield item


def _watch_sync(inner: Iterator[Any], rec: StreamRecording) -> Generator[Any, Any, Any]:
    if not isinstance(inner, Generator):  # an SDK item iterator that is not a generator
        inner = _as_generator(inner)
    observe_item = rec.observe
    to_send: Any = None
    to_throw: BaseException | None = None
    try:
        while True:
            try:
                if to_throw is not None:
                    exc, to_throw = to_throw, None
                    item = inner.throw(exc)
                else:
                    item = inner.send(to_send)
            except StopIteration as stop:
                rec.finish(_COMPLETE)
                return stop.value
            if observe_item(item):
                continue
            try:
                to_send = yield item
            except GeneratorExit:
                raise
            except BaseException as exc:
                to_throw = exc
    except GeneratorExit:  # closed by the caller, or dropped and finalized by the collector
        try:
            inner.close()
        finally:
            rec.closed()
        raise
    except BaseException as exc:
        rec.finish(_FAILED, exc)
        raise


# The asyncio twin of _watch_sync(): differs only by await and the asynchronous iteration
# protocol's names (asend/athrow/aclose, StopAsyncIteration, which carries no return value).
async def _watch_async(inner: AsyncIterator[Any], rec: StreamRecording) -> AsyncGenerator[Any, Any]:
    if not isinstance(inner, AsyncGenerator):
        inner = _as_async_generator(inner)
    observe_item = rec.observe
    to_send: Any = None
    to_throw: BaseException | None = None
    try:
        while True:
            try:
                if to_throw is not None:
                    exc, to_throw = to_throw, None
                    item = await inner.athrow(exc)
                else:
                    item = await inner.asend(to_send)
            except StopAsyncIteration:
                rec.finish(_COMPLETE)
                return
            if observe_item(item):
                continue
            try:
                to_send = yield item
            except GeneratorExit:
                raise
            except BaseException as exc:
                to_throw = exc
    except GeneratorExit:  # aclose() by the caller, the event loop's finalizer or the collector
        try:
            await inner.aclose()
        finally:
            rec.closed()
        raise
    except BaseException as exc:
        rec.finish(_FAILED, exc)
        raise


def watch_generator(
    items: Generator[Any, Any, Any] | AsyncGenerator[Any, Any],
    spec: CallSpec,
    model: str,
    t0: float,
    *,
    reservation: Reservation | None = None,
    prompt: object = None,
) -> Generator[Any, Any, Any] | AsyncGenerator[Any, Any]:
    """A generator (async for an async one) of what ``items`` yields, recorded once when it
    ends, fails or is closed: a decorated generator function's items, or a call's streamed
    chunks returned as a plain generator (google-genai)."""
    _ensure_drained()
    rec = StreamRecording(spec, model, t0, reservation=reservation, prompt=prompt)
    if isinstance(items, AsyncGenerator):
        return _watch_async(items, rec)
    return _watch_sync(items, rec)


def _close_sync(ref: weakref.ref[Any], close: Callable[[Any], None], rec: StreamRecording) -> None:
    stream = ref()
    try:
        if stream is not None:
            close(stream)
    finally:
        rec.finish(_CLOSED)


# The asyncio twin of _close_sync(): differs only by await.
async def _close_async(
    ref: weakref.ref[Any], close: Callable[[Any], Awaitable[None]], rec: StreamRecording
) -> None:
    stream = ref()
    try:
        if stream is not None:
            await close(stream)
    finally:
        rec.finish(_CLOSED)


# --- classifying what a call returned ----------------------------------------------------------

_RAW, _ASYNC_RAW, _HELPER, _MANAGER, _ASYNC_MANAGER = 1, 2, 3, 4, 5

_RAW_STREAMS = {"Stream": _RAW, "AsyncStream": _ASYNC_RAW}
_HELPER_STREAMS = frozenset(
    {
        "MessageStream",
        "AsyncMessageStream",
        "BetaMessageStream",
        "BetaAsyncMessageStream",
        "ChatCompletionStream",
        "AsyncChatCompletionStream",
        "ResponseStream",
        "AsyncResponseStream",
    }
)
_MANAGERS = {
    "MessageStreamManager": _MANAGER,
    "BetaMessageStreamManager": _MANAGER,
    "ChatCompletionStreamManager": _MANAGER,
    "ResponseStreamManager": _MANAGER,
    "AsyncMessageStreamManager": _ASYNC_MANAGER,
    "BetaAsyncMessageStreamManager": _ASYNC_MANAGER,
    "AsyncChatCompletionStreamManager": _ASYNC_MANAGER,
    "AsyncResponseStreamManager": _ASYNC_MANAGER,
}

_SDK_PACKAGES = frozenset({"openai", "anthropic"})

_kinds: BoundedMemo[type, tuple[int, str]] = BoundedMemo()
"""class -> (kind, name of the SDK class it derives from); kind 0 = not a stream."""


def _kind_of(cls: type) -> tuple[int, str]:
    found = _kinds.get(cls)
    if found is not None:
        return found
    found = (0, "")
    for base in cls.__mro__:
        if base.__module__.partition(".")[0] not in _SDK_PACKAGES:
            continue
        name = base.__name__
        kind = _RAW_STREAMS.get(name) or _MANAGERS.get(name)
        if kind is None and name in _HELPER_STREAMS:
            kind = _HELPER
        if kind is not None:
            found = (kind, name)
            break
    return _kinds.remember(cls, found)


def is_stream(obj: object) -> bool:
    """Whether ``obj`` is an SDK stream (or stream helper/manager) that ``wrap_stream`` records."""
    return _kind_of(type(obj))[0] != 0


def wrap_stream(
    result: Any,
    spec: CallSpec,
    model: str,
    t0: float,
    *,
    reservation: Reservation | None = None,
    reserve: Callable[[], Awaitable[Reservation | None]] | None = None,
    prompt: object = None,
    hide_usage_chunk: bool = False,
    probe: str = "",
) -> Any:
    """Hook an SDK stream returned by a call so it is recorded once; ``None`` if not a stream.

    Returns ``result`` itself (hooked in place).  A stream already hooked (a decorated function
    returning the stream of an instrumented client) is returned as is: it is recorded once, by
    the inner hook.  ``reserve``: for an async stream manager, the budget reservation to await
    when it is entered, before its request is made (``BudgetExceeded`` then raises at
    ``async with``).  ``prompt`` is kept to estimate input tokens should usage never arrive;
    ``hide_usage_chunk`` says costwatch injected ``include_usage`` and must hide its chunk;
    ``probe`` names the server a stream was sent to unasked, to learn whether it sends usage.
    """
    kind, name = _kind_of(type(result))
    if kind == 0:
        return None
    _ensure_drained()
    if getattr(result, _MARK, None) is not None:
        if reservation is not None:  # recorded (and charged) by the inner hook
            reservation.settle(None)
        return result
    rec = StreamRecording(
        spec,
        model,
        t0,
        reservation=reservation,
        prompt=prompt,
        observed=Observed(hide_usage_chunk, probe),
        started=kind not in (_MANAGER, _ASYNC_MANAGER),
    )
    try:
        _hook(result, kind, name, rec, reserve)
    except BaseException:
        rec.discard()
        raise
    return result


def _hook(
    result: Any,
    kind: int,
    name: str,
    rec: StreamRecording,
    reserve: Callable[[], Awaitable[Reservation | None]] | None = None,
) -> None:
    if kind == _RAW:
        _hook_raw(result, rec)
    elif kind == _ASYNC_RAW:
        _hook_async_raw(result, rec)
    elif kind == _HELPER:
        raw = result._raw_stream
        if getattr(raw, _MARK, None) is None:
            raw_kind = _kind_of(type(raw))[0]
            if raw_kind == _RAW:
                _hook_raw(raw, rec)
            elif raw_kind == _ASYNC_RAW:
                _hook_async_raw(raw, rec)
            else:
                raise TypeError(f"costwatch: unexpected raw stream {type(raw).__name__} in {name}")
        else:
            rec.release()
    else:
        _hook_manager(result, name, rec, asynchronous=kind == _ASYNC_MANAGER, reserve=reserve)
    setattr(result, _MARK, rec)


def _hook_raw(stream: Any, rec: StreamRecording) -> None:
    inner = stream._iterator  # the SDK's item generator (made lazily by anthropic)
    rec.defer_close = True
    stream._iterator = _watch_sync(inner, rec)
    stream.close = functools.partial(_close_sync, weakref.ref(stream), type(stream).close, rec)
    setattr(stream, _MARK, rec)


def _hook_async_raw(stream: Any, rec: StreamRecording) -> None:
    inner = stream._iterator
    rec.defer_close = True
    stream._iterator = _watch_async(inner, rec)
    stream.close = functools.partial(_close_async, weakref.ref(stream), type(stream).close, rec)
    setattr(stream, _MARK, rec)


def _hook_manager(
    manager: Any,
    name: str,
    rec: StreamRecording,
    *,
    asynchronous: bool,
    reserve: Callable[[], Awaitable[Reservation | None]] | None = None,
) -> None:
    """Managers make their request on ``__enter__``: hook the raw stream that request returns."""
    attribute = f"_{name}__api_request"
    request = getattr(manager, attribute)
    if asynchronous:
        setattr(manager, attribute, _AsyncRequest(request, rec, reserve))
    else:
        setattr(manager, attribute, functools.partial(_request_sync, request, rec))


def _begin(rec: StreamRecording) -> None:
    rec.started = True
    rec.t0 = perf_counter()


def _attach(raw: Any, rec: StreamRecording, asynchronous: bool) -> None:
    try:
        if getattr(raw, _MARK, None) is None:
            (_hook_async_raw if asynchronous else _hook_raw)(raw, rec)
        else:  # already recorded by an inner hook: this one has nothing to record
            rec.release()
    except Exception as internal:
        errors.report("streams", internal)


def _request_sync(request: Callable[[], Any], rec: StreamRecording) -> Any:
    _begin(rec)
    try:
        raw = request()
    except BaseException as exc:
        rec.finish(_FAILED, exc)
        raise
    _attach(raw, rec, asynchronous=False)
    return raw


class _AsyncRequest:
    """What an async manager awaits on ``__aenter__`` in place of its request: an awaitable,
    not a coroutine, so a manager never entered leaves the one "never awaited" warning the SDK's
    own request gives, not a second one for costwatch's."""

    __slots__ = ("request", "rec", "reserve")

    def __init__(
        self,
        request: Awaitable[Any],
        rec: StreamRecording,
        reserve: Callable[[], Awaitable[Reservation | None]] | None,
    ) -> None:
        self.request = request
        self.rec = rec
        self.reserve = reserve

    def __await__(self) -> Generator[Any, None, Any]:
        return _request_async(self.request, self.rec, self.reserve).__await__()


async def _request_async(
    request: Awaitable[Any],
    rec: StreamRecording,
    reserve: Callable[[], Awaitable[Reservation | None]] | None = None,
) -> Any:
    if reserve is not None:
        try:
            rec.reservation = await reserve()
        except BaseException:  # refused (BudgetExceeded) or cancelled: nothing is sent
            rec.discard()
            close = getattr(request, "close", None)
            if close is not None:  # the SDK's request coroutine, never to be awaited
                close()
            raise
    _begin(rec)
    try:
        raw = await request
    except BaseException as exc:
        rec.finish(_FAILED, exc)
        raise
    _attach(raw, rec, asynchronous=True)
    return raw


# --- responses the caller parses itself (``with_streaming_response``) ---------------------------

_API_RESPONSES = {"APIResponse": False, "AsyncAPIResponse": True}
_api_response_kinds: BoundedMemo[type, bool | None] = BoundedMemo()


def _api_response_kind(cls: type) -> bool | None:
    """False for a sync SDK ``APIResponse``, True for an async one, None for anything else."""
    if cls in _api_response_kinds:
        return _api_response_kinds[cls]
    found: bool | None = None
    for base in cls.__mro__:
        if base.__module__.partition(".")[0] in _SDK_PACKAGES and base.__name__ in _API_RESPONSES:
            found = _API_RESPONSES[base.__name__]
            break
    return _api_response_kinds.remember(cls, found)


def is_api_response(obj: object) -> bool:
    """Whether ``obj`` is an SDK ``APIResponse`` whose body the caller reads itself."""
    return _api_response_kind(type(obj)) is not None


def watch_api_response(
    result: Any,
    spec: CallSpec,
    model: str,
    t0: float,
    *,
    reservation: Reservation | None = None,
    prompt: object = None,
) -> bool:
    """Record a ``with_streaming_response`` call when the caller parses its body.

    The body is the caller's to read: costwatch must not consume it.  ``parse()`` is hooked on
    the instance: a parsed object gives the usage, a parsed stream is hooked like any other.
    A response the caller reads raw (``iter_lines()``) is recorded when it is dropped, as
    incomplete, with tokens estimated from the prompt.  False if ``result`` is not such a response.
    """
    asynchronous = _api_response_kind(type(result))
    if asynchronous is None:
        return False
    _ensure_drained()
    rec = StreamRecording(spec, model, t0, reservation=reservation, prompt=prompt)
    hook = _parse_async if asynchronous else _parse_sync
    # The hook holds the response itself: ``create(...).parse()`` in one expression drops the
    # caller's last reference before ``parse`` runs.  The cycle this makes (response -> hook ->
    # response) is freed by the collector, which then records a body that was never parsed.
    result.parse = functools.partial(hook, result, type(result).parse, rec)
    return True


def _parse_sync(
    response: Any,
    parse: Callable[..., Any],
    rec: StreamRecording,
    *args: Any,
    **kwargs: Any,
) -> Any:
    parsed = parse(response, *args, **kwargs)
    _parsed(parsed, rec)
    return parsed


# The asyncio twin of _parse_sync(): differs only by await.
async def _parse_async(
    response: Any,
    parse: Callable[..., Any],
    rec: StreamRecording,
    *args: Any,
    **kwargs: Any,
) -> Any:
    parsed = await parse(response, *args, **kwargs)
    _parsed(parsed, rec)
    return parsed


def _parsed(parsed: Any, rec: StreamRecording) -> None:
    try:
        if rec.done or getattr(parsed, _MARK, None) is not None:
            return
        kind = _kind_of(type(parsed))[0]
        if kind == _RAW:
            _hook_raw(parsed, rec)
            return
        if kind == _ASYNC_RAW:
            _hook_async_raw(parsed, rec)
            return
        try:
            found = extract_tokens(parsed)
        except InvalidUsage as exc:
            rec.observed.invalid = exc
            found = None
        if found is not None:
            rec.observed.tokens, rec.observed.response_model = found
        rec.finish(_COMPLETE)
    except Exception as internal:
        errors.report("streams", internal)
