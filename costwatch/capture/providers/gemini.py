"""Google Gemini (google-genai SDK, and its JSON bodies in snake or camel case).

``prompt_token_count`` includes ``cached_content_token_count``; ``thoughts_token_count`` is
billed beside ``candidates_token_count``; tool-use prompt tokens are input; the per-modality
details give the audio parts.  Streams are plain generators of ``GenerateContentResponse``
chunks whose usage counts are running totals (the last chunk has them all).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costwatch._core.record import Extras, Tokens
from costwatch.capture._observed import Observed


def partition(
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


def audio_of(details: Any) -> int:
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
