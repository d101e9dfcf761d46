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
``stream_options.include_usage`` is set; ``instrument()`` sets it when the caller did not and this
module then hides that chunk, so the caller sees exactly the chunks it would have seen);
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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from time import perf_counter
from typing import TYPE_CHECKING, Any

from costwatch._core import runtime as _runtime
from costwatch._core.failopen import errors
from costwatch._core.record import TokenUsage, UsageSource
from costwatch.capture._usage import extract_provider_usage, extract_usage

if TYPE_CHECKING:
    from costwatch.accounting._recorder import CallSpec
    from costwatch.budgets._budget import Reservation

_MARK = "_costwatch_recording"
"""Attribute set on a hooked stream: hooking again (decorator around an instrumented client)
must not record the call twice."""

# --- watching items ------------------------------------------------------------------------


class StreamAccumulator:
    """What a stream has shown so far: reported usage, the response model, text for estimation.

    ``observe(item)`` is called with every item; it returns True for an item the caller must not
    see (the usage-only chunk costwatch asked for on the caller's behalf).
    """

    __slots__ = (
        "hide_usage_chunk",
        "usage",
        "response_model",
        "texts",
        "error_type",
        "anthropic",
        "a_input",
        "a_read",
        "a_write",
        "a_write_1h",
        "a_output",
        "a_thinking",
        "a_searches",
        "a_final",
        "service_tier",
    )

    def __init__(self, hide_usage_chunk: bool = False) -> None:
        self.hide_usage_chunk = hide_usage_chunk
        self.usage: TokenUsage | None = None
        self.response_model = ""
        self.texts: list[str] = []
        self.error_type = ""
        self.anthropic = False
        self.a_input = self.a_read = self.a_write = self.a_write_1h = 0
        self.a_output = self.a_thinking = self.a_searches = 0
        self.a_final = False
        self.service_tier = ""
        """The processing tier the stream said served it (OpenAI), if it said."""

    def observe(self, item: object) -> bool:
        handler = _item_handlers.get(type(item))
        if handler is None:
            handler = _handler_for(item)
            if len(_item_handlers) < 512:
                _item_handlers[type(item)] = handler
        return handler(self, item)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def outcome(self, model: str) -> tuple[TokenUsage | None, UsageSource]:
        """Usage to record now: reported, partly estimated (Anthropic cut short), or None."""
        if self.usage is not None:
            return self.usage, "reported"
        if not self.anthropic:
            return None, "none"
        output, thinking = self.a_output, min(self.a_thinking, self.a_output)
        source: UsageSource = "reported"
        if not self.a_final and self.texts and _runtime.runtime().estimate:
            from costwatch._core.tokens import count_tokens

            output, thinking, source = count_tokens(self.text, model)[0], 0, "estimated"
        return (
            TokenUsage(
                input=self.a_input,
                cache_read=self.a_read,
                cache_write=max(self.a_write, self.a_write_1h),
                output=output - thinking,
                reasoning=thinking,
                cache_write_1h=self.a_write_1h,
                web_searches=self.a_searches,
            ),
            source,
        )


Handler = Callable[[StreamAccumulator, Any], bool]


def _ignore(acc: StreamAccumulator, item: Any) -> bool:
    return False


def _openai_chunk_usage(acc: StreamAccumulator, chunk: Any) -> bool:
    """The usage of an OpenAI chunk (chat or legacy completion); True: the chunk is the
    usage-only one costwatch asked for, to be hidden from the caller."""
    usage = chunk.usage
    if usage is not None:
        acc.usage = extract_provider_usage("openai", usage)
        tier = getattr(chunk, "service_tier", None)
        if isinstance(tier, str):
            acc.service_tier = tier
        acc.response_model = chunk.model or acc.response_model
        if acc.hide_usage_chunk and not chunk.choices:
            return True
    elif acc.hide_usage_chunk:
        # With include_usage the API sends ``"usage": null`` on every chunk; without it the key
        # is absent.  Forget that it was set, so ``to_dict()``/``exclude_unset`` match too.
        fields_set = getattr(chunk, "__pydantic_fields_set__", None)
        if fields_set is not None:
            fields_set.discard("usage")
    if not acc.response_model:
        acc.response_model = chunk.model or ""
    return False


