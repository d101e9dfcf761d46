"""OpenAI (and the APIs that speak its shape: Azure, Groq, DeepSeek, Together...).

Chat completions, legacy completions and embeddings: ``prompt_tokens`` *includes* cached (and
audio) tokens and ``completion_tokens`` *includes* reasoning (and audio) tokens, so
``input = prompt - cached`` and ``output = completion - reasoning``.  The Responses API says the
same with ``input_tokens``/``output_tokens`` and ``input_tokens_details.cached_tokens``/
``output_tokens_details.reasoning_tokens``, and lists its hosted tool calls (billed per call) in
its output.  ``cache_write_tokens`` stays inside ``input``: OpenAI bills prompt-cache writes at
the plain input rate, so splitting them out would only risk pricing them at zero.  Streams carry
usage on a final usage-only chunk (chat, when ``stream_options.include_usage`` is set) or on
``response.completed`` (Responses API).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any
from urllib.parse import urlsplit

from costwatch._core.memo import BoundedMemo
from costwatch._core.record import MAX_COUNT, SERVICE_TIERS, Extras, InvalidUsage, Tokens, counts
from costwatch.capture._observed import Observed

_EMPTY: Mapping[str, Any] = {}
_NO_EXTRAS = Extras()
_NOT_SEARCHES = frozenset({"open_page", "find_in_page"})

COMPLETION_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
)
"""The usage fields of chat and legacy completions (and embeddings, without the details)."""


COMPLETION_COUNTS = (
    "prompt_tokens",
    "prompt_tokens_details.cached_tokens",
    "completion_tokens",
    "completion_tokens_details.reasoning_tokens",
    "prompt_tokens_details.audio_tokens",
    "completion_tokens_details.audio_tokens",
)
"""The names of ``partition``'s counts, as chat completions call them (for errors)."""
RESPONSES_COUNTS = (
    "input_tokens",
    "input_tokens_details.cached_tokens",
    "output_tokens",
    "output_tokens_details.reasoning_tokens",
    "audio_in",
    "audio_out",
)


def partition(
    prompt: Any,
    cached: Any,
    completion: Any,
    reasoning: Any,
    audio_in: Any = 0,
    audio_out: Any = 0,
    fields: tuple[str, ...] = COMPLETION_COUNTS,
) -> Tokens:
    """OpenAI's counts (prompt with cached, completion with reasoning) as the partition; the
    audio parts of the prompt and the completion (gpt-audio, gpt-4o-audio) bill at audio rates
    (cached audio stays at the cached price).  A count that is not one (``fields`` names them)
    raises ``InvalidUsage``: one combined check for the common case of plain ints."""
    if not (
        int
        is type(prompt)
        is type(cached)
        is type(completion)
        is type(reasoning)
        is type(audio_in)
        is type(audio_out)
        and 0 <= prompt | cached | completion | reasoning | audio_in | audio_out <= MAX_COUNT
    ):
        prompt, cached, completion, reasoning, audio_in, audio_out = counts(
            fields, (prompt, cached, completion, reasoning, audio_in, audio_out)
        )
    fresh = prompt - cached if prompt > cached else 0
    output = completion - reasoning if completion > reasoning else 0
    if audio_in or audio_out:
        audio = Extras(0, 0, min(audio_in, fresh), min(audio_out, output))
        return (fresh, cached, 0, output, reasoning, 0, audio)
    return (fresh, cached, 0, output, reasoning, 0, None)


def _reader(
    prompt_name: str,
    completion_name: str,
    prompt_details: str,
    completion_details: str,
    *,
    audio: bool,
    fields: tuple[str, ...],
) -> Callable[[Any], Tokens]:
    """A reader for OpenAI's usage shape, under the names one API gives its fields.

    The counts and details are read by one ``attrgetter`` call; an object without them is read
    field by field instead.  ``audio``: the details report ``audio_tokens`` (Chat Completions;
    reading an attribute a pydantic model lacks costs microseconds, so the Responses API's
    details, which have none, are not asked).
    """
    read_all = attrgetter(prompt_name, completion_name, prompt_details, completion_details)

    def read(u: Any) -> Tokens:
        try:
            prompt, completion, in_details, out_details = read_all(u)
        except AttributeError:  # a detail is missing: read field by field
            if not hasattr(u, prompt_name) and not hasattr(u, completion_name):
                raise ValueError(  # noqa: B904 - not a failure of the lookup above
                    f"costwatch: unrecognised usage object {type(u).__name__}"
                )
            prompt = getattr(u, prompt_name, 0)  # absent: 0; present but None: invalid
            completion = getattr(u, completion_name, None)
            in_details = getattr(u, prompt_details, None)
            out_details = getattr(u, completion_details, None)
        return partition(
            prompt,
            getattr(in_details, "cached_tokens", None) or 0,
            completion or 0,
            getattr(out_details, "reasoning_tokens", None) or 0,
            getattr(in_details, "audio_tokens", None) or 0 if audio else 0,
            getattr(out_details, "audio_tokens", None) or 0 if audio else 0,
            fields,
        )

    return read


