"""The dashboards against real data: ``costwatch demo --serve`` scraped by a real Prometheus.

Syntax is checked in tests/unit/exporters/test_dashboards.py; here a panel whose metrics the demo
produces must also *show* something, which catches a label the exporter does not emit, a
grouping that matches nothing, or a ratio whose two sides never join.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests._fixtures.grafana_dashboards import (
    METRIC_NAME,
    Query,
    concrete,
    load_dashboards,
    queries,
    query_panels,
)
from tests._fixtures.prometheus_proc import PrometheusProcess
from tests._fixtures.redis_proc import free_port

REPO = Path(__file__).resolve().parents[3]
DASHBOARDS = load_dashboards()
QUERIES = queries(DASHBOARDS)

RARE_EVENT_PANELS = {
    "Error ratio by stage",  # the demo's simulated providers do not fail
    "Unpriced calls by model",  # `> 0`: empty while every demo model has a price
}
"""Panels that select events the demo may not produce even when their metric exists."""

SHARE_PANELS = {
    panel["title"]
    for d in DASHBOARDS.values()
    for panel in query_panels(d)
    if panel["fieldConfig"]["defaults"]["unit"] == "percentunit" and panel["type"] == "timeseries"
}


@pytest.fixture(scope="module")
def demo_metrics_port(redis_process: Any) -> Iterator[int]:
    """The demo workload serving /metrics on a loopback port, its cache on a real Redis."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTWATCH_")}
    env["COSTWATCH_REDIS_URL"] = os.environ.get("REDIS_URL") or redis_process.url
    env["PYTHONPATH"] = str(REPO)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "costwatch",
                "demo",
                "--serve",
                str(port),
                "--addr",
                "127.0.0.1",
                "--duration",
                "120",
                "--rate",
                "60",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield port
            assert proc.poll() is None, "the demo exited early"
        except BaseException:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-4000:])
            raise
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


def _result(prometheus: PrometheusProcess, expr: str) -> list[dict[str, Any]]:
    status, body = prometheus.query(expr)
    assert status == 200, f"{body.get('errorType')}: {body.get('error')}\n{expr}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture(scope="module")
def prometheus(demo_metrics_port: int) -> Iterator[PrometheusProcess]:
    """A real Prometheus scraping the demo every second, returned once every series has a rate."""
    server = PrometheusProcess(targets=[f"127.0.0.1:{demo_metrics_port}"])
    server.start()
    try:
        deadline = time.monotonic() + 45
        probe = "sum(rate(costwatch_request_cost_usd_count[1m])) > 0"
        while time.monotonic() < deadline and not _result(server, probe):
            time.sleep(0.25)
        assert _result(server, probe), "Prometheus never saw the demo's requests"
        time.sleep(2)  # a few more scrapes, so series first seen late also have a rate
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def present_metrics(prometheus: PrometheusProcess) -> set[str]:
    status, body = prometheus.api("/api/v1/label/__name__/values")
    assert status == 200
    return set(body["data"])


def test_the_demo_exports_the_core_spend_metrics(present_metrics: set[str]) -> None:
    for metric in (
        "costwatch_cost_usd_total",
        "costwatch_tokens_total",
        "costwatch_requests_total",
        "costwatch_duration_seconds_bucket",
        "costwatch_request_cost_usd_bucket",
        "costwatch_context_tokens_total",
        "costwatch_context_cost_usd_total",
        "costwatch_cache_requests_total",
    ):
        assert metric in present_metrics


def test_every_panel_the_demo_feeds_shows_data(
    prometheus: PrometheusProcess, present_metrics: set[str]
) -> None:
    checked: list[Query] = []
    empty: list[str] = []
    for query in QUERIES:
        metrics = set(METRIC_NAME.findall(query.expr))
        if not metrics <= present_metrics or query.panel in RARE_EVENT_PANELS:
            continue
        checked.append(query)
        if not _result(prometheus, concrete(query.expr, window="1m")):
            empty.append(f"{query}\n    {query.expr}")
    assert not empty, "panels with no data although their metrics exist:\n" + "\n".join(empty)
    assert len(checked) >= 30, f"only {len(checked)} queries had demo data to check"


def test_share_panels_stay_between_zero_and_one(prometheus: PrometheusProcess) -> None:
    shares = [q for q in QUERIES if q.panel in SHARE_PANELS and q.panel not in RARE_EVENT_PANELS]
    assert len(shares) >= 3
    for query in shares:
        for series in _result(prometheus, concrete(query.expr, window="1m")):
            value = float(series["value"][1])
            assert math.isnan(value) or 0.0 <= value <= 1.0, f"{query}: {series}"


def test_spend_by_strategy_shows_the_demo_pipelines(prometheus: PrometheusProcess) -> None:
    query = next(q for q in QUERIES if q.panel.startswith("By strategy"))
    strategies = {
        s["metric"].get("strategy") for s in _result(prometheus, concrete(query.expr, window="1m"))
    }
    assert {"rag", "fine_tuned", "hybrid", "base"} <= strategies


def test_compare_reads_the_demo_from_prometheus(prometheus: PrometheusProcess) -> None:
    from costwatch import analysis
    from costwatch._demo.comparison import DEMO_SCENARIOS

    end = time.time()
    traffic = analysis.traffic_from_prometheus(prometheus.url, end - 600, end)
    comparison = analysis.compare(traffic, analysis.load_scenarios(DEMO_SCENARIOS))

    pipelines = {pc.pipeline: pc for pc in comparison.pipelines}
    assert set(pipelines) == {
        "answer_question",
        "classify_ticket",
        "draft_reply",
        "summarize_thread",
    }
    classify = traffic.pipelines["classify_ticket"]
    assert classify.requests > 0 and sum(classify.outcomes.values()) > 0
    # the demo's fine-tuning job: 1.8M trained tokens x $3.00/1M; its hosting at $1.70 an hour
    assert classify.one_offs[
        ("training", "ft:gpt-4o-mini-2024-07-18:acme::x1")
    ].cost_usd == Decimal("5.4")
    assert classify.recurring["ft-classifier-hosting"].usd_per_hour == Decimal("1.7")
    answer = pipelines["answer_question"]
    assert {f.label for f in answer.current.variable} >= {
        "fresh_input",
        "retrieved_context",
        "output",
        "embedding",
        "retrieval",
    }
    assert all(
        v.break_even_requests is None or v.break_even_requests > 0 for v in answer.candidates
    )
