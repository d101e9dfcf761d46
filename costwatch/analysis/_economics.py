"""Unit economics of each pipeline and of its alternatives: monthly cost split into variable
and fixed, cost per request and per successful answer, the break-even volume and the payback
of a training run.  Exact ``Decimal`` throughout; every figure keeps how it was computed and
the price it used (``Figure.how``, ``Figure.source``).

At a monthly volume ``V`` of requests, an option with variable cost ``c`` per request, fixed
cost ``F`` per month and success rate ``s`` costs ``F + c*V`` a month and ``(F + c*V) / (s*V)``
per successful answer.  The current option ``a`` and a candidate ``b`` cost the same per
successful answer at

    V* = (s_a*F_b - s_b*F_a) / (s_b*c_a - s_a*c_b)

(with equal success rates: ``(F_b - F_a) / (c_a - c_b)``), the break-even volume; above it the
option with the lower variable cost per success (``c / s``) is cheaper.  A training run of cost
``T`` pays back in ``T / saving`` months, where the saving is what the candidate saves a month
at ``V`` before its training is amortised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from costwatch._core.errors import ConfigError
from costwatch._core.record import ZERO
from costwatch.analysis._scenarios import Candidate, Current, Scenarios
from costwatch.analysis._traffic import PipelineTraffic, Traffic
from costwatch.pricing import Price, PriceCatalog
from costwatch.pricing._training_prices import base_model_name, training_price

_ONE = Decimal(1)
_MTOK = Decimal(1_000_000)
DAYS_PER_MONTH = Decimal(30)
HOURS_PER_MONTH = Decimal(720)
DEFAULT_SPREAD = Decimal("0.1")
"""Sensitivity without ``success_range``: the success rate ± 10 points."""


def show(value: Decimal) -> str:
    """A dollar or token figure for people: exact up to 8 decimal places, no exponent."""
    if abs(value) >= 100:
        text = format(value.quantize(Decimal("0.01")), "f")
    else:
        text = format(value.quantize(Decimal("0.00000001")), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


@dataclass(frozen=True)
class Figure:
    """One traced amount: what it is, how it was computed, the price it used."""

    label: str
    usd: Decimal
    how: str
    source: str

    def as_dict(self) -> dict[str, str]:
        return {"label": self.label, "usd": str(self.usd), "how": self.how, "source": self.source}


@dataclass
class Option:
    """One way to serve a pipeline's traffic: the observed one or a candidate."""

    name: str
    strategy: str
    observed: bool
    variable: list[Figure]
    """Per request, by component."""
    fixed: list[Figure]
    """Per month."""
    success_rate: Decimal
    success_assumed: bool
    success_note: str
    training_run_usd: Decimal = ZERO
    """One training run's cost (what a payback pays back)."""

    @property
    def variable_per_request(self) -> Decimal:
        return sum((f.usd for f in self.variable), ZERO)

    @property
    def fixed_per_month(self) -> Decimal:
        return sum((f.usd for f in self.fixed), ZERO)

    def fixed_item(self, label: str) -> Decimal:
        return sum((f.usd for f in self.fixed if f.label == label), ZERO)

    def monthly(self, volume: Decimal) -> Decimal:
        return self.fixed_per_month + self.variable_per_request * volume

    def per_request(self, volume: Decimal) -> Decimal:
        return self.monthly(volume) / volume

    def per_success(self, volume: Decimal, rate: Decimal | None = None) -> Decimal | None:
        s = self.success_rate if rate is None else rate
        if not s:
            return None
        return self.monthly(volume) / (volume * s)

    def variable_per_success(self) -> Decimal | None:
        return self.variable_per_request / self.success_rate if self.success_rate else None

    def as_dict(self, volume: Decimal) -> dict[str, Any]:
        per_success = self.per_success(volume)
        return {
            "name": self.name,
            "strategy": self.strategy,
            "observed": self.observed,
            "variable_per_request_usd": str(self.variable_per_request),
            "fixed_per_month_usd": str(self.fixed_per_month),
            "monthly_variable_usd": str(self.variable_per_request * volume),
            "monthly_total_usd": str(self.monthly(volume)),
            "per_request_usd": str(self.per_request(volume)),
            "per_success_usd": None if per_success is None else str(per_success),
            "success_rate": str(self.success_rate),
            "success_assumed": self.success_assumed,
            "success_note": self.success_note,
            "training_run_usd": str(self.training_run_usd),
            "variable": [f.as_dict() for f in self.variable],
            "fixed": [f.as_dict() for f in self.fixed],
        }