def _on_text_completion_chunk(acc: StreamAccumulator, chunk: Any) -> bool:
    """A legacy ``completions`` chunk (``object: text_completion``): text in ``choices[].text``."""
    if _openai_chunk_usage(acc, chunk):
        return True
    for choice in chunk.choices:
        if choice.text:
            acc.texts.append(choice.text)
    return False


def _on_gemini_chunk(acc: StreamAccumulator, chunk: Any) -> bool:
    """A google-genai ``GenerateContentResponse`` chunk: usage counts are running totals (the
    last chunk has them all), text in ``candidates[].content.parts[].text``."""
    meta = chunk.usage_metadata
    if meta is not None and getattr(meta, "candidates_token_count", None) is not None:
        acc.usage = extract_provider_usage("gemini", meta)
    if chunk.model_version:
        acc.response_model = chunk.model_version
    for candidate in chunk.candidates or ():
        content = candidate.content
        for part in (content.parts if content is not None else None) or ():
            if part.text:
                acc.texts.append(part.text)
    return False


def _on_chat_chunk(acc: StreamAccumulator, chunk: Any) -> bool:
    if _openai_chunk_usage(acc, chunk):
        return True
    texts = acc.texts
    for choice in chunk.choices:
        delta = choice.delta
        if delta is None:
            continue
        content = delta.content
        if content:
            texts.append(content)
        calls = delta.tool_calls
        if calls:
            for call in calls:
                function = call.function
                if function is not None and function.arguments:
                    texts.append(function.arguments)
    return False


def _on_typed_event(acc: StreamAccumulator, event: Any) -> bool:
    handler = _event_handlers.get(event.type)
    if handler is not None:
        handler(acc, event)
    return False


def _on_message_start(acc: StreamAccumulator, event: Any) -> None:
    message = event.message
    acc.anthropic = True
    acc.response_model = message.model or acc.response_model
    usage = message.usage
    if usage is None:
        return
    start = extract_provider_usage("anthropic", usage)
    acc.a_input = start.input
    acc.a_read = start.cache_read
    acc.a_write = start.cache_write
    acc.a_write_1h = start.cache_write_1h
    acc.a_output = start.output + start.reasoning
    acc.a_thinking = start.reasoning
    acc.a_searches = start.web_searches


def _on_message_delta(acc: StreamAccumulator, event: Any) -> None:
    usage = event.usage
    acc.anthropic = True
    if usage is None:
        return
    acc.a_final = True
    acc.a_output = usage.output_tokens or 0
    # Newer API versions repeat the (cumulative) input-side counts here; they win when present.
    value = getattr(usage, "input_tokens", None)
    if value is not None:
        acc.a_input = value
    value = getattr(usage, "cache_read_input_tokens", None)
    if value is not None:
        acc.a_read = value
    value = getattr(usage, "cache_creation_input_tokens", None)
    if value is not None:
        acc.a_write = value
        acc.a_write_1h = min(acc.a_write_1h, value)
    details = getattr(usage, "output_tokens_details", None)
    if details is not None:
        acc.a_thinking = getattr(details, "thinking_tokens", None) or 0
    tools = getattr(usage, "server_tool_use", None)
    if tools is not None:
        acc.a_searches = getattr(tools, "web_search_requests", None) or 0


def _on_content_block_delta(acc: StreamAccumulator, event: Any) -> None:
    delta = event.delta
    kind = delta.type
    if kind == "text_delta":
        acc.texts.append(delta.text)
    elif kind == "thinking_delta":
        acc.texts.append(delta.thinking)
    elif kind == "input_json_delta":
        acc.texts.append(delta.partial_json)


def _on_response_delta(acc: StreamAccumulator, event: Any) -> None:
    delta = event.delta
    if isinstance(delta, str) and delta:
        acc.texts.append(delta)


def _on_response_started(acc: StreamAccumulator, event: Any) -> None:
    response = event.response
    if response is not None and not acc.response_model:
        acc.response_model = response.model or ""


def _on_response_finished(acc: StreamAccumulator, event: Any) -> None:
    response = event.response
    if response is None:
        return
    acc.response_model = response.model or acc.response_model
    found = extract_usage(response)  # its usage, and the searches its output lists
    if found is not None:
        acc.usage = found[0]
    tier = getattr(response, "service_tier", None)
    if isinstance(tier, str):
        acc.service_tier = tier
    if event.type == "response.failed":
        error = getattr(response, "error", None)
        acc.error_type = (
            (getattr(error, "code", None) or "response_failed") if error else ("response_failed")
        )


