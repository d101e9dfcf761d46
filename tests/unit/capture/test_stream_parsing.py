"""What a stream's items say about usage: OpenAI chat chunks, Responses events, Anthropic events.

The accumulator sees every item on its way to the caller; it must find the reported usage
wherever the provider puts it, and hide only the usage chunk costwatch asked for itself.
"""

from __future__ import annotations

from typing import Any

from anthropic.types import RawMessageStreamEvent
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from costwatch._core.record import TokenUsage
from costwatch.capture._observed import Observed
from costwatch.capture._streams import observe, outcome
from tests._fixtures.fake_providers import (
    AnthropicUsage,
    FakeProvider,
    OpenAIUsage,
    anthropic_events,
    chat_chunks,
    response_events,
)

_responses = TypeAdapter[Any](ResponseStreamEvent)
_anthropic = TypeAdapter[Any](RawMessageStreamEvent)


def _fake() -> FakeProvider:
    fake = FakeProvider(base_url="http://127.0.0.1:1")
    fake.openai_usage = OpenAIUsage(
        prompt_tokens=1200, cached_tokens=1024, completion_tokens=300, reasoning_tokens=200
    )
    fake.anthropic_usage = AnthropicUsage(
        input_tokens=100,
        output_tokens=250,
        cache_read_input_tokens=2000,
        cache_write_5m=1000,
        cache_write_1h=500,
    )
    return fake


def usage_of(obs: Observed) -> TokenUsage:
    assert obs.tokens is not None
    return TokenUsage.of(obs.tokens)


def test_chat_usage_chunk_is_read_and_hidden_when_costwatch_asked_for_it() -> None:
    fake = _fake()
    chunks = [
        ChatCompletionChunk.model_validate(c)
        for c in chat_chunks(fake, "gpt-4o-mini", include_usage=True)
    ]
    acc = Observed(hide_usage_chunk=True)

    shown = [c for c in chunks if not observe(acc, c)]

    assert shown == chunks[:-1]  # only the final usage-only chunk is hidden
    assert usage_of(acc) == TokenUsage(input=176, cache_read=1024, output=100, reasoning=200)
    assert acc.response_model == "gpt-4o-mini-2024-07-18"
    assert acc.text == fake.reply_text
    # the "usage": null the API adds to every chunk is forgotten, as if never requested
    assert all("usage" not in c.model_fields_set for c in shown)


def test_chat_usage_chunk_passes_through_when_the_caller_asked_for_it() -> None:
    chunks = [
        ChatCompletionChunk.model_validate(c)
        for c in chat_chunks(_fake(), "gpt-4o-mini", include_usage=True)
    ]
    acc = Observed(hide_usage_chunk=False)

    shown = [c for c in chunks if not observe(acc, c)]

    assert shown == chunks
    assert all("usage" in c.model_fields_set for c in shown)
    assert acc.tokens is not None and usage_of(acc).total == 1500


def test_chat_stream_without_usage_keeps_the_text_for_estimation() -> None:
    chunks = [
        ChatCompletionChunk.model_validate(c)
        for c in chat_chunks(_fake(), "gpt-4o-mini", include_usage=False)
    ]
    acc = Observed(hide_usage_chunk=True)

    for chunk in chunks:
        observe(acc, chunk)

    assert acc.tokens is None
    assert acc.text == "Hello from the fake provider."


def test_responses_stream_usage_comes_with_response_completed() -> None:
    fake = _fake()
    events = [_responses.validate_python(e) for e in response_events(fake, {"model": "o4-mini"})]
    acc = Observed()

    assert not any(observe(acc, e) for e in events)
    assert usage_of(acc) == TokenUsage(input=176, cache_read=1024, output=100, reasoning=200)
    assert acc.response_model == "o4-mini-2025-04-16"
    assert acc.text == fake.reply_text


def test_anthropic_stream_input_from_message_start_output_from_message_delta(cw: Any) -> None:
    events = [
        _anthropic.validate_python(e)
        for e in anthropic_events(_fake(), "claude-sonnet-4-0", None)
        if e["type"] != "ping"  # the SDK drops pings before they reach the caller
    ]
    acc = Observed()

    for event in events:
        observe(acc, event)

    assert outcome(acc, "claude-sonnet-4-0", True) == (
        TokenUsage(input=100, cache_read=2000, cache_write=1500, output=250, cache_write_1h=500),
        "reported",
    )


def test_anthropic_cumulative_message_delta_counts_win(cw: Any) -> None:
    acc = Observed()
    start = anthropic_events(_fake(), "claude-sonnet-4-0", None)
    observe(acc, _anthropic.validate_python(next(start)))
    observe(
        acc,
        _anthropic.validate_python(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {
                    "input_tokens": 130,
                    "cache_read_input_tokens": 2000,
                    "cache_creation_input_tokens": 1500,
                    "output_tokens": 700,
                    "output_tokens_details": {"thinking_tokens": 600},
                },
            }
        ),
    )

    usage, source = outcome(acc, "claude-sonnet-4-0", True)

    assert usage == TokenUsage(
        input=130,
        cache_read=2000,
        cache_write=1500,
        output=100,
        reasoning=600,
        cache_write_1h=500,
    )
    assert source == "reported"


def test_anthropic_stream_cut_short_estimates_only_the_output(cw: Any) -> None:
    events = anthropic_events(_fake(), "claude-sonnet-4-0", None)
    acc = Observed()
    for event in events:
        if event["type"] == "content_block_delta" and acc.texts:
            observe(acc, _anthropic.validate_python(event))
            break  # two text deltas seen, then the caller walked away
        if event["type"] != "ping":
            observe(acc, _anthropic.validate_python(event))

    usage, source = outcome(acc, "claude-sonnet-4-0", True)

    assert source == "estimated"
    assert acc.text == "Hello from"
    assert usage is not None
    assert (usage.input, usage.cache_read, usage.cache_write) == (100, 2000, 1500)
    assert usage.output == 2  # "Hello from": two tokens, counted, not the provisional 1


def test_items_of_unknown_shape_are_passed_through_untouched() -> None:
    acc = Observed(hide_usage_chunk=True)

    assert observe(acc, "text") is False
    assert observe(acc, {"type": "message_start"}) is False
    assert acc.tokens is None
