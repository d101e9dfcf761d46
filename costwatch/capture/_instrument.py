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
OpenAI call made with ``service_tier="flex"`` or ``"priority"`` is priced at the published
price of the tier that served it; flex at the batch rate where none is published, as OpenAI
bills it).  A provider exception is recorded (``status="error"``) and re-raised unchanged.
OpenAI chat and legacy completion streams get ``stream_options.include_usage`` when the caller
did not set it and the server is known to send the usage chunk only when asked; that chunk is
then hidden from the caller, who sees exactly the chunks the server would have sent.  The SDKs
are never imported: clients are recognised by class name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from costwatch._core.failopen import errors
from costwatch.accounting._recorder import CallSpec
from costwatch.capture._instrument_calls import (
    Endpoint,
    async_call,
    stream_manager_call,
    sync_call,
)

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


# --- patching client instances ----------------------------------------------------------------

_ABSENT: Any = object()


class _Patch:
    __slots__ = ("owner", "name", "previous", "endpoint")

    def __init__(self, owner: Any, name: str, previous: Any, endpoint: Endpoint | None) -> None:
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
        from costwatch.pricing import provider_for_url

        return provider_for_url(str(base_url)) or default
    except Exception as exc:
        errors.report("instrument", exc)
        return default


def _client_kind(client: object) -> tuple[str, bool, str]:
    return _client_kind_of_class(type(client))


def _client_kind_of_class(cls: type) -> tuple[str, bool, str]:
    for base in cls.__mro__:
        parts = base.__module__.split(".")
        module = ".".join(parts[:2]) if parts[0] == "google" else parts[0]
        found = _CLIENT_CLASSES.get((module, base.__name__))
        if found is not None:
            return found
    names = ", ".join(f"{m}.{n}" for m, n in _CLIENT_CLASSES)
    raise TypeError(
        f"costwatch.instrument() supports {names}; got {cls.__module__}."
        f"{cls.__qualname__} (install the SDK extra: pip install 'costwatch[openai]', "
        "'costwatch[anthropic]' or 'costwatch[gemini]')"
    )


def _patch(
    patches: list[_Patch],
    owner: Any,
    name: str,
    endpoint: Endpoint,
    make: Callable[[Endpoint, Callable[..., Any]], Callable[..., Any]],
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
    content = Endpoint(generation, "contents", ("max_output_tokens",))
    embedding = Endpoint(CallSpec(provider, "", "embedding", "embeddings"), "contents", ())
    aio = getattr(client, "aio", None)
    for models, make in (
        (getattr(client, "models", None), sync_call),
        (getattr(aio, "models", None), async_call),
    ):
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


def endpoints_for(
    sdk: str, provider: str, *, inject_stream_usage: bool | None, server: str = ""
) -> dict[str, Endpoint]:
    """What each API path of an OpenAI or Anthropic client records, by the path the SDK posts
    to (``instrument(client)`` patches the resource methods that post there; class-level
    instrumentation matches the path of the request itself).  ``server``: the client's base
    URL, where costwatch learns whether it sends a stream's usage unasked."""
    generation = CallSpec(provider, "", "generation", "chat")
    if sdk == "anthropic":
        messages = Endpoint(generation, "messages", ("max_tokens",), extra_prompt_key="system")
        return {"/v1/messages": messages}
    return {
        "/chat/completions": Endpoint(
            generation,
            "messages",
            ("max_completion_tokens", "max_tokens"),
            inject_usage=inject_stream_usage,
            server=server,
            service_tiers=True,
        ),
        "/responses": Endpoint(
            generation,
            "input",
            ("max_output_tokens",),
            extra_prompt_key="instructions",
            service_tiers=True,
        ),
        "/embeddings": Endpoint(CallSpec(provider, "", "embedding", "embeddings"), "input", ()),
        "/completions": Endpoint(
            CallSpec(provider, "", "generation", "text_completion"),
            "prompt",
            ("max_tokens",),
            inject_usage=inject_stream_usage,
            server=server,
            service_tiers=True,
        ),
    }


_RESOURCES: dict[str, dict[str, tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]]] = {
    "openai": {
        "/chat/completions": (
            (("chat", "completions"), ("beta", "chat", "completions")),
            ("create", "parse"),
        ),
        "/responses": ((("responses",),), ("create", "parse")),
        "/embeddings": ((("embeddings",),), ("create",)),
        "/completions": ((("completions",),), ("create",)),
    },
    "anthropic": {
        "/v1/messages": ((("messages",), ("beta", "messages")), ("create", "parse", "stream")),
    },
}
"""API path -> (the resources that post there, the methods patched on them)."""