@dataclass
class Verdict:
    """A candidate against the observed option."""

    option: Option
    break_even_requests: Decimal | None
    break_even_how: str
    cheaper_above: str
    """The option cheaper per successful answer above the break-even (or at every volume)."""
    payback_months: Decimal | None
    payback_how: str
    per_success_range: tuple[Decimal | None, Decimal | None]
    success_range: tuple[Decimal, Decimal]


@dataclass
class PipelineComparison:
    pipeline: str
    monthly_requests: Decimal
    volume_note: str
    current: Option
    candidates: list[Verdict] = field(default_factory=list)


@dataclass
class Comparison:
    """The unit economics of every pipeline of some traffic, and of its alternatives."""

    source: str
    pipelines: list[PipelineComparison]


# -- the observed option ---------------------------------------------------------------------


def _observed(p: PipelineTraffic, current: Current) -> Option:
    variable: list[Figure] = []
    requests = Decimal(p.requests)
    for name, (usd, tokens) in p.components().items():
        if not usd and not tokens:
            continue
        variable.append(
            Figure(
                name,
                usd / requests,
                f"${show(usd)} over {p.requests} requests ({tokens} tokens, "
                f"{show(Decimal(tokens) / requests)} per request)",
                "measured: each call priced when recorded",
            )
        )
    fixed = _observed_fixed(p, current)
    training = sum((o.cost_usd for o in p.one_offs.values() if o.kind == "training"), ZERO)
    rate = p.success_rate
    if rate is not None:
        said = sum(p.outcomes.values())
        note = f"observed: {p.outcomes.get('success', 0)} of {said} requests with an outcome"
        assumed = False
    elif current.success_rate is not None:
        rate, note, assumed = current.success_rate, "assumed (scenarios: current)", True
    else:
        rate, note, assumed = _ONE, "assumed 100%: no outcomes were recorded", True
    return Option(
        f"{p.pipeline} (observed)", p.strategy, True, variable, fixed, rate, assumed, note, training
    )


def _observed_fixed(p: PipelineTraffic, current: Current) -> list[Figure]:
    fixed: list[Figure] = []
    for rec in p.recurring.values():
        how = (
            f"${show(rec.usd_per_month)} a month"
            if rec.usd_per_month is not None
            else f"${show(rec.usd_per_hour)}/h x 720 h"
        )
        fixed.append(Figure(rec.kind, rec.monthly_usd, f"{rec.name}: {how}", rec.price_source))
    for one_off in p.one_offs.values():
        days = {"training": current.retrain_every_days, "indexing": current.reindex_every_days}
        every = days.get(one_off.kind, DAYS_PER_MONTH)
        detail = ", ".join(f"{k}={v}" for k, v in one_off.detail.items() if k != "reference")
        fixed.append(
            Figure(
                f"{one_off.kind}_amortised",
                one_off.cost_usd * DAYS_PER_MONTH / every,
                f"{one_off.name}: ${show(one_off.cost_usd)} a run ({detail}) "
                f"x 30 / every {show(every)} days",
                _source(one_off.price_source, one_off.detail.get("reference", "")),
            )
        )
    return fixed


def _source(source: str, reference: str) -> str:
    return f"{source}: {reference}" if reference else source


# -- candidates -------------------------------------------------------------------------------


class _Averages:
    """Per-request tokens and dollars of the observed traffic."""

    def __init__(self, p: PipelineTraffic) -> None:
        self.requests = Decimal(p.requests)
        self.comps = p.components()
        self.model = p.model_for()

    def tokens(self, component: str) -> Decimal:
        return Decimal(self.comps[component][1]) / self.requests

    def usd(self, component: str) -> Decimal:
        return self.comps[component][0] / self.requests


