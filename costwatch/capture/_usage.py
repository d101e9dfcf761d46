"""Read billed tokens from provider responses into the ``TokenUsage`` partition.

Runs on every wrapped call, so the reader for a response *class* is chosen once and cached;
reading is then a handful of attribute lookups (no ``isinstance`` chains, no ``model_dump``).
SDK objects (pydantic models) and plain dicts (JSON bodies) are both understood, and every
detail field may be ``None`` or missing.

Shapes and how they map (the partition sums to the billed total):

* OpenAI chat completions / embeddings — ``prompt_tokens`` *includes* cached tokens and
  ``completion_tokens`` *includes* reasoning tokens: ``input = prompt - cached``,
  ``output = completion - reasoning``.
* OpenAI Responses API — the same with ``input_tokens`` / ``output_tokens`` and
  ``input_tokens_details.cached_tokens`` / ``output_tokens_details.reasoning_tokens``.
* Anthropic messages — ``input_tokens`` *excludes* cache reads and writes, which are reported
  beside it; ``cache_creation`` splits writes into 5-minute and 1-hour entries
  (``cache_write_1h`` is the 1-hour subset).  ``output_tokens_details.thinking_tokens``, when
  reported, is the reasoning part of ``output_tokens``.
* Google Gemini ``usage_metadata`` — ``prompt_token_count`` includes
  ``cached_content_token_count``; ``thoughts_token_count`` is billed beside
  ``candidates_token_count``.

OpenAI's ``cache_write_tokens`` detail stays inside ``input``: OpenAI bills prompt-cache writes
at the plain input rate, so splitting them out would only risk pricing them at zero.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any, get_args

from costwatch._core.record import SERVICE_TIERS, Extras, TokenUsage

Tokens = tuple[int, int, int, int, int, int, Extras | None]
"""``(input, cache_read, cache_write, output, reasoning, cache_write_1h, extras)``:
``TokenUsage`` as a plain tuple, which the readers return because a tuple costs a tenth of an
object to build.  ``extras`` (searches, audio) is None for nearly every call."""
UsageReader = Callable[[Any], Tokens]
ResponseReader = Callable[[Any], "tuple[Tokens, str] | None"]

_MAX_CACHED_TYPES = 512
"""Bound on the per-class reader caches (classes made on the fly must not grow them forever)."""


# --- usage sub-objects: attribute access (SDK models, dataclasses, namespaces) -------------


def _openai_reader(
    prompt_name: str,
    completion_name: str,
    prompt_details: str,
    completion_details: str,
    *,
    audio: bool,
) -> UsageReader:
    """A reader for OpenAI's usage shape, under the names one API gives its fields.

    The prompt count includes cached (and audio) tokens and the completion count includes
    reasoning (and audio) tokens, in both the Chat Completions and the Responses API.  The
    counts and details are read by one ``attrgetter`` call; an object without them is read
    field by field instead.  ``audio``: the details report ``audio_tokens`` (Chat Completions;
    reading an attribute a pydantic model lacks costs microseconds, so the Responses API's
    details, which have none, are not asked).
    """
    read_all = attrgetter(prompt_name, completion_name, prompt_details, completion_details)

    def read(u: Any) -> Tokens:
        try:
            prompt, completion, in_details, out_details = read_all(u)
        except AttributeError:
            prompt = getattr(u, prompt_name, None)
            completion = getattr(u, completion_name, None)
            in_details = getattr(u, prompt_details, None)
            out_details = getattr(u, completion_details, None)
        return _openai_partition(
            prompt or 0,
            getattr(in_details, "cached_tokens", None) or 0,
            completion or 0,
            getattr(out_details, "reasoning_tokens", None) or 0,
            getattr(in_details, "audio_tokens", None) or 0 if audio else 0,
            getattr(out_details, "audio_tokens", None) or 0 if audio else 0,
        )

    return read


_COMPLETION_NAMES = (
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
)
_openai_completion_usage = _openai_reader(*_COMPLETION_NAMES, audio=True)
_openai_responses_usage = _openai_reader(
    "input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details", audio=False
)


def _anthropic_usage(u: Any) -> Tokens:
    fresh = getattr(u, "input_tokens", None) or 0
    read = getattr(u, "cache_read_input_tokens", None) or 0
    write = getattr(u, "cache_creation_input_tokens", None)
    creation = getattr(u, "cache_creation", None)
    write_5m = write_1h = 0
    if creation is not None:
        write_5m = getattr(creation, "ephemeral_5m_input_tokens", None) or 0
        write_1h = getattr(creation, "ephemeral_1h_input_tokens", None) or 0
    output = getattr(u, "output_tokens", None) or 0
    tools = getattr(u, "server_tool_use", None)
    searches = 0 if tools is None else getattr(tools, "web_search_requests", None) or 0
    details = getattr(u, "output_tokens_details", None)
    if details is None:
        if write is not None and write >= write_1h:
            return (fresh, read, write, output, 0, write_1h, Extras(searches) if searches else None)
        thinking = 0
    else:
        thinking = getattr(details, "thinking_tokens", None) or 0
    return _anthropic_partition(fresh, read, write, write_5m, write_1h, output, thinking, searches)


def _gemini_usage(u: Any) -> Tokens:
    prompt = getattr(u, "prompt_token_count", None) or 0
    cached = getattr(u, "cached_content_token_count", None) or 0
    tool_prompt = getattr(u, "tool_use_prompt_token_count", None) or 0
    output = getattr(u, "candidates_token_count", None) or 0
    thoughts = getattr(u, "thoughts_token_count", None) or 0
    return _gemini_partition(
        prompt,
        cached,
        tool_prompt,
        output,
        thoughts,
        _audio_of(getattr(u, "prompt_tokens_details", None)),
        _audio_of(getattr(u, "candidates_tokens_details", None)),
    )


def _gemini_partition(
    prompt: int,
    cached: int,
    tool_prompt: int,
    output: int,
    thoughts: int,
    audio_in: int,
    audio_out: int,
) -> Tokens:
    """Gemini's counts (the prompt with its cached part; thoughts beside the candidates) and
    the audio parts its per-modality details report."""
    fresh = int(max(prompt - cached, 0) + tool_prompt)
    extras = (
        Extras(0, 0, min(int(audio_in), fresh), min(int(audio_out), int(output)))
        if audio_in or audio_out
        else None
    )
    return (fresh, int(cached), 0, int(output), int(thoughts), 0, extras)


def _audio_of(details: Any) -> int:
    """The ``AUDIO`` tokens of Gemini's per-modality counts (SDK objects or JSON)."""
    if not details:
        return 0
    total = 0
    for entry in details:
        if isinstance(entry, Mapping):
            modality = entry.get("modality")
            count = entry.get("token_count") or entry.get("tokenCount") or 0
        else:
            modality = getattr(entry, "modality", None)
            count = getattr(entry, "token_count", None) or 0
        if getattr(modality, "value", modality) == "AUDIO":
            total += count
    return total


