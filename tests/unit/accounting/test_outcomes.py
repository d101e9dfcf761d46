"""How requests ended: cost per successful answer, outcomes said late by request id."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

import costwatch
from costwatch._core.sink import RequestEnd
from costwatch.accounting._outcomes import OutcomeBook
from tests._fixtures.capture import CaptureSink


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _answer(strategy: str = "rag", tokens: int = 1_000_000) -> Any:
    """One request costing ``tokens`` of gpt-4o-mini input ($0.15 per 1M)."""
    req = costwatch.request("answer", strategy=strategy)
    with req as state:
        costwatch.record(provider="openai", model="gpt-4o-mini", input_tokens=tokens)
    return state


def test_cost_per_success_divides_all_requests_cost_by_the_successful_ones(
    cw: Any, capture: CaptureSink
) -> None:
    with costwatch.request("answer", strategy="rag") as req:
        costwatch.record(provider="openai", model="gpt-4o-mini", input_tokens=1_000_000)
        req.outcome("success")
    late = _answer()
    _answer()  # never told
    assert costwatch.outcome(late.request_id, "failure") is True

    answer = costwatch.summary().by_pipeline["answer"]

    assert answer.requests == 3
    assert answer.cost_usd == Decimal("0.45")
    assert answer.outcomes == {"success": 1, "failure": 1}
    assert answer.cost_per_request_usd == Decimal("0.15")
    assert answer.cost_per_success_usd == Decimal("0.45")
    assert answer.outcome_cost_usd == {"success": Decimal("0.15"), "failure": Decimal("0.15")}
    assert [(o.outcome, o.pipeline, o.strategy) for o in capture.outcomes] == [
        ("success", "answer", "rag"),
        ("failure", "answer", "rag"),
    ]


def test_a_pipeline_without_successes_has_no_cost_per_success(cw: Any) -> None:
    _answer()

    assert costwatch.summary().by_pipeline["answer"].cost_per_success_usd is None


def test_unknown_duplicate_and_bad_outcomes(cw: Any, capture: CaptureSink) -> None:
    state = _answer()

    assert costwatch.outcome("no-such-request", "success") is False
    assert costwatch.outcome(state.request_id, "success") is True
    assert costwatch.outcome(state.request_id, "failure") is False
    with pytest.raises(costwatch.ConfigError, match="outcome"):
        costwatch.outcome(state.request_id, "great")

    assert costwatch.summary().outcomes_unmatched == {"unknown": 1, "duplicate": 1}
    assert costwatch.summary().by_pipeline["answer"].outcomes == {"success": 1}


def test_an_outcome_said_in_the_block_makes_a_later_one_a_duplicate(cw: Any) -> None:
    with costwatch.request("answer") as req:
        req.outcome("failure")
        req.outcome("success")  # the last one said counts

    assert costwatch.outcome(req.request_id, "failure") is False
    assert costwatch.summary().by_pipeline["answer"].outcomes == {"success": 1}


def _ended(request_id: str) -> RequestEnd:
    return RequestEnd("answer", "rag", Decimal("0.01"), 0, 0.1, "ok", "s", "", "", "", request_id)


def test_the_book_forgets_by_age_and_by_count() -> None:
    clock = Clock()
    book = OutcomeBook(clock, capacity=3, ttl_s=60)
    for i in range(5):
        book.remember(_ended(f"r{i}"))

    assert len(book) == 3  # r0 and r1 pushed out
    assert book.settle("r0", "success", "s").unmatched == "expired"
    assert book.settle("r2", "success", "s").unmatched == ""
    clock.now += 61
    assert book.settle("r4", "success", "s").unmatched == "expired"
    assert book.settle("r4", "success", "s").unmatched == "expired"
    assert book.settle("r2", "failure", "s").unmatched == "duplicate"
    assert book.settle("zzz", "success", "s").unmatched == "unknown"


def test_the_book_stays_bounded_under_many_requests() -> None:
    book = OutcomeBook(Clock(), capacity=100, ttl_s=60)
    for i in range(10_000):
        book.remember(_ended(f"r{i}"))
        if i % 3 == 1:
            book.settle(f"r{i}", "success", "s")

    assert len(book) == 100
    assert len(book._gone) == 100
    settled = book.settle("r9999", "failure", "s")
    assert (settled.unmatched, settled.cost_usd) == ("", Decimal("0.01"))


def test_outcomes_reach_prometheus_and_opentelemetry() -> None:
    registry = CollectorRegistry()
    reader = InMemoryMetricReader()
    costwatch.configure(
        service="svc",
        strict=True,
        registry=registry,
        otel=True,
        meter_provider=MeterProvider(metric_readers=[reader]),
        warm_up=False,
    )
    try:
        with costwatch.request("answer", strategy="fine_tuned") as req:
            costwatch.record(provider="openai", model="gpt-4o-mini", input_tokens=2_000_000)
            req.outcome("success")
        costwatch.outcome("nope", "failure")
        text = generate_latest(registry).decode()
        data = reader.get_metrics_data()
    finally:
        costwatch._configure.shutdown()

    labels = 'feature="",outcome="success",pipeline="answer",service="svc",strategy="fine_tuned",'
    assert f'costwatch_outcomes_total{{{labels}team="",tenant=""}} 1.0' in text
    assert f'costwatch_outcome_cost_usd_total{{{labels}team="",tenant=""}} 0.3' in text
    assert 'costwatch_outcomes_unmatched_total{reason="unknown",service="svc"} 1.0' in text
    points = {
        m.name: [(dict(p.attributes or {}), getattr(p, "value", None)) for p in m.data.data_points]
        for rm in data.resource_metrics  # type: ignore[union-attr]
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert [v for _, v in points["costwatch.outcome.cost.usd"]] == [0.3]
    assert points["costwatch.outcomes"][0][0]["outcome"] == "success"
    assert points["costwatch.outcomes.unmatched"] == [({"service": "svc", "reason": "unknown"}, 1)]


def test_requests_ended_on_many_threads_are_each_counted_once_and_each_awaits_its_outcome(
    cw: Any,
) -> None:
    import threading

    ids: list[list[str]] = [[] for _ in range(8)]

    def requests(mine: list[str]) -> None:
        for _ in range(700):  # past the batch the ledger and the book take in at once
            with costwatch.request("answer", strategy="rag") as state:
                pass
            mine.append(state.request_id)

    threads = [threading.Thread(target=requests, args=(mine,)) for mine in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert costwatch.summary().by_pipeline["answer"].requests == 8 * 700
    assert all(costwatch.outcome(request_id, "success") for mine in ids for request_id in mine)
    assert costwatch.summary().by_pipeline["answer"].outcomes == {"success": 8 * 700}