def _on_response_error(acc: StreamAccumulator, event: Any) -> None:
    acc.error_type = getattr(event, "code", None) or "stream_error"


_event_handlers: dict[str, Callable[[StreamAccumulator, Any], None]] = {
    "message_start": _on_message_start,
    "message_delta": _on_message_delta,
    "content_block_delta": _on_content_block_delta,
    "response.created": _on_response_started,
    "response.output_text.delta": _on_response_delta,
    "response.refusal.delta": _on_response_delta,
    "response.function_call_arguments.delta": _on_response_delta,
    "response.reasoning_summary_text.delta": _on_response_delta,
    "response.reasoning_text.delta": _on_response_delta,
    "response.completed": _on_response_finished,
    "response.incomplete": _on_response_finished,
    "response.failed": _on_response_finished,
    "error": _on_response_error,
}

_item_handlers: dict[type, Handler] = {}


def _handler_for(item: object) -> Handler:
    kind = getattr(item, "object", None)
    if kind == "chat.completion.chunk":
        return _on_chat_chunk
    if kind == "text_completion":
        return _on_text_completion_chunk
    if type(item).__name__ == "GenerateContentResponse":
        return _on_gemini_chunk
    if isinstance(getattr(item, "type", None), str):
        return _on_typed_event
    return _ignore


# --- recording once ------------------------------------------------------------------------

_COMPLETE, _CLOSED, _FAILED = 0, 1, 2


class StreamRecording:
    """One streamed call: records it exactly once, in the context where it started."""

    __slots__ = (
        "spec",
        "model",
        "t0",
        "reservation",
        "prompt",
        "context",
        "acc",
        "started",
        "ended",
        "_done",
        "_lock",
    )

    def __init__(
        self,
        spec: CallSpec,
        model: str,
        t0: float,
        *,
        reservation: Reservation | None = None,
        prompt: object = None,
        hide_usage_chunk: bool = False,
        started: bool = True,
    ) -> None:
        self.spec = spec
        self.model = model
        self.t0 = t0
        self.reservation = reservation
        self.prompt = prompt
        self.context = contextvars.copy_context()
        self.acc = StreamAccumulator(hide_usage_chunk)
        self.started = started
        """False until a stream manager actually makes its request."""
        self.ended = 0.0
        """When a stream dropped by the garbage collector ended (its record is deferred)."""
        self._done = False
        self._lock = threading.Lock()

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
        acc = self.acc
        usage, source = acc.outcome(self.model)
        failed = how == _FAILED and isinstance(exc, Exception)
        error_type = type(exc).__name__ if failed and exc is not None else acc.error_type
        # Priced at the tier the stream said served it, whatever it asked for.
        spec = self.spec.at_tier(acc.service_tier) if acc.service_tier else self.spec
        self.context.run(
            spec.emit,
            self.model,
            usage,
            latency,
            status="error" if failed or acc.error_type else "ok",
            error_type=error_type,
            response_model=acc.response_model,
            usage_source=source,
            incomplete=how != _COMPLETE,
            prompt=self.prompt if usage is None else None,
            estimate_text=acc.text if usage is None and acc.texts else None,
            reservation=self.reservation,
        )

    def observe(self, item: object) -> bool:
        try:
            return self.acc.observe(item)
        except Exception as internal:
            errors.report("streams", internal)
            return False

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


def _watch_sync(inner: Iterator[Any], rec: StreamRecording) -> Iterator[Any]:
    observe = rec.observe
    try:
        for item in inner:
            if not observe(item):
                yield item
    except GeneratorExit:  # closed by the garbage collector: the caller dropped the stream
        rec.defer(_CLOSED)
        raise
    except BaseException as exc:
        rec.finish(_FAILED, exc)
        raise
    rec.finish(_COMPLETE)


async def _watch_async(inner: AsyncIterator[Any], rec: StreamRecording) -> AsyncIterator[Any]:
    observe = rec.observe
    try:
        async for item in inner:
            if not observe(item):
                yield item
    except GeneratorExit:  # aclose() by the event loop's finalizer, or by the collector
        rec.defer(_CLOSED)
        raise
    except BaseException as exc:
        rec.finish(_FAILED, exc)
        raise
    rec.finish(_COMPLETE)