# --- usage sub-objects: plain dicts (JSON bodies) -----------------------------------------


def _dict_usage(u: Mapping[str, Any], provider: str) -> Tokens | None:
    """Classify a usage dict by its keys; ``None`` when it has no shape we know."""
    if "prompt_tokens" in u or "completion_tokens" in u:
        in_details = u.get("prompt_tokens_details") or _EMPTY
        out_details = u.get("completion_tokens_details") or _EMPTY
        return _openai_partition(
            int(u.get("prompt_tokens") or 0),
            int(in_details.get("cached_tokens") or 0),
            int(u.get("completion_tokens") or 0),
            int(out_details.get("reasoning_tokens") or 0),
            int(in_details.get("audio_tokens") or 0),
            int(out_details.get("audio_tokens") or 0),
        )
    if "input_tokens" in u or "output_tokens" in u:
        output_details = u.get("output_tokens_details") or _EMPTY
        if provider != "anthropic" and "input_tokens_details" in u:
            details = u.get("input_tokens_details") or _EMPTY
            return _openai_partition(
                int(u.get("input_tokens") or 0),
                int(details.get("cached_tokens") or 0),
                int(u.get("output_tokens") or 0),
                int(output_details.get("reasoning_tokens") or 0),
            )
        creation = u.get("cache_creation") or _EMPTY
        return _anthropic_partition(
            u.get("input_tokens") or 0,
            u.get("cache_read_input_tokens") or 0,
            u.get("cache_creation_input_tokens"),
            creation.get("ephemeral_5m_input_tokens") or 0,
            creation.get("ephemeral_1h_input_tokens") or 0,
            u.get("output_tokens") or 0,
            output_details.get("thinking_tokens") or output_details.get("reasoning_tokens") or 0,
            (u.get("server_tool_use") or _EMPTY).get("web_search_requests") or 0,
        )
    if "prompt_token_count" in u or "promptTokenCount" in u:
        return _gemini_partition(
            u.get("prompt_token_count") or u.get("promptTokenCount") or 0,
            u.get("cached_content_token_count") or u.get("cachedContentTokenCount") or 0,
            u.get("tool_use_prompt_token_count") or u.get("toolUsePromptTokenCount") or 0,
            u.get("candidates_token_count") or u.get("candidatesTokenCount") or 0,
            u.get("thoughts_token_count") or u.get("thoughtsTokenCount") or 0,
            _audio_of(u.get("prompt_tokens_details") or u.get("promptTokensDetails")),
            _audio_of(u.get("candidates_tokens_details") or u.get("candidatesTokensDetails")),
        )
    return None