_BOUND_WRAPPERS = ("with_raw_response", "with_streaming_response")


def _forget_bound_wrappers(client: Any, sdk: str) -> None:
    """Drop the ``with_raw_response``/``with_streaming_response`` wrappers the SDK cached
    (``cached_property``) on the client and on every resource on the way to a patched one:
    they hold the methods as they were when first used, so after ``instrument`` and
    ``uninstrument`` they are rebuilt around the methods then in place."""
    for paths, _ in _RESOURCES.get(sdk, {}).values():
        for path in paths:
            owner = client
            for name in (None, *path):
                if name is not None:
                    owner = getattr(owner, name, None)
                    if owner is None:
                        break
                for wrapper in _BOUND_WRAPPERS:
                    owner.__dict__.pop(wrapper, None)


def instrument(client: C, *, inject_stream_usage: bool | None = None) -> C:
    """Record every call ``client`` makes; returns the same client.  Idempotent.

    Supports ``openai.OpenAI``/``AsyncOpenAI`` (and subclasses such as ``AzureOpenAI``) and
    ``anthropic.Anthropic``/``AsyncAnthropic`` (and ``AnthropicBedrock``/``AnthropicVertex``,
    sync and async) and ``google.genai.Client`` (its ``models`` and ``aio.models``).  Raises
    ``TypeError`` for anything else.  A client pointed at another provider's compatible API
    (Groq, DeepSeek, OpenRouter, Gemini, Azure...) records and prices its calls as that
    provider's, found from the base URL.
    OpenAI chat and completion streams: the caller sees exactly the chunks the server sends.
    ``inject_stream_usage=None`` (the default) adds ``stream_options.include_usage`` (and hides
    the usage chunk it causes) only where the server is known to send that chunk only when
    asked: OpenAI's and Azure's APIs, and a server whose first stream, sent as the caller wrote
    it, ended without one (until then its usage is estimated; a server that sends the chunk
    unasked is never asked, its usage read from that chunk).  ``True`` asks every time (the
    caller vouches that the server sends the chunk only when asked); ``False`` never asks (for
    servers and old Azure API versions that reject it): usage is then estimated from the prompt
    and the streamed text unless the server sends it anyway.
    """
    if getattr(client, _PATCHES, None) is not None:
        return client
    sdk, asynchronous, default_provider = _client_kind(client)
    provider = _provider_behind(client, default_provider)
    call = async_call if asynchronous else sync_call
    manager_call = functools.partial(stream_manager_call, asynchronous=asynchronous)
    patches: list[_Patch] = []
    target: Any = client
    if sdk == "google-genai":
        _patch_genai(patches, target, CallSpec(provider, "", "generation", "chat"), provider)
    else:
        server = str(getattr(client, "base_url", "") or "")
        endpoints = endpoints_for(
            sdk, provider, inject_stream_usage=inject_stream_usage, server=server
        )
        for path, (paths, names) in _RESOURCES[sdk].items():
            for resource in _resources(target, *paths):
                for name in names:
                    make = manager_call if name == "stream" else call
                    _patch(patches, resource, name, endpoints[path], make)
        _forget_bound_wrappers(target, sdk)
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
    _forget_bound_wrappers(target, _client_kind(client)[0])
    target.__dict__.pop(_PATCHES, None)
    return client