def _price(catalog: PriceCatalog, provider: str, model: str, where: str) -> Price:
    price = catalog.resolve(provider, model)
    if price is None:
        raise ConfigError(where, model, f"no price known for {provider}/{model}")
    return price


def _per_mtok(rate: Decimal) -> str:
    return f"${show(rate * _MTOK)}/1M"


def _tokens_figure(label: str, tokens: Decimal, rate: Decimal, price: Price, note: str) -> Figure:
    return Figure(
        label,
        tokens * rate,
        f"{show(tokens)} tok ({note}) x {_per_mtok(rate)}",
        price.matched or price.source,
    )


def _generation(
    c: Candidate, avg: _Averages, model: str, catalog: PriceCatalog, context: bool
) -> list[Figure]:
    price = _price(catalog, c.provider, model, f"candidates[{c.name}].model")
    prompt = c.prompt_tokens if c.prompt_tokens is not None else avg.tokens("fresh_input")
    prompt_note = "given" if c.prompt_tokens is not None else "observed fresh input"
    out = c.output_tokens if c.output_tokens is not None else avg.tokens("output")
    out_note = "given" if c.output_tokens is not None else "observed output"
    figures = [_tokens_figure("fresh_input", prompt, price.input, price, prompt_note)]
    if context:
        ctx = c.context_tokens if c.context_tokens is not None else avg.tokens("retrieved_context")
        note = "given" if c.context_tokens is not None else "observed retrieved context"
        figures.append(_tokens_figure("retrieved_context", ctx, price.input, price, note))
    figures.append(_tokens_figure("output", out, price.output, price, out_note))
    return figures


def _retrieval(c: Candidate, avg: _Averages, catalog: PriceCatalog) -> list[Figure]:
    figures: list[Figure] = []
    if c.query_tokens is not None:
        emb = _price(catalog, c.embedding_provider, c.embedding_model, "embedding_model")
        figures.append(_tokens_figure("embedding", c.query_tokens, emb.input, emb, "query"))
    elif avg.usd("embedding"):
        figures.append(_as_observed("embedding", avg))
    if c.retrieval_usd_per_query is not None:
        usd = c.retrieval_usd_per_query
        figures.append(Figure("retrieval", usd, f"${show(usd)} a query (given)", "scenario"))
    elif avg.usd("retrieval"):
        figures.append(_as_observed("retrieval", avg))
    if c.rerank_usd_per_query is not None:
        usd = c.rerank_usd_per_query
        figures.append(Figure("rerank", usd, f"${show(usd)} a query (given)", "scenario"))
    elif c.reranker is not None:
        price = _price(catalog, c.reranker.provider, c.reranker.model, "reranker")
        figures.append(
            Figure(
                "rerank",
                price.per_request,
                f"1 search a query x ${show(price.per_request)} a search",
                price.matched or price.source,
            )
        )
    elif avg.usd("rerank"):
        figures.append(_as_observed("rerank", avg))
    return figures


def _as_observed(component: str, avg: _Averages) -> Figure:
    usd = avg.usd(component)
    return Figure(component, usd, "as observed per request", "measured")


def _training(c: Candidate, base: str, catalog_prices: Any) -> tuple[list[Figure], Decimal]:
    if c.training_tokens is None:
        raise ConfigError(f"candidates[{c.name}].training_tokens", None, "required to fine-tune")
    if c.training_usd_per_mtok is not None:
        per_mtok, source = c.training_usd_per_mtok, "scenario"
    else:
        found = training_price(c.provider, base, catalog_prices)
        if found is None:
            raise ConfigError(
                f"candidates[{c.name}].training_usd_per_mtok",
                None,
                f"no training price known for {c.provider}/{base}",
            )
        per_mtok, source = found.usd_per_mtok, _source(found.source, found.reference)
    run = Decimal(c.training_tokens) * c.epochs * per_mtok / _MTOK
    every = c.retrain_every_days
    figure = Figure(
        "training_amortised",
        run * DAYS_PER_MONTH / every,
        f"{c.training_tokens} tok x {c.epochs} epochs x ${show(per_mtok)}/1M = ${show(run)} a run, "
        f"x 30 / every {show(every)} days",
        source,
    )
    return [figure], run


