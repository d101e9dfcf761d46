"""The composition root: the one module that wires settings, prices, budgets, tally, ledger and
exporters into the process-wide runtime that ``configure()`` installs in ``_core.runtime``.

Every global is injectable (registry, meter provider, clock, extra sinks) so each test builds a
fresh runtime; ``runtime()`` builds a default one from the environment on first use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from costwatch._core import forks
from costwatch._core import runtime as holder
from costwatch._core.failopen import errors, logger
from costwatch._core.settings import Settings, load_settings
from costwatch._core.sink import Sink
from costwatch.accounting._ledger import Ledger
from costwatch.accounting._outcomes import OutcomeBook

if TYPE_CHECKING:
    from costwatch.accounting._tally import Tally
    from costwatch.budgets._budget import BudgetRegistry
    from costwatch.exporters.prometheus import PrometheusSink
    from costwatch.pricing import PriceCatalog


class Runtime:
    """Everything a wrapped call needs, resolved once at configuration time."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: Any = None,
        meter_provider: Any = None,
        tracer_provider: Any = None,
        clock: Callable[[], float] = time.time,
        sinks: Iterable[Sink] = (),
        redis_client: Any = None,
    ) -> None:
        from costwatch.budgets._budget import BudgetRegistry
        from costwatch.pricing import PriceCatalog

        self.settings = settings
        self.service = settings.service
        self.clock = clock
        self.redis_url = settings.redis_url
        self.redis_client = redis_client
        """A client the host built (Sentinel, a managed service's own), used instead of one
        made from ``redis_url``: a ``redis.Redis``, ``redis.cluster.RedisCluster`` or
        ``redis.sentinel.Sentinel(...).master_for(...)``."""
        self.estimate = settings.estimate_missing_usage
        self.ledger = Ledger(clock=clock)
        self.outcomes = OutcomeBook(clock)
        """Finished requests waiting for a late ``costwatch.outcome(request_id, ...)``."""
        self.catalog: PriceCatalog = PriceCatalog(settings.prices, clock=clock)
        built: list[Sink] = [self.ledger]
        self.prometheus: PrometheusSink | None = None
        if settings.prometheus:
            from costwatch.exporters.prometheus import PrometheusSink

            self.prometheus = PrometheusSink(
                registry, service=settings.service, label_limits=settings.label_limits
            )
            built.append(self.prometheus)
        if settings.otel:
            from costwatch.exporters.otel import OTelSink

            built.append(
                OTelSink(
                    meter_provider,
                    service=settings.service,
                    spans=settings.otel_spans,
                    tracer_provider=tracer_provider,
                    label_limits=settings.label_limits,
                )
            )
        built.extend(sinks)
        self.sinks: tuple[Sink, ...] = tuple(built)
        self.tally: Tally = self._tally_for_readers()
        """Where the recorder adds plain successful calls, and caches every lookup, for the
        sinks that read totals."""
        self.untallied_sinks: tuple[Sink, ...] = tuple(
            sink for sink in self.sinks if sink is not self.ledger and sink is not self._tallied
        )
        """The sinks that need each event even when it was added to the tally: a ``CostRecord``
        for a tallied call, a ``CacheEvent`` for a cache lookup."""
        self.budgets: BudgetRegistry = BudgetRegistry(None, clock, lambda: self.sinks)
        self._warmed = not settings.warm_up
        """The warm-up ran (or is not wanted); a child forked before it did runs its own."""
        if settings.warm_up:
            self._start_warm_up()
        forks.after_fork_in_child(self._after_fork_in_child)

    def _start_warm_up(self) -> None:
        threading.Thread(target=self._warm_up, name="costwatch-warm-up", daemon=True).start()

    def _tally_for_readers(self) -> Tally:
        """The ledger, and the Prometheus exporter unless in multiprocess mode, read totals.

        The tally guards label values with the guard of the exporter that reads it, so a
        value is admitted (or counted as overflow) once, for both."""
        from costwatch._core.labels import LabelGuard
        from costwatch.accounting._tally import Tally

        prometheus = self.prometheus
        if prometheus is not None and prometheus.multiprocess:
            prometheus = None
        bounds = None
        labels = LabelGuard(self.settings.label_limits)
        if prometheus is not None:
            from costwatch.exporters.names import DURATION_BUCKETS

            bounds = DURATION_BUCKETS
            labels = prometheus.guard
        tally = Tally(self.catalog, bounds, labels)
        self.ledger.attach(tally)
        if prometheus is not None:
            prometheus.attach(tally)
        self._tallied = prometheus
        return tally

    def _warm_up(self) -> None:
        """Import and load what the first calls would (price data, tokenizer files) as work a
        fork waits for (see ``_core.forks``): a child never inherits an import half-way, and
        the workers of a pre-fork server share what their parent loaded."""
        try:
            with forks.background():
                self.catalog.warm_up()
                from costwatch._core.tokens import preload_encodings

                preload_encodings()
        except Exception as exc:  # a background thread: log, never raise (even when strict)
            logger.warning("costwatch could not preload prices/tokenizers: %r", exc)
        self._warmed = True

    def _after_fork_in_child(self) -> None:
        """What belongs to a process is rebuilt in a forked child: the budget settlement worker
        (its thread, queue and locks) and the warm-up, if the parent's had not finished."""
        self.budgets.after_fork_in_child()
        if not self._warmed:
            self._start_warm_up()

    def close(self) -> None:
        """Record streams dropped unclosed, flush budget settlements, stop background work."""
        from costwatch.capture._streams import drain

        drain()
        self.budgets.close()
        if self.prometheus is not None:
            self.prometheus.detach(self.tally)


