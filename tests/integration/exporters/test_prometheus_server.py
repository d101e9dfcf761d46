"""A real Prometheus server scrapes the demo workload; its queries match ``costwatch.summary()``.

Prometheus (Debian package) runs on a free loopback port with a temporary data dir and a 1 s
scrape interval.  Two sources are scraped:

* the demo workload run in this process (``Workload`` is what ``costwatch demo`` runs) behind
  ``costwatch.serve_metrics``: after the run, spend by strategy, by stage and tokens by type as
  Prometheus computes them equal ``costwatch.summary()`` of the same run;
* ``python3 -m costwatch demo --serve PORT --duration S --json --linger L``, the command
  itself: spend by strategy and stage and tokens by type equal the summary it prints.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """``prometheus`` scraping ``targets`` every second, stopped by its own pid."""

    def __init__(self, targets: list[str]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
        self.dir = Path(tempfile.mkdtemp(prefix="costwatch-prom-exporter-"))
        self.port = free_port()
        config = self.dir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: costwatch\n    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n",
            encoding="utf-8",
        )
        self.log = (self.dir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/-/ready", timeout=0.5
                ) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            "prometheus did not become ready: "
            + (self.dir / "prometheus.log").read_text(errors="replace")[-2000:]
        )

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def by(self, label: str, expr: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expr)}

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, expected: float, timeout_s: float = 20.0) -> None:
        """Until ``expr`` evaluates to ``expected`` (a scrape after the events happened)."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = self.scalar(expr)
            if last == expected:
                return
            time.sleep(0.2)
        raise AssertionError(f"{expr} = {last}, expected {expected} within {timeout_s}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_run() -> Iterator[tuple[PrometheusServer, Any]]:
    """The demo workload, served on /metrics and scraped by Prometheus while it runs."""
    import costwatch
    from costwatch._demo.workload import Workload

    registry = CollectorRegistry()
    costwatch.configure(service="demo", strict=True, prometheus=True, otel=False, registry=registry)
    server = costwatch.serve_metrics(0, registry=registry)
    prometheus = PrometheusServer([f"127.0.0.1:{server.port}"])
    try:
        Workload(seed=11).run(150)
        summary = costwatch.summary()
        prometheus.wait_for("sum(costwatch_requests_total)", float(summary.total.calls))
        yield prometheus, summary
    finally:
        prometheus.stop()
        server.shutdown()
        costwatch._configure.shutdown()


def test_spend_by_strategy_in_prometheus_equals_the_summary(
    demo_run: tuple[PrometheusServer, Any],
) -> None:
    prometheus, summary = demo_run
    spend = prometheus.by("strategy", "sum by (strategy) (costwatch_cost_usd_total)")

    expected = {
        s: float(t.cost_usd) for s, t in summary.by_strategy.items() if t.calls > t.unpriced
    }
    assert set(spend) == set(expected)
    assert {"rag", "fine_tuned", "hybrid"} <= set(spend)
    for strategy, usd in expected.items():
        assert spend[strategy] == pytest.approx(usd, rel=1e-9, abs=1e-12), strategy


def test_spend_by_stage_in_prometheus_equals_the_summary(
    demo_run: tuple[PrometheusServer, Any],
) -> None:
    prometheus, summary = demo_run
    spend = prometheus.by("stage", "sum by (stage) (costwatch_cost_usd_total)")

    expected = {s: float(t.cost_usd) for s, t in summary.by_stage.items() if t.calls > t.unpriced}
    assert set(spend) == set(expected)
    assert {"embedding", "retrieval", "generation"} <= set(spend)
    for stage, usd in expected.items():
        assert spend[stage] == pytest.approx(usd, rel=1e-9, abs=1e-12), stage
    total = prometheus.scalar("sum(costwatch_cost_usd_total)")
    assert total == pytest.approx(float(summary.total_usd), rel=1e-9)


def test_tokens_by_type_in_prometheus_equal_the_summary(
    demo_run: tuple[PrometheusServer, Any],
) -> None:
    prometheus, summary = demo_run
    tokens = prometheus.by("token_type", "sum by (token_type) (costwatch_tokens_total)")

    assert tokens == {t: float(n) for t, n in summary.total.tokens.items() if n}
    assert tokens["input"] > 0 and tokens["output"] > 0


def test_requests_and_cost_per_request_in_prometheus_equal_the_summary(
    demo_run: tuple[PrometheusServer, Any],
) -> None:
    prometheus, summary = demo_run
    requests = prometheus.by("pipeline", "sum by (pipeline) (costwatch_request_cost_usd_count)")
    request_usd = prometheus.by("pipeline", "sum by (pipeline) (costwatch_request_cost_usd_sum)")

    assert requests == {p: float(t.requests) for p, t in summary.by_pipeline.items()}
    for pipeline, totals in summary.by_pipeline.items():
        assert request_usd[pipeline] == pytest.approx(float(totals.cost_usd), rel=1e-9)


def test_the_demo_command_scraped_by_prometheus_equals_its_own_summary() -> None:
    """``costwatch demo --serve``: what Prometheus computes equals the run's ``summary()``.

    ``--json`` prints ``summary().as_dict()`` when the workload stops and ``--linger`` keeps
    ``/metrics`` up afterwards, so Prometheus gets a scrape of the final totals.
    """
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COSTWATCH_", "PROMETHEUS_MULTIPROC"))
    }
    env["PYTHONPATH"] = str(REPO)
    prometheus = PrometheusServer([f"127.0.0.1:{port}"])
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "costwatch",
            "demo",
            "--serve",
            str(port),
            "--duration",
            "4",
            "--rate",
            "50",
            "--json",
            "--linger",
            "60",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if line.rstrip() == "}":
                break
        summary = json.loads("".join(lines))
        calls = summary["total"]["calls"]
        prometheus.wait_for("sum(costwatch_requests_total)", float(calls), timeout_s=30)
        strategies = prometheus.by("strategy", "sum by (strategy) (costwatch_cost_usd_total)")
        stages = prometheus.by("stage", "sum by (stage) (costwatch_cost_usd_total)")
        tokens = prometheus.by("token_type", "sum by (token_type) (costwatch_tokens_total)")
    finally:
        if demo.poll() is None:
            os.kill(demo.pid, signal.SIGTERM)
            demo.wait(timeout=10)
        prometheus.stop()

    assert {"rag", "fine_tuned", "hybrid", "base"} <= set(strategies)
    for strategy, totals in summary["by_strategy"].items():
        assert strategies[strategy] == pytest.approx(float(totals["cost_usd"]), rel=1e-9)
    for stage, totals in summary["by_stage"].items():
        assert stages[stage] == pytest.approx(float(totals["cost_usd"]), rel=1e-9)
    expected_tokens = {k: float(v) for k, v in summary["total"]["tokens"].items() if v}
    assert tokens == expected_tokens
