"""A streaming caller receives exactly what it would have received without costwatch.

Each test makes the same request twice against the deterministic fake endpoint, once with a
plain SDK client and once with an instrumented one, and compares every chunk the caller sees:
``model_dump()`` (all fields) and ``to_dict()`` (only the fields the API sent).
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests._fixtures.capture import CaptureSink
from tests._fixtures.fake_providers import (  # noqa: F401 - the fixture
    FakeProvider,
    fake_provider_fixture,
)

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

MESSAGES = [{"role": "user", "content": "Tell me about refunds."}]
CLAUDE = "claude-sonnet-4-20250514"


def _dumps(items: list[Any]) -> list[tuple[dict[str, Any], dict[str, Any], str]]:
    return [(i.model_dump(), i.to_dict(), type(i).__name__) for i in items]


def _openai(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)


def _async_openai(fake: FakeProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)


def _anthropic(fake: FakeProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="test", max_retries=0)


def _async_anthropic(fake: FakeProvider) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=fake.anthropic_base_url, api_key="test", max_retries=0)


CHAT_OPTIONS = [
    pytest.param({}, id="caller-did-not-ask-for-usage"),
    pytest.param({"stream_options": {"include_usage": True}}, id="caller-asked-for-usage"),
    pytest.param({"stream_options": {"include_usage": False}}, id="caller-refused-usage"),
]


@pytest.mark.parametrize("options", CHAT_OPTIONS)
def test_openai_chat_stream_chunks_are_identical(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, options: dict[str, Any]
) -> None:
    def chunks(client: openai.OpenAI) -> list[Any]:
        return list(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True, **options
            )
        )

    plain = chunks(_openai(fake_provider))
    watched = chunks(cw.instrument(_openai(fake_provider), inject_stream_usage=True))

    assert _dumps(watched) == _dumps(plain)
    assert len(capture.records) == 1
    assert capture.records[0].usage_source == "reported"
    # the caller's own stream_options dict was not modified
    assert options.get("stream_options") in (
        None,
        {"include_usage": True},
        {"include_usage": False},
    )


@pytest.mark.parametrize("options", CHAT_OPTIONS)
async def test_async_openai_chat_stream_chunks_are_identical(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, options: dict[str, Any]
) -> None:
    async def chunks(client: openai.AsyncOpenAI) -> list[Any]:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, **options
        )
        return [chunk async for chunk in stream]

    plain = await chunks(_async_openai(fake_provider))
    watched = await chunks(cw.instrument(_async_openai(fake_provider), inject_stream_usage=True))

    assert _dumps(watched) == _dumps(plain)
    assert len(capture.records) == 1


@pytest.mark.parametrize("options", CHAT_OPTIONS)
def test_openai_legacy_completion_stream_chunks_are_identical(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, options: dict[str, Any]
) -> None:
    def chunks(client: openai.OpenAI) -> list[Any]:
        return list(
            client.completions.create(
                model="babbage-002", prompt="Once upon", stream=True, **options
            )
        )

    plain = chunks(_openai(fake_provider))
    watched = chunks(cw.instrument(_openai(fake_provider), inject_stream_usage=True))

    assert _dumps(watched) == _dumps(plain)
    assert len(capture.records) == 1


def test_openai_chat_stream_helper_events_are_identical(
    cw: Any, fake_provider: FakeProvider
) -> None:
    def events(client: openai.OpenAI) -> tuple[list[Any], Any]:
        with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
            seen = [(e.type, e.model_dump()) for e in stream]
            return seen, stream.get_final_completion().model_dump()

    assert events(cw.instrument(_openai(fake_provider))) == events(_openai(fake_provider))


def test_openai_responses_stream_events_are_identical(cw: Any, fake_provider: FakeProvider) -> None:
    def events(client: openai.OpenAI) -> list[Any]:
        return list(client.responses.create(model="o4-mini", input="Summarise.", stream=True))

    assert _dumps(events(cw.instrument(_openai(fake_provider)))) == _dumps(
        events(_openai(fake_provider))
    )


async def test_async_openai_responses_stream_events_are_identical(
    cw: Any, fake_provider: FakeProvider
) -> None:
    async def events(client: openai.AsyncOpenAI) -> list[Any]:
        stream = await client.responses.create(model="o4-mini", input="Summarise.", stream=True)
        return [event async for event in stream]

    assert _dumps(await events(cw.instrument(_async_openai(fake_provider)))) == _dumps(
        await events(_async_openai(fake_provider))
    )


def test_anthropic_stream_events_are_identical(cw: Any, fake_provider: FakeProvider) -> None:
    def events(client: anthropic.Anthropic) -> list[Any]:
        return list(
            client.messages.create(model=CLAUDE, max_tokens=256, messages=MESSAGES, stream=True)
        )

    assert _dumps(events(cw.instrument(_anthropic(fake_provider)))) == _dumps(
        events(_anthropic(fake_provider))
    )


async def test_async_anthropic_stream_events_are_identical(
    cw: Any, fake_provider: FakeProvider
) -> None:
    async def events(client: anthropic.AsyncAnthropic) -> list[Any]:
        stream = await client.messages.create(
            model=CLAUDE, max_tokens=256, messages=MESSAGES, stream=True
        )
        return [event async for event in stream]

    assert _dumps(await events(cw.instrument(_async_anthropic(fake_provider)))) == _dumps(
        await events(_async_anthropic(fake_provider))
    )


def test_anthropic_messages_stream_helper_events_are_identical(
    cw: Any, fake_provider: FakeProvider
) -> None:
    def events(client: anthropic.Anthropic) -> tuple[list[Any], Any]:
        with client.messages.stream(model=CLAUDE, max_tokens=256, messages=MESSAGES) as stream:
            seen = [(e.type, e.model_dump()) for e in stream]
            return seen, stream.get_final_message().model_dump()

    assert events(cw.instrument(_anthropic(fake_provider))) == events(_anthropic(fake_provider))


async def test_async_anthropic_messages_stream_helper_events_are_identical(
    cw: Any, fake_provider: FakeProvider
) -> None:
    async def events(client: anthropic.AsyncAnthropic) -> tuple[list[Any], Any]:
        async with client.messages.stream(
            model=CLAUDE, max_tokens=256, messages=MESSAGES
        ) as stream:
            seen = [(e.type, e.model_dump()) async for e in stream]
            return seen, (await stream.get_final_message()).model_dump()

    assert await events(cw.instrument(_async_anthropic(fake_provider))) == await events(
        _async_anthropic(fake_provider)
    )


def test_the_stream_object_is_the_one_the_sdk_returned(
    cw: Any, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_openai(fake_provider))

    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)

    assert type(stream) is openai.Stream
    assert stream.response.headers["x-request-id"] == "req_fake_0123456789abcdef"
    with stream as same:
        assert same is stream
        assert next(iter(same)).choices[0].delta.role == "assistant"
