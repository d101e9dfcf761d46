"""Cost of the exporters: per-call overhead with the Prometheus (and OTel) sink, /metrics render.

Prints, from one run:

1. the median per-call overhead (over a bare call returning an SDK response) of
   * a minimal hand-written wrapper: times the call, reads usage, prices it from a dict and
     updates 2 counters and 1 histogram through cached prometheus-client label children;
   * ``@costwatch.generation`` with the Prometheus sink on (plus the ledger behind summary());
   * the same with the OpenTelemetry sink also on (SDK MeterProvider with an in-memory reader);
     its hot path only queues the call, the instruments are fed when the reader collects, so the
     bench also prints the per-call cost *including* that collection-time work;
2. the time to render ``/metrics`` with 10,000 series against ``generate_latest`` on an
   equivalent bare registry (plain prometheus-client metrics holding the same samples).

Rounds are interleaved so machine noise hits every variant alike; medians, never one run.

    python bench/exporters.py [--calls 20000] [--rounds 11]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from _shared import bare, per_call
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics import disable_created_metrics

import costwatch
from costwatch._core.labels import LabelGuard
from costwatch._core.record import CostRecord, TokenUsage
from costwatch.exporters import names
from costwatch.exporters._prom_client import ClientMetrics
from costwatch.exporters.prometheus import PrometheusSink

PRICES = {"gpt-4o-mini": (0.15 / 10**6, 0.60 / 10**6)}


def hand_written(fn: Callable[[str], Any]) -> Callable[[str], Any]:
    """The floor: what anyone would write by hand to export cost, tokens and latency."""
    registry = CollectorRegistry()
    labels = ("openai", "gpt-4o-mini")
    cost = Counter("hand_cost_usd", "cost", ["provider", "model"], registry=registry)
    tokens = Counter("hand_tokens", "tokens", ["provider", "model"], registry=registry)
    latency = Histogram(
        "hand_duration_seconds",
        "latency",
        ["provider", "model"],
        registry=registry,
        buckets=names.DURATION_BUCKETS,
    )
    cost_child, tokens_child = cost.labels(*labels), tokens.labels(*labels)
    latency_child = latency.labels(*labels)

    def wrapper(prompt: str) -> Any:
        t0 = time.perf_counter()
        result = fn(prompt)
        elapsed = time.perf_counter() - t0
        usage = result.usage
        price_in, price_out = PRICES["gpt-4o-mini"]
        cost_child.inc(usage.prompt_tokens * price_in + usage.completion_tokens * price_out)
        tokens_child.inc(usage.prompt_tokens + usage.completion_tokens)
        latency_child.observe(elapsed)
        return result

    return wrapper


CHUNK = 2000
"""After every CHUNK calls, /metrics is rendered (Prometheus on), the OTel metric reader
collects (OTel on) or, with neither, summary() reads the ledger: untimed for the hot-path
figure, timed for the amortized one.  Each defers work to that read (pricing tallied calls,
feeding the OTel instruments), so the amortized figure is the honest per-call cost.  A deployed
app's scrape handler and PeriodicExportingMetricReader do this from their own threads."""


class Setup:
    """Configures costwatch for one variant (outside the timed region)."""

    def __init__(self, prometheus: bool, otel: bool) -> None:
        self.registry = CollectorRegistry()
        self.prometheus = prometheus
        self.otel = otel
        self.reader: Any = None
        self.provider: Any = None
        if otel:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader

            self.reader = InMemoryMetricReader()
            self.provider = MeterProvider(metric_readers=[self.reader])

    def apply(self) -> None:
        costwatch.configure(
            service="bench",
            prometheus=self.prometheus,
            otel=self.otel,
            registry=self.registry,
            meter_provider=self.provider,
        )

    def collect_seconds(self) -> float:
        """Time of one scrape and one metric-reader collection, for the sinks that are on;
        with neither, of one ``summary()`` (the ledger's read)."""
        t0 = time.perf_counter()
        if not self.prometheus and self.reader is None:
            costwatch.summary()
        if self.prometheus:
            generate_latest(self.registry)
        if self.reader is not None:
            self.reader.get_metrics_data()
        return time.perf_counter() - t0

    def run(self, fn: Callable[[str], Any], calls: int) -> tuple[float, float]:
        """(hot-path seconds per call, seconds per call including collection)."""
        hot = collected = 0.0
        done = 0
        while done < calls:
            n = min(CHUNK, calls - done)
            hot += per_call(fn, n) * n
            collected += self.collect_seconds()
            done += n
        return hot / calls, (hot + collected) / calls