_EMPTY: Mapping[str, Any] = {}


def _openai_partition(
    prompt: int, cached: int, completion: int, reasoning: int, audio_in: int = 0, audio_out: int = 0
) -> Tokens:
    """OpenAI's counts (prompt with cached, completion with reasoning) as the partition; the
    audio parts of the prompt and the completion (gpt-audio, gpt-4o-audio) bill at audio rates
    (cached audio stays at the cached price)."""
    fresh = prompt - cached if prompt > cached else 0
    output = completion - reasoning if completion > reasoning else 0
    if audio_in or audio_out:
        audio = Extras(0, 0, min(audio_in, fresh), min(audio_out, output))
        return (fresh, cached, 0, output, reasoning, 0, audio)
    return (fresh, cached, 0, output, reasoning, 0, None)


def _anthropic_partition(
    fresh: int,
    read: int,
    write: int | None,
    write_5m: int,
    write_1h: int,
    output: int,
    thinking: int,
    web_searches: int,
) -> Tokens:
    if write is None:
        write = write_5m + write_1h
    thinking = min(thinking, output)
    return (
        int(fresh),
        int(read),
        int(max(write, write_1h)),
        int(output - thinking),
        int(thinking),
        int(write_1h),
        Extras(int(web_searches)) if web_searches else None,
    )


# --- choosing a reader once per class -------------------------------------------------------

_usage_readers: dict[type, UsageReader | None] = {}
_UNKNOWN: Any = object()


def _fields_of(cls: type) -> frozenset[str] | None:
    """Attribute names every instance of ``cls`` has (pydantic models, dataclasses), else None."""
    fields = getattr(cls, "model_fields", None)
    if isinstance(fields, Mapping):
        return frozenset(fields)
    fields = getattr(cls, "__dataclass_fields__", None)
    if isinstance(fields, Mapping):
        return frozenset(fields)
    return None


_ANTHROPIC_ONLY = frozenset(
    {"cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation"}
)


