"""Costs that are not calls: training runs, indexing runs, fixed costs accruing over time."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import costwatch
from costwatch._core.sink import FixedCost, LifecycleCost
from tests._fixtures.capture import CaptureSink


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cwc(capture: CaptureSink, clock: Clock) -> Any:
    costwatch.configure(
        service="svc",
        strict=True,
        prometheus=False,
        warm_up=False,
        clock=clock,
        sinks=[capture],
        prices={"training": [{"provider": "openai", "model": "my-base", "per_mtok": "7.5"}]},
    )
    yield costwatch
    costwatch._configure.shutdown()


def test_a_training_run_costs_tokens_times_epochs_times_the_published_price(
    cwc: Any, capture: CaptureSink
) -> None:
    with costwatch.tags(feature="triage", team="support"):
        run = costwatch.record_training(
            provider="openai", model="gpt-4o-mini-2024-07-18", training_tokens=1_250_000, epochs=3
        )

    assert run.cost_usd == Decimal("11.25")  # 1.25M x 3 x $3.00
    assert (run.kind, run.strategy, run.price_source) == ("training", "fine_tuned", "bundled")
    assert (run.feature, run.team) == ("triage", "support")
    assert dict(run.detail)["usd_per_mtok"] == "3.00"
    assert "openai.com" in dict(run.detail)["reference"]
    assert capture.lifecycle == [run]


def test_a_finished_openai_job_is_priced_from_its_trained_tokens(cwc: Any) -> None:
    job = {
        "id": "ftjob-1",
        "model": "gpt-4.1-mini-2025-04-14",
        "fine_tuned_model": "ft:gpt-4.1-mini-2025-04-14:acme::abc",
        "trained_tokens": 2_345_678,  # every epoch already counted
        "hyperparameters": {"n_epochs": 3},
    }

    run = costwatch.record_training(job=job, pipeline="classify")

    assert run.cost_usd == Decimal("11.72839")  # 2,345,678 x $5.00 / 1M
    assert run.name == "ft:gpt-4.1-mini-2025-04-14:acme::abc"
    assert dict(run.detail)["epochs"] == "1"


def test_an_unfinished_job_or_an_unpriced_model_is_a_clear_error(cwc: Any) -> None:
    with pytest.raises(costwatch.ConfigError, match=r"job\.trained_tokens"):
        costwatch.record_training(job={"id": "ftjob-2", "model": "gpt-4o", "trained_tokens": None})
    with pytest.raises(costwatch.ConfigError, match="usd_per_mtok"):
        costwatch.record_training(model="llama-3-8b", training_tokens=10)


def test_the_price_file_and_an_explicit_price_override_the_bundled_one(cwc: Any) -> None:
    from_file = costwatch.record_training(model="my-base", training_tokens=200_000, epochs=2)
    explicit = costwatch.record_training(model="gpt-4o", training_tokens=100_000, usd_per_mtok="20")

    assert (from_file.cost_usd, from_file.price_source) == (Decimal("3.0"), "user")
    assert (explicit.cost_usd, explicit.price_source) == (Decimal("2"), "explicit")


def test_a_fixed_cost_accrues_exactly_with_the_clock(
    cwc: Any, clock: Clock, capture: CaptureSink
) -> None:
    hosting = costwatch.fixed_cost("ft-hosting", usd_per_hour="1.70", strategy="fine_tuned")
    store = costwatch.fixed_cost("vector-store", usd_per_month=50, kind="vector_store")
    clock.now += 7200.5

    summary = costwatch.summary()

    assert summary.fixed_costs["ft-hosting"].accrued_usd == Decimal("3.400236111111111111111111111")
    clock.now += 3599.5
    later = costwatch.summary()
    assert later.fixed_costs["ft-hosting"].accrued_usd == Decimal("5.10")  # 3 h x $1.70
    assert later.fixed_costs["vector-store"].accrued_usd == Decimal("50") * 3 / 720
    assert later.lifecycle_usd == Decimal("5.10") + Decimal("50") * 3 / 720
    assert capture.lifecycle == [hosting, store]
    assert store.usd_per_hour == Decimal(50) / 720


def test_a_fixed_cost_needs_exactly_one_rate(cwc: Any) -> None:
    with pytest.raises(costwatch.ConfigError, match="usd_per_hour"):
        costwatch.fixed_cost("x", usd_per_hour=1, usd_per_month=720)
    with pytest.raises(costwatch.ConfigError, match="kind"):
        costwatch.fixed_cost("x", usd_per_hour=1, kind="rent")


def test_an_indexing_run_is_a_lifecycle_cost_of_its_pipeline(
    cwc: Any, capture: CaptureSink
) -> None:
    with costwatch.indexing("answer_question", knowledge_base="kb") as scope:
        for _ in range(3):
            costwatch.record(
                provider="openai",
                model="text-embedding-3-small",
                input_tokens=500_000,
                stage="embedding",
            )

    event = capture.lifecycle[-1]
    assert isinstance(event, LifecycleCost)
    assert (event.kind, event.name, event.pipeline) == ("indexing", "kb", "answer_question")
    assert event.cost_usd == scope.cost_usd == Decimal("0.03")  # 1.5M x $0.02
    assert all(r.tags.get("lifecycle") == "indexing" for r in capture.records)
    assert costwatch.summary().lifecycle[("indexing", "kb")].cost_usd == Decimal("0.03")


async def test_an_indexing_run_is_an_async_block_too(cwc: Any, capture: CaptureSink) -> None:
    async with costwatch.indexing("answer_question", knowledge_base="kb", team="search") as scope:
        costwatch.record(
            provider="openai",
            model="text-embedding-3-small",
            input_tokens=500_000,
            stage="embedding",
        )
        assert capture.records[-1].tags == {"lifecycle": "indexing", "team": "search"}

    event = capture.lifecycle[-1]
    assert isinstance(event, LifecycleCost)
    assert (event.kind, event.name, event.team) == ("indexing", "kb", "search")
    assert event.cost_usd == scope.cost_usd == Decimal("0.01")


def test_prometheus_exports_lifecycle_costs_and_fixed_rates_once_per_name(clock: Clock) -> None:
    registry = CollectorRegistry()
    costwatch.configure(service="svc", strict=True, registry=registry, warm_up=False, clock=clock)
    try:
        costwatch.fixed_cost("gpu", usd_per_hour="3.90", strategy="fine_tuned")
        costwatch.fixed_cost("gpu", usd_per_hour="2.50", strategy="fine_tuned")  # replaced
        costwatch.record_training(model="gpt-4o-mini", training_tokens=1_000_000)
        text = generate_latest(registry).decode()
    finally:
        costwatch._configure.shutdown()

    rates = [line for line in text.splitlines() if line.startswith("costwatch_fixed_cost_usd")]
    assert rates == [
        'costwatch_fixed_cost_usd_per_hour{feature="",kind="hosting",name="gpu",pipeline="",'
        'service="svc",strategy="fine_tuned",team="",tenant=""} 2.5'
    ]
    assert (
        'costwatch_lifecycle_cost_usd_total{feature="",kind="training",name="gpt-4o-mini",'
        'pipeline="",service="svc",strategy="fine_tuned",team="",tenant=""} 3.0' in text
    )


def test_a_fixed_cost_event_is_a_rate_not_a_charge() -> None:
    cost = FixedCost("gpu", "hosting", Decimal("3.6"), started_at=100.0)

    assert cost.accrued_usd(100.0) == 0
    assert cost.accrued_usd(50.0) == 0
    assert cost.accrued_usd(1100.0) == Decimal("1")
