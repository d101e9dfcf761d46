"""The call wrappers ``instrument()`` puts on SDK methods: what one patched method records
(``Endpoint``), the budget preflight before the provider call, and recording after it, for
plain, async and stream-manager methods.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import KW_ONLY, dataclass, field
from time import perf_counter
from types import AsyncGeneratorType, GeneratorType
from typing import TYPE_CHECKING, Any

from costwatch._core import runtime as _runtime
from costwatch._core.context import set_recorded
from costwatch._core.errors import BudgetExceeded
from costwatch._core.failopen import FailOpen, errors
from costwatch._core.record import InvalidUsage
from costwatch._core.tokens import count_prompt_tokens
from costwatch.accounting._recorder import CallSpec
from costwatch.capture._streams import (
    is_api_response,
    is_stream,
    watch_api_response,
    watch_generator,
    wrap_stream,
)
from costwatch.capture._usage import cached_reader, extract_tokens, record_invalid
from costwatch.capture.providers import openai

if TYPE_CHECKING:
    from costwatch.budgets._budget import Reservation


class SdkCalls:
    """Counts the SDK calls instrumentation handles in one context: a framework integration
    (LangChain, LiteLLM) sets a fresh one when a model run starts and, when it ends, leaves
    the run to the SDK's record if any was made, so no call is recorded twice."""

    __slots__ = ("count", "offered")

    def __init__(self) -> None:
        self.count = 0
        self.offered: Reservation | None = None
        """A budget hold the framework took for this model run: the first SDK call takes it
        (and settles it) instead of reserving again, so the run is held once."""


sdk_calls_var: ContextVar[SdkCalls | None] = ContextVar("costwatch_sdk_calls", default=None)
watched = False
"""Sticky: an integration has set ``sdk_calls_var`` (a plain call skips reading it)."""


def watch_sdk_calls() -> SdkCalls:
    """Start counting the SDK calls made from here on in this context."""
    global watched
    watched = True
    calls = SdkCalls()
    sdk_calls_var.set(calls)
    return calls


@dataclass(slots=True, eq=False)
class Endpoint:
    """One patched method: what it records and how to read its request."""

    spec: CallSpec
    prompt_key: str
    max_keys: tuple[str, ...]
    _: KW_ONLY
    extra_prompt_key: str = ""
    """A second prompt part: ``system`` (Anthropic) or ``instructions`` (Responses)."""
    inject_usage: bool | None = False
    """OpenAI chat/completions streams: True, ask for the usage chunk and hide it; None, do
    so where ``server`` is known to send it only when asked (and learn that); False, never."""
    server: str = ""
    """The client's base URL."""
    service_tiers: bool = False
    """OpenAI: a call may ask for a processing tier (``service_tier=``)."""
    active: bool = field(default=True, init=False)
    """Cleared by ``uninstrument``: SDK helpers may still hold the patched method."""

    def prompt(self, kwargs: Mapping[str, Any]) -> Any:
        """The prompt in a form the recorder's estimator takes (text or a message list)."""
        prompt = kwargs.get(self.prompt_key)
        if isinstance(prompt, list | tuple) and prompt and all(isinstance(p, str) for p in prompt):
            prompt = "\n".join(prompt)
        extra = kwargs.get(self.extra_prompt_key) if self.extra_prompt_key else None
        if isinstance(extra, str) and extra:
            if isinstance(prompt, str):
                return f"{extra}\n{prompt}"
            if isinstance(prompt, list | tuple):
                return [{"role": "system", "content": extra}, *prompt]
        return prompt if isinstance(prompt, str | list | tuple) else None

    def spec_for(self, kwargs: Mapping[str, Any], result: object = None) -> CallSpec:
        """The spec that prices this call: its processing tier's when it asked for one (OpenAI
        ``service_tier="flex"`` or ``"priority"``), or rather the tier the response says served
        it (a priority request can be served at the default tier); a stream says it only in
        its chunks and is priced at the tier it asked for."""
        tier = kwargs.get("service_tier") if self.service_tiers else None
        if not tier:
            return self.spec
        served = getattr(result, "service_tier", None)
        return self.spec.at_tier(served if isinstance(served, str) else tier)

    def max_output(self, kwargs: Mapping[str, Any]) -> int | None:
        if not self.max_keys:
            return 0
        for key in self.max_keys:
            value = kwargs.get(key)
            if type(value) is int:
                return value
        return None


