"""instrument() on the real OpenAI SDK clients, over HTTP, against the local fake endpoint.

Costs are computed here by hand from the published per-million prices:
gpt-4o-mini $0.15 input / $0.075 cached input / $0.60 output; o4-mini $1.10 / $0.275 / $4.40
(reasoning tokens bill as output); text-embedding-3-small $0.02; a fine-tuned davinci-002 on
the legacy completions endpoint $12.00 input and output.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from decimal import Decimal
from typing import Any

import openai
import pytest

import costwatch
from costwatch._core.record import TokenUsage
from costwatch._core.sink import BaseSink
from costwatch.capture import _streams
from costwatch.capture._streams import drain
from tests._fixtures.capture import CaptureSink
from tests._fixtures.fake_providers import (  # noqa: F401 - the fixture
    FakeProvider,
    OpenAIUsage,
    fake_provider_fixture,
    http_client_to_the_fake,
)

M = Decimal(1_000_000)
JUNE_2_2025_10H = 1748858400.0
"""2025-06-02T10:00:00Z as UTC seconds."""
MESSAGES = [{"role": "user", "content": "What is the refund policy?"}]

# gpt-4o-mini: 1200 prompt tokens of which 1024 cached, 300 completion tokens.
MINI_USAGE = OpenAIUsage(prompt_tokens=1200, cached_tokens=1024, completion_tokens=300)
MINI_TOKENS = TokenUsage(input=176, cache_read=1024, output=300)
MINI_COST = (176 * Decimal("0.15") + 1024 * Decimal("0.075") + 300 * Decimal("0.60")) / M

# o4-mini: 2000 prompt tokens (1536 cached), 900 completion tokens of which 640 reasoning.
O4_USAGE = OpenAIUsage(
    prompt_tokens=2000, cached_tokens=1536, completion_tokens=900, reasoning_tokens=640
)
O4_TOKENS = TokenUsage(input=464, cache_read=1536, output=260, reasoning=640)
O4_COST = (464 * Decimal("1.10") + 1536 * Decimal("0.275") + (260 + 640) * Decimal("4.40")) / M


def _client(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)


def _async_client(fake: FakeProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)


def _only_record(capture: CaptureSink) -> Any:
    assert len(capture.records) == 1, capture.records
    return capture.records[0]


# --- chat completions ----------------------------------------------------------------------


def test_chat_completion_records_cached_input_and_its_exact_cost(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    client = cw.instrument(_client(fake_provider))

    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert reply.choices[0].message.content == "Hello from the fake provider."
    record = _only_record(capture)
    assert (record.provider, record.model, record.stage, record.operation) == (
        "openai",
        "gpt-4o-mini",
        "generation",
        "chat",
    )
    assert record.response_model == "gpt-4o-mini-2024-07-18"
    assert record.usage == MINI_TOKENS
    assert record.cost_usd == MINI_COST
    assert (record.status, record.usage_source, record.incomplete) == ("ok", "reported", False)
    assert cw.summary().total_usd == MINI_COST


async def test_async_chat_completion_records_the_same(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    client = cw.instrument(_async_client(fake_provider))

    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    record = _only_record(capture)
    assert record.usage == MINI_TOKENS
    assert record.cost_usd == MINI_COST


def test_streamed_chat_injects_include_usage_and_records_reported_usage(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    client = cw.instrument(_client(fake_provider), inject_stream_usage=True)

    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    )

    assert fake_provider.requests[-1].body["stream_options"] == {"include_usage": True}
    assert all(chunk.choices for chunk in chunks)  # the usage-only chunk never reached us
    record = _only_record(capture)
    assert record.usage == MINI_TOKENS
    assert record.cost_usd == MINI_COST
    assert (record.usage_source, record.incomplete) == ("reported", False)
    assert record.response_model == "gpt-4o-mini-2024-07-18"


def test_stream_usage_injection_can_be_turned_off_for_servers_that_reject_it(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    client = cw.instrument(_client(fake_provider), inject_stream_usage=False)

    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    )

    assert "stream_options" not in fake_provider.requests[-1].body
    assert chunks
    record = _only_record(capture)
    assert (record.usage_source, record.incomplete) == ("estimated", False)
    assert record.usage.input > 0 and record.usage.output > 0


async def test_async_streamed_chat_records_reported_usage(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    client = cw.instrument(_async_client(fake_provider), inject_stream_usage=True)

    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    async with stream:
        chunks = [chunk async for chunk in stream]

    assert all(chunk.choices for chunk in chunks)
    record = _only_record(capture)
    assert record.usage == MINI_TOKENS
    assert record.cost_usd == MINI_COST


def test_caller_that_asked_for_usage_still_gets_the_usage_chunk(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    client = cw.instrument(_client(fake_provider))

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 1200
    assert _only_record(capture).cost_usd == MINI_COST


def test_chat_stream_helper_is_recorded_once(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    client = cw.instrument(_client(fake_provider), inject_stream_usage=True)

    with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        final = stream.get_final_completion()

    assert final.choices[0].message.content == "Hello from the fake provider."
    assert final.usage is None  # as without costwatch: the caller did not ask for usage
    record = _only_record(capture)
    assert record.cost_usd == MINI_COST


# --- Responses API (reasoning model) --------------------------------------------------------


# --- legacy completions (davinci-002 / babbage-002 and their fine-tunes) ---------------------

FT_DAVINCI = "ft:davinci-002:acme:triage:9xYz"
DAVINCI_USAGE = OpenAIUsage(prompt_tokens=700, completion_tokens=40)
DAVINCI_COST = (700 + 40) * Decimal("12.00") / M


def test_legacy_completion_of_a_fine_tuned_model_is_priced_as_fine_tuned(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = DAVINCI_USAGE
    client = cw.instrument(_client(fake_provider))

    reply = client.completions.create(model=FT_DAVINCI, prompt="Ticket: refund?\nLabel:")

    assert reply.choices[0].text == "Hello from the fake provider."
    record = _only_record(capture)
    assert (record.model, record.stage, record.operation, record.strategy) == (
        FT_DAVINCI,
        "generation",
        "text_completion",
        "fine_tuned",
    )
    assert record.usage == TokenUsage(input=700, output=40)
    assert record.cost_usd == DAVINCI_COST
    assert record.price_source == "bundled"


def test_streamed_legacy_completion_records_usage_and_hides_the_usage_chunk(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = DAVINCI_USAGE
    client = cw.instrument(_client(fake_provider), inject_stream_usage=True)

    chunks = list(client.completions.create(model=FT_DAVINCI, prompt="Label:", stream=True))

    assert fake_provider.requests[-1].body["stream_options"] == {"include_usage": True}
    assert "".join(c.choices[0].text for c in chunks) == fake_provider.reply_text
    record = _only_record(capture)
    assert (record.usage, record.cost_usd) == (TokenUsage(input=700, output=40), DAVINCI_COST)
    assert (record.usage_source, record.incomplete) == ("reported", False)


async def test_async_streamed_legacy_completion_without_usage_is_estimated_from_its_text(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_async_client(fake_provider), inject_stream_usage=False)

    stream = await client.completions.create(model="davinci-002", prompt="Say hello.", stream=True)
    text = "".join([chunk.choices[0].text async for chunk in stream])

    assert text == fake_provider.reply_text
    record = _only_record(capture)
    assert (record.usage_source, record.operation) == ("estimated", "text_completion")
    assert record.usage.input > 0
    assert record.usage.output == 6  # "Hello from the fake provider." in cl100k/o200k tokens


def test_responses_api_records_reasoning_tokens_at_the_output_price(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = O4_USAGE
    client = cw.instrument(_client(fake_provider))

    response = client.responses.create(model="o4-mini", input="Summarise the policy.")

    assert response.output_text == "Hello from the fake provider."
    record = _only_record(capture)
    assert record.usage == O4_TOKENS
    assert record.cost_usd == O4_COST
    assert record.response_model == "o4-mini-2025-04-16"


def test_streamed_responses_api_records_usage_from_response_completed(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = O4_USAGE
    client = cw.instrument(_client(fake_provider))

    events = list(client.responses.create(model="o4-mini", input="Summarise.", stream=True))

    assert events[-1].type == "response.completed"
    record = _only_record(capture)
    assert record.usage == O4_TOKENS
    assert record.cost_usd == O4_COST


async def test_async_responses_stream_helper_records_usage(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = O4_USAGE
    client = cw.instrument(_async_client(fake_provider))

    async with client.responses.stream(model="o4-mini", input="Summarise.") as stream:
        final = await stream.get_final_response()

    assert final.usage is not None and final.usage.output_tokens == 900
    record = _only_record(capture)
    assert record.usage == O4_TOKENS
    assert record.cost_usd == O4_COST


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
def test_audio_in_and_out_bills_at_the_audio_rates(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, stream: bool
) -> None:
    """gpt-audio: text $2.50 in / $10 out, audio $32 in / $64 out per million tokens.  The
    audio parts are reported inside prompt and completion tokens."""
    fake_provider.openai_usage = OpenAIUsage(
        prompt_tokens=1000,
        completion_tokens=500,
        audio_prompt_tokens=800,
        audio_completion_tokens=450,
    )
    client = cw.instrument(_client(fake_provider), inject_stream_usage=True)

    answer = client.chat.completions.create(
        model="gpt-audio",
        messages=MESSAGES,
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "wav"},
        stream=stream,
    )
    if stream:
        list(answer)

    record = _only_record(capture)
    assert record.usage == TokenUsage(input=1000, output=500, input_audio=800, output_audio=450)
    assert (
        record.cost_usd
        == (200 * Decimal("2.50") + 800 * Decimal(32) + 50 * Decimal(10) + 450 * Decimal(64)) / M
    )
    assert record.input_cost_usd == (200 * Decimal("2.50") + 800 * Decimal(32)) / M


WEB_SEARCH = {
    "id": "ws_1",
    "type": "web_search_call",
    "status": "completed",
    "action": {"type": "search", "query": "refund policy"},
}
OPENED_PAGE = {
    "id": "ws_2",
    "type": "web_search_call",
    "status": "completed",
    "action": {"type": "open_page", "url": "https://example.com/refunds"},
}
FILE_SEARCH = {
    "id": "fs_1",
    "type": "file_search_call",
    "status": "completed",
    "queries": ["refund policy"],
    "results": None,
}


@pytest.mark.parametrize("stream", [False, True], ids=["response", "stream"])
def test_hosted_searches_a_response_lists_are_billed_per_call(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, stream: bool
) -> None:
    """OpenAI bills web search at $10 and file search at $2.50 per thousand calls, and lists
    each call as an output item; opening a page the search found is not a search."""
    fake_provider.openai_usage = MINI_USAGE
    fake_provider.openai_tool_calls = [WEB_SEARCH, OPENED_PAGE, FILE_SEARCH, FILE_SEARCH]
    client = cw.instrument(_client(fake_provider))

    answer = client.responses.create(
        model="gpt-4o-mini",
        input="What is the refund policy?",
        stream=stream,
        tools=[{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}],
    )
    if stream:
        list(answer)
    else:
        assert [item.type for item in answer.output][:2] == ["web_search_call"] * 2

    record = _only_record(capture)
    assert record.usage == TokenUsage(
        input=176, cache_read=1024, output=300, web_searches=1, file_searches=2
    )
    assert record.cost_usd == MINI_COST + Decimal("0.01") + 2 * Decimal("0.0025")
    assert cw.summary().total_usd == record.cost_usd


# --- embeddings --------------------------------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_embeddings_are_recorded_as_embedding_stage(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, asynchronous: bool
) -> None:
    fake_provider.embedding_tokens = 4200
    if asynchronous:
        result = await cw.instrument(_async_client(fake_provider)).embeddings.create(
            model="text-embedding-3-small", input=["refund policy", "returns"]
        )
    else:
        result = cw.instrument(_client(fake_provider)).embeddings.create(
            model="text-embedding-3-small", input=["refund policy", "returns"]
        )

    assert len(result.data) == 2 and len(result.data[0].embedding) == 4
    record = _only_record(capture)
    assert (record.stage, record.operation) == ("embedding", "embeddings")
    assert record.usage == TokenUsage(input=4200)
    assert record.cost_usd == 4200 * Decimal("0.02") / M


# --- failures, abandoned streams -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, openai.InternalServerError), (400, openai.BadRequestError)],
    ids=["500", "400"],
)
def test_provider_error_reaches_the_caller_unchanged_and_is_recorded(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, status: int, error: type
) -> None:
    client = cw.instrument(_client(fake_provider))
    fake_provider.fail_next(status, "model overloaded")

    with pytest.raises(error) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert raised.value.status_code == status
    assert "model overloaded" in str(raised.value)
    record = _only_record(capture)
    assert (record.status, record.error_type) == ("error", error.__name__)
    assert record.usage == TokenUsage()


async def test_async_provider_error_is_recorded(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_async_client(fake_provider))
    fake_provider.fail_next(500)

    with pytest.raises(openai.InternalServerError):
        await client.responses.create(model="o4-mini", input="x")

    assert _only_record(capture).error_type == "InternalServerError"


def test_stream_abandoned_then_closed_is_recorded_once_as_incomplete(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_client(fake_provider))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)

    for n, _chunk in enumerate(stream):
        if n == 2:
            break
    assert capture.records == []  # still open: nothing known yet
    stream.close()
    stream.close()
    del stream
    gc.collect()
    drain()  # records of collected streams are made outside the collector

    record = _only_record(capture)
    assert record.incomplete is True
    assert record.status == "ok"
    # usage never arrived: estimated from the prompt and the two text pieces seen
    assert record.usage_source == "estimated"
    assert record.usage.output == 2  # "Hello", " from"
    assert record.usage.input > 0


def test_stream_abandoned_and_garbage_collected_is_recorded_once(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_client(fake_provider))

    def read_two_chunks() -> None:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        next(stream)
        next(stream)

    read_two_chunks()
    gc.collect()
    drain()  # records of collected streams are made outside the collector

    record = _only_record(capture)
    assert record.incomplete is True


def test_error_in_the_middle_of_a_stream_is_raised_and_recorded_as_error(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_client(fake_provider))
    fake_provider.fail_mid_stream(after=2, message="upstream went away")
    seen = []

    with pytest.raises(openai.APIError, match="upstream went away"):
        for chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        ):
            seen.append(chunk)

    assert len(seen) == 3  # the role chunk and two text chunks
    record = _only_record(capture)
    assert (record.status, record.error_type, record.incomplete) == ("error", "APIError", True)


# --- instrument()/uninstrument() ---------------------------------------------------------------


# o4-mini at the flex and priority tiers: $0.55 / $0.138 cached / $2.20 and $2 / $0.50 / $8.
O4_FLEX_COST = (464 * Decimal("0.55") + 1536 * Decimal("0.138") + 900 * Decimal("2.20")) / M
O4_PRIORITY_COST = (464 * Decimal(2) + 1536 * Decimal("0.50") + 900 * Decimal(8)) / M


def test_processing_tiers_are_priced_at_their_published_prices(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """OpenAI prices ``service_tier="flex"`` at about half and ``"priority"`` at about 1.8 times
    the standard rate, each with its own cached-input price."""
    fake_provider.openai_usage = O4_USAGE
    client = cw.instrument(_client(fake_provider), inject_stream_usage=True)

    fake_provider.service_tier = "flex"
    client.chat.completions.create(model="o4-mini", messages=MESSAGES, service_tier="flex")
    list(
        client.chat.completions.create(
            model="o4-mini", messages=MESSAGES, stream=True, service_tier="flex"
        )
    )
    fake_provider.service_tier = "priority"
    client.responses.create(model="o4-mini", input="Summarise.", service_tier="priority")
    fake_provider.service_tier = "default"
    client.chat.completions.create(model="o4-mini", messages=MESSAGES)

    assert [(r.cost_usd, r.service_tier, r.batch) for r in capture.records] == [
        (O4_FLEX_COST, "flex", False),
        (O4_FLEX_COST, "flex", False),
        (O4_PRIORITY_COST, "priority", False),
        (O4_COST, "", False),
    ]
    assert cw.summary().total_usd == 2 * O4_FLEX_COST + O4_PRIORITY_COST + O4_COST


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
def test_the_tier_a_response_reports_prices_the_call_whatever_the_request_said(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, stream: bool
) -> None:
    """A project can default to priority processing: the response (each chunk of a stream)
    says which tier served the call."""
    fake_provider.openai_usage = O4_USAGE
    fake_provider.service_tier = "priority"
    client = cw.instrument(_client(fake_provider), inject_stream_usage=True)

    answer = client.chat.completions.create(model="o4-mini", messages=MESSAGES, stream=stream)
    if stream:
        list(answer)

    record = _only_record(capture)
    assert (record.cost_usd, record.service_tier) == (O4_PRIORITY_COST, "priority")


def test_a_decorated_call_is_priced_at_the_tier_its_response_reports(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """Plain calls are tallied and priced when read; one served at another tier is priced
    at once, and the totals agree."""
    fake_provider.openai_usage = O4_USAGE
    fake_provider.service_tier = "flex"
    client = _client(fake_provider)

    @cw.generation(provider="openai", model="o4-mini")
    def answer(question: str) -> Any:
        return client.chat.completions.create(
            model="o4-mini",
            messages=[{"role": "user", "content": question}],
            service_tier="flex",
        )

    answer("What is the refund policy?")
    fake_provider.service_tier = "default"
    answer("And for annual plans?")

    assert [(r.cost_usd, r.service_tier) for r in capture.records] == [
        (O4_FLEX_COST, "flex"),
        (O4_COST, ""),
    ]
    assert cw.summary().total_usd == O4_FLEX_COST + O4_COST


def test_a_budget_reserves_a_priority_request_at_the_priority_price(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """1,500 output tokens of o4-mini: $0.0066 at the standard $4.40 per million, $0.012 at
    the priority $8: only the standard request fits a $0.01 budget."""
    fake_provider.openai_usage = O4_USAGE
    client = cw.instrument(_client(fake_provider))
    cw.budget("tiers", limit_usd=0.01, window="1d", action="block")

    with pytest.raises(cw.BudgetExceeded):
        client.chat.completions.create(
            model="o4-mini", messages=MESSAGES, max_completion_tokens=1500, service_tier="priority"
        )
    client.chat.completions.create(model="o4-mini", messages=MESSAGES, max_completion_tokens=1500)

    assert len(fake_provider.requests) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
def test_a_priority_request_served_at_the_default_tier_is_priced_at_the_default_tier(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, stream: bool
) -> None:
    fake_provider.openai_usage = O4_USAGE
    client = cw.instrument(_client(fake_provider), inject_stream_usage=True)

    answer = client.chat.completions.create(
        model="o4-mini", messages=MESSAGES, service_tier="priority", stream=stream
    )
    if stream:
        list(answer)
    list(
        client.responses.create(
            model="o4-mini", input="Summarise.", service_tier="priority", stream=True
        )
    )

    assert [(r.cost_usd, r.service_tier) for r in capture.records] == [(O4_COST, "")] * 2


def test_flex_processing_of_a_model_without_a_flex_price_bills_at_the_batch_rate(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """OpenAI bills flex processing at Batch API prices; genai-prices lists no flex price for
    gpt-4o-mini: half, cached input included."""
    fake_provider.openai_usage = MINI_USAGE
    fake_provider.service_tier = "flex"
    client = cw.instrument(_client(fake_provider))

    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, service_tier="flex")

    record = _only_record(capture)
    assert (record.cost_usd, record.service_tier, record.batch) == (MINI_COST / 2, "flex", True)


def test_azure_deployment_is_priced_by_the_model_its_response_names(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """On Azure, ``model=`` is a deployment name that no price list knows."""
    fake_provider.openai_usage = MINI_USAGE
    fake_provider.azure_deployments = {"support-bot-prod": "gpt-4o-mini-2024-07-18"}
    client = cw.instrument(
        openai.AzureOpenAI(
            azure_endpoint=fake_provider.base_url,
            api_version="2024-10-21",
            api_key="test",
            max_retries=0,
        ),
        inject_stream_usage=True,
    )

    client.chat.completions.create(model="support-bot-prod", messages=MESSAGES)
    list(client.chat.completions.create(model="support-bot-prod", messages=MESSAGES, stream=True))

    assert [(r.model, r.cost_usd) for r in capture.records] == [
        ("gpt-4o-mini-2024-07-18", MINI_COST)
    ] * 2
    assert cw.summary().total_usd == 2 * MINI_COST
    assert cw.summary().total.unpriced == 0


def test_a_budget_reserves_for_an_azure_deployment_at_the_price_its_responses_named(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """The first call to a deployment is not priced until its response names the model; from
    then on a blocking budget reserves each call's worst case at that model's price."""
    fake_provider.openai_usage = MINI_USAGE
    fake_provider.azure_deployments = {"support-bot-prod": "gpt-4o-mini-2024-07-18"}
    client = cw.instrument(
        openai.AzureOpenAI(
            azure_endpoint=fake_provider.base_url,
            api_version="2024-10-21",
            api_key="test",
            max_retries=0,
        )
    )
    cw.budget("azure-bot", limit_usd=0.01, window="1d", action="block")

    # Worst case of the next call: 100k output tokens at $0.60 per million = $0.06 > $0.01.
    client.chat.completions.create(model="support-bot-prod", messages=MESSAGES, max_tokens=100_000)
    with pytest.raises(cw.BudgetExceeded):
        client.chat.completions.create(
            model="support-bot-prod", messages=MESSAGES, max_tokens=100_000
        )
    client.chat.completions.create(model="support-bot-prod", messages=MESSAGES, max_tokens=100)

    assert len(fake_provider.requests) == 2
    assert [r.cost_usd for r in capture.records if r.status == "ok"] == [MINI_COST] * 2


@pytest.mark.clock(JUNE_2_2025_10H)  # DeepSeek standard hours, before its 2025-09 list
@pytest.mark.parametrize(
    ("base_url", "model", "provider", "cost"),
    [
        (
            "https://api.groq.com/openai/v1",
            "llama-3.3-70b-versatile",
            "groq",
            (1000 * Decimal("0.59") + 200 * Decimal("0.79")) / M,
        ),
        (
            "https://api.deepseek.com/v1",
            "deepseek-chat",
            "deepseek",
            (1000 * Decimal("0.27") + 200 * Decimal("1.10")) / M,
        ),
    ],
)
def test_an_openai_client_pointed_at_another_provider_is_priced_as_that_provider(
    cw: Any,
    capture: CaptureSink,
    fake_provider: FakeProvider,
    base_url: str,
    model: str,
    provider: str,
    cost: Decimal,
) -> None:
    fake_provider.openai_usage = OpenAIUsage(prompt_tokens=1000, completion_tokens=200)
    client = cw.instrument(
        openai.OpenAI(
            base_url=base_url,
            api_key="test",
            max_retries=0,
            http_client=http_client_to_the_fake(fake_provider),
        ),
        inject_stream_usage=True,
    )

    client.chat.completions.create(model=model, messages=MESSAGES)

    record = _only_record(capture)
    assert (record.provider, record.model, record.cost_usd) == (provider, model, cost)
    assert record.price_source == "genai-prices"
    assert cw.summary().total_usd == cost


def test_chat_completions_reached_through_beta_are_recorded(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """``client.beta.chat.completions.parse`` is how structured outputs were called until 2025."""
    fake_provider.openai_usage = MINI_USAGE
    client = cw.instrument(_client(fake_provider), inject_stream_usage=True)

    parsed = client.beta.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES)
    chunks = list(
        client.beta.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    )

    assert parsed.choices[0].message.content == "Hello from the fake provider."
    assert all(chunk.choices for chunk in chunks)
    assert [(r.usage, r.cost_usd) for r in capture.records] == [(MINI_TOKENS, MINI_COST)] * 2


def test_instrumenting_twice_records_each_call_once(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = _client(fake_provider)

    assert cw.instrument(client) is client
    assert cw.instrument(client) is client
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert len(capture.records) == 1


def test_uninstrument_restores_the_original_methods(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = _client(fake_provider)
    raw = client.with_raw_response  # noqa: F841 - an SDK helper made while instrumented
    cw.instrument(client)
    assert "create" in vars(client.chat.completions)

    cw.uninstrument(client)

    assert "create" not in vars(client.chat.completions)
    assert "create" not in vars(client.responses)
    assert "with_options" not in vars(client)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert capture.records == []


def test_only_the_instrumented_instance_is_recorded(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    cw.instrument(_client(fake_provider))

    _client(fake_provider).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert capture.records == []


def test_copies_made_with_with_options_are_instrumented(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_client(fake_provider))

    client.with_options(timeout=5).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert len(capture.records) == 1


def test_raw_response_calls_are_recorded_and_parse_still_works(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    client = cw.instrument(_client(fake_provider))

    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)

    assert raw.headers["x-request-id"] == "req_fake_0123456789abcdef"
    assert raw.parse().usage.prompt_tokens == 1200
    assert _only_record(capture).cost_usd == MINI_COST


def test_raw_response_of_a_stream_records_the_stream_the_caller_parses(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_client(fake_provider))

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    chunks = list(raw.parse())

    assert len(chunks) == 8  # raw mode: nothing injected into the body the caller asked for
    record = _only_record(capture)
    assert (record.incomplete, record.usage_source) == (False, "estimated")
    assert record.usage.output == 6


def test_streaming_response_is_recorded_when_the_caller_parses_it(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    client = cw.instrument(_client(fake_provider))

    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    ) as response:
        assert capture.records == []  # the body is the caller's to read
        completion = response.parse()

    assert completion.usage is not None and completion.usage.prompt_tokens == 1200
    assert _only_record(capture).cost_usd == MINI_COST


def test_streaming_response_read_raw_gets_the_bytes_it_asked_for(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_client(fake_provider))

    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    del response
    gc.collect()
    drain()  # records of collected streams are made outside the collector

    assert "stream_options" not in fake_provider.requests[-1].body  # nothing injected
    assert len(lines) == 8 and all('"usage"' not in line for line in lines)
    record = _only_record(capture)
    assert (record.incomplete, record.usage_source) == (True, "estimated")


async def test_async_streaming_response_parsed_into_a_stream_is_recorded(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    client = cw.instrument(_async_client(fake_provider))

    async with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        stream = await response.parse()
        chunks = [chunk async for chunk in stream]

    assert chunks[-1].usage is not None
    assert _only_record(capture).cost_usd == MINI_COST


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_parse_methods_are_recorded(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, asynchronous: bool
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    if asynchronous:
        client: Any = cw.instrument(_async_client(fake_provider))
        await client.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES)
        await client.responses.parse(model="gpt-4o-mini", input="x")
    else:
        client = cw.instrument(_client(fake_provider))
        client.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES)
        client.responses.parse(model="gpt-4o-mini", input="x")

    assert [r.cost_usd for r in capture.records] == [MINI_COST, MINI_COST]


def test_instrument_rejects_objects_that_are_not_sdk_clients(cw: Any) -> None:
    with pytest.raises(TypeError, match=r"openai\.OpenAI"):
        cw.instrument(object())


# --- attribution and budgets -------------------------------------------------------------------


def test_stream_is_attributed_to_the_tags_in_force_when_the_call_was_made(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_client(fake_provider))
    with cw.tags(feature="faq", team="support", tenant="acme"):
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    with cw.tags(feature="other"):
        list(stream)

    record = _only_record(capture)
    assert (record.feature, record.team, record.tenant) == ("faq", "support", "acme")


def test_blocking_budget_refuses_before_the_provider_is_called(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_client(fake_provider))
    cw.budget("tiny", limit_usd="0.0000001", window="1d", action="block")

    with pytest.raises(cw.BudgetExceeded) as refused:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=500, stream=True
        )

    assert refused.value.budget == "tiny"
    assert fake_provider.requests == []
    assert capture.records == []


def test_budget_reservation_is_settled_with_the_streamed_cost(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    client = cw.instrument(_client(fake_provider), inject_stream_usage=True)
    daily = cw.budget("daily", limit_usd=10, window="1d", action="block")

    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=500, stream=True
    )
    assert daily.status().holds == 1  # the worst case is held while the stream runs
    list(stream)
    cw.runtime().budgets.flush()

    status = daily.status()
    assert (status.holds, status.reserved_usd) == (0, 0)
    assert status.spent_usd == MINI_COST


# --- streams finished by the garbage collector ----------------------------------------------------


class _CollectingSink(BaseSink):
    """A sink that holds its (non-reentrant) lock while the garbage collector runs, as any
    allocation inside a real sink may make it do."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[Any] = []

    def on_record(self, record: Any) -> None:
        if not self.lock.acquire(timeout=5):
            raise AssertionError("deadlock: a record was made from inside the sink's own lock")
        try:
            self.records.append(record)
            gc.collect()
        finally:
            self.lock.release()


