"""A pipeline's one-off lifecycle cost is its latest run, read from a real Prometheus as
``summary()`` reads it: a second training run replaces the first, it does not add to it."""

from __future__ import annotations

import time
from decimal import Decimal

from prometheus_client import CollectorRegistry

import costwatch
from costwatch import analysis
from tests._fixtures.prometheus_proc import PrometheusProcess


def _wait_for(prom: PrometheusProcess, expr: str, value: float) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, body = prom.query(expr)
        result = body.get("data", {}).get("result")
        if result and float(result[0]["value"][1]) == value:
            return
        time.sleep(0.2)
    raise AssertionError(f"Prometheus never saw {expr} == {value}")


def train(tokens: int) -> Decimal:
    run = costwatch.record_training(
        model="gpt-4o-mini",
        training_tokens=tokens,
        usd_per_mtok="3",
        name="classifier-ft",
        pipeline="classify",
    )
    return run.cost_usd


def test_the_latest_training_run_is_the_pipelines_one_off_cost_on_every_reader() -> None:
    registry = CollectorRegistry()
    costwatch.configure(service="runs", strict=True, registry=registry, warm_up=False)
    server = costwatch.serve_metrics(0, registry=registry)
    prom = PrometheusProcess([f"127.0.0.1:{server.port}"])
    start = time.time()
    try:
        prom.start()
        with costwatch.request("classify", strategy="fine_tuned"):
            costwatch.record(provider="openai", model="gpt-4o-mini", input_tokens=100)
        first = train(1_000_000)  # $3
        _wait_for(prom, "sum(costwatch_lifecycle_cost_usd_total)", float(first))
        second = train(500_000)  # $1.50: the run the pipeline now costs
        _wait_for(prom, "sum(costwatch_lifecycle_cost_usd_total)", float(first + second))

        key = ("training", "classifier-ft")
        from_summary = analysis.traffic_from_summary(costwatch.summary())
        from_prometheus = analysis.traffic_from_prometheus(
            prom.url, start, time.time(), service="runs"
        )
    finally:
        prom.stop()
        server.shutdown()
        costwatch.shutdown()

    assert (first, second) == (Decimal("3"), Decimal("1.5"))
    assert from_summary.pipelines["classify"].one_offs[key].cost_usd == second
    assert from_prometheus.pipelines["classify"].one_offs[key].cost_usd == second
