"""``costwatch compare``, ``reprice`` and ``demo --html``, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

import costwatch
from costwatch import analysis
from costwatch.exporters.recordlog import RecordLogSink
from tests._fixtures.econ_traffic import SCENARIOS, record_profile

REPO = Path(__file__).resolve().parents[3]


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "costwatch", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def record_log(tmp_path: Path) -> Any:
    sink = RecordLogSink(tmp_path / "records.jsonl")
    costwatch.configure(service="svc", strict=True, prometheus=False, warm_up=False, sinks=[sink])
    try:
        record_profile()
    finally:
        costwatch._configure.shutdown()
        sink.close()
    scenarios = tmp_path / "scenarios.yaml"
    scenarios.write_text(yaml.safe_dump(SCENARIOS), encoding="utf-8")
    return tmp_path / "records.jsonl", scenarios


def test_compare_reads_the_record_log_and_prints_every_figure(record_log: Any) -> None:
    log, scenarios = record_log

    run = cli("compare", "--record-log", str(log), "--scenarios", str(scenarios), "--json")

    assert run.returncode == 0, run.stderr
    expected = analysis.as_dict(
        analysis.compare(analysis.traffic_from_record_log(log), analysis.load_scenarios(scenarios))
    )
    assert json.loads(run.stdout) == expected
    hosted = json.loads(run.stdout)["pipelines"][0]["candidates"][0]
    assert hosted["break_even_requests"] == "126475200"


def test_compare_explains_and_writes_the_html_report(record_log: Any, tmp_path: Path) -> None:
    log, scenarios = record_log
    html = tmp_path / "report.html"

    run = cli(
        "compare",
        "--record-log",
        str(log),
        "--scenarios",
        str(scenarios),
        "--explain",
        "--html",
        str(html),
    )

    assert run.returncode == 0, run.stderr
    assert "V* = (s_a*F_b - s_b*F_a) / (s_b*c_a - s_a*c_b)" in run.stdout
    assert "[bundled:openai/ft:gpt-4o-mini]" in run.stdout
    assert "vegaEmbed" in html.read_text(encoding="utf-8")


def test_compare_without_a_source_or_with_a_bad_scenario_fails_in_one_line(
    record_log: Any, tmp_path: Path
) -> None:
    log, _ = record_log
    bad = tmp_path / "bad.yaml"
    bad.write_text("candidates: [{name: x, pipeline: answer, kind: magic}]\n", encoding="utf-8")

    missing = cli("compare", "--record-log", str(tmp_path / "nope.jsonl"))
    wrong = cli("compare", "--record-log", str(log), "--scenarios", str(bad))

    assert missing.returncode == 1 and "no such file" in missing.stderr
    assert wrong.returncode == 1
    assert wrong.stderr.count("\n") == 1 and "scenarios.candidates.0.kind" in wrong.stderr


def test_reprice_prints_the_recorded_and_the_corrected_cost(
    record_log: Any, tmp_path: Path
) -> None:
    log, _ = record_log
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "models:\n  - {provider: openai, model: gpt-4o-mini, input_per_mtok: '0.30', "
        "output_per_mtok: '1.20'}\n",
        encoding="utf-8",
    )

    run = cli("reprice", str(log), "--prices", str(prices), "--json")

    assert run.returncode == 0, run.stderr
    models = {m["model"]: m for m in json.loads(run.stdout)["models"]}
    mini = models["gpt-4o-mini"]
    assert (mini["calls"], mini["price_source_now"]) == (10, "user")
    assert Decimal(mini["recorded_usd"]) == Decimal(
        "0.0027"
    )  # 10 x (1000 x $0.15 + 200 x $0.60) / 1M
    assert Decimal(mini["repriced_usd"]) == Decimal("0.0054")  # at the doubled prices


def test_the_demo_ends_with_the_comparison_and_writes_the_report(tmp_path: Path) -> None:
    html = tmp_path / "demo.html"

    run = cli("demo", "--requests", "80", "--seed", "5", "--html", str(html))

    assert run.returncode == 0, run.stderr
    assert "RAG or fine-tuning?" in run.stdout
    assert "per successful answer now" in run.stdout
    assert "the choice flips at" in run.stdout
    assert "vegaEmbed" in html.read_text(encoding="utf-8")
