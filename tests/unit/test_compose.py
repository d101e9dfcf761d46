"""The docker-compose demo stack, checked structurally (Docker itself cannot run here).

Each service must find the files it mounts in the repository, and the services must agree with
each other: the app's command parses with the real CLI, its environment configures costwatch,
Prometheus scrapes the app and loads the mounted rules, Grafana finds its datasource and the
dashboards where its provider looks, and the collector listens where the app pushes OTLP.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from costwatch._core.settings import load_settings
from costwatch.cli import cli

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
EXPECTED_SERVICES = {"app", "redis", "prometheus", "alertmanager", "grafana", "otel-collector"}


def _bind_mounts(service: str) -> list[tuple[Path, PurePosixPath]]:
    """(repository path, container path) of each bind mount; named volumes left out."""
    mounts = []
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((REPO / source).resolve(), PurePosixPath(target)))
    return mounts


def _in_repo(service: str, container_path: str) -> Path:
    """The repository file a container path of ``service`` is mounted from."""
    path = PurePosixPath(container_path)
    for source, target in _bind_mounts(service):
        if path == target or target in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{container_path} is not mounted into {service}")


def _load(service: str, container_path: str) -> Any:
    return yaml.safe_load(_in_repo(service, container_path).read_text(encoding="utf-8"))


def _command(service: str) -> list[str]:
    command = SERVICES[service]["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def _flag(service: str, name: str) -> str:
    for arg in _command(service):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{service} has no {name}")


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _prometheus_config() -> dict[str, Any]:
    config: dict[str, Any] = _load("prometheus", _flag("prometheus", "--config.file"))
    return config


def _scrape_targets() -> set[str]:
    return {
        target
        for job in _prometheus_config().get("scrape_configs", [])
        for static in job.get("static_configs", [])
        for target in static.get("targets", [])
    }


# --- the stack -------------------------------------------------------------------------------


def test_the_stack_has_the_app_and_its_telemetry_pipeline() -> None:
    assert set(SERVICES) == EXPECTED_SERVICES


def test_every_pulled_image_is_pinned_to_a_version() -> None:
    for name, service in SERVICES.items():
        if "build" in service:
            continue
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"{name}: {image} is not pinned"


def test_every_bind_mounted_path_exists_in_the_repository() -> None:
    mounts = [(name, source) for name in SERVICES for source, _ in _bind_mounts(name)]
    assert len(mounts) >= 7
    for name, source in mounts:
        assert source.exists(), f"{name} mounts {source.relative_to(REPO)}, which does not exist"
        assert REPO in source.parents or source == REPO


def test_host_ports_are_published_on_loopback_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


def test_services_depend_only_on_services_of_the_stack() -> None:
    for name, service in SERVICES.items():
        depends = service.get("depends_on", [])
        assert set(depends) <= EXPECTED_SERVICES - {name}, name


# --- the app ---------------------------------------------------------------------------------


def test_the_app_is_built_from_the_dockerfile_at_the_repository_root() -> None:
    build = SERVICES["app"]["build"]
    assert (REPO / build["context"]).resolve() == REPO
    assert (REPO / build["context"] / build["dockerfile"]).is_file()


def test_the_dockerfile_installs_the_demo_and_otel_extras_and_runs_the_demo() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("python:3.11")
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    assert 'pip install ".[demo,otel]"' in runs
    for op, arg in instructions:
        if op == "COPY":
            *sources, _ = arg.split()
            for source in sources:
                assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
    cmd = [arg for op, arg in instructions if op == "CMD"]
    assert json.loads(cmd[-1]) == _command("app"), "docker run and compose must run the same"


def test_the_app_command_is_the_demo_serving_metrics_forever_to_other_containers() -> None:
    command = _command("app")
    assert command[0] == "costwatch"
    name, *rest = command[1:]
    assert name == "demo"
    args = cli.commands[name].make_context(name, rest).params
    assert args["serve"] == 8000
    assert args["duration"] == 0, "--duration 0 means run until stopped"
    assert args["addr"] == "0.0.0.0", "Prometheus scrapes from another container"


def test_the_app_environment_configures_costwatch_for_redis_and_otel() -> None:
    env = {k: str(v) for k, v in SERVICES["app"]["environment"].items()}
    settings = load_settings({}, environ=env)
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.otel is True
    assert settings.prometheus is True
    endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.hostname == "otel-collector" and endpoint.port == 4318
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf", (
        "the otel extra ships the OTLP/HTTP exporter"
    )
    assert urlsplit(settings.redis_url).hostname in SERVICES


# --- Prometheus and Alertmanager ------------------------------------------------------------


def test_prometheus_scrapes_the_app_metrics_port() -> None:
    assert "app:8000" in _scrape_targets()


def test_prometheus_loads_rule_files_from_the_mounted_rules_directory() -> None:
    config = _prometheus_config()
    config_dir = PurePosixPath(_flag("prometheus", "--config.file")).parent
    patterns = config.get("rule_files", [])
    assert patterns, "prometheus.yml loads no rule files"
    matched: list[Path] = []
    for pattern in patterns:
        container = PurePosixPath(pattern)
        if not container.is_absolute():
            container = config_dir / container
        directory = _in_repo("prometheus", str(container.parent))
        matched += sorted(directory.glob(container.name))
    assert matched, f"{patterns} match no file under exporters/prometheus/rules"


def test_prometheus_sends_alerts_to_the_alertmanager_service() -> None:
    alerting = _prometheus_config()["alerting"]["alertmanagers"]
    targets = {t for am in alerting for s in am.get("static_configs", []) for t in s["targets"]}
    assert "alertmanager:9093" in targets
    config = _in_repo("alertmanager", _flag("alertmanager", "--config.file"))
    assert config.is_file(), f"{config.relative_to(REPO)} does not exist"


def test_prometheus_scrapes_every_prometheus_exporter_of_the_collector() -> None:
    collector = _load("otel-collector", _flag("otel-collector", "--config"))
    ports = [
        int(str(cfg["endpoint"]).rsplit(":", 1)[1])
        for name, cfg in (collector.get("exporters") or {}).items()
        if name.split("/")[0] == "prometheus" and cfg
    ]
    for port in ports:
        assert f"otel-collector:{port}" in _scrape_targets()


# --- Grafana ---------------------------------------------------------------------------------


def _grafana_provisioning(kind: str) -> list[Path]:
    directory = _in_repo("grafana", f"/etc/grafana/provisioning/{kind}")
    files = sorted(directory.glob("*.yml"))
    assert files, f"no {kind} provisioning file"
    return files


def test_grafana_provisions_the_prometheus_service_under_the_dashboards_uid() -> None:
    datasources = [
        ds
        for f in _grafana_provisioning("datasources")
        for ds in yaml.safe_load(f.read_text(encoding="utf-8"))["datasources"]
    ]
    prometheus = [ds for ds in datasources if ds["type"] == "prometheus"]
    assert len(prometheus) == 1
    assert prometheus[0]["uid"] == "prometheus"
    assert prometheus[0]["url"] == "http://prometheus:9090"
    assert prometheus[0]["isDefault"] is True


def test_grafana_datasource_interval_matches_the_scrape_interval() -> None:
    datasource = yaml.safe_load(_grafana_provisioning("datasources")[0].read_text())
    interval = datasource["datasources"][0]["jsonData"]["timeInterval"]
    assert interval == _prometheus_config()["global"]["scrape_interval"], (
        "$__rate_interval needs Grafana to know the scrape interval"
    )


def test_grafana_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    providers = [
        p
        for f in _grafana_provisioning("dashboards")
        for p in yaml.safe_load(f.read_text(encoding="utf-8"))["providers"]
    ]
    assert len(providers) == 1 and providers[0]["type"] == "file"
    folder = _in_repo("grafana", providers[0]["options"]["path"])
    assert folder == REPO / "dashboards"
    assert sorted(folder.glob("*.json")), "the provider would load no dashboard"


def test_grafana_home_dashboard_is_a_provisioned_dashboard() -> None:
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    dashboard = json.loads(_in_repo("grafana", home).read_text(encoding="utf-8"))
    assert dashboard["uid"] == "costwatch-overview"


# --- OpenTelemetry collector -----------------------------------------------------------------


def test_the_collector_accepts_otlp_http_from_other_containers() -> None:
    collector = _load("otel-collector", _flag("otel-collector", "--config"))
    http = collector["receivers"]["otlp"]["protocols"]["http"]
    endpoint = (http or {}).get("endpoint", "localhost:4318")
    host, port = str(endpoint).rsplit(":", 1)
    assert host in {"0.0.0.0", ""} and port == "4318", (
        f"{endpoint}: the app container cannot reach a collector bound to {host}"
    )
    pipelines = collector["service"]["pipelines"]
    assert any(
        name.split("/")[0] == "metrics" and "otlp" in p["receivers"]
        for name, p in pipelines.items()
    )


@pytest.mark.parametrize("service", sorted(EXPECTED_SERVICES - {"app", "redis"}))
def test_mounted_configs_parse_as_yaml(service: str) -> None:
    for source, _ in _bind_mounts(service):
        for path in [source] if source.is_file() else sorted(source.rglob("*.y*ml")):
            assert yaml.safe_load(path.read_text(encoding="utf-8")) is not None, path


def test_redis_keeps_budget_state_across_restarts_and_evicts_only_keys_with_a_ttl() -> None:
    """Budget spend must survive a restart and never be picked by eviction (docs/scaling.md)."""
    redis = COMPOSE["services"]["redis"]
    command = [str(word) for word in redis["command"]]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] in {"noeviction", "volatile-lru", "volatile-lfu"}
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
