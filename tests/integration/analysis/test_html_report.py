"""``compare --html``: one self-contained file that renders in a real headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import costwatch
from costwatch import analysis
from tests._fixtures.chromium import render
from tests._fixtures.econ_traffic import SCENARIOS, record_profile


def _report(tmp_path: Path) -> Path:
    costwatch.configure(service="svc", strict=True, prometheus=False, warm_up=False)
    try:
        record_profile()
        comparison = analysis.compare(
            analysis.traffic_from_summary(costwatch.summary()), analysis.load_scenarios(SCENARIOS)
        )
    finally:
        costwatch._configure.shutdown()
    page = tmp_path / "report.html"
    page.write_text(analysis.render_html(comparison), encoding="utf-8")
    return page


def test_the_report_loads_nothing_from_the_network(tmp_path: Path) -> None:
    text = _report(tmp_path).read_text(encoding="utf-8")

    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+href=[\"']https?:", text)
    assert "vegaEmbed" in text


def test_the_report_renders_its_charts_without_console_errors(tmp_path: Path) -> None:
    rendered = render(_report(tmp_path), tmp_path / "report.png")

    assert rendered.console == []
    # Vega drew the views as SVG: a cost line per option (5), a stacked bar chart per pipeline
    assert re.search(r'<svg[^>]*class="marks"', rendered.dom)
    assert len(re.findall(r'class="mark-line', rendered.dom)) == 5
    assert len(re.findall(r'class="mark-rect', rendered.dom)) == 2
    # the tables of figures, with the break-even of the hand-computed profile
    assert "126475200" in rendered.dom
    assert "bundled:openai/ft:gpt-4o-mini" in rendered.dom
    png = rendered.screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 30_000  # charts, not a blank page
