"""A provider that reports nonsense usage is refused, counted, and never recorded as money.

The fake endpoint sends the counts (negative, fractional, null, text) over HTTP and the real
SDKs parse them unvalidated, as they do against a real server.  The call reaches the host
untouched; its record says ``usage_source="invalid"`` with no tokens; the refusal is counted in
``costwatch_internal_errors_total{component="usage"}``; the totals of every other call add up.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests._fixtures.capture import CaptureSink
from tests._fixtures.fake_providers import (  # noqa: F401 - the fixture
    FakeProvider,
    fake_provider_fixture,
)

MESSAGES = [{"role": "user", "content": "Tell me about refunds."}]
M = Decimal(1_000_000)


@pytest.fixture
def lenient(capture: CaptureSink) -> Iterator[tuple[Any, CollectorRegistry]]:
    """costwatch as in production (not strict: its own failures are counted, never raised),
    exporting to a fresh Prometheus registry."""
    import costwatch

    registry = CollectorRegistry()
    costwatch.configure(
        service="test",
        strict=False,
        prometheus=True,
        registry=registry,
        otel=False,
        warm_up=False,
        sinks=[capture],
    )
    yield costwatch, registry
    costwatch._configure.shutdown()


def _openai(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = generate_latest(registry).decode()
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _usage_errors(registry: CollectorRegistry) -> float:
    return sum(
        value
        for labels, value in _samples(registry, "costwatch_internal_errors_total").items()
        if ("component", "usage") in labels
    )


def _invalid_record(capture: CaptureSink) -> Any:
    invalid = [r for r in capture.records if r.usage_source == "invalid"]
    assert len(invalid) == 1
    record = invalid[0]
    assert record.usage.total == 0
    assert not record.cost_usd
    return record


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(-500, id="negative"),
        pytest.param(12.5, id="fractional"),
        pytest.param("120", id="text"),
        pytest.param(None, id="null"),
        pytest.param(10**15, id="absurd"),
    ],
)
def test_an_instrumented_chat_call_with_a_nonsense_prompt_count_is_recorded_as_invalid(
    lenient: tuple[Any, CollectorRegistry],
    capture: CaptureSink,
    fake_provider: FakeProvider,
    bad: Any,
) -> None:
    cw, registry = lenient
    client = cw.instrument(_openai(fake_provider))
    fake_provider.openai_usage.prompt_tokens = bad

    response = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert response.choices[0].message.content == "Hello from the fake provider."
    _invalid_record(capture)
    assert _usage_errors(registry) == 1


def test_a_negative_count_never_moves_a_counter_down(
    lenient: tuple[Any, CollectorRegistry], capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    cw, registry = lenient
    client = cw.instrument(_openai(fake_provider))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    before = _samples(registry, "costwatch_tokens_total")
    cost_before = _samples(registry, "costwatch_cost_usd_total")

    fake_provider.openai_usage.completion_tokens = -10_000
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    after = _samples(registry, "costwatch_tokens_total")
    assert before and after == before
    assert _samples(registry, "costwatch_cost_usd_total") == cost_before
    _invalid_record(capture)
    assert _usage_errors(registry) == 1


def test_a_fractional_count_does_not_poison_later_totals_of_the_same_model(
    lenient: tuple[Any, CollectorRegistry], capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """A float count once froze every later total of the same model and tags: the later
    calls must still add up, in the summary and in the Prometheus counters."""
    cw, registry = lenient
    client = _openai(fake_provider)  # a plain client: the decorator reads the usage

    @cw.generation("openai", "gpt-4o-mini")
    def ask() -> Any:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    fake_provider.openai_usage.prompt_tokens = 99.5  # type: ignore[assignment]
    ask()
    fake_provider.openai_usage.prompt_tokens = 1000
    fake_provider.openai_usage.completion_tokens = 200
    for _ in range(3):
        ask()

    totals = cw.summary().total
    assert totals.tokens["input"] == 3000
    assert totals.tokens["output"] == 600
    price_in, price_out = Decimal("0.15"), Decimal("0.60")  # gpt-4o-mini per million
    assert totals.cost_usd == 3 * (1000 * price_in + 200 * price_out) / M
    tokens = _samples(registry, "costwatch_tokens_total")
    assert sum(v for k, v in tokens.items() if ("token_type", "input") in k) == 3000
    _invalid_record(capture)
    assert _usage_errors(registry) == 1


def test_an_integral_float_count_is_read_as_that_count(
    lenient: tuple[Any, CollectorRegistry], capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    cw, registry = lenient
    client = cw.instrument(_openai(fake_provider))
    fake_provider.openai_usage.prompt_tokens = 1000.0  # type: ignore[assignment]

    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    record = capture.records[-1]
    assert record.usage_source == "reported"
    assert (record.usage.input, type(record.usage.input)) == (1000, int)
    assert _usage_errors(registry) == 0


def test_a_stream_whose_usage_chunk_has_a_negative_count_is_invalid_and_its_chunk_hidden(
    lenient: tuple[Any, CollectorRegistry], capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    cw, registry = lenient
    plain = list(
        _openai(fake_provider).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
    )
    fake_provider.openai_usage.cached_tokens = -7
    client = cw.instrument(_openai(fake_provider), inject_stream_usage=True)

    watched = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    )

    assert [c.model_dump() for c in watched] == [c.model_dump() for c in plain]
    _invalid_record(capture)
    assert _usage_errors(registry) == 1


async def test_an_async_anthropic_stream_with_a_null_output_count_is_invalid(
    lenient: tuple[Any, CollectorRegistry], capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    cw, registry = lenient
    client = cw.instrument(
        anthropic.AsyncAnthropic(
            base_url=fake_provider.anthropic_base_url, api_key="test", max_retries=0
        )
    )
    fake_provider.anthropic_usage.output_tokens = None  # type: ignore[assignment]

    stream = await client.messages.create(
        model="claude-sonnet-4-0", max_tokens=100, messages=MESSAGES, stream=True
    )
    events = [event.type async for event in stream]

    assert events[-1] == "message_stop"
    record = _invalid_record(capture)
    assert record.model == "claude-sonnet-4-0"
    assert _usage_errors(registry) == 1


def test_a_gemini_response_with_a_negative_count_is_invalid(
    lenient: tuple[Any, CollectorRegistry], capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    from google import genai

    cw, registry = lenient
    client = cw.instrument(
        genai.Client(api_key="test", http_options={"base_url": fake_provider.base_url})
    )
    fake_provider.gemini_usage.candidates_token_count = -30

    response = client.models.generate_content(model="gemini-2.5-flash", contents="Hi")

    assert response.text == "Hello from the fake provider."
    _invalid_record(capture)
    assert _usage_errors(registry) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input_tokens", -1),
        ("output_tokens", 2.5),
        ("cache_read_tokens", "10"),
        ("reasoning_tokens", None),
        ("web_searches", True),
    ],
)
def test_record_refuses_a_bad_count_with_a_value_error_naming_it(
    cw: Any, capture: CaptureSink, field: str, value: Any
) -> None:
    with pytest.raises(ValueError, match=f"'{field}'"):
        cw.record(provider="openai", model="gpt-4o-mini", **{field: value})
    assert capture.records == []


def test_record_takes_an_integral_float_as_its_count(cw: Any) -> None:
    record = cw.record(provider="openai", model="gpt-4o-mini", input_tokens=1000.0)
    assert (record.usage.input, type(record.usage.input)) == (1000, int)


@pytest.mark.parametrize("bad", [True, "12", -1, 0.5, 2**40])
def test_a_json_usage_body_with_a_count_that_is_not_one_is_refused_naming_it(bad: Any) -> None:
    """Plain JSON bodies (a decorated function returning ``response.json()``) are read
    without any SDK coercion: a bool is no count either."""
    from costwatch._core.record import InvalidUsage
    from costwatch.capture._usage import extract_tokens

    body = {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 10, "completion_tokens": bad}}
    with pytest.raises(InvalidUsage, match="'completion_tokens'"):
        extract_tokens(body)