def _usage_reader_for(names: frozenset[str] | set[str], provider: str) -> UsageReader | None:
    if "prompt_tokens" in names or "completion_tokens" in names:
        return _openai_completion_usage
    if "prompt_token_count" in names:
        return _gemini_usage
    if "input_tokens" in names or "output_tokens" in names:
        if provider == "anthropic" or not _ANTHROPIC_ONLY.isdisjoint(names):
            return _anthropic_usage
        return _openai_responses_usage
    return None


def _instance_names(obj: object) -> set[str]:
    names = getattr(obj, "__dict__", None)
    found = set(names) if isinstance(names, Mapping) else set()
    for name in ("prompt_tokens", "prompt_token_count", "input_tokens", "output_tokens"):
        if hasattr(obj, name):
            found.add(name)
    return found


def _read_usage(provider: str, usage_obj: object) -> Tokens | None:
    cls = type(usage_obj)
    reader = _usage_readers.get(cls, _UNKNOWN)
    if reader is _UNKNOWN:
        if isinstance(usage_obj, Mapping):
            return _dict_usage(usage_obj, provider)
        fields = _fields_of(cls)
        if fields is None:
            # A class whose attribute set may vary per instance: classify this one object.
            reader = _usage_reader_for(_instance_names(usage_obj), provider)
        else:
            reader = _usage_reader_for(fields, provider)
            if len(_usage_readers) < _MAX_CACHED_TYPES:
                _usage_readers[cls] = reader
    return None if reader is None else reader(usage_obj)


def extract_provider_usage(provider: str, usage_obj: object) -> TokenUsage:
    """The ``TokenUsage`` of a provider's ``usage`` sub-object (SDK model or dict).

    ``provider`` settles the one ambiguous shape (``input_tokens``/``output_tokens`` with
    details of both kinds): ``"anthropic"`` means cache tokens are reported beside
    ``input_tokens``.  Raises ``ValueError`` for an object of no known shape.
    """
    tokens = _read_usage(provider, usage_obj)
    if tokens is None:
        raise ValueError(
            f"costwatch: unrecognised {provider or 'provider'} usage object "
            f"of type {type(usage_obj).__name__}"
        )
    return TokenUsage.of(tokens)


# --- whole responses -------------------------------------------------------------------------

_response_readers: dict[type, ResponseReader] = {}


def _no_usage(obj: Any) -> None:
    return None


def _read_sdk_response(obj: Any) -> tuple[Tokens, str] | None:
    usage_obj = obj.usage
    if usage_obj is None:
        return None
    read = _usage_readers.get(type(usage_obj))  # _read_usage's cached case, inlined
    tokens = read(usage_obj) if read is not None else _read_usage("", usage_obj)
    if tokens is None:
        return None
    return tokens, getattr(obj, "model", None) or ""


def _read_tiered_response(obj: Any) -> tuple[Tokens, str] | None:
    """A response class with a ``service_tier`` field (OpenAI): the tier that served it.

    Only for classes that declare the field: reading a missing attribute of a pydantic model
    raises inside its ``__getattr__``, which costs microseconds."""
    found = _read_sdk_response(obj)
    if found is None:
        return None
    tier = obj.service_tier
    return (_at_tier(found[0], tier), found[1]) if tier in SERVICE_TIERS else found


def _at_tier(tokens: Tokens, tier: str) -> Tokens:
    """``tokens`` of a call the provider says it served at processing ``tier`` (OpenAI)."""
    extras = (tokens[6] or _NO_EXTRAS)._replace(service_tier=tier)
    return (tokens[0], tokens[1], tokens[2], tokens[3], tokens[4], tokens[5], extras)


def _read_openai_response(obj: Any) -> tuple[Tokens, str] | None:
    """An OpenAI Responses API response: its usage, its tier, and the hosted tool calls in its
    output (looked for only when the response lists tools: most calls have none)."""
    found = _read_tiered_response(obj)
    if found is None or not obj.tools or not obj.output:
        return found
    return _with_tool_calls(found[0], obj.output), found[1]