_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
_FAILS_OPEN = FailOpen("instrument")


def _raw_mode(kwargs: Mapping[str, Any]) -> bool:
    """``with_raw_response``/``with_streaming_response``: the caller may read the body raw, so
    it must get exactly the bytes it asked for (no injected usage chunk)."""
    headers = kwargs.get("extra_headers")
    return isinstance(headers, Mapping) and _RAW_RESPONSE_HEADER in headers


def _failed(
    ep: Endpoint, model: str, exc: BaseException, latency_s: float, reservation: Any
) -> None:
    try:
        ep.spec.emit_failure(model, exc, latency_s, reservation)
        set_recorded(exc)
    except Exception as internal:
        errors.report("instrument", internal)


def _after(
    ep: Endpoint,
    model: str,
    kwargs: Mapping[str, Any],
    result: Any,
    t0: float,
    hide: bool,
    probe: str,
    reservation: Any,
) -> Any:
    """Record the call (or hook the stream it returned); returns what the caller gets: the
    result itself, or for a plain generator of chunks (google-genai) one that watches it."""
    spec = ep.spec
    try:
        spec = ep.spec_for(kwargs, result)
        latency = perf_counter() - t0
        # A response class read before is read at once, as the decorators do (a stream's
        # class reads as no usage: it goes on to the checks below).
        read = cached_reader(type(result))
        extracted = read(result) if read is not None else None
        if extracted is None:
            stream = result if is_stream(result) else None
            if stream is None:
                if isinstance(result, GeneratorType | AsyncGeneratorType):
                    return watch_generator(
                        result, spec, model, t0, reservation=reservation, prompt=ep.prompt(kwargs)
                    )
                if is_api_response(result):
                    watch_api_response(
                        result, spec, model, t0, reservation=reservation, prompt=ep.prompt(kwargs)
                    )
                    return result
                if read is None:
                    extracted = extract_tokens(result)
                if extracted is None and type(result).__name__ == "LegacyAPIResponse":
                    # ``with_raw_response``: ``parse()`` caches what it returns, so the caller's
                    # own ``parse()`` gets the same object: the completion (its body was read
                    # already), or for ``stream=True`` the stream, not yet read, which is hooked
                    # in place.
                    parsed = result.parse()
                    if is_stream(parsed):
                        stream = parsed
                    else:
                        extracted = extract_tokens(parsed)
            if stream is not None:
                wrap_stream(
                    stream,
                    spec,
                    model,
                    t0,
                    reservation=reservation,
                    prompt=ep.prompt(kwargs),
                    hide_usage_chunk=hide,
                    probe=probe,
                )
                return result
        if extracted is not None:
            spec.record_usage(
                _runtime.current or _runtime.runtime(),
                model or spec.model,
                extracted,
                latency,
                reservation,
            )
        else:
            spec.emit(model, None, latency, prompt=ep.prompt(kwargs), reservation=reservation)
        set_recorded(result)
    except InvalidUsage as invalid:
        record_invalid(spec, model, invalid, perf_counter() - t0, reservation)
        set_recorded(result)
    except Exception as internal:
        errors.report("instrument", internal)
    return result


def _prepared(
    ep: Endpoint, kwargs: dict[str, Any], *, reserve: bool = True
) -> tuple[str, bool, str, Any] | None:
    """``(model, hide_usage_chunk, probe, reservation)`` of a call about to be made; mutates
    ``kwargs`` (the call's own dict).  ``probe``: the server this stream goes to unasked, to
    learn whether it sends usage.  ``reserve=False``: the caller reserves itself (the async
    wrapper awaits :func:`_areserve`); a hold a framework took for this call (``SdkCalls.offered``)
    is used instead of a new one.  None: call the SDK untouched (the endpoint was
    uninstrumented, or costwatch failed, which is reported).  ``BudgetExceeded`` propagates."""
    if not ep.active:
        return None
    held = calls = None
    try:
        if watched and (calls := sdk_calls_var.get()) is not None:
            calls.count += 1
            held, calls.offered = calls.offered, None
        model = ep.spec.model_for(kwargs)
        reservation = held
        if reserve and held is None and (_runtime.current or _runtime.runtime()).budgets.active:
            reservation = ep.spec_for(kwargs).preflight(
                model, count_prompt_tokens(ep.prompt(kwargs), model), ep.max_output(kwargs)
            )
        hide = False
        probe = ""
        if ep.inject_usage is not False and kwargs.get("stream") is True and not _raw_mode(kwargs):
            options = kwargs.get("stream_options")
            if not (isinstance(options, Mapping) and options.get("include_usage") is True):
                unasked = None if ep.inject_usage else openai.sends_usage_unasked(ep.server)
                if ep.inject_usage or unasked is False:
                    base = options if isinstance(options, Mapping) else {}
                    kwargs["stream_options"] = {**base, "include_usage": True}
                    hide = True
                elif unasked is None and options is None:
                    probe = ep.server  # sent as written: does this server send usage unasked?
        return model, hide, probe, reservation
    except BudgetExceeded:
        raise
    except Exception as internal:
        errors.report("instrument", internal)
        if held is not None and calls is not None:  # the framework records the call
            calls.count -= 1
            calls.offered = held
        return None


