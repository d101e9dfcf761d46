"""prometheus-client multiprocess mode: worker processes record, one endpoint serves the sum.

Like gunicorn workers: every process has ``PROMETHEUS_MULTIPROC_DIR`` in its environment before
it starts, configures costwatch normally and records calls; a separate process runs
``costwatch.serve_metrics`` and exposes the aggregate of every worker's mmap files.  The prices
are chosen so every cost is a binary fraction: the aggregated dollars are exact, not approximate.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[3]

WORKER = r"""
import json, os, sys, time
from decimal import Decimal
import costwatch

calls, tenant, budget_spent, wait_for = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
costwatch.configure(
    service="mp", strict=True, prometheus=True, otel=False,
    prices={"models": [{"provider": "acme", "model": "exact-llm",
                        "input_per_mtok": 250000, "output_per_mtok": 125000}]},
)
for i in range(calls):
    with costwatch.tags(feature="faq", tenant=tenant if i % 2 else "shared"):
        rec = costwatch.record(provider="acme", model="exact-llm", input_tokens=3,
                               output_tokens=2, latency_s=0.5)
        assert rec is not None and rec.cost_usd == Decimal("1.000000"), rec
costwatch.fixed_cost("gpu-node", usd_per_hour="2.5", strategy="fine_tuned", pipeline="classify")
costwatch.record_training(model="exact-base", training_tokens=1_000_000, usd_per_mtok="4",
                          pipeline="classify")
with costwatch.request("classify", strategy="fine_tuned") as req:
    costwatch.record(provider="acme", model="exact-llm", latency_s=0.5)
    req.outcome("success")
while wait_for != "-" and not os.path.exists(wait_for):
    time.sleep(0.01)
for sink in costwatch.runtime().sinks:
    sink.on_budget("team-daily", Decimal(budget_spent), Decimal("50"))
print(json.dumps(costwatch.summary().as_dict()["total"]))
"""

SERVER = r"""
import sys, time
import costwatch
server = costwatch.serve_metrics(0)
print(server.port, flush=True)
time.sleep(120)
"""

SERIES = {
    "service": "mp",
    "provider": "acme",
    "model": "exact-llm",
    "stage": "generation",
    "strategy": "base",
    "feature": "faq",
    "team": "",
}


def multiproc_env_in(base: Path) -> dict[str, str]:
    directory = base / "prometheus-multiproc"
    directory.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTWATCH_")}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    env["PYTHONPATH"] = str(REPO)
    return env


def run_python(code: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def multiproc_env(tmp_path: Path) -> dict[str, str]:
    return multiproc_env_in(tmp_path)


@pytest.fixture(scope="module")
def metrics_text(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two workers record concurrently; the /metrics of a third process, after both exit."""
    base = tmp_path_factory.mktemp("multiprocess")
    multiproc_env = multiproc_env_in(base)
    first_done = base / "first-worker-set-its-budget"
    first = run_python(WORKER, "200", "tenant-a", "1.5", "-", env=multiproc_env)
    second = run_python(WORKER, "300", "tenant-b", "2.5", str(first_done), env=multiproc_env)
    _, err_first = first.communicate(timeout=60)
    assert first.returncode == 0, err_first
    first_done.touch()
    _, err_second = second.communicate(timeout=60)
    assert second.returncode == 0, err_second

    server = run_python(SERVER, env=multiproc_env)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            yield resp.read().decode()
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.communicate(timeout=10)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return found.get((name, frozenset(labels.items())))


def test_counters_from_every_worker_add_up_exactly(metrics_text: str) -> None:
    found = samples(metrics_text)
    shared = {**SERIES, "tenant": "shared"}

    # 100 + 150 calls of each worker went to tenant "shared": one series fed by two processes.
    assert sample(found, "costwatch_requests_total", **shared, status="ok") == 250
    assert (
        sample(found, "costwatch_requests_total", **SERIES, tenant="tenant-a", status="ok") == 100
    )
    assert (
        sample(found, "costwatch_requests_total", **SERIES, tenant="tenant-b", status="ok") == 150
    )
    assert sample(found, "costwatch_cost_usd_total", **shared) == 250.0
    assert sample(found, "costwatch_tokens_total", **shared, token_type="input") == 750
    assert sample(found, "costwatch_tokens_total", **shared, token_type="output") == 500
    total_usd = sum(v for (name, _), v in found.items() if name == "costwatch_cost_usd_total")
    assert total_usd == 500.0


def test_histograms_from_every_worker_add_up_exactly(metrics_text: str) -> None:
    found = samples(metrics_text)
    shared = {**SERIES, "tenant": "shared"}

    assert sample(found, "costwatch_duration_seconds_count", **shared) == 250
    assert sample(found, "costwatch_duration_seconds_sum", **shared) == 125.0
    assert sample(found, "costwatch_duration_seconds_bucket", **shared, le="0.32") == 0
    assert sample(found, "costwatch_duration_seconds_bucket", **shared, le="0.64") == 250


def test_a_budget_gauge_shows_the_most_recent_worker_value_not_a_sum(metrics_text: str) -> None:
    found = samples(metrics_text)

    assert sample(found, "costwatch_budget_spent_usd", service="mp", budget="team-daily") == 2.5
    assert sample(found, "costwatch_budget_limit_usd", service="mp", budget="team-daily") == 50


def test_fixed_costs_are_a_rate_and_outcomes_and_lifecycle_costs_add_up(
    metrics_text: str,
) -> None:
    found = samples(metrics_text)
    lifecycle = {
        "service": "mp",
        "name": "gpu-node",
        "kind": "hosting",
        "strategy": "fine_tuned",
        "pipeline": "classify",
        "feature": "",
        "team": "",
        "tenant": "",
    }
    request = {"service": "mp", "strategy": "fine_tuned", "pipeline": "classify"}
    request |= {"feature": "", "team": "", "tenant": ""}

    # both workers declared the same $2.50/h node: one rate, not $5/h
    assert [v for (n, _), v in found.items() if n == "costwatch_fixed_cost_usd_per_hour"] == [2.5]
    training = {**lifecycle, "name": "exact-base", "kind": "training"}  # 2 runs x $4
    assert found[("costwatch_lifecycle_cost_usd_total", frozenset(training.items()))] == 8.0
    assert sample(found, "costwatch_outcomes_total", **request, outcome="success") == 2
    assert sample(found, "costwatch_outcome_cost_usd_total", **request, outcome="success") == 0


def test_the_aggregate_has_no_created_series_and_no_extra_families(metrics_text: str) -> None:
    from costwatch.exporters import names

    families = {f.name for f in text_string_to_metric_families(metrics_text)}
    contract = {spec.family for spec in names.PROMETHEUS_METRICS}

    assert families <= contract
    assert "_created" not in metrics_text


def test_serve_metrics_refuses_a_missing_multiprocess_directory(
    multiproc_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**multiproc_env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing")}
    proc = run_python(SERVER, env=env)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode != 0
    assert "PROMETHEUS_MULTIPROC_DIR" in err
