"""``costwatch.instrument()`` with no client: the SDK client classes are patched, so every
client is recorded whoever made it and whenever, by every path the SDKs offer.

Costs by hand: tests/_fixtures/hand_costs.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

import costwatch
from costwatch._core.record import TokenUsage
from tests._fixtures.capture import CaptureSink
from tests._fixtures.fake_providers import FakeProvider, fake_provider_fixture  # noqa: F401
from tests._fixtures.hand_costs import (
    CLAUDE,
    CLAUDE_COST,
    CLAUDE_TOKENS,
    CLAUDE_USAGE,
    EMBEDDING_PRICE,
    MESSAGES,
    MINI_COST,
    MINI_TOKENS,
    MINI_USAGE,
)

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


@pytest.fixture
def classes(cw: Any) -> Iterator[tuple[str, ...]]:
    """Class-level instrumentation for one test, undone after it."""
    try:
        yield cw.instrument(inject_stream_usage=True)
    finally:
        cw.uninstrument()


def _openai(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)


def _async_openai(fake: FakeProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)


def _anthropic(fake: FakeProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="test", max_retries=0)


def _chat(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def _chat_raw(client: openai.OpenAI) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ).parse()


def _chat_raw_from_client(client: openai.OpenAI) -> Any:
    return client.with_raw_response.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    ).parse()


def _chat_streaming_response(client: openai.OpenAI) -> Any:
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ) as response:
        return response.parse()


def _chat_parse(client: openai.OpenAI) -> Any:
    return client.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES)


def _chat_stream_helper(client: openai.OpenAI) -> Any:
    with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        return "".join(event.delta for event in stream if event.type == "content.delta")


def _chat_streamed(client: openai.OpenAI) -> Any:
    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    )
    assert all(chunk.choices for chunk in chunks)  # the injected usage chunk stays hidden
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks)


def _chat_with_options(client: openai.OpenAI) -> Any:
    return client.with_options(timeout=30).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    )


def _framework_post(client: openai.OpenAI) -> Any:
    """As LiteLLM calls the SDK: ``client.post`` with a body it built itself."""
    return client.post(
        "/chat/completions",
        body={"model": "gpt-4o-mini", "messages": MESSAGES},
        cast_to=openai.types.chat.ChatCompletion,
    )


OPENAI_PATHS: dict[str, Callable[[openai.OpenAI], Any]] = {
    "create": _chat,
    "with_raw_response": _chat_raw,
    "client.with_raw_response": _chat_raw_from_client,
    "with_streaming_response": _chat_streaming_response,
    "parse": _chat_parse,
    "stream()": _chat_stream_helper,
    "stream=True": _chat_streamed,
    "with_options": _chat_with_options,
    "client.post": _framework_post,
}


@pytest.mark.parametrize("path", list(OPENAI_PATHS))
def test_instrument_after_a_path_was_used_records_that_path_for_an_existing_client(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, path: str
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    call = OPENAI_PATHS[path]
    client = _openai(fake_provider)
    before = call(client)  # the path is used (and its SDK wrappers cached) before instrument()
    assert capture.records == []

    try:
        assert cw.instrument(inject_stream_usage=True) == ("openai", "anthropic")
        after = call(client)
    finally:
        cw.uninstrument()

    assert type(after) is type(before)
    assert len(capture.records) == 1, capture.records
    record = capture.records[0]
    assert (record.provider, record.model, record.stage) == ("openai", "gpt-4o-mini", "generation")
    assert record.usage == MINI_TOKENS
    assert record.cost_usd == MINI_COST
    assert (record.usage_source, record.incomplete) == ("reported", False)


@pytest.mark.parametrize("path", list(OPENAI_PATHS))
def test_instance_instrument_after_a_path_was_used_records_that_path(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, path: str
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    call = OPENAI_PATHS[path]
    client = _openai(fake_provider)
    call(client)

    cw.instrument(client, inject_stream_usage=True)
    call(client)

    if path == "client.post":  # a raw post is not a resource method: only the class patch sees it
        assert capture.records == []
        return
    assert [r.usage for r in capture.records] == [MINI_TOKENS]
    assert capture.records[0].cost_usd == MINI_COST


def test_clients_made_after_instrument_are_recorded_and_embeddings_too(
    classes: tuple[str, ...], capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.embedding_tokens = 42
    client = _openai(fake_provider)

    client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])

    [record] = capture.records
    assert (record.stage, record.model, record.usage) == (
        "embedding",
        "text-embedding-3-small",
        TokenUsage(input=42),
    )
    assert record.cost_usd == 42 * EMBEDDING_PRICE


async def test_async_clients_are_recorded_on_every_path(
    classes: tuple[str, ...], capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    client = _async_openai(fake_provider)

    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    raw.parse()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream])

    assert text == "Hello from the fake provider."
    assert [r.usage for r in capture.records] == [MINI_TOKENS] * 3
    assert sum(r.cost_usd for r in capture.records) == 3 * MINI_COST


@pytest.mark.parametrize("path", ["create", "with_raw_response", "stream()"])
def test_anthropic_clients_are_recorded_whichever_path_was_used_first(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, path: str
) -> None:
    fake_provider.anthropic_usage = CLAUDE_USAGE
    client = _anthropic(fake_provider)

    def call() -> Any:
        kwargs: dict[str, Any] = {"model": CLAUDE, "max_tokens": 400, "messages": MESSAGES}
        if path == "create":
            return client.messages.create(**kwargs)
        if path == "with_raw_response":
            raw = client.messages.with_raw_response.create(**kwargs)
            return raw.parse()
        with client.messages.stream(**kwargs) as stream:
            return stream.get_final_text()

    before = call()
    try:
        cw.instrument("anthropic")
        after = call()
    finally:
        cw.uninstrument("anthropic")

    assert type(after) is type(before)
    [record] = capture.records
    assert (record.provider, record.model, record.usage) == ("anthropic", CLAUDE, CLAUDE_TOKENS)
    assert record.cost_usd == CLAUDE_COST


def test_instrument_twice_records_once_and_uninstrument_restores_the_classes(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    original = openai.OpenAI.request
    client = _openai(fake_provider)
    try:
        cw.instrument(inject_stream_usage=True)
        cw.instrument("openai")
        _chat(client)
        assert len(capture.records) == 1
    finally:
        assert cw.uninstrument() == ("openai", "anthropic")
    assert openai.OpenAI.request is original
    assert "request" not in openai.OpenAI.__dict__
    assert "request" not in anthropic.Anthropic.__dict__

    _chat(client)
    _chat(_openai(fake_provider))

    assert len(capture.records) == 1


def test_a_client_instrumented_on_its_own_is_recorded_once_under_class_instrumentation(
    classes: tuple[str, ...], capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    client = costwatch.instrument(_openai(fake_provider), inject_stream_usage=True)

    _chat(client)
    _chat_raw(client)
    _chat_streamed(client)
    _chat_with_options(client)

    assert [r.usage for r in capture.records] == [MINI_TOKENS] * 4


def test_a_client_used_before_it_was_instrumented_on_its_own_is_still_recorded_once(
    classes: tuple[str, ...], capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    client = _openai(fake_provider)
    _chat(client)  # recorded by the class patch

    costwatch.instrument(client, inject_stream_usage=True)
    _chat_raw(client)  # by its own patches
    costwatch.uninstrument(client)
    _chat_streamed(client)  # by the class patch again

    assert [r.usage for r in capture.records] == [MINI_TOKENS] * 3


def test_tags_and_request_attribution_are_kept(
    classes: tuple[str, ...], capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    client = _openai(fake_provider)

    with costwatch.tags(feature="faq", team="support"), costwatch.request("answer"):
        _chat_raw(client)

    [record] = capture.records
    assert (record.feature, record.team, record.pipeline) == ("faq", "support", "answer")
    assert capture.requests[0].cost_usd == MINI_COST


def test_a_block_budget_refuses_before_the_request_is_sent(
    classes: tuple[str, ...], capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    costwatch.budget("tiny", limit_usd=Decimal("0.000001"), window="1d", action="block")
    client = _openai(fake_provider)

    with pytest.raises(costwatch.BudgetExceeded):
        client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=500
        )

    assert fake_provider.requests == []


def test_requests_costwatch_does_not_price_pass_through_untouched(
    classes: tuple[str, ...], capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = _openai(fake_provider)

    with pytest.raises(openai.APIStatusError):
        client.files.retrieve("file-abc")

    assert capture.records == []


def test_an_unknown_sdk_name_is_refused_with_the_supported_ones() -> None:
    with pytest.raises(ValueError, match="one of openai, anthropic"):
        costwatch.instrument("google-genai")
