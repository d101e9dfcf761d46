"""instrument() on the real Anthropic SDK clients, over HTTP, against the local fake endpoint.

Claude Sonnet 4, by hand from the published per-million prices: $3 input, $0.30 cache read,
$3.75 five-minute cache write, $6 one-hour cache write, $15 output.  Anthropic reports
``input_tokens`` without the cache reads and writes, which come beside it.
"""

from __future__ import annotations

import gc
import warnings
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import pytest

from costwatch._core.record import TokenUsage
from costwatch.capture._streams import drain
from tests._fixtures.capture import CaptureSink
from tests._fixtures.fake_providers import (  # noqa: F401 - the fixture
    AnthropicUsage,
    FakeProvider,
    fake_provider_fixture,
    http_client_to_the_fake,
)

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

M = Decimal(1_000_000)
MODEL = "claude-sonnet-4-20250514"
MESSAGES = [{"role": "user", "content": "What is the refund policy?"}]

USAGE = AnthropicUsage(
    input_tokens=100,
    cache_read_input_tokens=2000,
    cache_write_5m=1000,
    cache_write_1h=500,
    output_tokens=250,
)
TOKENS = TokenUsage(input=100, cache_read=2000, cache_write=1500, output=250, cache_write_1h=500)
COST = (
    100 * Decimal(3)
    + 2000 * Decimal("0.30")
    + 1000 * Decimal("3.75")
    + 500 * Decimal(6)
    + 250 * Decimal(15)
) / M


def _client(fake: FakeProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="test", max_retries=0)


def _async_client(fake: FakeProvider) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=fake.anthropic_base_url, api_key="test", max_retries=0)


def _only_record(capture: CaptureSink) -> Any:
    assert len(capture.records) == 1, capture.records
    return capture.records[0]


def test_message_records_cache_reads_and_both_cache_write_rates(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.anthropic_usage = USAGE
    client = cw.instrument(_client(fake_provider))

    message = client.messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES)

    assert message.content[0].text == "Hello from the fake provider."
    record = _only_record(capture)
    assert (record.provider, record.model, record.stage, record.operation) == (
        "anthropic",
        MODEL,
        "generation",
        "chat",
    )
    assert record.usage == TOKENS
    assert record.cost_usd == COST
    assert cw.summary().total_usd == COST


async def test_async_message_records_the_same(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.anthropic_usage = USAGE
    client = cw.instrument(_async_client(fake_provider))

    await client.messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES)

    record = _only_record(capture)
    assert record.usage == TOKENS
    assert record.cost_usd == COST


def test_streamed_message_takes_input_from_message_start_and_output_from_message_delta(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.anthropic_usage = USAGE
    client = cw.instrument(_client(fake_provider))

    events = list(
        client.messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES, stream=True)
    )

    assert events[0].type == "message_start"
    record = _only_record(capture)
    assert record.usage == TOKENS
    assert record.cost_usd == COST
    assert (record.usage_source, record.incomplete) == ("reported", False)
    assert record.response_model == "claude-sonnet-4-20250514"


async def test_async_streamed_message_is_recorded(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.anthropic_usage = USAGE
    client = cw.instrument(_async_client(fake_provider))

    stream = await client.messages.create(
        model=MODEL, max_tokens=1024, messages=MESSAGES, stream=True
    )
    async for _event in stream:
        pass

    assert _only_record(capture).cost_usd == COST


@pytest.mark.parametrize("stream", [False, True], ids=["message", "stream"])
def test_server_web_searches_are_billed_per_search_beside_the_tokens(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, stream: bool
) -> None:
    """Anthropic reports the searches its web search tool ran in ``usage.server_tool_use``
    (a stream: in the final ``message_delta``) and bills $10 per thousand."""
    fake_provider.anthropic_usage = AnthropicUsage(
        input_tokens=100, output_tokens=250, web_search_requests=3
    )
    client = cw.instrument(_client(fake_provider))
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]

    answer = client.messages.create(
        model=MODEL, max_tokens=1024, messages=MESSAGES, tools=tools, stream=stream
    )
    if stream:
        list(answer)

    record = _only_record(capture)
    assert record.usage == TokenUsage(input=100, output=250, web_searches=3)
    assert record.usage.total == 350  # searches are not tokens
    assert record.cost_usd == (100 * Decimal(3) + 250 * Decimal(15)) / M + 3 * Decimal("0.01")
    assert record.input_cost_usd == 100 * Decimal(3) / M
    assert cw.summary().total_usd == record.cost_usd


