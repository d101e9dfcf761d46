"""LiteLLM: a ``CustomLogger`` that records completions, embeddings and streams.

    import litellm
    from costwatch.integrations.litellm import CostwatchLogger

    litellm.callbacks = [CostwatchLogger()]

Every call is recorded once, priced by costwatch (its prices and ``price_source``, not
LiteLLM's ``response_cost``), under the costwatch tags and request in force where the call was
made, with LiteLLM's usage mapped exactly: its ``prompt_tokens`` include the cache reads
(``prompt_tokens_details.cached_tokens``) and, for Anthropic, the cache writes
(``cache_creation_input_tokens``, split into 5-minute and 1-hour writes); its
``completion_tokens`` include ``completion_tokens_details.reasoning_tokens``.  A stream whose
usage the provider did not report (OpenAI without ``stream_options={"include_usage": True}``)
is estimated by costwatch and marked so.

Budgets: costwatch's budget preflight runs before any call is sent, so a ``block`` budget
raises ``costwatch.BudgetExceeded`` and nothing is sent.  Async calls (``acompletion``,
``aembedding``, the Router's) reserve in the logger's ``async_pre_call_deployment_hook``,
through ``redis.asyncio`` (never blocking the loop).  LiteLLM has no synchronous hook that may
refuse a call, so creating a ``CostwatchLogger`` installs :func:`install_sync_preflight`: it
wraps ``litellm.utils.function_setup``, which LiteLLM's ``@client`` wrapper runs before it sends
``completion`` (streamed or not), ``text_completion``, ``embedding`` and the Router's sync calls.
:func:`uninstall_sync_preflight` removes it.  The hold is settled to the call's cost by its
success or failure event, and released if LiteLLM fails before it sends anything.

With ``costwatch.instrument()`` on as well, a call LiteLLM makes through the OpenAI SDK is
recorded by the instrumentation and the logger leaves it alone: never both.  The logger's hold
wins: it is taken before LiteLLM picks its transport, then handed to the SDK call, which
settles it (the instrumentation takes no second hold for that call).
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from time import perf_counter
from typing import Any

from costwatch._core import runtime as _runtime
from costwatch._core.failopen import FailOpen, errors
from costwatch._core.record import TokenUsage
from costwatch._core.tokens import count_prompt_tokens
from costwatch.accounting._recorder import CallSpec
from costwatch.capture._instrument_calls import SdkCalls
from costwatch.integrations._common import Specs, recorded_by_sdk, require, start_model_call

_litellm: Any = require("litellm", "litellm")
_CustomLogger: Any = require("litellm.integrations.custom_logger", "litellm").CustomLogger
_pydantic: Any = require("pydantic", "litellm")

__all__ = ["CostwatchLogger", "install_sync_preflight", "uninstall_sync_preflight", "usage_of"]

_COMPONENT = "litellm"
_FAILS_OPEN = FailOpen(_COMPONENT)
_MAX_PENDING = 10_000
"""Calls started and not yet finished that the logger keeps (a call LiteLLM never reports
the end of is dropped past this)."""
_EMBEDDING_CALLS = frozenset({"embedding", "aembedding"})
_POSITIONAL = {
    "completion": ("model", "messages"),
    "embedding": ("model", "input"),
    "text_completion": ("prompt", "model"),
}
"""The sync calls the preflight runs before (``function_setup``'s ``original_function``; the
Router's sync calls are ``completion``/``embedding``), with the names of their positional
arguments.  Other call types (images, audio, ...) are charged when they finish."""


_OBJECT, _MAPPING, _MODEL = 0, 1, 2
_kinds: dict[type, int] = {}
"""Per type: read as a mapping, a pydantic model or a plain object (``isinstance`` against
``Mapping`` and pydantic's ABC metaclass is slow on every read)."""
_class_attrs: dict[tuple[type, str], bool] = {}
_MISSING: Any = object()


def _kind(cls: type) -> int:
    if issubclass(cls, Mapping):
        kind = _MAPPING
    elif issubclass(cls, _pydantic.BaseModel):
        kind = _MODEL
    else:
        kind = _OBJECT
    _kinds[cls] = kind
    return kind


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    cls = type(obj)
    if cls is dict:
        return obj.get(name)
    kind = _kinds.get(cls)
    if kind is None:
        kind = _kind(cls)
    if kind == _MAPPING:
        return obj.get(name)
    if kind == _MODEL:
        # A field LiteLLM's model does not have raises inside pydantic's __getattr__: read the
        # fields and extras directly, and ask getattr only for what the class defines.
        value = obj.__dict__.get(name, _MISSING)
        if value is not _MISSING:
            return value
        extra = obj.__pydantic_extra__
        if extra and name in extra:
            return extra[name]
        key = (cls, name)
        on_class = _class_attrs.get(key)
        if on_class is None:
            on_class = _class_attrs[key] = any(name in c.__dict__ for c in cls.__mro__)
        if not on_class:
            return None
    return getattr(obj, name, None)


def _int(value: Any) -> int:
    return value if type(value) is int else 0


_USAGE_NAMES = (
    "prompt_tokens_details",
    "completion_tokens_details",
    "cached_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation_tokens",
    "cache_creation_token_details",
    "ephemeral_1h_input_tokens",
    "reasoning_tokens",
    "prompt_tokens",
    "completion_tokens",
    "audio_tokens",
)
"""What :func:`usage_of` reads."""
_plain_models: dict[type, bool] = {}


def _none(name: str) -> None:
    return None


def _reader(obj: Any) -> Callable[[str], Any]:
    """``_get`` bound to ``obj``: its own ``dict.get`` when that reads the same (a dict, or a
    pydantic model without extras whose class defines none of ``_USAGE_NAMES``)."""
    if obj is None:
        return _none
    cls = type(obj)
    if cls is dict:
        return obj.get  # type: ignore[no-any-return]
    kind = _kinds.get(cls)
    if kind is None:
        kind = _kind(cls)
    if kind == _MODEL and not obj.__pydantic_extra__:
        plain = _plain_models.get(cls)
        if plain is None:
            plain = _plain_models[cls] = not any(
                name in c.__dict__ for c in cls.__mro__ for name in _USAGE_NAMES
            )
        if plain:
            return obj.__dict__.get  # type: ignore[no-any-return]
    return functools.partial(_get, obj)


def usage_of(usage: Any) -> TokenUsage:
    """costwatch's partition of a LiteLLM ``Usage``.

    ``prompt_tokens`` is every input-side token: the cache reads
    (``prompt_tokens_details.cached_tokens``, or ``cache_read_input_tokens``) and the cache
    writes (``cache_creation_input_tokens``; the one-hour part in
    ``prompt_tokens_details.cache_creation_token_details``) are inside it;
    ``completion_tokens`` includes ``completion_tokens_details.reasoning_tokens``.
    """
    get = _reader(usage)
    prompt_details = _reader(get("prompt_tokens_details"))
    completion_details = _reader(get("completion_tokens_details"))
    cache_read = _int(prompt_details("cached_tokens")) or _int(get("cache_read_input_tokens"))
    cache_write = _int(get("cache_creation_input_tokens")) or _int(
        prompt_details("cache_creation_tokens")
    )
    write_1h = _int(
        _reader(prompt_details("cache_creation_token_details"))("ephemeral_1h_input_tokens")
    )
    reasoning = _int(completion_details("reasoning_tokens"))
    return TokenUsage(
        input=_int(get("prompt_tokens")) - cache_read - cache_write,
        cache_read=cache_read,
        cache_write=cache_write,
        output=_int(get("completion_tokens")) - reasoning,
        reasoning=reasoning,
        cache_write_1h=write_1h,
        input_audio=_int(prompt_details("audio_tokens")),
        output_audio=_int(completion_details("audio_tokens")),
    )


class _Call:
    """One LiteLLM call between its start and its success or failure event."""

    __slots__ = ("t0", "context", "sdk_calls", "reservation")

    def __init__(self) -> None:
        self.t0 = perf_counter()
        self.context: contextvars.Context | None = None
        """The caller's context (tags, request): LiteLLM reports a call's end on its own
        threads."""
        self.sdk_calls: SdkCalls | None = None
        self.reservation: Any = None


def _provider_and_model(kwargs: Mapping[str, Any]) -> tuple[str, str]:
    provider = kwargs.get("custom_llm_provider") or _get(
        kwargs.get("litellm_params"), "custom_llm_provider"
    )
    model = kwargs.get("model")
    model = model if isinstance(model, str) else ""
    if not provider and "/" in model:
        provider, _, model = model.partition("/")
    elif isinstance(provider, str) and model.startswith(provider + "/"):
        model = model[len(provider) + 1 :]
    return (provider if isinstance(provider, str) and provider else "unknown"), model


def _stage(call_type: Any) -> tuple[str, str]:
    call_type = str(call_type or "").rpartition(".")[2]  # CallTypes.aembedding -> aembedding
    if call_type in _EMBEDDING_CALLS:
        return "embedding", "embeddings"
    return "generation", "chat"


def _usage_reported(kwargs: Mapping[str, Any]) -> bool:
    """A stream's usage came from the provider only when it was asked for (OpenAI-style
    ``stream_options.include_usage``); otherwise LiteLLM counted it itself."""
    if not kwargs.get("stream"):
        return True
    provider, _ = _provider_and_model(kwargs)
    if provider == "anthropic":  # Anthropic streams always report usage
        return True
    options = kwargs.get("stream_options") or _get(kwargs.get("optional_params"), "stream_options")
    return bool(_get(options, "include_usage"))


def _prompt(kwargs: Mapping[str, Any], stage: str) -> Any:
    """The prompt: the messages (a ``text_completion``'s prompt), or the embedded input."""
    if stage == "generation":
        messages = kwargs.get("messages")
        return messages if messages is not None else kwargs.get("prompt")
    return kwargs.get("input")


def _latency(start_time: Any, end_time: Any, call: _Call) -> float:
    if isinstance(start_time, datetime) and isinstance(end_time, datetime):
        return (end_time - start_time).total_seconds()
    return perf_counter() - call.t0  # LiteLLM gave no datetimes: from when costwatch saw it start


def _text_of(response: Any) -> str:
    choices = _get(response, "choices") or []
    parts: list[str] = []
    for choice in choices:
        content = _get(_get(choice, "message"), "content")
        if isinstance(content, str):
            parts.append(content)
    return "".join(parts)


class CostwatchLogger(_CustomLogger):  # type: ignore[misc]
    """Records every LiteLLM call in costwatch and runs its budget preflight before async
    calls.  Add it to ``litellm.callbacks`` (or the proxy's ``litellm_settings.callbacks``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._calls: OrderedDict[str, _Call] = OrderedDict()
        self._lock = threading.Lock()
        self._specs = Specs()
        install_sync_preflight()

    def _call(self, kwargs: Mapping[str, Any], create: bool) -> _Call | None:
        call_id = kwargs.get("litellm_call_id")
        if not isinstance(call_id, str):
            return None
        with self._lock:
            call = self._calls.get(call_id)
            if call is None and create:
                call = self._calls[call_id] = _Call()
                if len(self._calls) > _MAX_PENDING:
                    self._calls.popitem(last=False)
        return call

    def _finish(self, kwargs: Mapping[str, Any]) -> _Call | None:
        call_id = kwargs.get("litellm_call_id")
        with self._lock:
            return self._calls.pop(call_id, None) if isinstance(call_id, str) else None

    # --- before the call -------------------------------------------------------------------
    # The two preflights are twins (they differ only by ``await``): the async one is LiteLLM's
    # hook, the sync one runs from the ``function_setup`` wrapper.

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> None:
        """costwatch's budget preflight: ``BudgetExceeded`` propagates and nothing is sent."""
        with _FAILS_OPEN:
            if not _runtime.runtime().budgets.active:
                return None
            spec, model, prompt_tokens, max_output = self._request(kwargs, call_type)
            self._hold(kwargs, await spec.apreflight(model, prompt_tokens, max_output))
        return None

    def sync_pre_call(self, kwargs: Mapping[str, Any], call_type: Any) -> None:
        """The sync twin of :meth:`async_pre_call_deployment_hook` (run by the
        ``function_setup`` wrapper :func:`install_sync_preflight` installs)."""
        with _FAILS_OPEN:
            if not _runtime.runtime().budgets.active:
                return None
            spec, model, prompt_tokens, max_output = self._request(kwargs, call_type)
            self._hold(kwargs, spec.preflight(model, prompt_tokens, max_output))
        return None

    def _request(
        self, kwargs: Mapping[str, Any], call_type: Any
    ) -> tuple[CallSpec, str, int, int | None]:
        """``(spec, model, prompt tokens, max output tokens)`` of the call about to be sent."""
        provider, model = _provider_and_model(kwargs)
        stage, operation = _stage(kwargs.get("call_type", call_type))
        spec = self._specs.get(provider, stage, operation)
        prompt_tokens = count_prompt_tokens(_prompt(kwargs, stage), model)
        max_output = kwargs.get("max_completion_tokens") or kwargs.get("max_tokens")
        if stage == "embedding":
            return spec, model, prompt_tokens, 0
        return spec, model, prompt_tokens, max_output if type(max_output) is int else None

    def _hold(self, kwargs: Mapping[str, Any], reservation: Any) -> None:
        """Keep the call's reservation until its success or failure event settles it."""
        if reservation is None:
            return
        call = self._call(kwargs, create=True)
        if call is None:
            reservation.settle(None)
        else:
            call.reservation = reservation

    def release(self, kwargs: Mapping[str, Any]) -> None:
        """LiteLLM failed before sending the call (no event will come): free its hold."""
        call = self._finish(kwargs)
        if call is not None and call.reservation is not None:
            call.reservation.settle(None)

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: dict[str, Any]) -> None:
        """Runs in the caller's context right before the request: remember the context (tags,
        request), start counting the SDK calls instrumentation records and offer them the
        call's hold (an attempt LiteLLM retries under the same call offers what is left)."""
        try:
            call = self._call(kwargs, create=True)
            if call is not None:
                previous = call.sdk_calls
                held = call.reservation if previous is None else previous.offered
                call.reservation = None
                call.sdk_calls = start_model_call()
                call.sdk_calls.offered = held
                call.context = contextvars.copy_context()
        except Exception as exc:
            errors.report(_COMPONENT, exc)

    # --- after it --------------------------------------------------------------------------

    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._success(kwargs, response_obj, start_time, end_time)

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._success(kwargs, response_obj, start_time, end_time)

    def log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._failure(kwargs, start_time, end_time)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._failure(kwargs, start_time, end_time)

    def _success(
        self, kwargs: Mapping[str, Any], response: Any, start_time: Any, end_time: Any
    ) -> None:
        try:
            call = self._ended(kwargs)
            if call is not None:
                latency = _latency(start_time, end_time, call)
                _run_in(call, self._record, call, kwargs, response, latency)
        except Exception as exc:
            errors.report(_COMPONENT, exc)

    def _failure(self, kwargs: Mapping[str, Any], start_time: Any, end_time: Any) -> None:
        try:
            call = self._ended(kwargs)
            if call is None:
                return
            provider, model = _provider_and_model(kwargs)
            spec = self._specs.get(provider, *_stage(kwargs.get("call_type")))
            exc = kwargs.get("exception")
            error = exc if isinstance(exc, BaseException) else RuntimeError("litellm call failed")
            latency = _latency(start_time, end_time, call)
            _run_in(call, spec.emit_failure, model, error, latency, call.reservation)
        except Exception as exc:
            errors.report(_COMPONENT, exc)

    def _ended(self, kwargs: Mapping[str, Any]) -> _Call | None:
        """The call LiteLLM reports the end of, unless costwatch's SDK instrumentation
        recorded it already (which settles the hold it took; one it did not take is freed)."""
        call = self._finish(kwargs)
        if call is None:
            return None
        calls = call.sdk_calls
        if calls is not None and calls.offered is not None:  # offered, and no SDK call took it
            call.reservation, calls.offered = calls.offered, None
        if not recorded_by_sdk(calls):
            return call
        if call.reservation is not None:
            call.reservation.settle(None)
        return None

    def _record(
        self, call: _Call, kwargs: Mapping[str, Any], response: Any, latency_s: float
    ) -> None:
        provider, model = _provider_and_model(kwargs)
        stage, operation = _stage(kwargs.get("call_type"))
        spec = self._specs.get(provider, stage, operation)
        streamed = kwargs.get("complete_streaming_response")
        response = streamed if streamed is not None else response
        response_model = _get(response, "model")
        usage = _get(response, "usage")
        reported = usage is not None and _usage_reported(kwargs)
        spec.emit(
            model,
            usage_of(usage) if reported else None,
            latency_s,
            response_model=response_model if isinstance(response_model, str) else "",
            prompt=None if reported else _prompt(kwargs, stage),  # only an estimate reads them
            estimate_text=None if reported else _text_of(response),
            reservation=call.reservation,
        )


def _run_in(call: _Call, fn: Any, *args: Any) -> None:
    """Run ``fn`` in the caller's context (its tags and request) when it was seen."""
    if call.context is None:
        fn(*args)
    else:
        call.context.run(fn, *args)


# --- the sync preflight ---------------------------------------------------------------------

_install_lock = threading.Lock()
_sync_preflight_on = False
"""Cleared by ``uninstall_sync_preflight``: a wrapper another library put on top of costwatch's
keeps it in the chain, and it then passes calls through."""


def install_sync_preflight() -> None:
    """Let a ``block`` budget refuse LiteLLM's synchronous calls before they are sent.

    Wraps ``litellm.utils.function_setup`` (looked up from that module by LiteLLM's ``@client``
    wrapper before every sync ``completion``, ``text_completion``, ``embedding`` and the
    Router's sync calls) so that it runs the budget preflight of the first ``CostwatchLogger``
    among the call's callbacks and ``litellm.callbacks``; ``costwatch.BudgetExceeded``
    propagates to the caller.  Idempotent; every ``CostwatchLogger()`` calls it.
    """
    global _sync_preflight_on
    utils: Any = require("litellm.utils", "litellm")
    with _install_lock:
        _sync_preflight_on = True
        if not _is_ours(utils.function_setup):
            utils.function_setup = _with_preflight(utils.function_setup)


def uninstall_sync_preflight() -> None:
    """Restore ``litellm.utils.function_setup``: sync calls are no longer refused (their cost
    is still charged to the budgets when they finish)."""
    global _sync_preflight_on
    utils: Any = require("litellm.utils", "litellm")
    with _install_lock:
        _sync_preflight_on = False
        current = utils.function_setup
        if _is_ours(current):
            utils.function_setup = current.__wrapped__


def _is_ours(fn: Any) -> bool:
    return getattr(fn, "_costwatch_preflight", False) is True


def _with_preflight(original: Any) -> Any:
    @functools.wraps(original)
    def function_setup(
        original_function: str, rules_obj: Any, start_time: Any, *args: Any, **kwargs: Any
    ) -> Any:
        logger = None
        if (
            _sync_preflight_on
            and kwargs.get("is_async_call") is False
            and original_function in _POSITIONAL
        ):
            logger = _preflight(original_function, args, kwargs)
        try:
            return original(original_function, rules_obj, start_time, *args, **kwargs)
        except BaseException:
            if logger is not None:
                logger.release(kwargs)
            raise

    function_setup._costwatch_preflight = True  # type: ignore[attr-defined]
    return function_setup


def _preflight(
    call_type: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> CostwatchLogger | None:
    """Run the sync preflight of the logger that will see this call; the logger, if any."""
    try:
        if not _runtime.runtime().budgets.active:  # nothing to hold: copy nothing
            return None
        logger = _logger_of(kwargs)
        if logger is None:
            return None
        request = dict(kwargs)
        for name, value in zip(_POSITIONAL.get(call_type, ()), args, strict=False):
            request.setdefault(name, value)
    except Exception as exc:
        errors.report(_COMPONENT, exc)
        return None
    logger.sync_pre_call(request, call_type)  # BudgetExceeded propagates
    return logger


def _logger_of(kwargs: Mapping[str, Any]) -> CostwatchLogger | None:
    """The first ``CostwatchLogger`` among the call's own callbacks and LiteLLM's: the one
    that records the call (a second one would hold the budget twice)."""
    for callbacks in (kwargs.get("callbacks"), _litellm.callbacks):
        if isinstance(callbacks, list | tuple):
            for callback in callbacks:
                if isinstance(callback, CostwatchLogger):
                    return callback
    return None
