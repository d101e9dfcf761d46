"""The hand-built profile read back from a real Prometheus scraping it gives the comparison that
``summary()`` gives (floats on the way through Prometheus: equal up to rounding)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import costwatch
from costwatch import analysis
from tests._fixtures.econ_traffic import SCENARIOS, record_profile
from tests._fixtures.prometheus_proc import PrometheusProcess


@pytest.fixture
def scraped() -> Iterator[tuple[Any, PrometheusProcess, float]]:
    registry = CollectorRegistry()
    costwatch.configure(service="econ", strict=True, registry=registry, warm_up=False)
    server = costwatch.serve_metrics(0, registry=registry)
    start = time.time()
    prom = PrometheusProcess([f"127.0.0.1:{server.port}"])
    try:
        record_profile()
        prom.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, body = prom.query("count_over_time(costwatch_outcomes_total[1m])")
            if body.get("data", {}).get("result") and all(
                float(r["value"][1]) >= 2 for r in body["data"]["result"]
            ):
                break
            time.sleep(0.25)
        yield costwatch.summary(), prom, start
    finally:
        prom.stop()
        server.shutdown()
        costwatch._configure.shutdown()


def _figures(comparison: analysis.Comparison) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for pc in comparison.pipelines:
        v = pc.monthly_requests
        options = [(pc.current, None), *((c.option, c) for c in pc.candidates)]
        for option, verdict in options:
            key = f"{pc.pipeline}/{option.name}"
            out[f"{key}/variable"] = float(option.variable_per_request)
            out[f"{key}/fixed"] = float(option.fixed_per_month)
            per_success = option.per_success(v)
            out[f"{key}/per_success"] = None if per_success is None else float(per_success)
            out[f"{key}/success_rate"] = float(option.success_rate)
            if verdict is not None:
                for name, value in (
                    ("break_even", verdict.break_even_requests),
                    ("payback", verdict.payback_months),
                ):
                    out[f"{key}/{name}"] = None if value is None else float(value)
    return out


def test_prometheus_gives_the_comparison_summary_gives(scraped: Any) -> None:
    summary, prom, start = scraped
    scenarios = analysis.load_scenarios(SCENARIOS)

    expected = _figures(analysis.compare(analysis.traffic_from_summary(summary), scenarios))
    traffic = analysis.traffic_from_prometheus(prom.url, start, time.time(), service="econ")
    got = _figures(analysis.compare(traffic, scenarios))

    assert traffic.pipelines["answer"].requests == 10
    assert traffic.pipelines["answer"].outcomes == {"success": 8, "failure": 2}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if value is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(value, rel=1e-9), key
    assert expected["answer/ft-hosted/break_even"] == float(Decimal("126475200"))
