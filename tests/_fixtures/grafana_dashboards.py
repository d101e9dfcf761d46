"""Helpers for the dashboard tests: the committed dashboards and their PromQL made concrete."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO / "dashboards"

METRIC_NAME = re.compile(r"\b(costwatch_[a-z0-9_]+)\b")
_GRAFANA_DURATIONS = re.compile(
    r"\$(?:__rate_interval|__interval|__range)\b|"
    r"\$\{(?:__rate_interval|__interval|__range)\}"
)
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
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARD_DIR.glob("*.json"))
    }


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels nested inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p.get("type") != "row"]


def queries(dashboards: dict[str, dict[str, Any]]) -> list[Query]:
    return [
        Query(name, panel["title"], target["refId"], target["expr"])
        for name, dashboard in dashboards.items()
        for panel in query_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def concrete(expr: str, *, window: str = "5m") -> str:
    """Grafana's PromQL as Prometheus would receive it with every variable set to "All"."""
    return _GRAFANA_VARIABLE.sub(".*", _GRAFANA_DURATIONS.sub(window, expr))