def _with_tool_calls(tokens: Tokens, output: Any) -> Tokens:
    """``tokens`` with the web and file searches a Responses ``output`` lists.

    OpenAI bills its hosted search tools per call and lists each call as an output item
    (``web_search_call``, ``file_search_call``); the usage does not count them.  A web search
    call that only opened a page or searched within one (``open_page``, ``find_in_page``) ran
    no search and is not counted.
    """
    web = files = 0
    for item in output:
        mapping = type(item) is dict  # JSON; an ABC isinstance check costs ~0.2 µs an item
        kind = item.get("type") if mapping else getattr(item, "type", None)
        if kind == "file_search_call":
            files += 1
        elif kind == "web_search_call":
            # Only a search call has an action to read (a missing pydantic attribute is slow).
            action = item.get("action") if mapping else getattr(item, "action", None)
            if isinstance(action, Mapping):
                action = action.get("type")
            else:
                action = getattr(action, "type", None)
            if action not in _NOT_SEARCHES:
                web += 1
    if not web and not files:
        return tokens
    extras = tokens[6] or _NO_EXTRAS
    extras = extras._replace(
        web_searches=extras.web_searches + web, file_searches=extras.file_searches + files
    )
    return (tokens[0], tokens[1], tokens[2], tokens[3], tokens[4], tokens[5], extras)


_NOT_SEARCHES = frozenset({"open_page", "find_in_page"})
_NO_EXTRAS = Extras()


def _read_gemini_response(obj: Any) -> tuple[Tokens, str] | None:
    meta = obj.usage_metadata
    if meta is None:
        return None
    usage = _read_usage("gemini", meta)
    if usage is None:
        return None
    return usage, getattr(obj, "model_version", None) or ""


def _read_dict_response(obj: Mapping[str, Any]) -> tuple[Tokens, str] | None:
    usage_obj = obj.get("usage")
    if usage_obj is not None:
        usage = _read_usage("", usage_obj)
        if usage is None:
            return None
        output = obj.get("output")
        if output and isinstance(output, list):
            usage = _with_tool_calls(usage, output)
        tier = obj.get("service_tier")
        if tier in SERVICE_TIERS:
            usage = _at_tier(usage, tier)
        return usage, obj.get("model") or ""
    meta = obj.get("usage_metadata") or obj.get("usageMetadata")
    if meta is not None:
        usage = _read_usage("gemini", meta)
        if usage is None:
            return None
        return usage, obj.get("model_version") or obj.get("modelVersion") or ""
    return None


def _read_any_object(obj: Any) -> tuple[Tokens, str] | None:
    """Objects whose attributes may differ per instance: look each time."""
    if getattr(obj, "usage", None) is not None:
        return _read_sdk_response(obj)
    if getattr(obj, "usage_metadata", None) is not None:
        return _read_gemini_response(obj)
    return None


_UNCACHEABLE = (str, bytes, int, float, bool, type(None), list, tuple)


def _read_chat_completion(obj: Any) -> tuple[Tokens, str] | None:
    """A chat completion SDK object: its counts, processing tier and model read straight from
    the pydantic objects' ``__dict__`` (the most common response of all: pydantic's attribute
    access goes through ``__getattr__``'s slot hook).  Only for classes that declare
    ``service_tier`` (not legacy completions).  The first response of its class whose usage or
    a detail is ``None`` or missing (servers that send no details) hands the class to the
    general reader for good."""
    try:
        fields = obj.__dict__
        usage = fields["usage"].__dict__
        in_details = usage["prompt_tokens_details"].__dict__
        out_details = usage["completion_tokens_details"].__dict__
        cached = in_details["cached_tokens"]
        reasoning = out_details["reasoning_tokens"]
        audio = in_details["audio_tokens"] or out_details["audio_tokens"]
        tier = fields["service_tier"]
    except (AttributeError, KeyError):
        reader = _sdk_response_reader(type(obj), _fields_of(type(obj)) or frozenset(), fused=False)
        _response_readers[type(obj)] = reader
        return reader(obj)
    if not audio and tier not in SERVICE_TIERS:
        # _openai_partition without audio, inline: the call path's most common response.
        prompt = usage["prompt_tokens"]
        completion = usage["completion_tokens"]
        try:
            return (
                (
                    prompt - cached if prompt > cached else 0,
                    cached,
                    0,
                    completion - reasoning if completion > reasoning else 0,
                    reasoning,
                    0,
                    None,
                ),
                fields["model"] or "",
            )
        except TypeError:  # a count is None (sent as null): read as 0 below
            pass
    return _read_chat_completion_extras(fields, usage, in_details, out_details)


