"""``instrument()`` with no client: record the calls of every OpenAI and Anthropic client,
whoever creates it and whenever.

Patches ``request`` on the SDKs' client classes (``openai.OpenAI``, ``anthropic.Anthropic``,
their async, Azure, Bedrock and Vertex twins): every call a client makes passes there, by
whatever path it was made (``create``, ``parse``, ``stream()``, ``with_raw_response``,
``with_streaming_response``, a ``with_options`` copy, a framework's own ``client.post``), so
clients made before are recorded as well as those made later, and no SDK-cached wrapper
holds an unpatched method.  A POST to an API path costwatch prices (``endpoints_for``) goes
through the same per-call wrapper as ``instrument(client)`` (budget preflight, usage read,
stream hooks); every other request passes untouched.

A client instrumented on its own (``instrument(client)``) is recorded by its own patches
only: the class patch passes its requests through, so no call is recorded twice.
google-genai clients are instrumented per instance (``instrument(client)``).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any, TypeVar, overload

from costwatch._core.failopen import errors
from costwatch.capture import _instrument
from costwatch.capture._instrument_calls import async_call, sync_call

C = TypeVar("C")

_CALLS = "_costwatch_class_calls"
"""A client's per-path call wrappers, made on its first request: ``(generation, wrappers)``."""

_SDK_CLASSES: dict[str, tuple[str, ...]] = {
    "openai": ("OpenAI", "AsyncOpenAI"),
    "anthropic": (
        "Anthropic",
        "AsyncAnthropic",
        "AnthropicBedrock",
        "AsyncAnthropicBedrock",
        "AnthropicVertex",
        "AsyncAnthropicVertex",
    ),
}
"""The SDKs class-level instrumentation covers -> their client classes (module attributes)."""

_patched: dict[type, tuple[Any, Callable[..., Any]]] = {}
"""Patched class -> (its own ``request`` before, or ``_ABSENT``; the patch)."""
_ABSENT: Any = object()
_generation = 0
"""Bumped by every ``instrument()``: a client's cached wrappers from before are remade."""
_inject_stream_usage: bool | None = None


def _path(options: Any) -> str | None:
    """The priced API path a request posts to, or None."""
    method = getattr(options, "method", "")
    if not isinstance(method, str) or method.lower() != "post":
        return None
    url = getattr(options, "url", None)
    if not isinstance(url, str):
        return None
    return url.partition("?")[0]


def _send_sync(*args: Any, **body: Any) -> Any:
    """The original ``request``, with the body the per-call wrapper may have changed
    (``stream_options.include_usage`` injected)."""
    original, client, cast_to, options, rest, kwargs = args
    return original(client, cast_to, _with_body(options, body), *rest, **kwargs)


async def _send_async(*args: Any, **body: Any) -> Any:
    original, client, cast_to, options, rest, kwargs = args
    return await original(client, cast_to, _with_body(options, body), *rest, **kwargs)


def _with_body(options: Any, body: dict[str, Any]) -> Any:
    body.pop("extra_headers", None)
    if body == options.json_data:
        return options
    return options.model_copy(update={"json_data": body})


def _wrappers(client: Any) -> dict[str, Callable[..., Any]] | None:
    """The client's call wrappers by path; None: pass its requests through (the client is
    instrumented on its own, checked on every call: that may change at any time)."""
    attributes = client.__dict__
    if _instrument._PATCHES in attributes:
        return None
    cached = attributes.get(_CALLS)
    if cached is not None and cached[0] == _generation:
        return cached[1]  # type: ignore[no-any-return]
    sdk, asynchronous, default_provider = _instrument._client_kind(client)
    provider = _instrument._provider_behind(client, default_provider)
    endpoints = _instrument.endpoints_for(
        sdk,
        provider,
        inject_stream_usage=_inject_stream_usage,
        server=str(getattr(client, "base_url", "") or ""),
    )
    make = async_call if asynchronous else sync_call
    send = _send_async if asynchronous else _send_sync
    wrappers = {path: make(ep, send) for path, ep in endpoints.items()}
    attributes[_CALLS] = (_generation, wrappers)
    return wrappers


def _lookup(client: Any, options: Any) -> Callable[..., Any] | None:
    try:
        path = _path(options)
        if path is None:
            return None
        wrappers = _wrappers(client)
        if wrappers is None:
            return None
        wrapper = wrappers.get(path)
        if wrapper is None or not isinstance(options.json_data, dict):
            return None
        return wrapper
    except Exception as exc:
        errors.report("instrument", exc)
        return None


def _body(options: Any) -> dict[str, Any]:
    headers = options.headers
    body = dict(options.json_data)
    if isinstance(headers, dict) and headers:
        body["extra_headers"] = headers
    return body


def _sync_patch(original: Callable[..., Any]) -> Callable[..., Any]:
    def request(self: Any, cast_to: Any, options: Any, *rest: Any, **kwargs: Any) -> Any:
        wrapper = _lookup(self, options)
        if wrapper is None:
            return original(self, cast_to, options, *rest, **kwargs)
        return wrapper(original, self, cast_to, options, rest, kwargs, **_body(options))

    return request