def test_a_stream_collected_while_a_sink_holds_its_lock_is_recorded_afterwards(
    fake_provider: FakeProvider,
) -> None:
    sink = _CollectingSink()
    costwatch.configure(service="test", strict=True, prometheus=False, otel=False, sinks=[sink])
    try:
        client = costwatch.instrument(_client(fake_provider))
        gc.disable()  # keep the abandoned stream (a reference cycle) for the sink's collection
        try:
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            next(stream)
            del stream
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        finally:
            gc.enable()
        assert len(sink.records) == 1  # the collected stream's record waits outside the lock

        drain()

        assert [r.incomplete for r in sink.records] == [False, True]
    finally:
        costwatch._configure.shutdown()


def test_a_forked_worker_records_its_dropped_streams_by_itself(
    cw: Any, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_client(fake_provider))
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    read, write = os.pipe()

    pid = os.fork()
    if pid == 0:  # the worker: drops a stream and waits for the background drain
        try:
            _streams._POLL_S = 0.02
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            next(stream)
            del stream
            gc.collect()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and cw.summary().total.calls < 2:
                time.sleep(0.01)
            os.write(write, str(cw.summary().total.calls).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        answer = os.read(read, 16)
    finally:
        os.close(read)
        os.waitpid(pid, 0)

    assert answer == b"2"  # the worker's own poller made the record, no other stream needed
