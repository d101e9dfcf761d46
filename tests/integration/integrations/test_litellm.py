"""The LiteLLM logger with the real litellm package: completion, acompletion, streams,
embedding and the Router, over HTTP to the local fake endpoint (OpenAI through LiteLLM's
OpenAI SDK client, Anthropic through LiteLLM's own HTTP client).

Costs by hand: tests/_fixtures/hand_costs.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import litellm
import pytest

import costwatch
from costwatch._core.record import TokenUsage
from costwatch.integrations.litellm import CostwatchLogger, usage_of
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
    O4_COST,
    O4_TOKENS,
    O4_USAGE,
    REPLY,
)


@pytest.fixture
def logger(cw: Any) -> Iterator[CostwatchLogger]:
    handler = CostwatchLogger()
    before = litellm.callbacks
    litellm.callbacks = [handler]
    try:
        yield handler
    finally:
        litellm.callbacks = before
        litellm.logging_callback_manager.remove_callback_from_all_lists(handler)
        cw.uninstrument()


def _openai(fake: FakeProvider, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"model": f"openai/{model}", "api_base": fake.openai_base_url, "api_key": "test"}


def _records(capture: CaptureSink, count: int) -> list[Any]:
    """The records once LiteLLM's logging threads delivered ``count`` (and nothing more)."""
    deadline = time.monotonic() + 10
    while len(capture.records) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # a second record of the same call would arrive by now
    assert len(capture.records) == count, capture.records
    return list(capture.records)


async def _arecords(capture: CaptureSink, count: int) -> list[Any]:
    """``_records`` for async calls: LiteLLM logs them in tasks on the running loop."""
    deadline = time.monotonic() + 10
    while len(capture.records) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    assert len(capture.records) == count, capture.records
    return list(capture.records)


def test_usage_details_are_taken_out_of_the_totals_they_are_part_of() -> None:
    usage = litellm.Usage(
        prompt_tokens=3600,
        completion_tokens=900,
        total_tokens=4500,
        prompt_tokens_details={
            "cached_tokens": 2000,
            "cache_creation_token_details": {
                "ephemeral_5m_input_tokens": 1000,
                "ephemeral_1h_input_tokens": 500,
            },
        },
        completion_tokens_details={"reasoning_tokens": 640},
        cache_creation_input_tokens=1500,
        cache_read_input_tokens=2000,
    )

    tokens = usage_of(usage)

    assert tokens == TokenUsage(
        input=100, cache_read=2000, cache_write=1500, output=260, reasoning=640, cache_write_1h=500
    )
    assert tokens.total == 4500