def _hosting(c: Candidate) -> list[Figure]:
    if c.hosting_usd_per_month is not None:
        usd = c.hosting_usd_per_month
        return [Figure("hosting", usd, f"${show(usd)} a month (given)", "scenario")]
    if c.hosting_usd_per_hour:
        per_hour = c.hosting_usd_per_hour
        return [
            Figure(
                "hosting", per_hour * HOURS_PER_MONTH, f"${show(per_hour)}/h x 720 h", "scenario"
            )
        ]
    return []


def _store(c: Candidate, catalog: PriceCatalog) -> list[Figure]:
    figures: list[Figure] = []
    if c.vector_store_usd_per_month is not None:
        usd = c.vector_store_usd_per_month
        figures.append(Figure("vector_store", usd, f"${show(usd)} a month (given)", "scenario"))
    if c.documents:
        emb = _price(catalog, c.embedding_provider, c.embedding_model, "embedding_model")
        per_doc = c.tokens_per_document or ZERO
        tokens = c.documents * per_doc
        run = tokens * emb.input
        every = c.reindex_every_days
        figures.append(
            Figure(
                "indexing_amortised",
                run * DAYS_PER_MONTH / every,
                f"{c.documents} docs x {show(per_doc)} tok x {_per_mtok(emb.input)} = "
                f"${show(run)} a run, x 30 / every {show(every)} days",
                emb.matched or emb.source,
            )
        )
    return figures


def _candidate(
    c: Candidate, p: PipelineTraffic, observed: Option, catalog: PriceCatalog, prices: Any
) -> Option:
    avg = _Averages(p)
    current_model = avg.model[1] if avg.model is not None else ""
    fixed: list[Figure] = []
    run = ZERO
    if c.kind in ("fine_tuned", "hybrid"):
        base = base_model_name(c.base_model or c.model or "")
        model = c.model or f"ft:{base}"
        variable = _generation(c, avg, model, catalog, context=c.kind == "hybrid")
        if c.kind == "hybrid":
            variable += _retrieval(c, avg, catalog)
            fixed += _store(c, catalog)
        training, run = _training(c, base, prices)
        fixed += training + _hosting(c)
        strategy: str = c.kind
    elif c.kind == "rag":
        model = c.model or base_model_name(current_model)
        variable = _generation(c, avg, model, catalog, context=True)
        variable += _retrieval(c, avg, catalog)
        fixed += _store(c, catalog) + _hosting(c)
        strategy = "rag"
    else:  # model_swap: the same traffic on another model, the same fixed costs
        model = c.model or ""
        variable = _generation(
            c, avg, model, catalog, context=bool(avg.tokens("retrieved_context"))
        )
        variable += [
            _as_observed(name, avg)
            for name in ("embedding", "retrieval", "rerank", "other")
            if avg.usd(name)
        ]
        fixed = list(observed.fixed)
        strategy = observed.strategy
    if c.success_rate is not None:
        rate, note, assumed = c.success_rate, "assumed (scenario)", True
    else:
        rate, note = observed.success_rate, f"as the current option ({observed.success_note})"
        assumed = observed.success_assumed
    return Option(c.name, strategy, False, variable, fixed, rate, assumed, note, run)


# -- the verdicts -----------------------------------------------------------------------------


