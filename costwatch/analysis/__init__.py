"""RAG or fine-tuning? Unit economics and the break-even, from live traffic.

Read a pipeline's real traffic (``traffic_from_summary``, ``traffic_from_record_log``,
``traffic_from_prometheus``), describe alternatives in a small YAML file (``load_scenarios``),
and ``compare``: per pipeline, monthly cost split into variable and fixed, cost per request and
per successful answer, the break-even monthly volume and the payback of a training run, every
figure traced to its arithmetic and price source (``render_text(..., explain=True)``,
``as_dict``, ``render_html``).  ``reprice_record_log`` re-prices a period of the record log.
"""

from __future__ import annotations

from costwatch.analysis._economics import (
    Comparison,
    Figure,
    Option,
    PipelineComparison,
    Verdict,
    break_even,
    compare,
    payback,
)
from costwatch.analysis._html import render_html
from costwatch.analysis._prometheus import traffic_from_prometheus
from costwatch.analysis._report import as_dict, render_text
from costwatch.analysis._reprice import Repricing, reprice_record_log
from costwatch.analysis._scenarios import Candidate, Scenarios, load_scenarios
from costwatch.analysis._traffic import (
    PipelineTraffic,
    Traffic,
    traffic_from_lines,
    traffic_from_record_log,
    traffic_from_summary,
)

__all__ = [
    "Candidate",
    "Comparison",
    "Figure",
    "Option",
    "PipelineComparison",
    "PipelineTraffic",
    "Repricing",
    "Scenarios",
    "Traffic",
    "Verdict",
    "as_dict",
    "break_even",
    "compare",
    "load_scenarios",
    "payback",
    "render_html",
    "render_text",
    "reprice_record_log",
    "traffic_from_lines",
    "traffic_from_prometheus",
    "traffic_from_record_log",
    "traffic_from_summary",
]
