"""What a pipeline's traffic really was: requests, outcomes, calls by model and cost component,
and its lifecycle costs; read from ``summary()``, from the record log, or from Prometheus.

All three readers fill the same ``Traffic``, split with ``accounting._components.split``, so
one profile read three ways compares equal (Prometheus up to float rounding).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from costwatch._core.record import ZERO
from costwatch._core.sink import HOURS_PER_MONTH
from costwatch.accounting._components import COMPONENTS, split

if TYPE_CHECKING:
    from costwatch.accounting._ledger import Summary

SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
_GENERATION = frozenset({"fresh_input", "retrieved_context", "output"})


@dataclass(frozen=True)
class OneOff:
    """A one-off lifecycle cost (a training run, an indexing run)."""

    kind: str
    name: str
    cost_usd: Decimal
    price_source: str
    detail: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Recurring:
    """A declared fixed cost, by its rate."""

    name: str
    kind: str
    usd_per_hour: Decimal
    price_source: str = "user"
    usd_per_month: Decimal | None = None

    @property
    def monthly_usd(self) -> Decimal:
        if self.usd_per_month is not None:
            return self.usd_per_month
        return self.usd_per_hour * HOURS_PER_MONTH


@dataclass
class PipelineTraffic:
    """One pipeline's observed traffic."""

    pipeline: str
    requests: int = 0
    cost_usd: Decimal = ZERO
    strategies: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    calls: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    """``(provider, model, component)`` -> ``[dollars, tokens]``."""
    one_offs: dict[tuple[str, str], OneOff] = field(default_factory=dict)
    """The latest run of each ``(kind, name)``: what a run costs, amortised over its cadence."""
    recurring: dict[str, Recurring] = field(default_factory=dict)

    @property
    def strategy(self) -> str:
        """The strategy most of its requests ran under."""
        if not self.strategies:
            return "base"
        return max(sorted(self.strategies), key=lambda s: self.strategies[s])

    def add_call(
        self, provider: str, model: str, component: str, usd: Decimal, tokens: int
    ) -> None:
        slot = self.calls.get((provider, model, component))
        if slot is None:
            slot = self.calls[(provider, model, component)] = [ZERO, 0]
        slot[0] += usd
        slot[1] += tokens

    def component(self, name: str) -> tuple[Decimal, int]:
        """Total ``(dollars, tokens)`` of one cost component."""
        usd, tokens = ZERO, 0
        for (_, _, comp), (u, t) in self.calls.items():
            if comp == name:
                usd += u
                tokens += t
        return usd, tokens

    def components(self) -> dict[str, tuple[Decimal, int]]:
        return {name: self.component(name) for name in COMPONENTS}

    def model_for(self, components: frozenset[str] = _GENERATION) -> tuple[str, str] | None:
        """``(provider, model)`` with the most tokens in ``components`` (the generation model)."""
        tokens: dict[tuple[str, str], int] = {}
        for (provider, model, comp), (_, count) in self.calls.items():
            if comp in components:
                tokens[(provider, model)] = tokens.get((provider, model), 0) + count
        if not tokens:
            return None
        return max(sorted(tokens), key=lambda k: tokens[k])

    @property
    def success_rate(self) -> Decimal | None:
        said = sum(self.outcomes.values())
        return Decimal(self.outcomes.get("success", 0)) / said if said else None


@dataclass
class Traffic:
    """Observed traffic of every pipeline over ``period_s`` seconds, and where it was read."""

    pipelines: dict[str, PipelineTraffic]
    period_s: Decimal
    source: str

    def pipeline(self, name: str) -> PipelineTraffic:
        found = self.pipelines.get(name)
        if found is None:
            found = self.pipelines[name] = PipelineTraffic(name)
        return found

    def monthly_requests(self, pipeline: str) -> Decimal | None:
        """Requests scaled from the observed period to a 30-day month."""
        if self.period_s <= 0:
            return None
        return Decimal(self.pipelines[pipeline].requests) * SECONDS_PER_MONTH / self.period_s


def _attach_one_off(traffic: Traffic, pipeline: str, one_off: OneOff) -> None:
    if pipeline:
        traffic.pipeline(pipeline).one_offs[(one_off.kind, one_off.name)] = one_off