def watch_generator(
    items: Iterator[Any] | AsyncIterator[Any],
    spec: CallSpec,
    model: str,
    t0: float,
    *,
    reservation: Reservation | None = None,
    prompt: object = None,
) -> Iterator[Any] | AsyncIterator[Any]:
    """A generator (async for an async one) of what ``items`` yields: a call's streamed chunks
    returned as a plain generator (google-genai), recorded once when it ends, fails or is
    dropped."""
    _ensure_drained()
    rec = StreamRecording(spec, model, t0, reservation=reservation, prompt=prompt)
    if isinstance(items, AsyncIterator):
        return _watch_async(items, rec)
    return _watch_sync(items, rec)


def _close_sync(ref: weakref.ref[Any], close: Callable[[Any], None], rec: StreamRecording) -> None:
    stream = ref()
    try:
        if stream is not None:
            close(stream)
    finally:
        rec.finish(_CLOSED)


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

_kinds: dict[type, tuple[int, str]] = {}
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
    if len(_kinds) < 512:
        _kinds[cls] = found
    return found


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
    prompt: object = None,
    hide_usage_chunk: bool = False,
) -> Any:
    """Hook an SDK stream returned by a call so it is recorded once; ``None`` if not a stream.

    Returns ``result`` itself (hooked in place).  A stream already hooked (a decorated function
    returning the stream of an instrumented client) is returned as is: it is recorded once, by
    the inner hook.  ``prompt`` is kept to estimate input tokens should usage never arrive;
    ``hide_usage_chunk`` says costwatch injected ``include_usage`` and must hide its chunk.
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
        hide_usage_chunk=hide_usage_chunk,
        started=kind not in (_MANAGER, _ASYNC_MANAGER),
    )
    try:
        _hook(result, kind, name, rec)
    except BaseException:
        rec.discard()
        raise
    return result


def _hook(result: Any, kind: int, name: str, rec: StreamRecording) -> None:
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
        _hook_manager(result, name, rec, asynchronous=kind == _ASYNC_MANAGER)
    setattr(result, _MARK, rec)


def _hook_raw(stream: Any, rec: StreamRecording) -> None:
    inner = stream._iterator  # the SDK's item generator (made lazily by anthropic)
    stream._iterator = _watch_sync(inner, rec)
    stream.close = functools.partial(_close_sync, weakref.ref(stream), type(stream).close, rec)
    setattr(stream, _MARK, rec)


def _hook_async_raw(stream: Any, rec: StreamRecording) -> None:
    inner = stream._iterator
    stream._iterator = _watch_async(inner, rec)
    stream.close = functools.partial(_close_async, weakref.ref(stream), type(stream).close, rec)
    setattr(stream, _MARK, rec)


def _hook_manager(manager: Any, name: str, rec: StreamRecording, *, asynchronous: bool) -> None:
    """Managers make their request on ``__enter__``: hook the raw stream that request returns."""
    attribute = f"_{name}__api_request"
    request = getattr(manager, attribute)
    if asynchronous:
        setattr(manager, attribute, _request_async(request, rec))
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


async def _request_async(request: Awaitable[Any], rec: StreamRecording) -> Any:
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
_api_response_kinds: dict[type, bool | None] = {}


def _api_response_kind(cls: type) -> bool | None:
    """False for a sync SDK ``APIResponse``, True for an async one, None for anything else."""
    if cls in _api_response_kinds:
        return _api_response_kinds[cls]
    found: bool | None = None
    for base in cls.__mro__:
        if base.__module__.partition(".")[0] in _SDK_PACKAGES and base.__name__ in _API_RESPONSES:
            found = _API_RESPONSES[base.__name__]
            break
    if len(_api_response_kinds) < 512:
        _api_response_kinds[cls] = found
    return found


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
    result.parse = functools.partial(hook, weakref.ref(result), type(result).parse, rec)
    return True


def _parse_sync(
    ref: weakref.ref[Any],
    parse: Callable[..., Any],
    rec: StreamRecording,
    *args: Any,
    **kwargs: Any,
) -> Any:
    parsed = parse(ref(), *args, **kwargs)
    _parsed(parsed, rec)
    return parsed


async def _parse_async(
    ref: weakref.ref[Any],
    parse: Callable[..., Any],
    rec: StreamRecording,
    *args: Any,
    **kwargs: Any,
) -> Any:
    parsed = await parse(ref(), *args, **kwargs)
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
        extracted = extract_usage(parsed)
        if extracted is not None:
            rec.acc.usage, rec.acc.response_model = extracted
        rec.finish(_COMPLETE)
    except Exception as internal:
        errors.report("streams", internal)
