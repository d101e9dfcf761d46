"""The metric contract: names.py defines every metric a dashboard or rule file references."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import pytest

from costwatch.exporters import names

REPO = Path(__file__).resolve().parents[3]

DESIGN = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
_LABEL_SETS = {
    "spend": names.SPEND_LABELS,
    "request": names.REQUEST_LABELS,
    "cache": names.CACHE_LABELS,
}


class DesignRow(NamedTuple):
    otel_name: str
    kind: str
    labels: tuple[str, ...]
    notes: str


def design_metric_rows() -> dict[str, DesignRow]:
    """The metric tables of docs/design.md, by Prometheus name (label sets expanded)."""
    section = DESIGN.split("\n## Metric contract\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, DesignRow] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`"):
            continue
        labels: list[str] = []
        for part in re.split(r"[+,]", cells[3]):
            labels.extend(_LABEL_SETS.get(part.strip(), (part.strip().strip("`"),)))
        rows[cells[0].strip("`")] = DesignRow(
            cells[1].strip("`"), cells[2], tuple(labels), cells[4]
        )
    return rows


DESIGN_ROWS = design_metric_rows()
DESIGN_TABLE = {
    name: row for name, row in DESIGN_ROWS.items() if not row.notes.startswith("extension")
}
"""docs/design.md's core metric contract (without the rows it marks as extensions)."""

_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def referenced_metrics(text: str) -> set[str]:
    """Metric names a dashboard or rule text refers to.

    Recording-rule names contain ``:`` (``service:costwatch_cost_usd:rate5m``): they are rule
    outputs, not references to exported metrics, so they are left out; so are prefixes such as
    ``costwatch_.*`` in a relabel regex or ``costwatch_*`` in a comment.
    """
    return {
        token
        for token in _IDENTIFIER.findall(text)
        if token.startswith(("costwatch_", "gen_ai_"))
        and ":" not in token
        and not token.endswith("_")
    }


def telemetry_files() -> list[Path]:
    files = [p for p in (REPO / "dashboards").rglob("*") if p.suffix in {".json", ".yml", ".yaml"}]
    files += [p for p in (REPO / "exporters").rglob("*") if p.suffix in {".yml", ".yaml"}]
    return sorted(p for p in files if p.is_file())


def test_the_scan_finds_metric_references_but_not_recording_rule_outputs() -> None:
    expr = (
        'sum by (team) (rate(costwatch_cost_usd_total{team!=""}[5m])) '
        "/ service:costwatch_spend_usd:rate1h + histogram_quantile(0.9, "
        'costwatch_duration_seconds_bucket) # every costwatch_* series; regex: "gen_ai_.*"'
    )

    assert referenced_metrics(expr) == {
        "costwatch_cost_usd_total",
        "costwatch_duration_seconds_bucket",
    }


def test_the_repository_has_telemetry_files_to_check() -> None:
    assert any(p.suffix == ".json" for p in telemetry_files()), "no dashboard found"
    assert (REPO / "exporters/prometheus/prometheus.yml") in telemetry_files()


@pytest.mark.parametrize("path", telemetry_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_metric_a_dashboard_or_rule_file_references_is_defined(path: Path) -> None:
    undefined = referenced_metrics(path.read_text(encoding="utf-8")) - names.defined_series_names()

    assert not undefined, f"{path.relative_to(REPO)} references metrics not in names.py"


def test_the_design_doc_lists_every_metric_with_its_otel_name_type_and_labels() -> None:
    assert set(DESIGN_ROWS) == {spec.name for spec in names.ALL_METRICS}
    for name, row in DESIGN_ROWS.items():
        spec = names.spec_by_name(name)
        assert (row.otel_name, row.kind, row.labels) == (spec.otel_name, spec.kind, spec.labels)
        assert spec.extension == (row.notes.startswith("extension")), name


def test_spend_metrics_carry_the_common_spend_labels() -> None:
    assert names.SPEND_LABELS == (
        "service",
        "provider",
        "model",
        "stage",
        "strategy",
        "feature",
        "team",
        "tenant",
    )
    for spec in (
        names.COST_USD,
        names.TOKENS,
        names.REQUESTS,
        names.DURATION,
        names.CONTEXT_TOKENS,
        names.CONTEXT_COST,
        names.UNPRICED,
    ):
        assert spec.labels[:8] == names.SPEND_LABELS, spec.name


def test_extensions_beyond_the_design_table_are_marked() -> None:
    extensions = {s.name for s in names.PROMETHEUS_METRICS if s.name not in DESIGN_TABLE}

    assert extensions == {
        "costwatch_label_overflow_total",
        "costwatch_outcomes_unmatched_total",
        "costwatch_budget_state_lost_total",
    }
    assert all(names.spec_by_name(name).extension for name in extensions)


def test_every_series_name_belongs_to_exactly_one_metric() -> None:
    series = [s for spec in names.ALL_METRICS for s in spec.series_names()]

    assert len(series) == len(set(series))
    assert len({spec.otel_name for spec in names.ALL_METRICS}) == len(names.ALL_METRICS)


def test_buckets_follow_the_genai_advice() -> None:
    assert tuple(round(0.01 * 2**i, 2) for i in range(14)) == names.DURATION_BUCKETS
    assert tuple(4**i for i in range(14)) == names.TOKEN_USAGE_BUCKETS
    assert names.DURATION.buckets == names.GEN_AI_OPERATION_DURATION.buckets
    assert list(names.REQUEST_COST_BUCKETS) == sorted(names.REQUEST_COST_BUCKETS)


def test_gauges_choose_a_multiprocess_mode() -> None:
    for spec in names.PROMETHEUS_METRICS:
        assert bool(spec.multiprocess_mode) == (spec.kind == "gauge"), spec.name


_UNIT_SUFFIX = {"s": "seconds", "": ""}


def otel_to_prometheus(spec: names.MetricSpec) -> str:
    """The OTel→Prometheus name translation of the collector's Prometheus exporter.

    Dots become underscores; a unit is appended in its Prometheus word unless the name already
    ends with it (annotations in braces such as ``{token}`` are dropped); monotonic counters end
    in ``_total``.
    """
    name = spec.otel_name.replace(".", "_")
    unit = "" if spec.otel_unit.startswith("{") else _UNIT_SUFFIX[spec.otel_unit]
    if unit and not name.endswith(f"_{unit}"):
        name = f"{name}_{unit}"
    if spec.kind == "counter":
        name = f"{name}_total"
    return name


@pytest.mark.parametrize("spec", names.ALL_METRICS, ids=lambda s: s.otel_name)
def test_the_otel_name_reaches_prometheus_under_the_contract_name(spec: names.MetricSpec) -> None:
    assert otel_to_prometheus(spec) == spec.name


def test_cost_is_a_counter_without_a_unit_so_it_arrives_as_cost_usd_total() -> None:
    assert names.COST_USD.otel_name == "costwatch.cost.usd"
    assert names.COST_USD.otel_unit == ""
    assert otel_to_prometheus(names.COST_USD) == "costwatch_cost_usd_total"
