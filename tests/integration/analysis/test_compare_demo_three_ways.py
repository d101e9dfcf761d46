"""Issue 17's acceptance: the demo's traffic read from ``summary()``, from a real Prometheus
scraping the demo, and from its record log gives the same comparison: every figure (variable,
fixed and per-success costs of each option, break-even volumes, paybacks...) exactly equal
between ``summary()`` and the record log, and within float rounding through Prometheus."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pytest

from costwatch import analysis
from costwatch._demo.comparison import DEMO_SCENARIOS
from tests._fixtures.prometheus_proc import PrometheusProcess

ROOT = Path(__file__).resolve().parents[3]
REQUESTS = 200


def figures(tree: Any, path: str = "") -> dict[str, Decimal | None]:
    """Every number of an ``as_dict`` comparison (decimal strings), by its path; text (the
    arithmetic, names, sources) left out."""
    out: dict[str, Decimal | None] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(figures(value, f"{path}/{key}"))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            named = value if isinstance(value, dict) else {}
            name = named.get("pipeline") or named.get("name") or named.get("label") or i
            out.update(figures(value, f"{path}/{name}"))
    elif tree is None:
        out[path] = None
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[path] = Decimal(str(tree))
    elif isinstance(tree, str):
        try:
            number = Decimal(tree)
        except InvalidOperation:
            return out
        if number.is_finite():
            out[path] = number
    return out


def _scraped_after(prom: PrometheusProcess, moment: float) -> bool:
    _, body = prom.query('max(timestamp(up{job="costwatch"}))')
    result = body.get("data", {}).get("result")
    return bool(result) and float(result[0]["value"][1]) > moment


def _wait(prom: PrometheusProcess, moment: float) -> None:
    deadline = time.monotonic() + 30
    while not _scraped_after(prom, moment):
        if time.monotonic() > deadline:
            raise AssertionError("Prometheus did not scrape the demo")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def three_ways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    log = tmp_path_factory.mktemp("demo") / "records.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests._fixtures.demo_ledger_proc", str(log), str(REQUESTS)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    prom = None
    try:
        port = json.loads(proc.stdout.readline())["port"]
        prom = PrometheusProcess([f"127.0.0.1:{port}"])
        prom.start()
        start = time.time()
        _wait(prom, start)  # a scrape before the first call: every counter starts from there
        proc.stdin.write("go\n")
        proc.stdin.flush()
        from_summary = json.loads(proc.stdout.readline())["comparison"]
        done = time.time()
        _wait(prom, done)  # a scrape after the last call
        scenarios = analysis.load_scenarios(DEMO_SCENARIOS)
        from_prometheus = analysis.compare(
            analysis.traffic_from_prometheus(prom.url, start, time.time(), service="demo"),
            scenarios,
        )
        from_log = analysis.compare(analysis.traffic_from_record_log(log), scenarios)
        yield {
            "summary": from_summary,
            "record log": analysis.as_dict(from_log),
            "prometheus": analysis.as_dict(from_prometheus),
        }
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        if prom is not None:
            prom.stop()


def test_the_comparison_has_every_pipeline_and_its_figures(three_ways: dict[str, Any]) -> None:
    summary = three_ways["summary"]
    assert [p["pipeline"] for p in summary["pipelines"]] == [
        "answer_question",
        "classify_ticket",
        "draft_reply",
        "summarize_thread",
    ]
    assert len(figures(summary)) > 100


def test_the_record_log_gives_exactly_the_figures_summary_gives(
    three_ways: dict[str, Any],
) -> None:
    expected = figures(three_ways["summary"])
    got = figures(three_ways["record log"])

    assert got.keys() == expected.keys()
    differ = {k: (expected[k], got[k]) for k in expected if got[k] != expected[k]}
    assert not differ
    # the text too: every figure's arithmetic and price source reads the same
    assert {**three_ways["record log"], "source": ""} == {**three_ways["summary"], "source": ""}


def test_prometheus_gives_the_figures_summary_gives_up_to_float_rounding(
    three_ways: dict[str, Any],
) -> None:
    expected = figures(three_ways["summary"])
    got = figures(three_ways["prometheus"])

    assert got.keys() == expected.keys()
    differ = {}
    for key, value in expected.items():
        other = got[key]
        if value is None or other is None:
            if value is not other:
                differ[key] = (value, other)
        elif not math.isclose(float(value), float(other), rel_tol=1e-9, abs_tol=1e-12):
            differ[key] = (value, other)
    assert not differ
