"""Read a pipeline's traffic from a Prometheus server (its HTTP API) over a time range.

Counters are read as *value at the end minus value at the start* of the range, per series, a
series absent at the start counting from zero (a process that started inside the range): no
extrapolation, unlike ``increase()``.  A counter reset inside the range (a restart) is not
corrected: read such a period from the record log, which is the ledger.  Amounts are floats on
the way through Prometheus, so figures agree with ``summary()`` and the record log up to float
rounding.  Fixed costs are rates: ``max by (name)`` of ``costwatch_fixed_cost_usd_per_hour``,
so processes declaring the same one count it once.  One-off lifecycle costs are the total of
the runs in the range (their arithmetic detail is only in the record log).
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from costwatch.analysis._traffic import OneOff, Recurring, Traffic

_ZERO = Decimal(0)


def _query(url: str, expr: str, at: float, timeout_s: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "time": repr(at)})
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/query?{params}", timeout=timeout_s) as r:
        body = json.loads(r.read())
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {expr!r}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _key(metric: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in metric.items() if k != "__name__"))


def _delta(
    url: str, metric: str, start: float, end: float, timeout_s: float
) -> list[tuple[dict[str, str], Decimal]]:
    """Per series: its value at ``end`` minus its value at ``start`` (0 when it did not exist)."""
    window = f"{max(int(end - start), 1)}s"
    at_end = _query(url, f"last_over_time({metric}[{window}])", end, timeout_s)
    at_start = {_key(s["metric"]): s["value"][1] for s in _query(url, metric, start, timeout_s)}
    out = []
    for series in at_end:
        labels = series["metric"]
        before = at_start.get(_key(labels), "0")
        out.append((labels, Decimal(series["value"][1]) - Decimal(before)))
    return out


def traffic_from_prometheus(
    url: str, start: float, end: float, *, service: str | None = None, timeout_s: float = 10.0
) -> Traffic:
    """The traffic Prometheus at ``url`` holds between ``start`` and ``end`` (Unix seconds)."""
    selector = f'{{service="{service}"}}' if service else ""
    traffic = Traffic({}, Decimal(repr(end)) - Decimal(repr(start)), f"prometheus {url}")

    def delta(metric: str) -> list[tuple[dict[str, str], Decimal]]:
        return [
            (labels, value)
            for labels, value in _delta(url, metric + selector, start, end, timeout_s)
            if value
        ]

    for labels, count in delta("costwatch_request_cost_usd_count"):
        p = traffic.pipeline(labels.get("pipeline", ""))
        p.requests += int(count)
        strategy = labels.get("strategy", "")
        p.strategies[strategy] = p.strategies.get(strategy, 0) + int(count)
    for labels, usd in delta("costwatch_request_cost_usd_sum"):
        traffic.pipeline(labels.get("pipeline", "")).cost_usd += usd
    for labels, count in delta("costwatch_outcomes_total"):
        p = traffic.pipeline(labels.get("pipeline", ""))
        outcome = labels.get("outcome", "")
        p.outcomes[outcome] = p.outcomes.get(outcome, 0) + int(count)
    tokens = {
        _key(labels): int(count) for labels, count in delta("costwatch_pipeline_tokens_total")
    }
    costs = {
        _key(labels): (labels, usd) for labels, usd in delta("costwatch_pipeline_cost_usd_total")
    }
    for key in sorted(set(tokens) | set(costs)):
        labels = dict(key)
        usd = costs[key][1] if key in costs else _ZERO
        traffic.pipeline(labels["pipeline"]).add_call(
            labels["provider"], labels["model"], labels["component"], usd, tokens.get(key, 0)
        )
    for labels, usd in delta("costwatch_lifecycle_cost_usd_total"):
        if labels.get("pipeline"):
            one_off = OneOff(labels["kind"], labels["name"], usd, "prometheus")
            traffic.pipeline(labels["pipeline"]).one_offs[(one_off.kind, one_off.name)] = one_off
    window = f"{max(int(end - start), 1)}s"
    rates = _query(
        url,
        f"max by (name, kind, pipeline) (last_over_time(costwatch_fixed_cost_usd_per_hour"
        f"{selector}[{window}]))",
        end,
        timeout_s,
    )
    for series in rates:
        labels = series["metric"]
        if labels.get("pipeline"):
            traffic.pipeline(labels["pipeline"]).recurring[labels["name"]] = Recurring(
                labels["name"], labels["kind"], Decimal(series["value"][1]), "prometheus"
            )
    return traffic
