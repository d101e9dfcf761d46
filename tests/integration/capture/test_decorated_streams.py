"""``@generation`` on a function that returns an SDK stream: recorded once, when the stream ends.

The decorator hands the returned stream to the stream recorder, which hooks it in place; the
caller iterates the very object the SDK returned.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from costwatch._core.record import TokenUsage
from tests._fixtures.capture import CaptureSink
from tests._fixtures.fake_providers import (  # noqa: F401 - the fixture
    AnthropicUsage,
    FakeProvider,
    OpenAIUsage,
    fake_provider_fixture,
)

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

M = Decimal(1_000_000)
MESSAGES = [{"role": "user", "content": "Where is my order?"}]
MINI_COST = (176 * Decimal("0.15") + 1024 * Decimal("0.075") + 300 * Decimal("0.60")) / M


@pytest.fixture
def fake(fake_provider: FakeProvider) -> FakeProvider:
    fake_provider.openai_usage = OpenAIUsage(
        prompt_tokens=1200, cached_tokens=1024, completion_tokens=300
    )
    return fake_provider


def test_decorated_function_returning_a_stream_is_recorded_when_it_is_read(
    cw: Any, capture: CaptureSink, fake: FakeProvider
) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)

    @cw.generation(provider="openai", model="gpt-4o-mini")
    def answer(messages: list[dict[str, str]]) -> openai.Stream[Any]:
        return client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )

    stream = answer(MESSAGES)
    assert type(stream) is openai.Stream
    assert capture.records == []
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert text == "Hello from the fake provider."
    assert len(capture.records) == 1
    record = capture.records[0]
    assert record.usage == TokenUsage(input=176, cache_read=1024, output=300)
    assert record.cost_usd == MINI_COST
    assert record.incomplete is False


async def test_decorated_coroutine_returning_an_async_stream_without_usage_is_estimated(
    cw: Any, capture: CaptureSink, fake: FakeProvider
) -> None:
    client = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)

    @cw.generation(provider="openai", model="gpt-4o-mini")
    async def answer(messages: list[dict[str, str]]) -> openai.AsyncStream[Any]:
        return await client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True
        )

    stream = await answer(MESSAGES)
    chunks = [chunk async for chunk in stream]

    assert len(chunks) == 8  # role, six text pieces, finish: no usage chunk was asked for
    record = capture.records[0]
    assert len(capture.records) == 1
    assert record.usage_source == "estimated"
    assert record.usage.output == 6  # the six text pieces, counted with tiktoken
    assert record.usage.input > 0


def test_decorated_function_around_an_instrumented_client_records_the_stream_once(
    cw: Any, capture: CaptureSink, fake: FakeProvider
) -> None:
    client = cw.instrument(
        openai.OpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0),
        inject_stream_usage=True,
    )

    @cw.generation(provider="openai", model="gpt-4o-mini")
    def answer() -> openai.Stream[Any]:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)

    daily = cw.budget("daily", limit_usd=5, window="1d", action="block")

    list(answer())
    cw.runtime().budgets.flush()

    assert len(capture.records) == 1
    assert capture.records[0].cost_usd == MINI_COST
    status = daily.status()  # both layers reserved; only the inner one charged
    assert (status.holds, status.spent_usd) == (0, MINI_COST)


def test_decorated_function_returning_a_message_stream_manager(
    cw: Any, capture: CaptureSink, fake: FakeProvider
) -> None:
    fake.anthropic_usage = AnthropicUsage(input_tokens=400, output_tokens=60)
    client = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="test", max_retries=0)

    @cw.generation(provider="anthropic", model="claude-sonnet-4-20250514")
    def answer() -> Any:
        return client.messages.stream(
            model="claude-sonnet-4-20250514", max_tokens=256, messages=MESSAGES
        )

    with answer() as stream:
        final = stream.get_final_message()

    assert final.usage.output_tokens == 60
    assert len(capture.records) == 1
    record = capture.records[0]
    assert record.usage == TokenUsage(input=400, output=60)
    assert record.cost_usd == (400 * Decimal(3) + 60 * Decimal(15)) / M


def test_decorated_stream_abandoned_early_is_recorded_once_as_incomplete(
    cw: Any, capture: CaptureSink, fake: FakeProvider
) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)

    @cw.generation(provider="openai", model="gpt-4o-mini")
    def answer() -> openai.Stream[Any]:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)

    with answer() as stream:
        next(stream)
        next(stream)

    assert len(capture.records) == 1
    assert capture.records[0].incomplete is True


# --- a decorated generator that yields a stream's items: priced exactly, like instrument() ---
# The decorator and instrument() share one stream watcher and each provider's own stream state,
# so the events of an Anthropic stream (input on message_start, output on message_delta) are
# read the same way on both paths.


def test_a_decorated_generator_yielding_an_anthropic_stream_prices_input_and_output(
    cw: Any, capture: CaptureSink, fake: FakeProvider
) -> None:
    fake.anthropic_usage = AnthropicUsage(input_tokens=120, output_tokens=30)
    client = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="test", max_retries=0)

    @cw.generation(provider="anthropic", model="claude-sonnet-4-20250514")
    def answer() -> Any:
        yield from client.messages.create(
            model="claude-sonnet-4-20250514", max_tokens=256, messages=MESSAGES, stream=True
        )

    events = list(answer())

    assert [e.type for e in events][:1] == ["message_start"]
    assert len(capture.records) == 1
    record = capture.records[0]
    assert record.usage == TokenUsage(input=120, output=30)
    # claude-sonnet-4: $3 input, $15 output per million tokens: 0.000360 + 0.000450
    assert record.cost_usd == (120 * Decimal(3) + 30 * Decimal(15)) / M == Decimal("0.000810")


def test_a_decorated_generator_yielding_an_openai_stream_prices_it_exactly(
    cw: Any, capture: CaptureSink, fake: FakeProvider
) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)

    @cw.generation(provider="openai", model="gpt-4o-mini")
    def answer() -> Any:
        yield from client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )

    chunks = list(answer())

    assert chunks[-1].usage is not None  # the caller asked for the usage chunk: it sees it
    assert len(capture.records) == 1
    assert capture.records[0].usage == TokenUsage(input=176, cache_read=1024, output=300)
    assert capture.records[0].cost_usd == MINI_COST


async def test_a_decorated_async_generator_yielding_a_gemini_stream_prices_it_exactly(
    cw: Any, capture: CaptureSink, fake: FakeProvider
) -> None:
    from google import genai

    from tests._fixtures.fake_providers import GeminiUsage

    fake.gemini_usage = GeminiUsage(
        prompt_token_count=1000, cached_content_token_count=400, candidates_token_count=200
    )
    client = genai.Client(api_key="test", http_options={"base_url": fake.base_url})

    @cw.generation(provider="google", model="gemini-2.5-flash")
    async def answer() -> Any:
        stream = await client.aio.models.generate_content_stream(
            model="gemini-2.5-flash", contents="Where is my order?"
        )
        async for chunk in stream:
            yield chunk

    chunks = [chunk async for chunk in answer()]

    assert len(chunks) > 1
    assert len(capture.records) == 1
    record = capture.records[0]
    assert record.usage == TokenUsage(input=600, cache_read=400, output=200)
    # gemini-2.5-flash: $0.30 input, $0.03 cached input, $2.50 output per million tokens
    expected = (600 * Decimal("0.30") + 400 * Decimal("0.03") + 200 * Decimal("2.50")) / M
    assert record.cost_usd == expected