def overhead(args: argparse.Namespace) -> None:
    wrapped = costwatch.generation(provider="openai", model="gpt-4o-mini")(bare)
    hand = hand_written(bare)
    setups = {
        "@generation, ledger only": Setup(prometheus=False, otel=False),
        "@generation + Prometheus": Setup(prometheus=True, otel=False),
        "@generation + Prometheus + OTel": Setup(prometheus=True, otel=True),
    }
    samples: dict[str, list[float]] = {"bare call": [], "hand-written wrapper": []}
    for name in setups:
        samples[name] = []
        samples[_amortized(name)] = []
    for setup in setups.values():  # warm up: price resolution, label children, instruments
        setup.apply()
        setup.run(wrapped, 2 * CHUNK)
    for _ in range(args.rounds):
        samples["bare call"].append(per_call(bare, args.calls))
        samples["hand-written wrapper"].append(per_call(hand, args.calls))
        for name, setup in setups.items():
            setup.apply()
            setup.run(wrapped, 200)
            hot, with_collection = setup.run(wrapped, args.calls)
            samples[name].append(hot)
            samples[_amortized(name)].append(with_collection)
    med = {name: statistics.median(s) for name, s in samples.items()}
    floor = med["bare call"]
    hand_overhead = med["hand-written wrapper"] - floor

    def ratio(name: str) -> float:
        return (med[name] - floor) / hand_overhead

    print(
        f"median per call over {args.rounds} interleaved rounds of {args.calls} calls "
        f"(collection every {CHUNK} calls)"
    )
    for name, value in med.items():
        print(
            f"  {name:<48} {value * 1e6:8.3f} µs   overhead {(value - floor) * 1e6:7.3f} µs"
            f"   {ratio(name):5.2f}x hand-written"
        )
    prom, otel = "@generation + Prometheus", "@generation + Prometheus + OTel"
    print(
        f"@generation + Prometheus sink / hand-written overhead = {ratio(prom):.2f}x hot path, "
        f"{ratio(_amortized(prom)):.2f}x incl. collection  (goal <= 1.6x)"
    )
    print(
        f"@generation + Prometheus + OTel / hand-written overhead = {ratio(otel):.2f}x hot path, "
        f"{ratio(_amortized(otel)):.2f}x incl. collection  (goal <= 3x)"
    )


def _amortized(name: str) -> str:
    return f"{name}, incl. collection"


def render(args: argparse.Namespace) -> None:
    records = [
        CostRecord(
            provider="openai",
            model=f"model-{m}",
            stage="generation",
            usage=TokenUsage(input=100 + t, output=20),
            cost_usd=Decimal("0.0001"),
            latency_s=0.4,
            strategy="rag",
            service="bench",
            feature="faq",
            team="support",
            tenant=f"tenant-{t}",
        )
        for m in range(4)
        for t in range(120)
    ]
    disable_created_metrics()  # type: ignore[no-untyped-call]  # same samples on both sides
    ours = CollectorRegistry()
    sink = PrometheusSink(ours, service="bench", label_limits={"tenant": 1000})
    bare_registry = CollectorRegistry()
    plain = ClientMetrics(bare_registry, LabelGuard({"tenant": 1000}), "bench")
    for record in records:
        sink.on_record(record)
        plain.on_record(record)
    text = generate_latest(ours)
    assert sorted(text.splitlines()) == sorted(generate_latest(bare_registry).splitlines()), (
        "the two registries must hold the same samples"
    )
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    times: dict[str, list[float]] = {"costwatch registry": [], "bare registry": []}
    for _ in range(args.rounds):
        for name, registry in (("costwatch registry", ours), ("bare registry", bare_registry)):
            t0 = time.perf_counter()
            generate_latest(registry)
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"/metrics render, {series} series ({len(records)} label combinations), "
        f"median of {args.rounds}"
    )
    for name, value in med.items():
        print(f"  {name:<34} {value * 1e3:8.2f} ms")
    ratio = med["costwatch registry"] / med["bare registry"]
    print(f"render / generate_latest on the bare registry = {ratio:.2f}x  (goal <= 1.2x)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    overhead(args)
    render(args)


if __name__ == "__main__":
    main()