async def _areserve(ep: Endpoint, kwargs: dict[str, Any], model: str) -> Any:
    """The async wrapper's budget reservation, through ``redis.asyncio`` (never blocks the
    loop).  ``BudgetExceeded`` propagates; costwatch's own failures are reported."""
    if not _runtime.runtime().budgets.active:
        return None
    with _FAILS_OPEN:
        return await ep.spec_for(kwargs).apreflight(
            model, count_prompt_tokens(ep.prompt(kwargs), model), ep.max_output(kwargs)
        )
    return None


def sync_call(ep: Endpoint, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        prepared = _prepared(ep, kwargs)
        if prepared is None:
            return original(*args, **kwargs)
        model, hide, probe, reservation = prepared
        t0 = perf_counter()
        try:
            result = original(*args, **kwargs)
        except BaseException as exc:
            _failed(ep, model, exc, perf_counter() - t0, reservation)
            raise
        return _after(ep, model, kwargs, result, t0, hide, probe, reservation)

    return call


def async_call(ep: Endpoint, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def call(*args: Any, **kwargs: Any) -> Any:
        prepared = _prepared(ep, kwargs, reserve=False)
        if prepared is None:
            return await original(*args, **kwargs)
        model, hide, probe, reservation = prepared
        if reservation is None:
            reservation = await _areserve(ep, kwargs, model)
        t0 = perf_counter()
        try:
            result = await original(*args, **kwargs)
        except BaseException as exc:
            _failed(ep, model, exc, perf_counter() - t0, reservation)
            raise
        return _after(ep, model, kwargs, result, t0, hide, probe, reservation)

    return call


def _open_manager(
    ep: Endpoint, original: Callable[..., Any], args: Any, kwargs: dict[str, Any], reserve: bool
) -> tuple[Any, str | None, Any]:
    """``(manager, model, reservation)`` of a ``messages.stream(...)`` call; ``model`` None:
    costwatch stays out of this one (see :func:`_prepared`)."""
    prepared = _prepared(ep, kwargs, reserve=reserve)
    if prepared is None:
        return original(*args, **kwargs), None, None
    model, _, _, reservation = prepared
    try:
        manager = original(*args, **kwargs)
    except BaseException:
        if reservation is not None:  # the SDK refused the arguments: nothing was sent
            reservation.settle(None)
        raise
    return manager, model, reservation


def stream_manager_call(
    ep: Endpoint, original: Callable[..., Any], *, asynchronous: bool
) -> Callable[..., Any]:
    """``messages.stream(...)``: returns a manager; the request is made on ``__enter__``.  The
    async client's ``.stream()`` is sync too and returns a manager whose ``async with`` makes
    the request, so the budget is reserved there, through ``redis.asyncio``
    (``BudgetExceeded`` raises at ``async with``, before anything is sent)."""

    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        manager, model, reservation = _open_manager(
            ep, original, args, kwargs, reserve=not asynchronous
        )
        if model is None:
            return manager
        try:
            wrap_stream(
                manager,
                ep.spec,
                model,
                perf_counter(),
                reservation=reservation,
                reserve=functools.partial(_areserve, ep, kwargs, model)
                if asynchronous and reservation is None
                else None,
                prompt=ep.prompt(kwargs),
            )
        except Exception as internal:
            errors.report("instrument", internal)
        return manager

    return call
