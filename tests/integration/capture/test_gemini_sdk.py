"""instrument() on the real google-genai client, over HTTP, against the local fake endpoint.

Gemini 2.5 Flash, by hand from the published per-million prices: $0.30 input, $0.03 cached
input, $2.50 output (thinking tokens bill as output).  Gemini reports the prompt count with the
cached tokens inside it, and thinking tokens beside the candidates' (visible) tokens.
"""

from __future__ import annotations

import gc
from decimal import Decimal
from typing import Any

import pytest
from google import genai
from google.genai import types

from costwatch._core.record import TokenUsage
from costwatch.capture._streams import drain
from tests._fixtures.capture import CaptureSink
from tests._fixtures.fake_providers import (  # noqa: F401 - the fixture
    FakeProvider,
    GeminiUsage,
    fake_provider_fixture,
)

M = Decimal(1_000_000)
MODEL = "gemini-2.5-flash"
USAGE = GeminiUsage(
    prompt_token_count=3000,
    cached_content_token_count=2048,
    candidates_token_count=400,
    thoughts_token_count=600,
)
TOKENS = TokenUsage(input=952, cache_read=2048, output=400, reasoning=600)
COST = (952 * Decimal("0.30") + 2048 * Decimal("0.03") + (400 + 600) * Decimal("2.50")) / M


def _client(fake: FakeProvider) -> genai.Client:
    return genai.Client(api_key="test", http_options={"base_url": fake.base_url})