completion_usage = _reader(*COMPLETION_FIELDS, audio=True, fields=COMPLETION_COUNTS)
"""The partition of a chat or legacy completion's (or an embedding's) ``usage``."""
responses_usage = _reader(
    "input_tokens",
    "output_tokens",
    "input_tokens_details",
    "output_tokens_details",
    audio=False,
    fields=RESPONSES_COUNTS,
)
"""The partition of a Responses API ``usage``."""


def dict_usage(u: Mapping[str, Any]) -> Tokens:
    """The partition of a JSON usage body (chat completions' or the Responses API's names)."""
    if "prompt_tokens" in u or "completion_tokens" in u:
        in_details = u.get("prompt_tokens_details") or _EMPTY
        out_details = u.get("completion_tokens_details") or _EMPTY
        return partition(
            u.get("prompt_tokens", 0),  # absent: 0; present but null: invalid
            in_details.get("cached_tokens") or 0,
            u.get("completion_tokens") or 0,
            out_details.get("reasoning_tokens") or 0,
            in_details.get("audio_tokens") or 0,
            out_details.get("audio_tokens") or 0,
        )
    in_details = u.get("input_tokens_details") or _EMPTY
    out_details = u.get("output_tokens_details") or _EMPTY
    return partition(
        u.get("input_tokens", 0),
        in_details.get("cached_tokens") or 0,
        u.get("output_tokens") or 0,
        out_details.get("reasoning_tokens") or 0,
        0,
        0,
        RESPONSES_COUNTS,
    )


def at_tier(tokens: Tokens, tier: str) -> Tokens:
    """``tokens`` of a call the provider says it served at processing ``tier``."""
    extras = (tokens[6] or _NO_EXTRAS)._replace(service_tier=tier)
    return (tokens[0], tokens[1], tokens[2], tokens[3], tokens[4], tokens[5], extras)


def with_tool_calls(tokens: Tokens, output: Any) -> Tokens:
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


def served_dict(tokens: Tokens, body: Mapping[str, Any]) -> Tokens:
    """``tokens`` of a JSON response body with its hosted tool calls and processing tier."""
    output = body.get("output")
    if output and isinstance(output, list):
        tokens = with_tool_calls(tokens, output)
    tier = body.get("service_tier")
    return at_tier(tokens, tier) if tier in SERVICE_TIERS else tokens


def read_chat_completion(obj: Any) -> tuple[Tokens, str] | None:
    """A chat completion SDK object: its counts, processing tier and model read straight from
    the pydantic objects' ``__dict__`` (the most common response of all: pydantic's attribute
    access goes through ``__getattr__``'s slot hook).  ``None``: a count or detail is missing,
    and the caller reads the response with the general reader instead."""
    try:
        fields = obj.__dict__
        usage = fields["usage"].__dict__
        in_details = usage["prompt_tokens_details"].__dict__
        out_details = usage["completion_tokens_details"].__dict__
        prompt = usage["prompt_tokens"]  # required: None is an invalid report
        cached = in_details["cached_tokens"] or 0
        completion = usage["completion_tokens"] or 0
        reasoning = out_details["reasoning_tokens"] or 0
        audio_in = in_details["audio_tokens"] or 0
        audio_out = out_details["audio_tokens"] or 0
        tier = fields["service_tier"]
        model = fields["model"] or ""
    except (AttributeError, KeyError):
        return None
    tokens = partition(prompt, cached, completion, reasoning, audio_in, audio_out)
    return (at_tier(tokens, tier) if tier in SERVICE_TIERS else tokens), model


# --- streams ---------------------------------------------------------------------------------
#
# Chat and legacy completion streams carry usage only on a final usage-only chunk, which OpenAI
# sends only when asked (``stream_options.include_usage``).  ``instrument()`` asks on the
# caller's behalf and hides that chunk, but only from a server known to send it *only* when
# asked: many OpenAI-compatible servers send it unasked, and hiding it there would take a chunk
# from the caller that the server would have sent anyway.  So a server not known is not asked
# on its first stream (a probe, sent as the caller wrote it): if the stream ends with a usage
# chunk, the server sends it unasked (usage is read from it, nothing is ever hidden); if it ends
# without one, later streams ask and hide.