def test_messages_stream_helper_is_recorded_whichever_way_it_is_read(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.anthropic_usage = USAGE
    client = cw.instrument(_client(fake_provider))

    with client.messages.stream(model=MODEL, max_tokens=1024, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
    with client.messages.stream(model=MODEL, max_tokens=1024, messages=MESSAGES) as stream:
        final = stream.get_final_message()

    assert text == "Hello from the fake provider."
    assert final.usage.cache_read_input_tokens == 2000
    assert [r.cost_usd for r in capture.records] == [COST, COST]


async def test_async_messages_stream_helper_is_recorded(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.anthropic_usage = USAGE
    client = cw.instrument(_async_client(fake_provider))

    async with client.messages.stream(model=MODEL, max_tokens=1024, messages=MESSAGES) as stream:
        text = await stream.get_final_text()

    assert text == "Hello from the fake provider."
    assert _only_record(capture).usage == TOKENS


EXTENDED_TTL = ["extended-cache-ttl-2025-04-11"]


def test_beta_messages_are_recorded_like_messages(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """One-hour cache writes, context management and server tools go through ``beta.messages``."""
    fake_provider.anthropic_usage = USAGE
    client = cw.instrument(_client(fake_provider))

    message = client.beta.messages.create(
        model=MODEL, max_tokens=1024, messages=MESSAGES, betas=EXTENDED_TTL
    )
    events = list(
        client.beta.messages.create(
            model=MODEL, max_tokens=1024, messages=MESSAGES, betas=EXTENDED_TTL, stream=True
        )
    )
    with client.beta.messages.stream(
        model=MODEL, max_tokens=1024, messages=MESSAGES, betas=EXTENDED_TTL
    ) as stream:
        text = "".join(stream.text_stream)

    assert message.content[0].text == text == "Hello from the fake provider."
    assert events[0].type == "message_start"
    assert [r.headers.get("anthropic-beta") for r in fake_provider.requests] == EXTENDED_TTL * 3
    assert [(r.usage, r.cost_usd) for r in capture.records] == [(TOKENS, COST)] * 3
    cw.uninstrument(client)
    client.beta.messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES)
    assert len(capture.records) == 3


async def test_async_beta_messages_are_recorded(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.anthropic_usage = USAGE
    client = cw.instrument(_async_client(fake_provider))

    await client.beta.messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES)
    async with client.beta.messages.stream(
        model=MODEL, max_tokens=1024, messages=MESSAGES
    ) as stream:
        final = await stream.get_final_message()

    assert final.usage.cache_creation_input_tokens == 1500
    assert [r.cost_usd for r in capture.records] == [COST, COST]


@pytest.mark.clock(1748858400.0)  # 2025-06-02T10:00Z: DeepSeek standard hours, before 2025-09
def test_an_anthropic_client_pointed_at_a_compatible_api_is_priced_as_that_provider(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """DeepSeek serves its models through an Anthropic-compatible API too (priced at the
    injected clock: the prices in force then, whatever time the test runs at)."""
    fake_provider.anthropic_usage = AnthropicUsage(input_tokens=1000, output_tokens=200)
    client = cw.instrument(
        anthropic.Anthropic(
            base_url="https://api.deepseek.com/anthropic",
            api_key="test",
            max_retries=0,
            http_client=http_client_to_the_fake(fake_provider, httpx2),
        )
    )

    client.messages.create(model="deepseek-chat", max_tokens=1024, messages=MESSAGES)

    record = _only_record(capture)
    assert (record.provider, record.model) == ("deepseek", "deepseek-chat")
    assert record.cost_usd == (1000 * Decimal("0.27") + 200 * Decimal("1.10")) / M


def test_claude_on_vertex_ai_is_recorded_under_google_at_claude_prices(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.anthropic_usage = USAGE
    client = cw.instrument(
        anthropic.AnthropicVertex(
            region="us-east5",
            project_id="acme",
            access_token="test",
            max_retries=0,
            base_url=fake_provider.base_url + "/v1",
        )
    )

    client.messages.create(model="claude-sonnet-4@20250514", max_tokens=1024, messages=MESSAGES)
    with client.messages.stream(
        model="claude-sonnet-4@20250514", max_tokens=1024, messages=MESSAGES
    ) as stream:
        text = "".join(stream.text_stream)

    assert text == "Hello from the fake provider."
    assert fake_provider.requests[-1].path.endswith(
        "/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict"
    )
    assert [(r.provider, r.usage, r.cost_usd) for r in capture.records] == [
        ("google", TOKENS, COST)
    ] * 2


async def test_claude_on_bedrock_is_recorded_under_aws_at_claude_prices(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.anthropic_usage = USAGE
    client = cw.instrument(
        anthropic.AsyncAnthropicBedrock(
            aws_region="us-east-1",
            aws_access_key="AKIDEXAMPLE",
            aws_secret_key="secret",
            base_url=fake_provider.base_url,
            max_retries=0,
        )
    )
    model = "us.anthropic.claude-sonnet-4-20250514-v1:0"

    await client.messages.create(model=model, max_tokens=1024, messages=MESSAGES)
    stream = await client.messages.create(
        model=model, max_tokens=1024, messages=MESSAGES, stream=True
    )
    events = [event.type async for event in stream]

    assert fake_provider.requests[-1].headers["authorization"].startswith("AWS4-HMAC-SHA256")
    assert fake_provider.requests[-1].path.endswith("/invoke-with-response-stream")
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert [(r.provider, r.model, r.usage, r.cost_usd, r.incomplete) for r in capture.records] == [
        ("aws", model, TOKENS, COST, False)
    ] * 2


def test_stream_manager_never_entered_records_nothing_and_holds_no_budget(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_client(fake_provider))
    daily = cw.budget("daily", limit_usd=10, window="1d", action="block")

    manager = client.messages.stream(model=MODEL, max_tokens=1024, messages=MESSAGES)
    assert daily.status().holds == 1
    del manager
    gc.collect()
    drain()  # records of collected streams are made outside the collector
    cw.runtime().budgets.flush()

    assert fake_provider.requests == []
    assert capture.records == []
    assert daily.status().holds == 0


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, anthropic.BadRequestError),
        (500, anthropic.InternalServerError),
        (529, anthropic.OverloadedError),
    ],
    ids=["400", "500", "529"],
)
def test_provider_error_reaches_the_caller_unchanged_and_is_recorded(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, status: int, error: type
) -> None:
    client = cw.instrument(_client(fake_provider))
    fake_provider.fail_next(status, "prompt is too long")

    with pytest.raises(error) as raised:
        client.messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES)

    assert raised.value.status_code == status
    record = _only_record(capture)
    assert (record.status, record.error_type) == ("error", error.__name__)


def test_error_event_mid_stream_is_raised_and_recorded_with_the_input_already_billed(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.anthropic_usage = USAGE
    client = cw.instrument(_client(fake_provider))
    fake_provider.fail_mid_stream(after=2)

    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        for _event in client.messages.create(
            model=MODEL, max_tokens=1024, messages=MESSAGES, stream=True
        ):
            pass

    record = _only_record(capture)
    assert (record.status, record.incomplete) == ("error", True)
    assert (record.usage.input, record.usage.cache_read, record.usage.cache_write) == (
        100,
        2000,
        1500,
    )
    assert record.usage.output == 2  # "Hello from", estimated: no message_delta arrived


def test_stream_abandoned_after_two_events_is_recorded_once_as_incomplete(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_client(fake_provider))

    stream = client.messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES, stream=True)
    with stream:
        for n, _event in enumerate(stream):
            if n == 1:
                break

    record = _only_record(capture)
    assert record.incomplete is True
    assert record.usage.input == 120  # reported by message_start before the caller left


async def test_async_stream_abandoned_and_closed_is_recorded_once(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_async_client(fake_provider))

    stream = await client.messages.create(
        model=MODEL, max_tokens=1024, messages=MESSAGES, stream=True
    )
    async for event in stream:
        if event.type == "content_block_start":
            break
    await stream.close()
    await stream.close()

    record = _only_record(capture)
    assert record.incomplete is True


def test_an_async_stream_manager_never_entered_warns_as_without_costwatch_and_is_not_recorded(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """The SDK's own request coroutine, never awaited, warns once; costwatch adds no second
    warning for its hook (an awaitable, not a coroutine) and records nothing: no call was made."""

    def never_awaited_warnings(client: anthropic.AsyncAnthropic) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            client.messages.stream(model=MODEL, max_tokens=16, messages=MESSAGES)
            gc.collect()
        return [str(w.message) for w in caught if "never awaited" in str(w.message)]

    plain = never_awaited_warnings(_async_client(fake_provider))
    instrumented = never_awaited_warnings(cw.instrument(_async_client(fake_provider)))

    assert len(plain) == 1
    assert instrumented == plain
    drain()
    assert capture.records == [] and fake_provider.requests == []


def test_instrument_twice_is_once_and_uninstrument_restores(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = _client(fake_provider)
    cw.instrument(cw.instrument(client))

    client.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
    assert len(capture.records) == 1

    cw.uninstrument(client)
    assert {"create", "stream", "parse"}.isdisjoint(vars(client.messages))
    client.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
    with client.messages.stream(model=MODEL, max_tokens=16, messages=MESSAGES) as stream:
        stream.until_done()
    assert len(capture.records) == 1


def test_blocking_budget_refuses_the_stream_before_any_request(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_client(fake_provider))
    cw.budget("tiny", limit_usd="0.000001", window="1d", action="block")

    with pytest.raises(cw.BudgetExceeded):
        client.messages.stream(model=MODEL, max_tokens=4096, messages=MESSAGES)
    with pytest.raises(cw.BudgetExceeded):
        client.messages.create(model=MODEL, max_tokens=4096, messages=MESSAGES)

    assert fake_provider.requests == []


def test_a_raw_response_parsed_in_the_same_expression_returns_the_message_and_is_priced(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """``create(...).parse()`` drops the caller's last reference to the response before
    ``parse`` runs: the hook keeps the response, so the host gets its message."""
    fake_provider.anthropic_usage = USAGE
    client = cw.instrument(_client(fake_provider))

    message = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=1024, messages=MESSAGES
    ).parse()

    assert message.content[0].text == "Hello from the fake provider."
    record = _only_record(capture)
    assert (record.usage, record.cost_usd) == (TOKENS, COST)
