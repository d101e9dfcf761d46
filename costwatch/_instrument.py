"""``instrument(client)``: record every call an OpenAI, Anthropic or google-genai client makes.

Patches, on that client instance only, ``chat.completions.create``/``parse`` (also reached as
``beta.chat.completions``), ``responses.create``/``parse``, ``embeddings.create``, the legacy
``completions.create`` (the endpoint of ``davinci-002``/``babbage-002`` and their fine-tunes)
(OpenAI); ``messages.create``/``parse``/``stream``, also as ``beta.messages`` (Anthropic, also
on Bedrock and Vertex AI); ``models.generate_content``/``generate_content_stream``/
``embed_content``, also under ``aio`` (google-genai); sync and async, streaming included;
``chat.completions.stream()`` and ``responses.stream()`` go through the patched ``create``.
Copies made with ``client.with_options(...)``/``copy(...)`` are instrumented too.

Per call: a budget preflight when a budget is registered (``BudgetExceeded`` propagates before
the provider is called), then the provider call, then one record with the reported usage (an
OpenAI call made with ``service_tier="flex"`` is priced at the model's batch rate, as OpenAI
bills flex processing).  A provider exception is recorded (``status="error"``) and re-raised
unchanged.  OpenAI chat and legacy completion streams get ``stream_options.include_usage`` when
the caller did not set it, and the extra usage chunk is hidden from the caller.  The SDKs are
never imported: clients are recognised by class name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from time import perf_counter
from types import AsyncGeneratorType, GeneratorType
from typing import Any, TypeVar

from costwatch import _runtime
from costwatch._context import recorded_var
from costwatch._errors import BudgetExceeded
from costwatch._failopen import errors
from costwatch._recorder import CallSpec
from costwatch._streams import (
    is_api_response,
    is_stream,
    watch_api_response,
    watch_async_iterator,
    watch_iterator,
    wrap_stream,
)
from costwatch._usage import extract_tokens

C = TypeVar("C")

_PATCHES = "_costwatch_patches"

_CLIENT_CLASSES = {
    ("openai", "OpenAI"): ("openai", False, "openai"),
    ("openai", "AsyncOpenAI"): ("openai", True, "openai"),
    ("anthropic", "Anthropic"): ("anthropic", False, "anthropic"),
    ("anthropic", "AsyncAnthropic"): ("anthropic", True, "anthropic"),
    ("anthropic", "AnthropicBedrock"): ("anthropic", False, "aws"),
    ("anthropic", "AsyncAnthropicBedrock"): ("anthropic", True, "aws"),
    ("anthropic", "AnthropicVertex"): ("anthropic", False, "google"),
    ("anthropic", "AsyncAnthropicVertex"): ("anthropic", True, "google"),
    ("google.genai", "Client"): ("google-genai", False, "google"),
}
"""(module, class) -> (SDK, asynchronous, the provider it serves unless its base URL says)."""


class _Endpoint:
    """One patched method: what it records and how to read its request."""

    __slots__ = ("spec", "flex", "prompt_key", "extra_prompt_key", "max_keys", "inject_usage",
                 "active")

    def __init__(
        self,
        spec: CallSpec,
        prompt_key: str,
        max_keys: tuple[str, ...],
        *,
        extra_prompt_key: str = "",
        inject_usage: bool = False,
        flex: bool = False,
    ) -> None:
        self.spec = spec
        self.flex = (
            CallSpec(spec.provider, spec.model, spec.stage, spec.operation, batch=True)
            if flex
            else None
        )
        """For a call made with ``service_tier="flex"`` (OpenAI): billed at the batch rate."""
        self.prompt_key = prompt_key
        self.extra_prompt_key = extra_prompt_key
        """A second prompt part: ``system`` (Anthropic) or ``instructions`` (Responses)."""
        self.max_keys = max_keys
        self.inject_usage = inject_usage
        self.active = True
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

    def spec_for(self, kwargs: Mapping[str, Any]) -> CallSpec:
        """The spec that prices this call: the flex one when it asked for flex processing."""
        if self.flex is not None and kwargs.get("service_tier") == "flex":
            return self.flex
        return self.spec

    def max_output(self, kwargs: Mapping[str, Any]) -> int | None:
        if not self.max_keys:
            return 0
        for key in self.max_keys:
            value = kwargs.get(key)
            if type(value) is int:
                return value
        return None


def _model_of(kwargs: Mapping[str, Any]) -> str:
    model = kwargs.get("model")
    return model if isinstance(model, str) else ""


def _prompt_tokens(prompt: Any, model: str) -> int:
    if prompt is None:
        return 0
    from costwatch._tokens import count_message_tokens, count_tokens

    if isinstance(prompt, str):
        return count_tokens(prompt, model)[0]
    if prompt and all(isinstance(p, int) for p in prompt):  # pre-tokenised input
        return len(prompt)
    if prompt and all(isinstance(p, list) for p in prompt):  # a batch of pre-tokenised inputs
        return sum(len(p) for p in prompt)
    if prompt and all(isinstance(p, Mapping) for p in prompt):
        return count_message_tokens(prompt, model)[0]
    return 0


def _before(ep: _Endpoint, kwargs: dict[str, Any]) -> tuple[str, bool, Any]:
    """``(model, hide_usage_chunk, reservation)``; mutates ``kwargs`` (the call's own dict)."""
    model = _model_of(kwargs)
    reservation = None
    if _runtime.runtime().budgets.active:
        reservation = ep.spec.preflight(
            model, _prompt_tokens(ep.prompt(kwargs), model), ep.max_output(kwargs)
        )
    hide = False
    if ep.inject_usage and kwargs.get("stream") is True and not _raw_mode(kwargs):
        options = kwargs.get("stream_options")
        if not (isinstance(options, Mapping) and options.get("include_usage") is True):
            base = options if isinstance(options, Mapping) else {}
            kwargs["stream_options"] = {**base, "include_usage": True}
            hide = True
    return model, hide, reservation


_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"


def _raw_mode(kwargs: Mapping[str, Any]) -> bool:
    """``with_raw_response``/``with_streaming_response``: the caller may read the body raw, so
    it must get exactly the bytes it asked for (no injected usage chunk)."""
    headers = kwargs.get("extra_headers")
    return isinstance(headers, Mapping) and _RAW_RESPONSE_HEADER in headers


def _failed(
    ep: _Endpoint, model: str, exc: BaseException, latency_s: float, reservation: Any
) -> None:
    try:
        ep.spec.emit_failure(model, exc, latency_s, reservation)
        recorded_var.set(exc)
    except Exception as internal:
        errors.report("instrument", internal)


def _after(
    ep: _Endpoint,
    model: str,
    kwargs: Mapping[str, Any],
    result: Any,
    t0: float,
    hide: bool,
    reservation: Any,
) -> Any:
    """Record the call (or hook the stream it returned); returns what the caller gets: the
    result itself, or for a plain generator of chunks (google-genai) one that watches it."""
    try:
        spec = ep.spec_for(kwargs)
        if is_stream(result):
            wrap_stream(
                result, spec, model, t0,
                reservation=reservation, prompt=ep.prompt(kwargs), hide_usage_chunk=hide,
            )
            return result
        if isinstance(result, GeneratorType):
            return watch_iterator(
                result, spec, model, t0, reservation=reservation, prompt=ep.prompt(kwargs)
            )
        if isinstance(result, AsyncGeneratorType):
            return watch_async_iterator(
                result, spec, model, t0, reservation=reservation, prompt=ep.prompt(kwargs)
            )
        if is_api_response(result):
            watch_api_response(
                result, spec, model, t0, reservation=reservation, prompt=ep.prompt(kwargs)
            )
            return result
        latency = perf_counter() - t0
        extracted = extract_tokens(result)
        if extracted is None and type(result).__name__ == "LegacyAPIResponse":
            # ``with_raw_response``: ``parse()`` caches what it returns, so the caller's own
            # ``parse()`` gets the same object: the completion (its body was read already), or
            # for ``stream=True`` the stream, not yet read, which is hooked in place.
            parsed = result.parse()
            if is_stream(parsed):
                wrap_stream(
                    parsed, spec, model, t0,
                    reservation=reservation, prompt=ep.prompt(kwargs), hide_usage_chunk=hide,
                )
                return result
            extracted = extract_tokens(parsed)
        if extracted is not None:
            tokens, response_model = extracted
            spec.record_usage(
                _runtime.runtime(), model or spec.model, tokens, latency, response_model,
                reservation,
            )
        else:
            spec.emit(model, None, latency, prompt=ep.prompt(kwargs), reservation=reservation)
        recorded_var.set(result)
    except Exception as internal:
        errors.report("instrument", internal)
    return result


def _sync_call(ep: _Endpoint, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not ep.active:
            return original(*args, **kwargs)
        try:
            model, hide, reservation = _before(ep, kwargs)
        except BudgetExceeded:
            raise
        except Exception as internal:
            errors.report("instrument", internal)
            return original(*args, **kwargs)
        t0 = perf_counter()
        try:
            result = original(*args, **kwargs)
        except BaseException as exc:
            _failed(ep, model, exc, perf_counter() - t0, reservation)
            raise
        return _after(ep, model, kwargs, result, t0, hide, reservation)

    return call


def _async_call(ep: _Endpoint, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def call(*args: Any, **kwargs: Any) -> Any:
        if not ep.active:
            return await original(*args, **kwargs)
        try:
            model, hide, reservation = _before(ep, kwargs)
        except BudgetExceeded:
            raise
        except Exception as internal:
            errors.report("instrument", internal)
            return await original(*args, **kwargs)
        t0 = perf_counter()
        try:
            result = await original(*args, **kwargs)
        except BaseException as exc:
            _failed(ep, model, exc, perf_counter() - t0, reservation)
            raise
        return _after(ep, model, kwargs, result, t0, hide, reservation)

    return call


def _stream_manager_call(ep: _Endpoint, original: Callable[..., Any]) -> Callable[..., Any]:
    """``messages.stream(...)``: returns a manager; the request is made on ``__enter__``."""

    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not ep.active:
            return original(*args, **kwargs)
        try:
            model, _, reservation = _before(ep, kwargs)
        except BudgetExceeded:
            raise
        except Exception as internal:
            errors.report("instrument", internal)
            return original(*args, **kwargs)
        try:
            manager = original(*args, **kwargs)
        except BaseException:
            if reservation is not None:  # the SDK refused the arguments: nothing was sent
                reservation.settle(None)
            raise
        try:
            wrap_stream(
                manager, ep.spec, model, perf_counter(),
                reservation=reservation, prompt=ep.prompt(kwargs),
            )
        except Exception as internal:
            errors.report("instrument", internal)
        return manager

    return call


# --- patching client instances ----------------------------------------------------------------

_ABSENT: Any = object()


class _Patch:
    __slots__ = ("owner", "name", "previous", "endpoint")

    def __init__(self, owner: Any, name: str, previous: Any, endpoint: _Endpoint | None) -> None:
        self.owner = owner
        self.name = name
        self.previous = previous
        self.endpoint = endpoint

    def undo(self) -> None:
        if self.endpoint is not None:
            self.endpoint.active = False
        if self.previous is _ABSENT:
            self.owner.__dict__.pop(self.name, None)
        else:
            setattr(self.owner, self.name, self.previous)


def _provider_behind(client: Any, default: str) -> str:
    """The provider a client talks to, from its base URL: the OpenAI SDK also serves Azure,
    Groq, DeepSeek, OpenRouter, Gemini's compatible endpoint..., the Anthropic SDK a few
    Anthropic-compatible APIs, and their prices differ.  ``default`` (the client class's
    provider: ``aws`` for Bedrock, ``google`` for Vertex AI) when the URL is a local server's or
    unknown."""
    base_url = getattr(client, "base_url", None)
    if base_url is None:
        return default
    try:
        from costwatch._pricing import provider_for_url

        return provider_for_url(str(base_url)) or default
    except Exception as exc:
        errors.report("instrument", exc)
        return default


def _client_kind(client: object) -> tuple[str, bool, str]:
    for base in type(client).__mro__:
        parts = base.__module__.split(".")
        module = ".".join(parts[:2]) if parts[0] == "google" else parts[0]
        found = _CLIENT_CLASSES.get((module, base.__name__))
        if found is not None:
            return found
    names = ", ".join(f"{m}.{n}" for m, n in _CLIENT_CLASSES)
    raise TypeError(
        f"costwatch.instrument() supports {names}; got {type(client).__module__}."
        f"{type(client).__qualname__} (install the SDK extra: pip install 'costwatch[openai]', "
        "'costwatch[anthropic]' or 'costwatch[gemini]')"
    )


def _patch(
    patches: list[_Patch],
    owner: Any,
    name: str,
    endpoint: _Endpoint,
    make: Callable[[_Endpoint, Callable[..., Any]], Callable[..., Any]],
) -> None:
    if owner is None:
        return
    original = getattr(owner, name, None)
    if original is None:
        return
    previous = owner.__dict__.get(name, _ABSENT)
    setattr(owner, name, make(endpoint, original))
    patches.append(_Patch(owner, name, previous, endpoint))


def _patch_genai(patches: list[_Patch], client: Any, generation: CallSpec, provider: str) -> None:
    """google-genai: ``models`` and ``aio.models``.  Generation is patched at the method that
    makes one API call (``_generate_content``), which ``generate_content`` calls once per
    round of automatic function calling, so every round is recorded; the public method when
    an SDK version has no such method."""
    content = _Endpoint(generation, "contents", ("max_output_tokens",))
    embedding = _Endpoint(CallSpec(provider, "", "embedding", "embeddings"), "contents", ())
    aio = getattr(client, "aio", None)
    for models, make in ((getattr(client, "models", None), _sync_call),
                         (getattr(aio, "models", None), _async_call)):
        for public in ("generate_content", "generate_content_stream"):
            one_call = "_" + public
            name = one_call if callable(getattr(models, one_call, None)) else public
            _patch(patches, models, name, content, make)
        _patch(patches, models, "embed_content", embedding, make)


def _resources(client: Any, *paths: tuple[str, ...]) -> list[Any]:
    """The SDK resource objects at ``paths`` that this SDK version has (each one once: an
    alias of an already patched resource is skipped)."""
    found: list[Any] = []
    for path in paths:
        owner = client
        for name in path:
            owner = getattr(owner, name, None)
            if owner is None:
                break
        if owner is not None and all(owner is not seen for seen in found):
            found.append(owner)
    return found


def _copy_call(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def copy(*args: Any, **kwargs: Any) -> Any:
        return instrument(original(*args, **kwargs))

    return copy


def instrument(client: C, *, inject_stream_usage: bool = True) -> C:
    """Record every call ``client`` makes; returns the same client.  Idempotent.

    Supports ``openai.OpenAI``/``AsyncOpenAI`` (and subclasses such as ``AzureOpenAI``) and
    ``anthropic.Anthropic``/``AsyncAnthropic`` (and ``AnthropicBedrock``/``AnthropicVertex``,
    sync and async) and ``google.genai.Client`` (its ``models`` and ``aio.models``).  Raises
    ``TypeError`` for anything else.  A client pointed at another provider's compatible API
    (Groq, DeepSeek, OpenRouter, Gemini, Azure...) records and prices its calls as that
    provider's, found from the base URL.
    ``inject_stream_usage=False`` never adds ``stream_options.include_usage`` to OpenAI chat and
    completion streams (for OpenAI-compatible servers and old Azure API versions that reject
    it): their usage is then estimated from the prompt and the streamed text.
    """
    if getattr(client, _PATCHES, None) is not None:
        return client
    sdk, asynchronous, default_provider = _client_kind(client)
    provider = _provider_behind(client, default_provider)
    call = _async_call if asynchronous else _sync_call
    patches: list[_Patch] = []
    generation = CallSpec(provider, "", "generation", "chat")
    target: Any = client
    if sdk == "openai":
        chat_endpoint = _Endpoint(
            generation,
            "messages",
            ("max_completion_tokens", "max_tokens"),
            inject_usage=inject_stream_usage,
            flex=True,
        )
        for completions in _resources(target, ("chat", "completions"),
                                      ("beta", "chat", "completions")):
            _patch(patches, completions, "create", chat_endpoint, call)
            _patch(patches, completions, "parse", chat_endpoint, call)
        responses_endpoint = _Endpoint(
            generation, "input", ("max_output_tokens",), extra_prompt_key="instructions",
            flex=True,
        )
        responses = getattr(target, "responses", None)
        _patch(patches, responses, "create", responses_endpoint, call)
        _patch(patches, responses, "parse", responses_endpoint, call)
        embedding = _Endpoint(CallSpec(provider, "", "embedding", "embeddings"), "input", ())
        _patch(patches, getattr(target, "embeddings", None), "create", embedding, call)
        legacy = _Endpoint(
            CallSpec(provider, "", "generation", "text_completion"),
            "prompt",
            ("max_tokens",),
            inject_usage=inject_stream_usage,
            flex=True,
        )
        _patch(patches, getattr(target, "completions", None), "create", legacy, call)
    elif sdk == "google-genai":
        _patch_genai(patches, target, generation, provider)
    else:
        messages_endpoint = _Endpoint(
            generation, "messages", ("max_tokens",), extra_prompt_key="system"
        )
        for messages in _resources(target, ("messages",), ("beta", "messages")):
            _patch(patches, messages, "create", messages_endpoint, call)
            _patch(patches, messages, "parse", messages_endpoint, call)
            _patch(patches, messages, "stream", messages_endpoint, _stream_manager_call)
    for name in ("copy", "with_options"):
        original = getattr(target, name, None)
        if original is not None:
            previous = target.__dict__.get(name, _ABSENT)
            setattr(target, name, _copy_call(original))
            patches.append(_Patch(target, name, previous, None))
    setattr(target, _PATCHES, patches)
    return client


def uninstrument(client: C) -> C:
    """Restore the methods ``instrument`` patched on ``client``; returns the same client."""
    target: Any = client
    patches: list[_Patch] | None = getattr(target, _PATCHES, None)
    if patches is None:
        return client
    for patch in reversed(patches):
        patch.undo()
    target.__dict__.pop(_PATCHES, None)
    return client