_ASKS_FOR_USAGE_HOSTS = ("api.openai.com",)
_ASKS_FOR_USAGE_SUFFIXES = (".openai.azure.com",)
"""OpenAI's API and Azure OpenAI: documented to send the usage chunk only when asked."""

_usage_unasked: BoundedMemo[str, bool] = BoundedMemo()
"""Server (base URL) -> whether it sent a usage chunk without being asked, as seen."""


def sends_usage_unasked(server: str) -> bool | None:
    """Whether ``server`` (a base URL) sends the usage chunk of a stream without being asked:
    False for OpenAI's and Azure's APIs and servers seen not to; None: not known yet."""
    known = _usage_unasked.get(server)
    if known is not None:
        return known
    host = urlsplit(server).hostname or ""
    if host in _ASKS_FOR_USAGE_HOSTS or host.endswith(_ASKS_FOR_USAGE_SUFFIXES):
        return False
    return None


def learn_usage_unasked(server: str, sent_usage: bool) -> None:
    """A stream to ``server`` sent without asking for usage ended; ``sent_usage``: it carried a
    usage chunk all the same."""
    _usage_unasked.remember(server, sent_usage)


def _chunk_usage(obs: Observed, chunk: Any) -> bool:
    """The usage of a chunk (chat or legacy completion); True: the chunk is the usage-only one
    costwatch asked for, to be hidden from the caller."""
    usage = chunk.usage
    if usage is not None:
        try:
            obs.tokens = completion_usage(usage)
        except InvalidUsage as exc:  # recorded as invalid; the chunk is still hidden if ours
            obs.invalid = exc
        tier = getattr(chunk, "service_tier", None)
        if isinstance(tier, str):
            obs.service_tier = tier
        obs.response_model = chunk.model or obs.response_model
        if obs.hide_usage_chunk and not chunk.choices:
            return True
    elif obs.hide_usage_chunk:
        # With include_usage the API sends ``"usage": null`` on every chunk; without it the key
        # is absent.  Forget that it was set, so ``to_dict()``/``exclude_unset`` match too.
        fields_set = getattr(chunk, "__pydantic_fields_set__", None)
        if fields_set is not None:
            fields_set.discard("usage")
    if not obs.response_model:
        obs.response_model = chunk.model or ""
    return False


def on_chat_chunk(obs: Observed, chunk: Any) -> bool:
    """A ``chat.completion.chunk``: text and tool-call arguments in its deltas."""
    if _chunk_usage(obs, chunk):
        return True
    texts = obs.texts
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


def on_text_completion_chunk(obs: Observed, chunk: Any) -> bool:
    """A legacy ``completions`` chunk (``object: text_completion``): text in ``choices[].text``."""
    if _chunk_usage(obs, chunk):
        return True
    for choice in chunk.choices:
        if choice.text:
            obs.texts.append(choice.text)
    return False


def _on_response_started(obs: Observed, event: Any) -> None:
    response = event.response
    if response is not None and not obs.response_model:
        obs.response_model = response.model or ""


def _on_response_delta(obs: Observed, event: Any) -> None:
    delta = event.delta
    if isinstance(delta, str) and delta:
        obs.texts.append(delta)


def _on_response_finished(obs: Observed, event: Any) -> None:
    response = event.response
    if response is None:
        return
    obs.response_model = response.model or obs.response_model
    usage = response.usage
    if usage is not None:
        tokens = responses_usage(usage)
        obs.tokens = with_tool_calls(tokens, response.output) if response.output else tokens
    tier = getattr(response, "service_tier", None)
    if isinstance(tier, str):
        obs.service_tier = tier
    if event.type == "response.failed":
        error = getattr(response, "error", None)
        obs.error_type = (
            (getattr(error, "code", None) or "response_failed") if error else ("response_failed")
        )


def _on_error(obs: Observed, event: Any) -> None:
    obs.error_type = getattr(event, "code", None) or "stream_error"


EVENT_HANDLERS: dict[str, Callable[[Observed, Any], None]] = {
    "response.created": _on_response_started,
    "response.output_text.delta": _on_response_delta,
    "response.refusal.delta": _on_response_delta,
    "response.function_call_arguments.delta": _on_response_delta,
    "response.reasoning_summary_text.delta": _on_response_delta,
    "response.reasoning_text.delta": _on_response_delta,
    "response.completed": _on_response_finished,
    "response.incomplete": _on_response_finished,
    "response.failed": _on_response_finished,
    "error": _on_error,
}
"""The Responses API's stream events, by ``type``."""