def traffic_from_summary(summary: Summary) -> Traffic:
    """The traffic a running process recorded (``costwatch.summary()``)."""
    traffic = Traffic({}, Decimal(repr(summary.period_s)), "summary()")
    for name, totals in summary.by_pipeline.items():
        p = traffic.pipeline(name)
        p.requests = totals.requests
        p.cost_usd = totals.cost_usd
        p.strategies = dict(totals.strategies)
        p.outcomes = dict(totals.outcomes)
        for (stage, provider, model), row in totals.calls.items():
            cost = row.cost_usd if row.calls > row.unpriced else None
            for comp, usd, tokens in split(
                stage,
                cost,
                row.input_cost_usd,
                row.tokens,
                row.context_tokens,
                row.context_cost_usd,
            ):
                p.add_call(provider, model, comp, usd if usd is not None else ZERO, tokens)
    for life in summary.lifecycle.values():
        last = life.last
        if last is not None:
            one_off = OneOff(
                life.kind, life.name, last.cost_usd, last.price_source, dict(last.detail)
            )
            _attach_one_off(traffic, life.pipeline, one_off)
    for fixed in summary.fixed_costs.values():
        declared = fixed.declared
        if declared.pipeline:
            traffic.pipeline(declared.pipeline).recurring[declared.name] = Recurring(
                declared.name,
                declared.kind,
                declared.usd_per_hour,
                declared.price_source,
                declared.usd_per_month,
            )
    return traffic


def _dec(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def traffic_from_lines(lines: Iterable[Mapping[str, Any]], source: str) -> Traffic:
    """The traffic of record-log lines (``costwatch.exporters.recordlog``)."""
    traffic = Traffic({}, ZERO, source)
    first: float | None = None
    last: float | None = None
    for line in lines:
        ts = float(line.get("ts") or 0.0)
        if ts:
            first = ts if first is None else min(first, ts)
            last = ts if last is None else max(last, ts)
        kind = line["type"]
        if kind == "call" and line.get("pipeline"):
            context = line.get("context_tokens") or {}
            context_cost = line.get("context_cost_usd") or {}
            parts = split(
                line["stage"],
                _dec(line.get("cost_usd")),
                _dec(line.get("input_cost_usd")),
                line.get("usage") or {},
                sum(int(v) for v in context.values()),
                sum((Decimal(str(v)) for v in context_cost.values()), ZERO),
            )
            p = traffic.pipeline(line["pipeline"])
            for comp, usd, tokens in parts:
                p.add_call(line["provider"], line["model"], comp, usd or ZERO, tokens)
        elif kind == "request":
            p = traffic.pipeline(line["pipeline"])
            p.requests += 1
            p.cost_usd += Decimal(line["cost_usd"])
            p.strategies[line["strategy"]] = p.strategies.get(line["strategy"], 0) + 1
        elif kind == "outcome" and not line.get("unmatched"):
            p = traffic.pipeline(line["pipeline"])
            p.outcomes[line["outcome"]] = p.outcomes.get(line["outcome"], 0) + 1
        elif kind == "lifecycle":
            _attach_one_off(
                traffic,
                line.get("pipeline", ""),
                OneOff(
                    line["kind"],
                    line["name"],
                    Decimal(line["cost_usd"]),
                    line.get("price_source", ""),
                    dict(line.get("detail") or {}),
                ),
            )
        elif kind == "fixed_cost" and line.get("pipeline"):
            # one declaration per name, however many processes declared it
            traffic.pipeline(line["pipeline"]).recurring[line["name"]] = Recurring(
                line["name"],
                line["kind"],
                Decimal(line["usd_per_hour"]),
                line.get("price_source", "user"),
                _dec(line.get("usd_per_month")),
            )
    if first is not None and last is not None:
        traffic.period_s = Decimal(repr(last)) - Decimal(repr(first))
    return traffic


def traffic_from_record_log(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> Traffic:
    """The traffic of a record log (a path, with its rotated files, or a list of files)."""
    from costwatch.accounting._recordlog import read_record_log

    shown = (
        os.fspath(paths) if isinstance(paths, (str, os.PathLike)) else ", ".join(map(str, paths))
    )
    return traffic_from_lines(read_record_log(paths), f"record log {shown}")