def test_completion_is_priced_by_costwatch_under_its_tags_and_request(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE

    with costwatch.tags(feature="faq", tenant="acme"), costwatch.request("answer"):
        reply = litellm.completion(messages=MESSAGES, **_openai(fake_provider))

    assert reply.choices[0].message.content == REPLY
    assert reply.usage.prompt_tokens == 1200  # LiteLLM's own object, unchanged
    [record] = _records(capture, 1)
    assert (record.provider, record.model, record.stage) == ("openai", "gpt-4o-mini", "generation")
    assert record.response_model == "gpt-4o-mini-2024-07-18"
    assert record.usage == MINI_TOKENS
    assert record.cost_usd == MINI_COST
    assert record.price_source is not None and "litellm" not in record.price_source
    assert (record.feature, record.tenant, record.pipeline) == ("faq", "acme", "answer")
    assert (record.usage_source, record.status) == ("reported", "ok")


def test_anthropic_cache_writes_at_both_rates_and_cache_reads_are_priced_exactly(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.anthropic_usage = CLAUDE_USAGE

    reply = litellm.completion(
        model=f"anthropic/{CLAUDE}",
        messages=MESSAGES,
        api_base=fake_provider.anthropic_base_url,
        api_key="test",
    )

    assert reply.choices[0].message.content == REPLY
    [record] = _records(capture, 1)
    assert (record.provider, record.model) == ("anthropic", CLAUDE)
    assert record.usage == CLAUDE_TOKENS
    assert record.cost_usd == CLAUDE_COST


async def test_acompletion_is_recorded_with_reasoning_tokens_under_its_tags(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = O4_USAGE

    with costwatch.tags(team="async"):
        reply = await litellm.acompletion(messages=MESSAGES, **_openai(fake_provider, "o4-mini"))

    assert reply.choices[0].message.content == REPLY
    [record] = await _arecords(capture, 1)
    assert record.usage == O4_TOKENS
    assert record.cost_usd == O4_COST
    assert record.team == "async"


def test_a_stream_with_reported_usage_is_recorded_exactly_and_its_chunks_are_unchanged(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    kwargs = {**_openai(fake_provider), "stream_options": {"include_usage": True}}

    with costwatch.tags(feature="stream"):
        chunks = list(litellm.completion(messages=MESSAGES, stream=True, **kwargs))

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    [record] = _records(capture, 1)
    assert record.usage == MINI_TOKENS
    assert record.cost_usd == MINI_COST
    assert (record.usage_source, record.feature) == ("reported", "stream")


def test_a_stream_without_reported_usage_is_estimated_by_costwatch_and_marked_so(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    chunks = list(litellm.completion(messages=MESSAGES, stream=True, **_openai(fake_provider)))

    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
    [record] = _records(capture, 1)
    assert record.usage_source == "estimated"
    assert record.usage.output > 0 and record.usage.input > 0


def test_embedding_is_recorded_at_the_embedding_price(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.embedding_tokens = 42

    response = litellm.embedding(
        input=["refunds", "shipping"], **_openai(fake_provider, "text-embedding-3-small")
    )

    assert len(response.data) == 2
    [record] = _records(capture, 1)
    assert (record.stage, record.model, record.usage) == (
        "embedding",
        "text-embedding-3-small",
        TokenUsage(input=42),
    )
    assert record.cost_usd == 42 * EMBEDDING_PRICE


async def test_router_calls_are_recorded_under_the_deployments_model(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    router = litellm.Router(
        model_list=[{"model_name": "support", "litellm_params": _openai(fake_provider)}]
    )

    with costwatch.tags(feature="routed"):
        first = router.completion(model="support", messages=MESSAGES)
        second = await router.acompletion(model="support", messages=MESSAGES)

    assert first.choices[0].message.content == second.choices[0].message.content == REPLY
    records = await _arecords(capture, 2)
    assert [(r.model, r.usage, r.feature) for r in records] == [
        ("gpt-4o-mini", MINI_TOKENS, "routed")
    ] * 2
    assert sum(r.cost_usd for r in records) == 2 * MINI_COST


async def test_a_block_budget_refuses_an_async_call_before_it_is_sent(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    costwatch.budget("tiny", limit_usd=Decimal("0.000001"), window="1d", action="block")
    router = litellm.Router(
        model_list=[{"model_name": "support", "litellm_params": _openai(fake_provider)}]
    )

    with pytest.raises(costwatch.BudgetExceeded):
        await litellm.acompletion(messages=MESSAGES, max_tokens=500, **_openai(fake_provider))
    with pytest.raises(costwatch.BudgetExceeded):
        await router.acompletion(model="support", messages=MESSAGES, max_tokens=500)

    assert fake_provider.requests == []  # not even on the Router's retries
    assert set(capture.blocked) == {"tiny"}
    assert len(capture.blocked) >= 2


def test_with_class_instrumentation_too_each_call_is_recorded_once(
    cw: Any, logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    fake_provider.embedding_tokens = 42
    cw.instrument(inject_stream_usage=True)

    with costwatch.tags(feature="both"):
        litellm.completion(messages=MESSAGES, **_openai(fake_provider))
        chunks = list(litellm.completion(messages=MESSAGES, stream=True, **_openai(fake_provider)))
        litellm.embedding(input=["refunds"], **_openai(fake_provider, "text-embedding-3-small"))

    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
    records = _records(capture, 3)
    assert [(r.stage, r.usage_source) for r in records] == [
        ("generation", "reported"),
        ("generation", "estimated"),  # LiteLLM reads the stream raw: no usage is injected
        ("embedding", "reported"),
    ]
    assert (records[0].usage, records[2].usage) == (MINI_TOKENS, TokenUsage(input=42))
    assert {r.feature for r in records} == {"both"}


def test_a_failed_call_is_recorded_as_an_error_and_raised(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    from tests._fixtures.fake_providers import Failure

    fake_provider.failures.append(Failure(status=400, message="bad request"))

    with pytest.raises(litellm.BadRequestError):
        litellm.completion(messages=MESSAGES, num_retries=0, **_openai(fake_provider))

    [record] = _records(capture, 1)
    assert record.status == "error"
