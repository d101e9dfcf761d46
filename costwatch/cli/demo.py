"""``costwatch demo``: a RAG / fine-tuned / hybrid workload through the real SDKs, and its costs."""

from __future__ import annotations

import errno
import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from costwatch.cli._output import CliError, console, json_option, positive_usd, print_json

if TYPE_CHECKING:
    from costwatch.exporters.prometheus import MetricsServer

_F = TypeVar("_F", bound=Callable[..., Any])
_SDKS = ("openai", "anthropic")


def _serve_option(name: str, help: str) -> Callable[[_F], _F]:
    """A number of seconds that only matters with ``--serve`` (0 by default)."""
    return click.option(
        name, type=click.FloatRange(min=0), default=0.0, help=f"with --serve: {help}"
    )


@click.command()
@click.option("--requests", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True, help="same seed, same run")
@click.option("--service", default="costwatch-demo", show_default=True)
@click.option("--serve", type=click.IntRange(0, 65535), metavar="PORT", help="serve /metrics")
@click.option("--addr", default="127.0.0.1", show_default=True, help="address for --serve")
@_serve_option("--duration", "seconds to keep running (0 = until interrupted)")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    show_default=True,
    help="with --serve: requests per second",
)
@_serve_option("--linger", "keep serving /metrics this many seconds after the end")
@click.option(
    "--budget-usd",
    default="0.02",
    callback=positive_usd,
    show_default=True,
    help="daily warn budget of the support team",
)
@click.option("--html", metavar="FILE", help="write the closing comparison's HTML report")
@click.option("--explain", is_flag=True, help="the comparison's arithmetic and price sources")
@json_option("print summary() as JSON instead of the tables")
def demo(
    requests: int,
    seed: int,
    service: str,
    serve: int | None,
    addr: str,
    duration: float,
    rate: float,
    linger: float,
    budget_usd: Decimal,
    html: str | None,
    explain: bool,
    as_json: bool,
) -> None:
    """Run a RAG assistant, a fine-tuned classifier, a hybrid drafter and a Claude summariser
    through the real openai and anthropic SDKs (against a simulated API in this process: no
    network, no key), then print what each strategy, stage, model and request cost."""
    missing = [name for name in _SDKS if importlib.util.find_spec(name) is None]
    if missing:
        raise CliError(
            f"the demo runs through the real openai and anthropic SDKs; {' and '.join(missing)}"
            " not installed",
            "pip install 'costwatch[demo]'",
        )
    import costwatch
    from costwatch._configure import runtime
    from costwatch._demo.workload import Workload
    from costwatch.cli._demo_report import render

    meter_provider = _otlp_meter_provider()
    costwatch.configure(service=service, meter_provider=meter_provider)
    # Budgets the demo's spend runs into, so the budget gauges, alerts and panels show data.
    costwatch.budget("support-daily", limit_usd=budget_usd, window="day", match={"team": "support"})
    costwatch.budget(
        "drafting-monthly", limit_usd=budget_usd * 20, window="month", match={"feature": "drafting"}
    )
    workload = Workload(seed=seed)
    err = console(stderr=True)
    err.print(
        f"[bold]costwatch demo[/]: {'' if serve is not None else f'{requests} '}requests through"
        " the real openai and anthropic SDKs, against a simulated API in this process"
        f"{'; retrieval cache on Redis' if runtime().redis_url else ''}"
    )
    server = _serve(serve, addr) if serve is not None else None
    if server is not None:
        err.print(
            f"serving /metrics on http://{addr}:{server.port}/metrics"
            f" for {f'{duration:g} s' if duration else 'ever (Ctrl-C stops)'}"
        )
    with _progress(err, None if server is not None else requests) as step:
        if server is None:
            workload.run(requests, progress=step)
        else:
            stop = threading.Event()
            try:
                workload.run_for(duration, stop, rate_per_s=rate, progress=step)
            except KeyboardInterrupt:
                stop.set()
    runtime().budgets.flush()
    summary = costwatch.summary()
    from costwatch._demo.comparison import closing_comparison

    story, comparison = closing_comparison(summary, explain=explain)
    if as_json:
        print_json(summary.as_dict())
    else:
        out = console()
        for part in render(summary):
            out.print(part)
            out.print()
        out.print(story, markup=False, highlight=False, soft_wrap=True)
    if html is not None:
        _write_report(html, comparison)
        err.print(f"wrote {html}")
    sys.stdout.flush()
    if server is not None:
        if linger:
            # The workload has stopped: keep /metrics up so a scraper sees the final totals.
            threading.Event().wait(linger)
        server.shutdown()
    if meter_provider is not None:
        meter_provider.shutdown()


def _write_report(path: str, comparison: Any) -> None:
    try:
        from costwatch.analysis import render_html

        page = render_html(comparison)
    except ImportError as exc:
        raise CliError(str(exc), "pip install 'costwatch[report]'") from None
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(page)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}", "check --html") from None


def _serve(port: int, addr: str) -> MetricsServer:
    import costwatch

    try:
        return costwatch.serve_metrics(port, addr=addr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CliError(
                f"port {port} on {addr} is already in use",
                "pass another --serve PORT, or stop what listens on it",
            ) from None
        raise CliError(
            f"cannot serve /metrics on {addr}:{port}: {exc.strerror or exc}",
            "check --addr and --serve",
        ) from None


@contextmanager
def _progress(err: Console, total: int | None) -> Iterator[Any]:
    """A progress bar on stderr; ``total`` None (``--serve``): a count, and on a pipe or a
    log (``docker logs``) a line every 100 requests, since a bar is drawn only on a terminal."""
    done = "{task.completed}/{task.total}" if total else "{task.completed}"
    count = TextColumn(done + " requests")
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), count, TimeElapsedColumn(), console=err
    ) as progress:
        task = progress.add_task("demo", total=total)

        def step(done: int, _total: int) -> None:
            progress.update(task, completed=done)
            if total is None and not err.is_terminal and done % 100 == 0:
                err.print(f"{done} requests")

        yield step


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
    except ImportError:
        raise CliError(
            "COSTWATCH_OTEL=true needs the OpenTelemetry SDK", "pip install 'costwatch[otel]'"
        ) from None
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=10_000)
    return MeterProvider(metric_readers=[reader])
