"""Helpers for the dashboard tests: the committed dashboards, their PromQL made concrete, and a
real ``prometheus`` process on a free loopback port to evaluate it."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests._fixtures.redis_proc import free_port

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO / "dashboards"

METRIC_NAME = re.compile(r"\b(costwatch_[a-z0-9_]+)\b")
_GRAFANA_DURATIONS = re.compile(r"\$(?:__rate_interval|__interval|__range)\b|"
                                r"\$\{(?:__rate_interval|__interval|__range)\}")
_GRAFANA_VARIABLE = re.compile(r"\$\{\w+(?::\w+)?\}|\$\w+")


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref_id: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref_id}"


def load_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> parsed dashboard, for every ``dashboards/*.json``."""
    return {path.name: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels nested inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p.get("type") != "row"]


def queries(dashboards: dict[str, dict[str, Any]]) -> list[Query]:
    return [Query(name, panel["title"], target["refId"], target["expr"])
            for name, dashboard in dashboards.items()
            for panel in query_panels(dashboard)
            for target in panel.get("targets", [])]


def concrete(expr: str, *, window: str = "5m") -> str:
    """Grafana's PromQL as Prometheus would receive it with every variable set to "All"."""
    return _GRAFANA_VARIABLE.sub(".*", _GRAFANA_DURATIONS.sub(window, expr))


class PrometheusProcess:
    """A real Prometheus with a temp data dir, optionally scraping ``targets`` every second."""

    def __init__(self, targets: Sequence[str] = ()) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="costwatch-prometheus-"))
        self.targets = tuple(targets)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        lines = ["global:", "  scrape_interval: 1s", "  evaluation_interval: 1s",
                 "scrape_configs:"]
        if self.targets:
            lines += ["  - job_name: costwatch", "    static_configs:",
                      "      - targets: [" + ", ".join(f'"{t}"' for t in self.targets) + "]"]
        else:
            lines[-1] += " []"
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        config = self.dir / "prometheus.yml"
        config.write_text(self._config(), encoding="utf-8")
        self.log = (self.dir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=0.5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"prometheus did not become ready on port {self.port}: "
                           f"{(self.dir / 'prometheus.log').read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if hasattr(self, "log"):
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def api(self, path: str, **params: str) -> tuple[int, dict[str, Any]]:
        """GET from the HTTP API; returns (HTTP status, decoded body) for errors too."""
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def query(self, expr: str) -> tuple[int, dict[str, Any]]:
        return self.api("/api/v1/query", query=expr)
