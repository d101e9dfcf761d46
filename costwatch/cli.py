"""The ``costwatch`` command: ``demo``, ``prices``, ``estimate`` and ``budget status``."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO


def _progress(stream: TextIO) -> object:
    tty = stream.isatty()
    last = [-1]

    def show(done: int, total: int) -> None:
        if total:
            pct = done * 100 // total
            if tty:
                bar = "#" * (pct // 4)
                stream.write(f"\r[{bar:<25}] {done}/{total} requests")
                if done == total:
                    stream.write("\n")
            elif pct // 10 != last[0]:
                last[0] = pct // 10
                stream.write(f"{done}/{total} requests\n")
        elif done % 100 == 0:
            stream.write(f"{done} requests\n")
        stream.flush()

    return show


def _demo(args: argparse.Namespace) -> int:
    import costwatch
    from costwatch._configure import runtime
    from costwatch._demo.report import render
    from costwatch._demo.workload import Workload

    meter_provider = _otlp_meter_provider()
    costwatch.configure(service=args.service, meter_provider=meter_provider)
    # Budgets the demo's spend runs into, so the budget gauges, alerts and panels show data.
    costwatch.budget(
        "support-daily",
        limit_usd=args.budget_usd,
        window="day",
        match={"team": "support"},
        action="warn",
    )
    costwatch.budget(
        "drafting-monthly",
        limit_usd=args.budget_usd * 20,
        window="month",
        match={"feature": "drafting"},
        action="warn",
    )
    workload = Workload(seed=args.seed)
    progress = _progress(sys.stderr)
    source = "real openai/anthropic SDK objects" if workload.sdk_objects else "SDK-shaped dicts"
    sys.stderr.write(
        f"costwatch demo: {source}, in-memory ledger"
        f"{', cache on Redis' if runtime().redis_url else ''}\n"
    )
    server = None
    if args.serve is not None:
        server = costwatch.serve_metrics(args.serve, addr=args.addr)
        sys.stderr.write(
            f"serving /metrics on http://{args.addr}:{args.serve}/metrics"
            f" for {'ever' if not args.duration else f'{args.duration:g} s'}\n"
        )
        stop = threading.Event()
        try:
            workload.run_for(args.duration, stop, rate_per_s=args.rate, progress=progress)  # type: ignore[arg-type]
        except KeyboardInterrupt:
            stop.set()
    else:
        workload.run(args.requests, progress=progress)  # type: ignore[arg-type]
    runtime().budgets.flush()
    summary = costwatch.summary()
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2, sort_keys=True))
    else:
        print(render(summary))
    sys.stdout.flush()
    if server is not None:
        if args.linger:
            # The workload has stopped: keep /metrics up so a scraper sees the final totals.
            threading.Event().wait(args.linger)
        server.shutdown()
    if meter_provider is not None:
        meter_provider.shutdown()
    return 0


def _otlp_meter_provider() -> Any:
    """With ``COSTWATCH_OTEL=true`` the demo owns the OTel SDK: metrics go out over OTLP/HTTP
    (``OTEL_EXPORTER_OTLP_ENDPOINT``), as an application would set it up."""
    from costwatch._core.settings import load_settings

    if not load_settings({}).otel:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    except ImportError as exc:
        raise SystemExit(
            "costwatch demo: COSTWATCH_OTEL=true needs the OTel SDK: pip install 'costwatch[otel]'"
        ) from exc
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=10_000)
    return MeterProvider(metric_readers=[reader])


def _prices(args: argparse.Namespace) -> int:
    from costwatch.pricing._catalog import PriceCatalog, format_price_table

    catalog = PriceCatalog(args.prices)
    text = format_price_table(catalog, args.model, args.provider)
    print(text)
    return (
        0
        if catalog.resolve(args.provider or "", args.model) is not None
        or "no price" not in text.lower()
        else 1
    )


def _estimate(args: argparse.Namespace) -> int:
    from costwatch._core.tokens import estimate_cost, format_estimate
    from costwatch.pricing._catalog import PriceCatalog

    if args.file and args.file != "-":
        with open(args.file, encoding="utf-8") as fh:
            text = fh.read()
    else:
        text = sys.stdin.read()
    catalog = PriceCatalog(args.prices)
    estimate = estimate_cost(
        text, args.model, args.provider, catalog, expected_output_tokens=args.output_tokens
    )
    print(format_estimate(estimate))
    return 0


def _budget_status(args: argparse.Namespace) -> int:
    from costwatch._core.settings import load_settings
    from costwatch.budgets._budget import BudgetStatusError, budget_status

    url = args.redis_url or load_settings({}).redis_url
    try:
        print(budget_status(url))
    except BudgetStatusError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="costwatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a realistic RAG / fine-tuned / hybrid workload")
    demo.add_argument("--requests", type=int, default=200, help="requests to run (default 200)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--service", default="costwatch-demo")
    demo.add_argument("--serve", type=int, metavar="PORT", help="serve /metrics while running")
    demo.add_argument("--addr", default="127.0.0.1", help="address for --serve")
    demo.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="with --serve: seconds to keep running (0 = until interrupted)",
    )
    demo.add_argument("--rate", type=float, default=20.0, help="with --serve: requests per second")
    demo.add_argument(
        "--json", action="store_true", help="print summary() as JSON instead of the table"
    )
    demo.add_argument(
        "--linger",
        type=float,
        default=0.0,
        help="with --serve: keep serving /metrics this many seconds after the end",
    )
    demo.add_argument(
        "--budget-usd",
        type=float,
        default=0.02,
        help="daily warn budget of the support team (default $0.02)",
    )
    demo.set_defaults(run=_demo)

    prices = sub.add_parser("prices", help="print the resolved price of a model and its source")
    prices.add_argument("model")
    prices.add_argument("--provider", default=None)
    prices.add_argument("--prices", default=None, help="user price YAML")
    prices.set_defaults(run=_prices)

    estimate = sub.add_parser("estimate", help="estimate the cost of a prompt (file or stdin)")
    estimate.add_argument("file", nargs="?", default="-")
    estimate.add_argument("--model", required=True)
    estimate.add_argument("--provider", default=None)
    estimate.add_argument("--output-tokens", type=int, default=0)
    estimate.add_argument("--prices", default=None, help="user price YAML")
    estimate.set_defaults(run=_estimate)

    budget = sub.add_parser("budget", help="budgets")
    budget_sub = budget.add_subparsers(dest="budget_command", required=True)
    status = budget_sub.add_parser("status", help="each budget's window, spend and limit")
    status.add_argument("--redis-url", default=None)
    status.set_defaults(run=_budget_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
