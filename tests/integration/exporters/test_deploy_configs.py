"""The telemetry deploy configs under exporters/: Prometheus checked by promtool, the collector
config parsed and its pipelines cross-checked (no collector binary is available here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
PROMETHEUS_YML = REPO / "exporters/prometheus/prometheus.yml"
COLLECTOR_YML = REPO / "exporters/otel-collector/config.yaml"
COMPOSE_YML = REPO / "docker-compose.yml"


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        raise RuntimeError("promtool is not installed (apt-get install prometheus)")
    return binary


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    return load(COLLECTOR_YML)


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    return load(PROMETHEUS_YML)


def scrape_targets(prometheus: dict[str, Any]) -> dict[str, set[str]]:
    return {
        job["job_name"]: {
            t for static in job.get("static_configs", []) for t in static.get("targets", [])
        }
        for job in prometheus["scrape_configs"]
    }


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_promtool_accepts_the_prometheus_config(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_YML)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_scrapes_the_demo_app_and_the_collector(
    prometheus: dict[str, Any], collector: dict[str, Any]
) -> None:
    targets = scrape_targets(prometheus)
    exporter_port = port_of(collector["exporters"]["prometheus"]["endpoint"])

    assert "app:8000" in targets["costwatch-app"]
    assert f"otel-collector:{exporter_port}" in targets["otel-collector"]


def test_costwatch_series_are_scraped_once_not_from_both_paths(
    prometheus: dict[str, Any],
) -> None:
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    drops = [
        rule
        for rule in jobs["otel-collector"].get("metric_relabel_configs", [])
        if rule.get("action") == "drop" and rule.get("source_labels") == ["__name__"]
    ]

    assert [rule["regex"] for rule in drops] == ["costwatch_.*"]
    assert not jobs["costwatch-app"].get("metric_relabel_configs")


def test_every_pipeline_component_is_defined_and_every_defined_one_is_used(
    collector: dict[str, Any],
) -> None:
    pipelines = collector["service"]["pipelines"]
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in pipelines.items():
        assert pipeline.get("receivers"), f"{name} has no receiver"
        assert pipeline.get("exporters"), f"{name} has no exporter"
        for kind in used:
            for component in pipeline.get(kind, []):
                assert component in (collector.get(kind) or {}), f"{name}: {component} undefined"
                used[kind].add(component)
    for kind, names_used in used.items():
        assert set(collector.get(kind) or {}) == names_used, f"unused {kind}"
    assert set(collector["service"].get("extensions", [])) == set(collector.get("extensions", {}))


def test_the_metrics_pipeline_takes_otlp_in_and_puts_prometheus_out(
    collector: dict[str, Any],
) -> None:
    metrics = collector["service"]["pipelines"]["metrics"]

    assert metrics["receivers"] == ["otlp"]
    assert "prometheus" in metrics["exporters"]
    # The memory limiter must come first to protect the collector, batching last.
    assert metrics["processors"][0] == "memory_limiter"
    assert metrics["processors"][-1] == "batch"
    exporter = collector["exporters"]["prometheus"]
    assert exporter.get("add_metric_suffixes", True) is True, (
        "without suffixes costwatch.cost.usd would not arrive as costwatch_cost_usd_total"
    )
    assert not exporter.get("namespace"), "a namespace would rename every contract metric"


def test_the_collector_listens_where_the_app_pushes_and_compose_publishes(
    collector: dict[str, Any],
) -> None:
    compose = load(COMPOSE_YML)["services"]
    protocols = collector["receivers"]["otlp"]["protocols"]
    app_endpoint = compose["app"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    published = {int(p.rsplit(":", 1)[1]) for p in compose["otel-collector"].get("ports", [])}

    assert port_of(protocols["http"]["endpoint"]) == port_of(app_endpoint)
    assert {port_of(p["endpoint"]) for p in protocols.values()} <= published
    for protocol in protocols.values():
        assert protocol["endpoint"].startswith("0.0.0.0:"), "other containers must reach it"
    mounted = {v.split(":")[0] for v in compose["otel-collector"]["volumes"]}
    assert "./exporters/otel-collector/config.yaml" in mounted