def _read_chat_completion_extras(
    fields: dict[str, Any],
    usage: dict[str, Any],
    in_details: dict[str, Any],
    out_details: dict[str, Any],
) -> tuple[Tokens, str]:
    """A chat completion with audio tokens, served at another processing tier, or with a count
    sent as null."""
    tokens = _openai_partition(
        usage["prompt_tokens"] or 0,
        in_details["cached_tokens"] or 0,
        usage["completion_tokens"] or 0,
        out_details["reasoning_tokens"] or 0,
        in_details["audio_tokens"] or 0,
        out_details["audio_tokens"] or 0,
    )
    tier = fields["service_tier"]
    if tier in SERVICE_TIERS:
        tokens = _at_tier(tokens, tier)
    return tokens, fields["model"] or ""


def _declared_usage_class(cls: type) -> type | None:
    """The one class a pydantic response class declares for ``usage`` (``Optional`` unwrapped)."""
    field = getattr(cls, "model_fields", {}).get("usage")
    annotation = getattr(field, "annotation", None)
    options = [a for a in (get_args(annotation) or (annotation,)) if a is not type(None)]
    if len(options) == 1 and isinstance(options[0], type):
        return options[0]
    return None


def _sdk_response_reader(cls: type, fields: frozenset[str], fused: bool = True) -> ResponseReader:
    """The reader for a response class; ``fused=False``: not the fused chat-completion one
    (a response of the class lacked a detail it reads)."""
    usage_cls = _declared_usage_class(cls) if fused else None
    if usage_cls is not None and "model" in fields and "service_tier" in fields:
        usage_fields = _fields_of(usage_cls) or frozenset()
        if usage_fields.issuperset(_COMPLETION_NAMES):
            return _read_chat_completion
    if "output" in fields:
        return _read_openai_response
    if "service_tier" in fields:
        return _read_tiered_response
    return _read_sdk_response


def _response_reader_for(cls: type) -> ResponseReader:
    if issubclass(cls, Mapping):
        return _read_dict_response
    if issubclass(cls, _UNCACHEABLE):
        return _no_usage
    fields = _fields_of(cls)
    if fields is None:
        return _read_any_object
    if "usage" in fields:
        return _sdk_response_reader(cls, fields)
    if "usage_metadata" in fields:
        return _read_gemini_response
    return _no_usage


def extract_tokens(obj: object) -> tuple[Tokens, str] | None:
    """``(tokens, response_model or "")`` from a provider response (SDK object or dict).

    ``None`` when the object carries no usage (a stream, a list, a response without usage).
    """
    cls = type(obj)
    reader = _response_readers.get(cls)
    if reader is None:
        reader = _response_reader_for(cls)
        if len(_response_readers) < _MAX_CACHED_TYPES:
            _response_readers[cls] = reader
    return reader(obj)


cached_reader: Callable[[type], ResponseReader | None] = _response_readers.get
"""The reader :func:`extract_tokens` has cached for a response class, or None: the decorators'
call path calls it directly (``read(result)``), which saves a function call."""


def extract_usage(obj: object) -> tuple[TokenUsage, str] | None:
    """``(usage, response_model or "")``: :func:`extract_tokens` as a ``TokenUsage``."""
    found = extract_tokens(obj)
    return None if found is None else (TokenUsage.of(found[0]), found[1])
