"""Google Gemini (google-genai SDK, and its JSON bodies in snake or camel case).

``prompt_token_count`` includes ``cached_content_token_count``; ``thoughts_token_count`` is
billed beside ``candidates_token_count``; tool-use prompt tokens are input; the per-modality
details give the audio parts.  Streams are plain generators of ``GenerateContentResponse``
chunks whose usage counts are running totals (the last chunk has them all).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costwatch._core.record import MAX_COUNT, Extras, Tokens, counts
from costwatch.capture._observed import Observed

COUNTS = (
    "prompt_token_count",
    "cached_content_token_count",
    "tool_use_prompt_token_count",
    "candidates_token_count",
    "thoughts_token_count",
    "prompt_tokens_details[AUDIO].token_count",
    "candidates_tokens_details[AUDIO].token_count",
)
"""The names of ``partition``'s counts (for errors)."""


def partition(
    prompt: Any,
    cached: Any,
    tool_prompt: Any,
    output: Any,
    thoughts: Any,
    audio_in: Any,
    audio_out: Any,
) -> Tokens:
    """Gemini's counts (the prompt with its cached part; thoughts beside the candidates) and
    the audio parts its per-modality details report.  A count that is not one raises
    ``InvalidUsage`` (one combined check for plain ints)."""
    if not (
        int
        is type(prompt)
        is type(cached)
        is type(tool_prompt)
        is type(output)
        is type(thoughts)
        is type(audio_in)
        is type(audio_out)
        and 0
        <= prompt | cached | tool_prompt | output | thoughts | audio_in | audio_out
        <= MAX_COUNT
    ):
        prompt, cached, tool_prompt, output, thoughts, audio_in, audio_out = counts(
            COUNTS, (prompt, cached, tool_prompt, output, thoughts, audio_in, audio_out)
        )
    fresh = max(prompt - cached, 0) + tool_prompt
    extras = (
        Extras(0, 0, min(audio_in, fresh), min(audio_out, output))
        if audio_in or audio_out
        else None
    )
    return (fresh, cached, 0, output, thoughts, 0, extras)


def audio_of(details: Any) -> Any:
    """The ``AUDIO`` tokens of the per-modality counts (SDK objects or JSON)."""
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
            if type(count) is not int:
                return count  # not a count: ``partition`` names and refuses it
            total += count
    return total


def usage(u: Any) -> Tokens:
    """The partition of an SDK ``usage_metadata`` object."""
    return partition(
        getattr(u, "prompt_token_count", None) or 0,
        getattr(u, "cached_content_token_count", None) or 0,
        getattr(u, "tool_use_prompt_token_count", None) or 0,
        getattr(u, "candidates_token_count", None) or 0,
        getattr(u, "thoughts_token_count", None) or 0,
        audio_of(getattr(u, "prompt_tokens_details", None)),
        audio_of(getattr(u, "candidates_tokens_details", None)),
    )


def dict_usage(u: Mapping[str, Any]) -> Tokens:
    """The partition of a JSON ``usageMetadata`` (snake or camel case)."""
    return partition(
        u.get("prompt_token_count") or u.get("promptTokenCount") or 0,
        u.get("cached_content_token_count") or u.get("cachedContentTokenCount") or 0,
        u.get("tool_use_prompt_token_count") or u.get("toolUsePromptTokenCount") or 0,
        u.get("candidates_token_count") or u.get("candidatesTokenCount") or 0,
        u.get("thoughts_token_count") or u.get("thoughtsTokenCount") or 0,
        audio_of(u.get("prompt_tokens_details") or u.get("promptTokensDetails")),
        audio_of(u.get("candidates_tokens_details") or u.get("candidatesTokensDetails")),
    )


def read_response(obj: Any) -> tuple[Tokens, str] | None:
    """A ``GenerateContentResponse``: its usage and the model version that served it."""
    meta = obj.usage_metadata
    if meta is None:
        return None
    return usage(meta), getattr(obj, "model_version", None) or ""


def read_dict_response(body: Mapping[str, Any]) -> tuple[Tokens, str] | None:
    meta = body.get("usage_metadata") or body.get("usageMetadata")
    if not isinstance(meta, Mapping):
        return None
    return dict_usage(meta), body.get("model_version") or body.get("modelVersion") or ""


# --- streams ---------------------------------------------------------------------------------


def on_chunk(obs: Observed, chunk: Any) -> bool:
    """A streamed ``GenerateContentResponse``: running usage totals, text in its parts."""
    meta = chunk.usage_metadata
    if meta is not None and getattr(meta, "candidates_token_count", None) is not None:
        obs.tokens = usage(meta)
    if chunk.model_version:
        obs.response_model = chunk.model_version
    for candidate in chunk.candidates or ():
        content = candidate.content
        for part in (content.parts if content is not None else None) or ():
            if part.text:
                obs.texts.append(part.text)
    return False