def test_generate_content_records_cached_and_thinking_tokens_at_their_prices(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.gemini_usage = USAGE
    client = cw.instrument(_client(fake_provider))

    response = client.models.generate_content(model=MODEL, contents="What is the refund policy?")

    assert response.text == "Hello from the fake provider."
    [record] = capture.records
    assert (record.provider, record.model, record.stage) == ("google", MODEL, "generation")
    assert (record.usage, record.cost_usd) == (TOKENS, COST)
    assert record.response_model == MODEL


def test_audio_in_the_prompt_bills_at_the_audio_input_price(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """Gemini 2.5 Flash bills audio input at $1 per million tokens, text at $0.30; the audio
    part of the prompt comes in the per-modality details."""
    fake_provider.gemini_usage = GeminiUsage(
        prompt_token_count=5000, candidates_token_count=200, audio_prompt_token_count=4800
    )
    client = cw.instrument(_client(fake_provider))

    client.models.generate_content(model=MODEL, contents="Transcribe and summarise.")

    [record] = capture.records
    assert record.usage == TokenUsage(input=5000, output=200, input_audio=4800)
    assert (
        record.cost_usd == (200 * Decimal("0.30") + 4800 * Decimal(1) + 200 * Decimal("2.50")) / M
    )


def test_a_stream_is_recorded_once_from_its_last_chunk_and_yields_every_chunk(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.gemini_usage = USAGE
    plain_client, client = _client(fake_provider), cw.instrument(_client(fake_provider))

    plain = list(plain_client.models.generate_content_stream(model=MODEL, contents="Hi"))
    watched = list(client.models.generate_content_stream(model=MODEL, contents="Hi"))

    def dumps(chunks: list[Any]) -> list[dict[str, Any]]:  # not the HTTP headers (a Date)
        return [c.model_dump(exclude={"sdk_http_response"}) for c in chunks]

    assert dumps(watched) == dumps(plain)
    assert all(w.sdk_http_response is not None for w in watched)
    [record] = capture.records
    assert (record.usage, record.cost_usd, record.incomplete) == (TOKENS, COST, False)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_decorated_function_returning_a_stream_is_recorded_from_its_chunks(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, asynchronous: bool
) -> None:
    """Without instrument(): google-genai's stream is a plain generator, recorded from the usage
    of its last chunk once the caller has read it."""
    fake_provider.gemini_usage = USAGE
    client = _client(fake_provider)

    @cw.generation(provider="google", model=MODEL)
    def stream(prompt: str) -> Any:
        return client.models.generate_content_stream(model=MODEL, contents=prompt)

    @cw.generation(provider="google", model=MODEL)
    async def astream(prompt: str) -> Any:
        return await client.aio.models.generate_content_stream(model=MODEL, contents=prompt)

    chunks = [c async for c in await astream("Hi")] if asynchronous else list(stream("Hi"))

    assert "".join(chunk.text for chunk in chunks) == "Hello from the fake provider."
    [record] = capture.records
    assert (record.usage, record.cost_usd, record.usage_source) == (TOKENS, COST, "reported")


def test_a_stream_dropped_after_one_chunk_is_recorded_once_as_incomplete(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_client(fake_provider))

    stream = client.models.generate_content_stream(model=MODEL, contents="Hi")
    next(stream)
    del stream
    gc.collect()
    drain()

    [record] = capture.records
    assert record.incomplete
    assert record.usage_source == "estimated"  # the counts come with the last chunk only


async def test_async_generation_and_stream_are_recorded(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.gemini_usage = USAGE
    client = cw.instrument(_client(fake_provider))

    await client.aio.models.generate_content(model=MODEL, contents="Hi")
    stream = await client.aio.models.generate_content_stream(model=MODEL, contents="Hi")
    text = "".join([chunk.text async for chunk in stream])

    assert text == "Hello from the fake provider."
    assert [(r.usage, r.cost_usd) for r in capture.records] == [(TOKENS, COST)] * 2


def test_every_round_of_automatic_function_calling_is_recorded(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """With Python functions as tools the SDK calls the API more than once per
    ``generate_content``; each call is billed, so each is recorded."""
    fake_provider.gemini_usage = USAGE
    fake_provider.gemini_function_call = {"name": "refund_window", "args": {"plan": "pro"}}
    client = cw.instrument(_client(fake_provider))
    asked: list[str] = []

    def refund_window(plan: str) -> str:
        """How many days a refund can be asked for on ``plan``."""
        asked.append(plan)
        return "30 days"

    response = client.models.generate_content(
        model=MODEL,
        contents="How long do I have for a refund?",
        config=types.GenerateContentConfig(tools=[refund_window]),
    )

    assert asked == ["pro"]
    assert response.text == "Hello from the fake provider."
    assert [(r.usage, r.cost_usd) for r in capture.records] == [(TOKENS, COST)] * 2
    assert cw.summary().total_usd == 2 * COST


def test_chat_sessions_are_recorded_message_by_message(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.gemini_usage = USAGE
    client = cw.instrument(_client(fake_provider))  # kept: a dropped client closes itself
    chat = client.chats.create(model=MODEL)

    chat.send_message("Hi")
    reply = "".join(chunk.text or "" for chunk in chat.send_message_stream("And refunds?"))

    assert reply == "Hello from the fake provider."
    assert [(r.usage, r.cost_usd) for r in capture.records] == [(TOKENS, COST)] * 2


def test_embeddings_without_reported_usage_are_estimated(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_client(fake_provider))

    result = client.models.embed_content(
        model="gemini-embedding-001", contents=["refund policy", "shipping times"]
    )

    assert len(result.embeddings or []) == 2
    [record] = capture.records
    assert (record.stage, record.usage_source) == ("embedding", "estimated")
    assert record.usage.input > 0 and record.usage.output == 0


def test_uninstrument_restores_the_client(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_client(fake_provider))
    cw.uninstrument(client)

    client.models.generate_content(model=MODEL, contents="Hi")

    assert capture.records == []


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_instrumenting_twice_records_each_call_once(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, kind: str
) -> None:
    client = cw.instrument(cw.instrument(_client(fake_provider)))
    if kind == "sync":
        client.models.generate_content(model=MODEL, contents="Hi")
    else:
        import asyncio

        asyncio.run(client.aio.models.generate_content(model=MODEL, contents="Hi"))
    assert len(capture.records) == 1