def _default_runtime() -> Runtime:
    """The runtime of a process that never called ``configure()``: from ``COSTWATCH_*``, or,
    when those are invalid, the defaults, with one clear error logged and counted (component
    ``config``): a host's calls never fail on configuration nobody asked for explicitly."""
    try:
        return Runtime(load_settings({}))
    except Exception as exc:
        problem = exc
    logger.error(
        "costwatch: the COSTWATCH_* environment is not valid (%s); costwatch ignores it and "
        "runs with its defaults. Fix the variable, or call costwatch.configure(), which raises.",
        problem,
    )
    rt = Runtime(Settings())
    holder.install(rt)  # under the holder's (reentrant) lock: its sinks count the error
    errors.count("config")
    return rt


holder.set_default_factory(_default_runtime)
runtime = holder.runtime


def configure(
    service: str | None = None,
    redis_url: str | None = None,
    prices: str | dict[str, Any] | None = None,
    prometheus: bool | None = None,
    otel: bool | None = None,
    estimate_missing_usage: bool | None = None,
    label_limits: dict[str, int] | None = None,
    strict: bool | None = None,
    *,
    otel_spans: bool | None = None,
    redis_timeout_s: float | None = None,
    redis_cluster: bool | None = None,
    warm_up: bool | None = None,
    registry: Any = None,
    meter_provider: Any = None,
    tracer_provider: Any = None,
    clock: Callable[[], float] | None = None,
    sinks: Iterable[Sink] = (),
    redis_client: Any = None,
) -> Settings:
    """Configure costwatch for this process.  Argument > ``COSTWATCH_*`` env var > default.

    Invalid values raise :class:`costwatch.ConfigError` naming the field.  ``registry``,
    ``meter_provider``, ``tracer_provider``, ``clock`` and ``sinks`` inject the globals
    (tests build fresh ones); ``redis_client`` is a Redis client of the host's making (Sentinel,
    a cluster client) that budgets use instead of one built from ``redis_url``.  Reconfiguring
    replaces the previous runtime and its totals.
    """
    settings = load_settings(
        {
            "service": service,
            "redis_url": redis_url,
            "prices": prices,
            "prometheus": prometheus,
            "otel": otel,
            "estimate_missing_usage": estimate_missing_usage,
            "label_limits": label_limits,
            "strict": strict,
            "otel_spans": otel_spans,
            "redis_timeout_s": redis_timeout_s,
            "redis_cluster": redis_cluster,
            "warm_up": warm_up,
        }
    )
    from costwatch.capture._streams import drain

    drain()  # streams dropped under the previous runtime are recorded there, not here
    new = Runtime(
        settings,
        registry=registry,
        meter_provider=meter_provider,
        tracer_provider=tracer_provider,
        clock=clock or time.time,
        sinks=sinks,
        redis_client=redis_client,
    )
    old = holder.install(new)
    if old is not None:
        old.close()
    return settings


def shutdown() -> None:
    """Flush what is pending (budget settlements) and drop the runtime."""
    old = holder.install(None)
    if old is not None:
        old.close()
