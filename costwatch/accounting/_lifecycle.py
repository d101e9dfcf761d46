"""Costs that are not calls: training runs, indexing runs, and recurring fixed costs.

A fine-tuned model is paid for in training runs and often in hosting; a RAG pipeline in
indexing its knowledge base and in a vector store's plan.  They are attributed like calls
(feature, team, tenant, strategy, pipeline) and reach the same sinks (``on_lifecycle``).

* ``record_training`` prices a training run: training tokens x epochs x the base model's
  training price (``costwatch.pricing._training_prices``), or straight from a finished OpenAI
  fine-tuning job, whose ``trained_tokens`` already counts every epoch.
* ``indexing`` is a block around the embedding calls of an indexing run: the calls are recorded
  as usual (they are spend), and their total is also one ``indexing`` lifecycle cost of the
  pipeline, not per-request spend.
* ``fixed_cost`` declares a recurring cost (a hosted fine-tuned deployment, GPU nodes, a vector
  store plan) that accrues over wall-clock time whatever the traffic.

Fixed costs across processes: a fixed cost is a *rate* with a name, not a stream of charges.
Every process that declares it exports the same rate (``costwatch_fixed_cost_usd_per_hour``,
one series per name); dashboards and rules take ``max by (name)``, so ten replicas declaring
the same GPU node count it once, and the cost over a period is that rate times the hours it was
declared.  In process, ``summary()`` accrues it exactly from the declaration under the runtime
clock; the record log writes the declaration once per process, and readers keep one per name.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from costwatch._core import runtime as _runtime
from costwatch._core.asyncwith import AsyncToo
from costwatch._core.context import STRATEGIES, CostScope, cost_scope, current_tags, tags
from costwatch._core.errors import ConfigError
from costwatch._core.failopen import errors
from costwatch._core.sink import (
    HOURS_PER_MONTH,
    LIFECYCLE_KINDS,
    FixedCost,
    LifecycleCost,
)

_MILLION = Decimal(1_000_000)


def _attribution(tag_values: Mapping[str, str | None]) -> dict[str, str]:
    current = current_tags()
    return {
        key: str(value) if value is not None else current.get(key, "")
        for key, value in tag_values.items()
    }


def _check_strategy(strategy: str) -> None:
    if strategy and strategy not in STRATEGIES:
        raise ConfigError("strategy", strategy, f"must be one of {', '.join(STRATEGIES)}")


def _decimal(field: str, value: object) -> Decimal:
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        raise ConfigError(field, value, "must be a number") from None
    if not number.is_finite() or number < 0:
        raise ConfigError(field, value, "must be a finite number, not negative")
    return number


def _emit(event: LifecycleCost | FixedCost) -> None:
    try:
        for sink in _runtime.runtime().sinks:
            sink.on_lifecycle(event)
    except Exception as exc:
        errors.report("lifecycle", exc)


def record_training(
    provider: str = "openai",
    model: str | None = None,
    training_tokens: int | None = None,
    epochs: int = 1,
    *,
    job: Any = None,
    usd_per_mtok: Decimal | str | float | None = None,
    name: str = "",
    strategy: str = "fine_tuned",
    pipeline: str = "",
    feature: str | None = None,
    team: str | None = None,
    tenant: str | None = None,
) -> LifecycleCost:
    """Record one training run; its ``cost_usd`` is tokens x epochs x the training price.

    ``job``: a finished OpenAI fine-tuning job (SDK object or dict): its base ``model`` and its
    ``trained_tokens`` (which already include every epoch) are read from it.  The price is
    ``usd_per_mtok`` when given, else the price file's ``training:`` entry, else the bundled
    published price; a model with none raises :class:`costwatch.ConfigError` (pass
    ``usd_per_mtok``).  Attribution tags default to those in force.
    """
    detail: list[tuple[str, str]] = []
    if job is not None:
        model, training_tokens, job_name = _from_job(job, model)
        epochs = 1
        detail.append(("job", job_name))
        name = name or job_name
    if not model:
        raise ConfigError("model", model, "the base model that was fine-tuned is required")
    if training_tokens is None or int(training_tokens) < 0:
        raise ConfigError("training_tokens", training_tokens, "must be a count of tokens")
    if int(epochs) < 1:
        raise ConfigError("epochs", epochs, "must be at least 1")
    _check_strategy(strategy)
    rt = _runtime.runtime()
    if usd_per_mtok is not None:
        per_mtok, source, reference = _decimal("usd_per_mtok", usd_per_mtok), "explicit", "given"
    else:
        from costwatch.pricing._training_prices import training_price

        found = training_price(provider, model, rt.settings.prices)
        if found is None:
            raise ConfigError(
                "model",
                model,
                f"no training price known for {provider}/{model}: pass usd_per_mtok= or add it "
                "under 'training:' in the price file",
            )
        per_mtok, source, reference = found.usd_per_mtok, found.source, found.reference
    tokens = int(training_tokens)
    cost = Decimal(tokens) * int(epochs) * per_mtok / _MILLION
    detail += [
        ("training_tokens", str(tokens)),
        ("epochs", str(int(epochs))),
        ("usd_per_mtok", str(per_mtok)),
        ("reference", reference),
    ]
    attribution = _attribution({"feature": feature, "team": team, "tenant": tenant})
    event = LifecycleCost(
        kind="training",
        name=name or model,
        cost_usd=cost,
        price_source=source,
        provider=provider,
        model=model,
        strategy=strategy,
        pipeline=pipeline,
        service=rt.service,
        timestamp=rt.clock(),
        detail=tuple(detail),
        **attribution,
    )
    _emit(event)
    return event


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _from_job(job: Any, model: str | None) -> tuple[str, int, str]:
    """(base model, trained tokens, name) of a finished OpenAI fine-tuning job."""
    trained = _get(job, "trained_tokens")
    if trained is None:
        raise ConfigError(
            "job.trained_tokens", None, f"job {_get(job, 'id')!r} has not finished training"
        )
    base = model or _get(job, "model")
    name = _get(job, "fine_tuned_model") or _get(job, "id") or ""
    return str(base or ""), int(trained), str(name)


def fixed_cost(
    name: str,
    *,
    usd_per_hour: Decimal | str | float | None = None,
    usd_per_month: Decimal | str | float | None = None,
    kind: str = "hosting",
    strategy: str = "",
    pipeline: str = "",
    feature: str | None = None,
    team: str | None = None,
    tenant: str | None = None,
) -> FixedCost:
    """Declare a recurring cost that accrues from now over wall-clock time, whatever the
    traffic: a hosted fine-tuned deployment, a GPU node of a self-hosted model, a vector store
    plan.  Exactly one of ``usd_per_hour`` and ``usd_per_month`` (30 days) is given.

    Declaring the same ``name`` again replaces the declaration; every process may declare it:
    it is exported as a rate and never multiplied (see the module's docstring).
    """
    if not name:
        raise ConfigError("name", name, "a fixed cost needs a name")
    if (usd_per_hour is None) == (usd_per_month is None):
        raise ConfigError("usd_per_hour", usd_per_hour, "give usd_per_hour or usd_per_month")
    if kind not in LIFECYCLE_KINDS:
        raise ConfigError("kind", kind, f"must be one of {', '.join(LIFECYCLE_KINDS)}")
    _check_strategy(strategy)
    monthly = None if usd_per_month is None else _decimal("usd_per_month", usd_per_month)
    hourly = (
        monthly / HOURS_PER_MONTH if monthly is not None else _decimal("usd_per_hour", usd_per_hour)
    )
    rt = _runtime.runtime()
    event = FixedCost(
        name=name,
        kind=kind,
        usd_per_hour=hourly,
        started_at=rt.clock(),
        strategy=strategy,
        pipeline=pipeline,
        service=rt.service,
        usd_per_month=monthly,
        **_attribution({"feature": feature, "team": team, "tenant": tenant}),
    )
    _emit(event)
    return event


class indexing(AsyncToo[CostScope]):  # noqa: N801 - a context manager used like a function, as ``request``
    """An indexing run of a RAG pipeline's knowledge base: the calls inside (embedding the
    corpus) are recorded as usual and their total is one ``indexing`` lifecycle cost of
    ``pipeline`` (``costwatch_lifecycle_cost_usd_total{kind="indexing"}``).

    The calls carry the tag ``lifecycle="indexing"``; the block yields its ``CostScope``
    (``.cost_usd`` so far), and ``.event`` is the lifecycle cost once it has ended.
    """

    __slots__ = ("_name", "_pipeline", "_strategy", "_tags", "_scope", "_scope_cm", "event")

    def __init__(
        self, pipeline: str, knowledge_base: str = "", strategy: str = "rag", **tag_values: Any
    ) -> None:
        _check_strategy(strategy)
        self._pipeline = pipeline
        self._name = knowledge_base or pipeline
        self._strategy = strategy
        self._tags = tags(lifecycle="indexing", **tag_values)
        self._scope_cm: Any = None
        self._scope: CostScope | None = None
        self.event: LifecycleCost | None = None

    def __enter__(self) -> CostScope:
        self._tags.__enter__()
        self._scope_cm = cost_scope()
        self._scope = self._scope_cm.__enter__()
        return self._scope

    def __exit__(self, *exc_info: Any) -> None:
        scope = self._scope
        attribution = _attribution({"feature": None, "team": None, "tenant": None})
        self._scope_cm.__exit__(*exc_info)
        self._tags.__exit__(*exc_info)
        if scope is None:
            return
        try:
            rt = _runtime.runtime()
            self.event = LifecycleCost(
                kind="indexing",
                name=self._name,
                cost_usd=scope.cost_usd,
                price_source="calls",
                strategy=self._strategy,
                pipeline=self._pipeline,
                service=rt.service,
                timestamp=rt.clock(),
                detail=(("unpriced_calls", str(scope.unpriced)),),
                **attribution,
            )
        except Exception as exc:
            errors.report("lifecycle", exc)
            return
        _emit(self.event)
