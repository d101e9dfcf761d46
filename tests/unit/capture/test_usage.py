"""Reading billed tokens from provider responses into the token_type partition.

Each provider reports usage differently; whatever the shape, the partition must sum to the
tokens the provider billed and put each token in the bucket it is priced by.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from anthropic.types import Message
from anthropic.types import Usage as AnthropicUsage
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.completion_usage import CompletionUsage
from openai.types.responses import Response

from costwatch._core.record import InvalidUsage, TokenUsage
from costwatch.capture._usage import _read_chat_completion, extract_provider_usage, extract_usage
from tests._fixtures.fake_providers import (
    AnthropicUsage as FakeAnthropicUsage,
)
from tests._fixtures.fake_providers import (
    FakeProvider,
    OpenAIUsage,
    anthropic_message,
    chat_completion,
    embeddings,
    response_object,
)


def _fake(**openai_usage: int) -> FakeProvider:
    fake = FakeProvider(base_url="http://127.0.0.1:1")
    fake.openai_usage = OpenAIUsage(**openai_usage)
    return fake


# --- OpenAI chat completions ---------------------------------------------------------------


def test_chat_completion_splits_cached_input_and_reasoning_output() -> None:
    body = chat_completion(
        _fake(prompt_tokens=1200, cached_tokens=1024, completion_tokens=300, reasoning_tokens=200),
        "o4-mini",
    )
    usage, model = extract_usage(ChatCompletion.model_validate(body)) or (None, "")

    assert usage == TokenUsage(input=176, cache_read=1024, output=100, reasoning=200)
    assert usage.total == 1200 + 300  # the partition sums to prompt + completion tokens
    assert model == "o4-mini-2025-04-16"


def test_chat_completion_as_a_plain_dict_reads_the_same() -> None:
    body = chat_completion(
        _fake(prompt_tokens=1200, cached_tokens=1024, completion_tokens=300, reasoning_tokens=200),
        "o4-mini",
    )

    assert extract_usage(body) == extract_usage(ChatCompletion.model_validate(body))


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57},
        {
            "prompt_tokens": 50,
            "completion_tokens": 7,
            "total_tokens": 57,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        },
        {
            "prompt_tokens": 50,
            "completion_tokens": 7,
            "total_tokens": 57,
            "prompt_tokens_details": {"cached_tokens": None},
            "completion_tokens_details": {"reasoning_tokens": None},
        },
    ],
    ids=["details-missing", "details-null", "detail-fields-null"],
)
def test_missing_or_null_openai_details_mean_zero(usage: dict[str, Any]) -> None:
    expected = TokenUsage(input=50, output=7)

    assert extract_provider_usage("openai", usage) == expected
    assert extract_provider_usage("openai", CompletionUsage.model_validate(usage)) == expected


def test_a_chat_completion_constructed_without_its_prompt_count_is_refused_naming_it() -> None:
    """``model_construct`` skips validation: a required count is None on the object, which is
    no count (an optional detail that is None reads as zero)."""
    from costwatch.capture._usage import _response_readers

    _response_readers.pop(ChatCompletion, None)  # start from the fused reader
    partial = ChatCompletion.model_construct(
        id="c",
        model="gpt-4o-mini",
        choices=[],
        created=0,
        object="chat.completion",
        usage=CompletionUsage.model_construct(completion_tokens=7),
    )
    with pytest.raises(InvalidUsage, match="'prompt_tokens' is None"):
        extract_usage(partial)


def test_a_chat_completion_with_details_sent_as_null_reads_them_as_zero() -> None:
    from costwatch.capture._usage import _response_readers

    _response_readers.pop(ChatCompletion, None)  # start from the fused reader
    body = chat_completion(_fake(prompt_tokens=50, completion_tokens=7), "gpt-4o-mini")
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": None, "audio_tokens": None}
    body["usage"]["completion_tokens_details"] = {"reasoning_tokens": None}
    expected = (TokenUsage(input=50, output=7), "gpt-4o-mini-2024-07-18")
    assert extract_usage(ChatCompletion.model_validate(body)) == expected
    body["usage"]["prompt_tokens"] = None  # not valid, and the SDK builds responses unvalidated
    with pytest.raises(InvalidUsage, match="prompt_tokens"):
        extract_usage(ChatCompletion.construct(**body))
    assert _response_readers[ChatCompletion] is _read_chat_completion  # still the fused one


def test_chat_completions_without_details_read_right_before_and_after_the_reader_adapts() -> None:
    """A chat completion is read by one fused reader; the first response that lacks a detail
    (OpenAI-compatible servers) hands its class to the general reader, which reads both kinds."""
    from costwatch.capture._usage import _response_readers

    _response_readers.pop(ChatCompletion, None)  # start from the fused reader
    with_details = ChatCompletion.model_validate(
        chat_completion(
            _fake(
                prompt_tokens=1200, cached_tokens=1024, completion_tokens=300, reasoning_tokens=100
            ),
            "gpt-4o-mini",
        )
    )
    body = chat_completion(_fake(prompt_tokens=50, completion_tokens=7), "gpt-4o-mini")
    body["usage"]["prompt_tokens_details"] = None
    without = ChatCompletion.model_validate(body)
    assert extract_usage(with_details) == (  # the fused reader
        TokenUsage(input=176, cache_read=1024, output=200, reasoning=100),
        "gpt-4o-mini-2024-07-18",
    )
    for _ in range(40):
        assert extract_usage(without) == (TokenUsage(input=50, output=7), "gpt-4o-mini-2024-07-18")
        assert extract_usage(with_details) == (
            TokenUsage(input=176, cache_read=1024, output=200, reasoning=100),
            "gpt-4o-mini-2024-07-18",
        )


def test_chat_completion_without_usage_carries_none() -> None:
    body = chat_completion(_fake(), "gpt-4o-mini")
    body["usage"] = None

    assert extract_usage(ChatCompletion.model_validate(body)) is None
    assert extract_usage(body) is None


# --- OpenAI Responses API and embeddings ---------------------------------------------------


def test_responses_api_usage_splits_cached_and_reasoning() -> None:
    fake = _fake(
        prompt_tokens=2000, cached_tokens=1500, completion_tokens=900, reasoning_tokens=640
    )
    body = response_object(fake, {"model": "o4-mini"}, status="completed", output=[])

    for response in (body, Response.model_validate(body)):
        usage, model = extract_usage(response) or (None, "")
        assert usage == TokenUsage(input=500, cache_read=1500, output=260, reasoning=640)
        assert model == "o4-mini-2025-04-16"


def test_embedding_usage_is_all_fresh_input() -> None:
    fake = _fake()
    fake.embedding_tokens = 37
    body = embeddings(fake, {"model": "text-embedding-3-small", "input": ["a", "b"]})

    for response in (body, CreateEmbeddingResponse.model_validate(body)):
        assert extract_usage(response) == (TokenUsage(input=37), "text-embedding-3-small")


# --- Anthropic messages -----------------------------------------------------------------------


def test_anthropic_input_excludes_cache_reads_and_writes() -> None:
    fake = _fake()
    fake.anthropic_usage = FakeAnthropicUsage(
        input_tokens=100,
        output_tokens=250,
        cache_read_input_tokens=2000,
        cache_write_5m=1000,
        cache_write_1h=500,
    )
    body = anthropic_message(fake, "claude-sonnet-4-0")

    for response in (body, Message.model_validate(body)):
        usage, model = extract_usage(response) or (None, "")
        assert usage == TokenUsage(
            input=100, cache_read=2000, cache_write=1500, output=250, cache_write_1h=500
        )
        assert usage.total == 100 + 2000 + 1500 + 250
        assert model == "claude-sonnet-4-20250514"


def test_anthropic_cache_creation_breakdown_alone_gives_the_write_total() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 70},
    }

    assert extract_provider_usage("anthropic", usage) == TokenUsage(
        input=10, cache_write=100, output=5, cache_write_1h=70
    )


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": 10, "output_tokens": 5},
        {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_read_input_tokens": None,
            "cache_creation_input_tokens": None,
            "cache_creation": None,
        },
    ],
    ids=["cache-fields-missing", "cache-fields-null"],
)
def test_anthropic_without_cache_fields(usage: dict[str, Any]) -> None:
    assert extract_provider_usage("anthropic", usage) == TokenUsage(input=10, output=5)
    assert extract_provider_usage("anthropic", AnthropicUsage.model_validate(usage)) == TokenUsage(
        input=10, output=5
    )


def test_anthropic_thinking_tokens_are_the_reasoning_part_of_output() -> None:
    usage = AnthropicUsage.model_validate(
        {
            "input_tokens": 10,
            "output_tokens": 500,
            "output_tokens_details": {"thinking_tokens": 420},
        }
    )

    assert extract_provider_usage("anthropic", usage) == TokenUsage(
        input=10, output=80, reasoning=420
    )


# --- other shapes ------------------------------------------------------------------------------


def test_gemini_usage_metadata_prompt_includes_cached_content() -> None:
    body = {
        "model_version": "gemini-2.5-flash",
        "usage_metadata": {
            "prompt_token_count": 900,
            "cached_content_token_count": 600,
            "candidates_token_count": 40,
            "thoughts_token_count": 300,
            "total_token_count": 1240,
        },
    }

    usage, model = extract_usage(body) or (None, "")

    assert usage == TokenUsage(input=300, cache_read=600, output=40, reasoning=300)
    assert usage.total == 1240
    assert model == "gemini-2.5-flash"


def test_objects_that_are_not_pydantic_models_are_read_by_attribute() -> None:
    @dataclass
    class Reply:
        usage: Any
        model: str

    namespace_usage = SimpleNamespace(
        prompt_tokens=40,
        completion_tokens=9,
        prompt_tokens_details=SimpleNamespace(cached_tokens=32),
        completion_tokens_details=None,
    )

    assert extract_usage(Reply(namespace_usage, "gpt-4o-mini")) == (
        TokenUsage(input=8, cache_read=32, output=9),
        "gpt-4o-mini",
    )
    # the same class with a different usage shape on another instance
    anthropic_style = SimpleNamespace(input_tokens=3, output_tokens=4, cache_read_input_tokens=5)
    assert extract_usage(Reply(anthropic_style, "claude")) == (
        TokenUsage(input=3, cache_read=5, output=4),
        "claude",
    )


@pytest.mark.parametrize(
    "value",
    [None, "plain text", 42, ["a", "b"], {"choices": []}, object()],
    ids=["none", "str", "int", "list", "dict-without-usage", "object"],
)
def test_values_without_usage_give_none(value: object) -> None:
    assert extract_usage(value) is None


def test_an_unrecognised_usage_object_is_an_error_not_zero_tokens() -> None:
    with pytest.raises(ValueError, match="unrecognised openai usage"):
        extract_provider_usage("openai", {"tokens": 12})
    assert extract_usage({"usage": {"tokens": 12}}) is None


def test_inconsistent_counts_never_go_negative() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 20},
        "completion_tokens_details": {"reasoning_tokens": 9},
    }

    result = extract_provider_usage("openai", usage)

    assert result.input == 0 and result.output == 0
    assert (result.cache_read, result.reasoning) == (20, 9)


def test_server_side_searches_are_read_from_json_bodies_too() -> None:
    anthropic_body = {
        "model": "claude-sonnet-4-5",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 1},
        },
    }
    responses_body = {
        "model": "gpt-4.1",
        "output": [
            {"type": "web_search_call", "action": {"type": "search", "query": "q"}},
            {"type": "web_search_call", "action": {"type": "find_in_page", "pattern": "p"}},
            {"type": "file_search_call", "queries": ["q"]},
            {"type": "message", "content": []},
        ],
        "usage": {"input_tokens": 10, "output_tokens": 5, "input_tokens_details": {}},
    }

    assert extract_usage(anthropic_body) == (
        TokenUsage(input=10, output=5, web_searches=2),
        "claude-sonnet-4-5",
    )
    assert extract_usage(responses_body) == (
        TokenUsage(input=10, output=5, web_searches=1, file_searches=1),
        "gpt-4.1",
    )


def test_audio_parts_are_read_from_openai_and_gemini_json_bodies() -> None:
    chat = {
        "model": "gpt-audio",
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 70},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 40},
        },
    }
    gemini = {
        "modelVersion": "gemini-2.5-flash",
        "usageMetadata": {
            "promptTokenCount": 100,
            "candidatesTokenCount": 10,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": 30},
                {"modality": "AUDIO", "tokenCount": 70},
            ],
        },
    }

    assert extract_usage(chat) == (
        TokenUsage(input=100, output=50, input_audio=70, output_audio=40),
        "gpt-audio",
    )
    assert extract_usage(gemini) == (
        TokenUsage(input=100, output=10, input_audio=70),
        "gemini-2.5-flash",
    )


def test_a_processing_tier_priced_apart_is_read_from_the_response() -> None:
    body = {
        "model": "o4-mini",
        "service_tier": "priority",
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
    }
    standard = {**body, "service_tier": "default"}

    assert extract_usage(body) == (
        TokenUsage(input=10, output=5, service_tier="priority"),
        "o4-mini",
    )
    assert extract_usage(standard) == (TokenUsage(input=10, output=5), "o4-mini")
