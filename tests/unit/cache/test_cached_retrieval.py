"""@retrieval with a RetrievalCache: a hit calls nothing, costs nothing, counts what it saved."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests._fixtures.capture import CaptureSink

EMBED_COST = 1000 * Decimal("0.02") / 1_000_000  # text-embedding-3-small, 1,000 tokens
QUERY_PRICE = Decimal("0.0001")


def test_hit_skips_the_function_and_saves_what_the_miss_cost(cw: Any, capture: CaptureSink) -> None:
    calls: list[str] = []

    @cw.retrieval(source="kb", cache=cw.RetrievalCache(ttl=60), price_usd=QUERY_PRICE)
    def search(query: str) -> list[dict[str, str]]:
        calls.append(query)
        cw.record(
            provider="openai", model="text-embedding-3-small", input_tokens=1000, stage="embedding"
        )
        return [{"text": "refunds within thirty days"}]

    first = search("refund?")
    second = search(query="refund?")
    assert first == second == [{"text": "refunds within thirty days"}]
    assert calls == ["refund?"]
    retrievals = [r for r in capture.records if r.stage == "retrieval"]
    assert [(r.cache_hit, r.cost_usd) for r in retrievals] == [
        (False, QUERY_PRICE),
        (True, Decimal(0)),
    ]
    summary = cw.summary()
    assert summary.cache["kb"].hits == 1
    assert summary.cache["kb"].misses == 1
    assert summary.cache_saved_usd == EMBED_COST + QUERY_PRICE
    assert summary.total_usd == EMBED_COST + QUERY_PRICE


def test_cached_documents_still_become_request_context(cw: Any, capture: CaptureSink) -> None:
    @cw.retrieval(source="kb", cache=cw.RetrievalCache(ttl=60))
    def search(query: str) -> list[str]:
        return ["passwords reset from the account page"]

    @cw.generation(provider="openai", model="gpt-4o-mini")
    def answer(prompt: str) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 500, "completion_tokens": 10}}

    for _ in range(2):
        with cw.request("answer", strategy="rag"):
            search("reset?")
            answer("...")
    generations = [r for r in capture.records if r.stage == "generation"]
    assert generations[0].context_tokens == generations[1].context_tokens
    assert generations[1].context_tokens["kb"] > 0
