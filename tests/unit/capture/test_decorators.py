"""@generation / @embedding / @retrieval: every call priced once, the host's call untouched."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests._fixtures.capture import CaptureSink

M = Decimal(1_000_000)
# Published gpt-4o-mini prices per million tokens: input 0.15, cached input 0.075, output 0.60.
IN, CACHED, OUT = Decimal("0.15") / M, Decimal("0.075") / M, Decimal("0.60") / M


def chat_response(
    prompt: int = 1200,
    cached: int = 1024,
    completion: int = 300,
    reasoning: int = 0,
    model: str = "gpt-4o-mini-2024-07-18",
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
    }


def expected_cost(prompt: int = 1200, cached: int = 1024, completion: int = 300) -> Decimal:
    return (prompt - cached) * IN + cached * CACHED + completion * OUT


def test_sync_call_is_priced_from_the_returned_usage(cw: Any, capture: CaptureSink) -> None:
    response = chat_response()

    @cw.generation(provider="openai", model="gpt-4o-mini")
    def answer(prompt: str) -> dict[str, Any]:
        return response

    assert answer("hello") is response
    rec = capture.last
    assert rec.usage.by_type() == {
        "input": 176,
        "cache_read": 1024,
        "cache_write": 0,
        "output": 300,
        "reasoning": 0,
    }
    assert rec.cost_usd == expected_cost()
    assert rec.status == "ok" and rec.stage == "generation" and rec.strategy == "base"
    assert rec.response_model == "gpt-4o-mini-2024-07-18"
    assert rec.price_source is not None
    assert cw.summary().total_usd == expected_cost()


def test_decorated_function_keeps_its_signature_and_metadata(cw: Any) -> None:
    def answer(prompt: str, *, temperature: float = 0.2) -> dict[str, Any]:
        """Answer a prompt."""
        return chat_response()

    wrapped = cw.generation(provider="openai", model="gpt-4o-mini")(answer)
    assert wrapped.__name__ == "answer"
    assert wrapped.__doc__ == "Answer a prompt."
    assert inspect.signature(wrapped) == inspect.signature(answer)


async def test_coroutine_is_priced_and_stays_a_coroutine(cw: Any, capture: CaptureSink) -> None:
    @cw.generation(provider="openai", model="gpt-4o-mini")
    async def answer(prompt: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return chat_response()

    assert inspect.iscoroutinefunction(answer)
    await answer("hello")
    assert capture.last.cost_usd == expected_cost()


def test_host_exception_passes_through_unchanged_and_is_recorded_as_error(
    cw: Any, capture: CaptureSink
) -> None:
    class ProviderDown(Exception):
        pass

    error = ProviderDown("503")

    @cw.generation(provider="openai", model="gpt-4o-mini")
    def answer(prompt: str) -> dict[str, Any]:
        raise error

    with pytest.raises(ProviderDown) as info:
        answer("hello")
    assert info.value is error
    assert capture.last.status == "error"
    assert capture.last.error_type == "ProviderDown"
    assert cw.summary().total.errors == 1


def test_generator_yielding_stream_chunks_is_recorded_once_with_the_final_usage(
    cw: Any, capture: CaptureSink
) -> None:
    chunks: list[dict[str, Any]] = [
        {
            "object": "chat.completion.chunk",
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": word}}],
            "usage": None,
        }
        for word in ("a", "b", "c")
    ]
    chunks.append(
        {
            "object": "chat.completion.chunk",
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": chat_response()["usage"],
        }
    )

    @cw.generation(provider="openai", model="gpt-4o-mini")
    def stream(prompt: str) -> Iterator[dict[str, Any]]:
        yield from chunks

    assert inspect.isgeneratorfunction(stream)
    assert list(stream("hi")) == chunks
    assert len(capture.records) == 1
    assert capture.last.cost_usd == expected_cost()
    assert capture.last.incomplete is False


def test_generator_forwards_send_and_return_value(cw: Any, capture: CaptureSink) -> None:
    @cw.generation(provider="openai", model="gpt-4o-mini")
    def echo(prompt: str) -> Iterator[str]:
        received = yield "first"
        yield f"got {received}"
        return "done"

    gen = echo("hi")
    assert next(gen) == "first"
    assert gen.send("x") == "got x"
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done"
    assert len(capture.records) == 1


def test_a_returned_generator_is_recorded_once_when_it_ends_with_the_usage_it_yielded(
    cw: Any, capture: CaptureSink
) -> None:
    """google-genai's streams are plain generators: a function that returns one is recorded
    from its chunks, when the caller has read them, not when the function returns."""
    chunks = [
        {
            "object": "chat.completion.chunk",
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": chat_response()["usage"],
        }
    ]

    @cw.generation(provider="openai", model="gpt-4o-mini")
    def stream(prompt: str) -> Iterator[dict[str, Any]]:
        return iter_chunks()

    def iter_chunks() -> Iterator[dict[str, Any]]:
        yield from chunks
        return None

    returned = stream("hi")
    assert capture.records == []
    assert list(returned) == chunks
    assert len(capture.records) == 1
    assert (capture.last.cost_usd, capture.last.incomplete) == (expected_cost(), False)


async def test_a_returned_async_generator_is_recorded_once_when_it_is_closed(
    cw: Any, capture: CaptureSink
) -> None:
    async def words() -> AsyncIterator[str]:
        for word in ("one ", "two ", "three "):
            yield word

    @cw.generation(provider="openai", model="gpt-4o-mini")
    async def stream(prompt: str) -> AsyncIterator[str]:
        return words()

    returned = await stream("count")
    assert await returned.__anext__() == "one "
    await returned.aclose()
    assert len(capture.records) == 1
    assert (capture.last.incomplete, capture.last.usage_source) == (True, "estimated")


async def test_async_generator_forwards_asend_and_athrow(cw: Any, capture: CaptureSink) -> None:
    @cw.generation(provider="openai", model="gpt-4o-mini")
    async def echo(prompt: str) -> AsyncIterator[str]:
        try:
            received = yield "first"
            yield f"got {received}"
        except ValueError:
            yield "recovered"

    gen = echo("hi")
    assert await gen.__anext__() == "first"
    assert await gen.asend("x") == "got x"
    assert await gen.athrow(ValueError()) == "recovered"
    with pytest.raises(StopAsyncIteration):
        await gen.__anext__()
    assert len(capture.records) == 1


def test_abandoned_generator_is_recorded_once_as_incomplete(cw: Any, capture: CaptureSink) -> None:
    @cw.generation(provider="openai", model="gpt-4o-mini")
    def words(prompt: str) -> Iterator[str]:
        yield from ("one ", "two ", "three ", "four ")

    gen = words("count to four")
    assert next(gen) == "one "
    assert next(gen) == "two "
    gen.close()
    assert len(capture.records) == 1
    rec = capture.last
    assert rec.incomplete is True
    assert rec.usage_source == "estimated"
    assert rec.usage.output > 0


async def test_async_generator_without_usage_is_estimated(cw: Any, capture: CaptureSink) -> None:
    @cw.generation(provider="openai", model="gpt-4o-mini")
    async def words(prompt: str) -> AsyncIterator[str]:
        for word in ("hello ", "world"):
            yield word

    assert inspect.isasyncgenfunction(words)
    assert [w async for w in words("say hello world")] == ["hello ", "world"]
    rec = capture.last
    assert rec.usage_source == "estimated"
    assert rec.usage.input > 0 and rec.usage.output > 0
    assert rec.cost_usd == rec.usage.input * IN + rec.usage.output * OUT


async def test_async_generator_exception_propagates_and_records_error(
    cw: Any, capture: CaptureSink
) -> None:
    @cw.generation(provider="openai", model="gpt-4o-mini")
    async def words(prompt: str) -> AsyncIterator[str]:
        yield "a"
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        async for _ in words("x"):
            pass
    assert [r.status for r in capture.records] == ["error"]


def test_unknown_model_costs_none_and_is_counted_unpriced(cw: Any, capture: CaptureSink) -> None:
    @cw.generation(provider="acme-llm", model="house-model-7")
    def answer(prompt: str) -> dict[str, Any]:
        return chat_response()

    answer("hi")
    assert capture.last.cost_usd is None
    summary = cw.summary()
    assert summary.total.unpriced == 1
    assert summary.total_usd == 0
    assert summary.by_model["house-model-7"].cost_usd == 0
    assert summary.by_model["house-model-7"].unpriced == 1


def test_model_taken_from_the_call_when_the_decorator_has_none(
    cw: Any, capture: CaptureSink
) -> None:
    @cw.generation(provider="openai")
    def create(**kwargs: Any) -> dict[str, Any]:
        return chat_response()

    create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert capture.last.model == "gpt-4o-mini"
    assert capture.last.cost_usd == expected_cost()


def test_fine_tuned_model_is_fine_tuned_unless_the_request_says_hybrid(
    cw: Any, capture: CaptureSink
) -> None:
    @cw.generation(provider="openai", model="ft:gpt-4o-mini-2024-07-18:acme::x1")
    def classify(text: str) -> dict[str, Any]:
        return chat_response(model="ft:gpt-4o-mini-2024-07-18:acme::x1")

    classify("a")
    with cw.request("draft", strategy="rag"):
        classify("b")
    with cw.request("draft", strategy="hybrid"):
        classify("c")
    assert [r.strategy for r in capture.records] == ["fine_tuned", "fine_tuned", "hybrid"]
    # ft:gpt-4o-mini inference: 0.30 input, 0.15 cached, 1.20 output per million.
    ft = (176 * Decimal("0.30") + 1024 * Decimal("0.15") + 300 * Decimal("1.20")) / M
    assert capture.records[0].cost_usd == ft
    assert cw.summary().by_strategy["fine_tuned"].cost_usd == 2 * ft


def test_retrieved_documents_become_context_of_the_next_generation(
    cw: Any, capture: CaptureSink
) -> None:
    from costwatch._core.tokens import count_tokens

    docs = [
        {"text": "refunds are possible within thirty days"},
        {"page_content": "passwords reset from the account page"},
    ]

    @cw.retrieval(source="kb")
    def search(query: str) -> list[dict[str, str]]:
        return docs

    @cw.generation(provider="openai", model="gpt-4o-mini")
    def answer(prompt: str) -> dict[str, Any]:
        return chat_response(prompt=1000, cached=0, completion=100)

    with cw.request("answer_question", strategy="rag"):
        search("refund?")
        answer("...")
        answer("follow-up without new retrieval")
    gen = [r for r in capture.records if r.stage == "generation"]
    tokens = count_tokens(
        "\n".join(d.get("text") or d["page_content"] for d in docs), "gpt-4o-mini"
    )[0]
    assert gen[0].context_tokens == {"kb": tokens}
    assert gen[0].context_cost_usd == {"kb": 1000 * IN * tokens / 1000}
    assert gen[1].context_tokens == {}
    assert all(r.strategy == "rag" for r in capture.records)
    summary = cw.summary()
    assert summary.context_by_source["kb"] == (tokens, 1000 * IN * tokens / 1000)
    assert summary.context_share_of_input_cost == pytest.approx(tokens / 2000)


def test_request_groups_cost_per_pipeline(cw: Any, capture: CaptureSink) -> None:
    @cw.generation(provider="openai", model="gpt-4o-mini")
    def answer(prompt: str) -> dict[str, Any]:
        return chat_response()

    for _ in range(3):
        with cw.request("answer_question", strategy="rag"):
            answer("a")
            answer("b")
    pipeline = cw.summary().by_pipeline["answer_question"]
    assert pipeline.requests == 3
    assert pipeline.cost_usd == 6 * expected_cost()
    assert pipeline.cost_per_request_usd == 2 * expected_cost()
    assert [e.cost_usd for e in capture.requests] == [2 * expected_cost()] * 3
    assert all(r.pipeline == "answer_question" for r in capture.records)


def test_a_first_request_after_plain_calls_is_attributed(
    cw: Any, capture: CaptureSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    from costwatch._core import context as _context

    # As in a process that has never entered a request or a cost scope: plain calls skip
    # reading their contextvars until one is entered.
    monkeypatch.setattr(_context, "scoped", False)

    @cw.generation(provider="openai", model="gpt-4o-mini")
    def answer(prompt: str) -> dict[str, Any]:
        return chat_response()

    answer("before")
    with cw.request("first", strategy="rag"):
        answer("inside")
    answer("after")
    assert [r.pipeline for r in capture.records] == ["", "first", ""]
    assert [r.strategy for r in capture.records] == ["base", "rag", "base"]
    assert cw.summary().by_pipeline["first"].cost_usd == expected_cost()


def test_request_records_error_status_when_the_block_raises(cw: Any, capture: CaptureSink) -> None:
    with pytest.raises(KeyError), cw.request("broken"):
        raise KeyError("x")
    assert capture.requests[-1].status == "error"


def test_tags_attribute_feature_team_tenant_and_nest(cw: Any, capture: CaptureSink) -> None:
    @cw.generation(provider="openai", model="gpt-4o-mini")
    def answer(prompt: str) -> dict[str, Any]:
        return chat_response()

    with cw.tags(feature="faq", team="support", tenant="acme"):
        answer("a")
        with cw.tags(tenant="globex"):
            answer("b")
        answer("c")
    assert [(r.feature, r.team, r.tenant) for r in capture.records] == [
        ("faq", "support", "acme"),
        ("faq", "support", "globex"),
        ("faq", "support", "acme"),
    ]
    assert cw.summary().by_tenant["acme"].calls == 2


def test_embedding_usage_from_response_and_estimate_without_it(
    cw: Any, capture: CaptureSink
) -> None:
    @cw.embedding(provider="openai", model="text-embedding-3-small")
    def embed(texts: list[str]) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 5000, "total_tokens": 5000},
        }

    @cw.embedding(provider="openai", model="text-embedding-3-small")
    def embed_raw(texts: list[str]) -> list[list[float]]:
        return [[0.0]] * len(texts)

    embed(["a", "b"])
    assert capture.last.usage.input == 5000
    assert capture.last.cost_usd == 5000 * Decimal("0.02") / M
    embed_raw(["some text to embed", "another"])
    assert capture.last.usage_source == "estimated"
    assert capture.last.usage.input > 0 and capture.last.usage.output == 0


def test_manual_record_returns_the_priced_record(cw: Any) -> None:
    rec = cw.record(
        provider="openai",
        model="ft:gpt-4o-mini-2024-07-18:acme::x1",
        input_tokens=900,
        output_tokens=120,
        stage="generation",
        latency_s=0.8,
    )
    assert rec.cost_usd == (900 * Decimal("0.30") + 120 * Decimal("1.20")) / M
    assert rec.strategy == "fine_tuned"
    unknown = cw.record(provider="nobody", model="nothing", input_tokens=1)
    assert unknown.cost_usd is None


def test_a_manual_record_can_carry_the_searches_a_call_ran(cw: Any) -> None:
    rec = cw.record(
        provider="openai", model="gpt-4o-mini", input_tokens=1000, web_searches=1, file_searches=2
    )
    assert rec.cost_usd == 1000 * Decimal("0.15") / M + Decimal("0.01") + Decimal("0.005")
    assert rec.as_dict()["usage"] == {
        "input": 1000,
        "cache_read": 0,
        "cache_write": 0,
        "output": 0,
        "reasoning": 0,
        "web_searches": 1,
        "file_searches": 2,
    }


def test_a_manual_record_can_carry_audio_parts_and_the_processing_tier(cw: Any) -> None:
    # gpt-audio: text $2.50 / $10, audio $32 / $64 per Mtok; o4-mini priority $2 / $8.
    audio = cw.record(
        provider="openai",
        model="gpt-audio",
        input_tokens=1000,
        output_tokens=100,
        input_audio_tokens=600,
        output_audio_tokens=100,
    )
    assert audio.cost_usd == (400 * Decimal("2.50") + 600 * Decimal(32) + 100 * Decimal(64)) / M
    priority = cw.record(
        provider="openai",
        model="o4-mini",
        input_tokens=1000,
        output_tokens=100,
        service_tier="priority",
    )
    assert (priority.cost_usd, priority.service_tier) == (
        (1000 * Decimal(2) + 100 * Decimal(8)) / M,
        "priority",
    )


def test_batch_results_are_priced_at_the_batch_rate(cw: Any) -> None:
    """Batch API results bill at half price (OpenAI and Anthropic), input side included."""
    full = (2000 * Decimal("0.15") + 500 * Decimal("0.60")) / M  # gpt-4o-mini
    rec = cw.record(
        provider="openai", model="gpt-4o-mini", input_tokens=2000, output_tokens=500, batch=True
    )
    assert (rec.cost_usd, rec.input_cost_usd, rec.batch) == (
        full / 2,
        2000 * Decimal("0.15") / M / 2,
        True,
    )

    @cw.generation(provider="anthropic", model="claude-3-5-haiku-20241022", batch=True)
    def read_result(line: dict[str, Any]) -> dict[str, Any]:
        return line["result"]["message"]

    read_result({"result": {"message": {"usage": {"input_tokens": 1000, "output_tokens": 100}}}})
    haiku = (1000 * Decimal("0.80") + 100 * Decimal("4")) / M
    assert cw.summary().by_model["claude-3-5-haiku-20241022"].cost_usd == haiku / 2
    assert cw.summary().total_usd == full / 2 + haiku / 2
