"""The fail-open sink: a sink's own failure never reaches the host, except in strict mode."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import costwatch
from costwatch._core.failopen import errors
from costwatch._core.record import CostRecord, TokenUsage
from costwatch._core.sink import (
    CacheEvent,
    FailOpenSink,
    FixedCost,
    LifecycleCost,
    Outcome,
    RequestEnd,
)


class BrokenSink(FailOpenSink):
    """Fails on every event it is given."""

    component = "sink.broken"

    def on_record(self, record: CostRecord) -> None:
        raise RuntimeError("record bug")

    def on_request_end(self, event: RequestEnd) -> None:
        raise RuntimeError("request bug")

    def on_cache(self, event: CacheEvent) -> None:
        raise RuntimeError("cache bug")

    def on_budget(self, budget: str, spent_usd: Decimal, limit_usd: Decimal) -> None:
        raise RuntimeError("budget bug")

    def on_budget_blocked(self, budget: str) -> None:
        raise RuntimeError("blocked bug")

    def on_outcome(self, event: Outcome) -> None:
        raise RuntimeError("outcome bug")

    def on_lifecycle(self, event: LifecycleCost | FixedCost) -> None:
        raise RuntimeError("lifecycle bug")

    def on_budget_state_lost(self, budget: str) -> None:
        raise RuntimeError("state bug")


class StillBroken(BrokenSink):
    """Inherits the broken events and adds nothing."""


@pytest.fixture
def lenient() -> Iterator[CollectorRegistry]:
    """costwatch out of strict mode, with a broken sink and Prometheus on a fresh registry."""
    registry = CollectorRegistry()
    costwatch.configure(
        service="svc",
        strict=False,
        prometheus=True,
        registry=registry,
        warm_up=False,
        sinks=[BrokenSink()],
    )
    yield registry
    costwatch._configure.shutdown()


def internal_errors(registry: CollectorRegistry, component: str) -> float | None:
    return registry.get_sample_value(
        "costwatch_internal_errors_total", {"service": "svc", "component": component}
    )


def test_a_sink_that_raises_never_reaches_the_host_and_is_counted(
    lenient: CollectorRegistry,
) -> None:
    costwatch.record(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=2)
    with costwatch.request("answer", request_id="r1") as req:
        req.outcome("success")
    costwatch.record_training(model="gpt-4o-mini", training_tokens=1000, usd_per_mtok="8")

    # one call, the request's end, its outcome, the training run: each counted as the sink's
    assert costwatch.summary().internal_errors == {"sink.broken": 4}
    assert internal_errors(lenient, "sink.broken") == 4
    # the failure was the sink's alone: the paths that called it saw nothing go wrong
    assert internal_errors(lenient, "lifecycle") is None
    assert costwatch.summary().by_model["gpt-4o-mini"].calls == 1


def test_every_event_method_of_a_fail_open_sink_is_shielded(lenient: CollectorRegistry) -> None:
    sink = BrokenSink()
    record = CostRecord("openai", "m", "generation", TokenUsage(), None, 0.1)
    end = RequestEnd("p", "s", Decimal(0), 0, 0.1, "ok", "svc", "", "", "")
    cache = CacheEvent("docs", "hit", Decimal(0), "svc", "", "", "")
    outcome = Outcome("success", "p", "s", Decimal(0), "r1", "svc")
    fixed = FixedCost("gpu", "hosting", Decimal("1.7"), 0.0)

    sink.on_record(record)
    sink.on_request_end(end)
    sink.on_cache(cache)
    sink.on_budget("daily", Decimal(1), Decimal(2))
    sink.on_budget_blocked("daily")
    sink.on_outcome(outcome)
    sink.on_lifecycle(fixed)
    sink.on_budget_state_lost("daily")

    assert internal_errors(lenient, "sink.broken") == 8


def test_an_inherited_event_is_shielded_once(lenient: CollectorRegistry) -> None:
    StillBroken().on_record(CostRecord("openai", "m", "generation", TokenUsage(), None, 0.1))

    assert internal_errors(lenient, "sink.broken") == 1


def test_in_strict_mode_the_sinks_failure_is_raised_and_counted(cw: Any) -> None:
    before = errors.counts().get("sink.broken", 0)

    with pytest.raises(RuntimeError, match="budget bug"):
        BrokenSink().on_budget("daily", Decimal(1), Decimal(2))
    assert errors.counts()["sink.broken"] == before + 1