def _async_patch(original: Callable[..., Any]) -> Callable[..., Any]:
    async def request(self: Any, cast_to: Any, options: Any, *rest: Any, **kwargs: Any) -> Any:
        wrapper = _lookup(self, options)
        if wrapper is None:
            return await original(self, cast_to, options, *rest, **kwargs)
        return await wrapper(original, self, cast_to, options, rest, kwargs, **_body(options))

    return request


def _classes(sdk: str) -> list[type]:
    """The client classes of ``sdk`` when it is installed (imports it), else []."""
    if importlib.util.find_spec(sdk) is None:
        return []
    module = importlib.import_module(sdk)
    return [
        cls for name in _SDK_CLASSES[sdk] if isinstance(cls := getattr(module, name, None), type)
    ]


def _patch_class(cls: type) -> None:
    if cls in _patched or any(base in _patched for base in cls.__mro__[1:]):
        return
    original = cls.request  # type: ignore[attr-defined]
    asynchronous = _instrument._client_kind_of_class(cls)[1]
    patch = (_async_patch if asynchronous else _sync_patch)(original)
    _patched[cls] = (cls.__dict__.get("request", _ABSENT), patch)
    setattr(cls, "request", patch)  # noqa: B010 - the attribute the SDK calls


def _unpatch_class(cls: type) -> None:
    previous, patch = _patched.pop(cls)
    if cls.__dict__.get("request") is not patch:  # someone patched over us: leave theirs
        return
    if previous is _ABSENT:
        delattr(cls, "request")
    else:
        setattr(cls, "request", previous)  # noqa: B010


def _names(sdks: tuple[str, ...]) -> tuple[str, ...]:
    for sdk in sdks:
        if sdk not in _SDK_CLASSES:
            raise ValueError(
                f"costwatch.instrument(): sdk must be one of {', '.join(_SDK_CLASSES)}; "
                f"got {sdk!r} (a google-genai client is instrumented on its own: "
                "instrument(client))"
            )
    return sdks or tuple(_SDK_CLASSES)


def instrument_classes(*sdks: str, inject_stream_usage: bool | None = None) -> tuple[str, ...]:
    """Patch the client classes of ``sdks`` (default: every supported SDK that is installed);
    returns the SDKs now instrumented.  Idempotent."""
    global _generation, _inject_stream_usage
    done: list[str] = []
    for sdk in _names(sdks):
        classes = _classes(sdk)
        if classes and sdk not in done:
            done.append(sdk)
        for cls in classes:
            _patch_class(cls)
    _generation += 1
    _inject_stream_usage = inject_stream_usage
    return tuple(done)


def uninstrument_classes(*sdks: str) -> tuple[str, ...]:
    """Restore the client classes of ``sdks`` (default: all); returns the SDKs restored."""
    done: list[str] = []
    for sdk in _names(sdks):
        for cls in [cls for cls in _patched if cls.__module__.split(".")[0] == sdk]:
            _unpatch_class(cls)
            if sdk not in done:
                done.append(sdk)
    return tuple(done)


@overload
def instrument(*, inject_stream_usage: bool | None = None) -> tuple[str, ...]: ...
@overload
def instrument(
    sdk: str, /, *sdks: str, inject_stream_usage: bool | None = None
) -> tuple[str, ...]: ...
@overload
def instrument(client: C, /, *, inject_stream_usage: bool | None = None) -> C: ...
def instrument(*targets: Any, inject_stream_usage: bool | None = None) -> Any:
    """Record LLM calls.

    ``instrument()`` (or ``instrument("openai", "anthropic")``) patches the client classes of
    the installed SDKs: every client, made before or after, by your code or a framework's
    (LangChain, LlamaIndex, LiteLLM...), is recorded; returns the SDKs instrumented.
    ``instrument(client)`` patches that one client (also ``google.genai.Client``) and returns
    it.  Both are idempotent; ``uninstrument`` undoes them.
    ``inject_stream_usage=False`` never adds ``stream_options.include_usage`` to OpenAI chat
    and completion streams (their usage is then estimated from the prompt and streamed text).
    """
    if targets and not isinstance(targets[0], str):
        if len(targets) > 1:
            raise TypeError("costwatch.instrument() takes one client, or SDK names")
        return _instrument.instrument(targets[0], inject_stream_usage=inject_stream_usage)
    return instrument_classes(*targets, inject_stream_usage=inject_stream_usage)


@overload
def uninstrument(*sdks: str) -> tuple[str, ...]: ...
@overload
def uninstrument(client: C, /) -> C: ...
def uninstrument(*targets: Any) -> Any:
    """Undo ``instrument``: ``uninstrument()`` (or with SDK names) restores the client
    classes; ``uninstrument(client)`` restores that client."""
    if targets and not isinstance(targets[0], str):
        if len(targets) > 1:
            raise TypeError("costwatch.uninstrument() takes one client, or SDK names")
        return _instrument.uninstrument(targets[0])
    return uninstrument_classes(*targets)