def break_even(a: Option, b: Option) -> tuple[Decimal | None, str, str]:
    """``(V*, how, cheaper above V*)``: the monthly volume at which ``a`` and ``b`` cost the
    same per successful answer."""
    s_a, s_b = a.success_rate, b.success_rate
    c_a, c_b = a.variable_per_request, b.variable_per_request
    f_a, f_b = a.fixed_per_month, b.fixed_per_month
    numerator = s_a * f_b - s_b * f_a
    denominator = s_b * c_a - s_a * c_b
    how = (
        f"V* = (s_a*F_b - s_b*F_a) / (s_b*c_a - s_a*c_b) = ({show(s_a)}*{show(f_b)} - "
        f"{show(s_b)}*{show(f_a)}) / ({show(s_b)}*{show(c_a)} - {show(s_a)}*{show(c_b)})"
    )
    per_success_a = c_a / s_a if s_a else None
    per_success_b = c_b / s_b if s_b else None
    if per_success_a is None or per_success_b is None:
        return None, how + ": a success rate is 0", ""
    cheaper_above = b.name if per_success_b < per_success_a else a.name
    if not denominator:
        cheaper = b.name if f_b * s_a < f_a * s_b else a.name
        return None, how + ": equal variable cost per success, never crosses", cheaper
    volume = numerator / denominator
    if volume <= 0:
        return None, f"{how} = {show(volume)}: never crosses at a positive volume", cheaper_above
    return volume, f"{how} = {show(volume)} requests a month", cheaper_above


def payback(a: Option, b: Option, volume: Decimal) -> tuple[Decimal | None, str]:
    """Months for ``b``'s training run to pay back against ``a`` at ``volume``."""
    run = b.training_run_usd
    if not run:
        return None, "no training run"
    before_training = b.monthly(volume) - b.fixed_item("training_amortised")
    saving = a.monthly(volume) - before_training
    how = (
        f"${show(run)} / (${show(a.monthly(volume))} - ${show(before_training)}) "
        "(current monthly - candidate monthly before training)"
    )
    if saving <= 0:
        return None, how + ": no saving, never pays back"
    months = run / saving
    return months, f"{how} = {show(months)} months"


def _range(option: Option, scenarios: Scenarios) -> tuple[Decimal, Decimal]:
    if scenarios.success_range is not None:
        return scenarios.success_range
    rate = option.success_rate
    return max(rate - DEFAULT_SPREAD, Decimal("0.01")), min(rate + DEFAULT_SPREAD, _ONE)


def compare(
    traffic: Traffic,
    scenarios: Scenarios | None = None,
    *,
    catalog: PriceCatalog | None = None,
    prices: Any = None,
) -> Comparison:
    """Unit economics of every pipeline of ``traffic`` and of the scenarios' candidates.

    ``prices``: the user price file (path or dict) for candidates' prices and training prices;
    ``catalog`` defaults to one built from it (user > bundled > genai-prices).
    """
    scenarios = scenarios or Scenarios()
    catalog = catalog or PriceCatalog(prices)
    out: list[PipelineComparison] = []
    for name in sorted(traffic.pipelines):
        p = traffic.pipelines[name]
        if not p.requests:
            continue
        current = scenarios.current_for(name)
        if current.monthly_requests is not None:
            volume, note = current.monthly_requests, f"given (scenarios: current.{name})"
        elif scenarios.monthly_requests is not None:
            volume, note = scenarios.monthly_requests, "given (scenarios: monthly_requests)"
        else:
            monthly = traffic.monthly_requests(name)
            if monthly is None or monthly <= 0:
                volume, note = Decimal(p.requests), "the observed requests (no observed period)"
            else:
                days = traffic.period_s / 86400
                volume = monthly
                note = (
                    f"observed: {p.requests} requests in {show(days)} days, * 30 days / "
                    f"{show(days)} days"
                )
        observed = _observed(p, current)
        comparison = PipelineComparison(name, volume, note, observed)
        for c in scenarios.candidates:
            if c.pipeline != name:
                continue
            option = _candidate(c, p, observed, catalog, prices)
            v_star, how, cheaper = break_even(observed, option)
            months, payback_how = payback(observed, option, volume)
            lo, hi = _range(option, scenarios)
            comparison.candidates.append(
                Verdict(
                    option,
                    v_star,
                    how,
                    cheaper,
                    months,
                    payback_how,
                    (option.per_success(volume, lo), option.per_success(volume, hi)),
                    (lo, hi),
                )
            )
        out.append(comparison)
    return Comparison(traffic.source, out)
