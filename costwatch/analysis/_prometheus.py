"""Read a pipeline's traffic from a Prometheus server (its HTTP API) over a time range.

Counters are read as *value at the end minus value at the start* of the range, per series, a
series absent at the start counting from zero (a process that started inside the range): no
extrapolation, unlike ``increase()``.  A counter reset inside the range (a restart) is not
corrected: read such a period from the record log, which is the ledger.  Amounts are floats on
the way through Prometheus, so figures agree with ``summary()`` and the record log up to float
rounding.  Fixed costs are rates: ``max by (name)`` of ``costwatch_fixed_cost_usd_per_hour``,
so processes declaring the same one count it once.  A one-off lifecycle cost is its *latest
run*, as ``summary()`` and the record log read it (what a run costs, amortised over its
cadence): the last step of ``costwatch_lifecycle_cost_usd_total`` in the range, over every
series of that ``(kind, name, pipeline)``.  Prometheus sees a run as a step between two
scrapes, so two runs of the same name within one scrape interval read as one run of their sum;
the arithmetic detail of a run is only in the record log.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from costwatch._core.record import ZERO
from costwatch.analysis._traffic import OneOff, Recurring, Traffic


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


def _window(start: float, end: float) -> str:
    """The range ``(start, end]`` as a PromQL duration, to the millisecond."""
    return f"{max(int((end - start) * 1000), 1)}ms"


def _delta(
    url: str, metric: str, start: float, end: float, timeout_s: float
) -> list[tuple[dict[str, str], Decimal]]:
    """Per series: its value at ``end`` minus its value at ``start`` (0 when it did not exist)."""
    at_end = _query(url, f"last_over_time({metric}[{_window(start, end)}])", end, timeout_s)
    at_start = {_key(s["metric"]): s["value"][1] for s in _query(url, metric, start, timeout_s)}
    out = []
    for series in at_end:
        labels = series["metric"]
        before = at_start.get(_key(labels), "0")
        out.append((labels, Decimal(series["value"][1]) - Decimal(before)))
    return out


def _last_steps(
    url: str, metric: str, start: float, end: float, timeout_s: float
) -> list[tuple[dict[str, str], float, Decimal]]:
    """Per series: ``(labels, when, by how much)`` of its last increase in the range, from its
    raw samples after its value at ``start``; a drop (a restart) counts from zero."""
    samples = _query(url, f"{metric}[{_window(start, end)}]", end, timeout_s)
    at_start = {_key(s["metric"]): s["value"][1] for s in _query(url, metric, start, timeout_s)}
    out = []
    for series in samples:
        labels = series["metric"]
        before = Decimal(at_start.get(_key(labels), "0"))
        last: tuple[float, Decimal] | None = None
        for ts, raw in series["values"]:
            value = Decimal(raw)
            step = value - before if value >= before else value
            if step:
                last = (float(ts), step)
            before = value
        if last is not None:
            out.append((labels, *last))
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
        usd = costs[key][1] if key in costs else ZERO
        traffic.pipeline(labels["pipeline"]).add_call(
            labels["provider"], labels["model"], labels["component"], usd, tokens.get(key, 0)
        )
    latest: dict[tuple[str, str, str], tuple[float, Decimal]] = {}
    lifecycle = "costwatch_lifecycle_cost_usd_total" + selector
    for labels, when, usd in _last_steps(url, lifecycle, start, end, timeout_s):
        run = (labels.get("pipeline", ""), labels["kind"], labels["name"])
        if run[0] and (run not in latest or when >= latest[run][0]):
            latest[run] = (when, usd)
    for (pipeline, kind, name), (_, usd) in sorted(latest.items()):
        traffic.pipeline(pipeline).one_offs[(kind, name)] = OneOff(kind, name, usd, "prometheus")
    rates = _query(
        url,
        f"max by (name, kind, pipeline) (last_over_time(costwatch_fixed_cost_usd_per_hour"
        f"{selector}[{_window(start, end)}]))",
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
