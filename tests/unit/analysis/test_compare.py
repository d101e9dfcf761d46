"""``costwatch.analysis.compare`` on a hand-built profile: every figure equals a hand computation,
and the profile read from ``summary()`` and from the record log gives the same result."""

from __future__ import annotations

from decimal import Decimal as D  # noqa: N817 - the hand computations read better
from pathlib import Path
from typing import Any

import pytest

import costwatch
from costwatch import analysis
from costwatch.exporters.recordlog import RecordLogSink
from tests._fixtures.econ_traffic import SCENARIOS, record_profile


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        self.now += 0.5  # every reading moves the clock: the period is deterministic
        return self.now


@pytest.fixture
def recorded(tmp_path: Path) -> Any:
    clock = Clock()
    log = RecordLogSink(tmp_path / "records.jsonl", clock=clock)
    costwatch.configure(
        service="svc", strict=True, prometheus=False, warm_up=False, clock=clock, sinks=[log]
    )
    try:
        record_profile()
        yield costwatch.summary(), tmp_path / "records.jsonl"
    finally:
        costwatch._configure.shutdown()
        log.close()


def test_every_figure_equals_the_hand_computation(recorded: Any) -> None:
    summary, _ = recorded
    result = analysis.compare(
        analysis.traffic_from_summary(summary), analysis.load_scenarios(SCENARIOS)
    )
    answer, classify = result.pipelines
    v = D(1_000_000)

    # -- answer, observed: variable per request by component
    current = answer.current
    assert (answer.pipeline, answer.monthly_requests) == ("answer", v)
    assert {f.label: f.usd for f in current.variable} == {
        "fresh_input": D("0.00009"),  # 600 tok x $0.15/1M
        "retrieved_context": D("0.00006"),  # 400 tok x $0.15/1M
        "output": D("0.00012"),  # 200 tok x $0.60/1M
        "embedding": D("0.000001"),  # 50 tok x $0.02/1M
        "retrieval": D("0.000004"),
    }
    c_a = D("0.000275")
    assert current.variable_per_request == c_a
    # fixed per month: the vector store, the indexing run ($0.02) every 15 days
    assert {f.label: f.usd for f in current.fixed} == {
        "vector_store": D(50),
        "indexing_amortised": D("0.04"),
    }
    f_a = D("50.04")
    assert current.monthly(v) == f_a + c_a * v == D("325.04")
    assert current.per_request(v) == D("325.04") / v
    assert (current.success_rate, current.success_assumed) == (D("0.8"), False)
    assert current.per_success(v) == D("325.04") / (v * D("0.8")) == D("0.0004063")

    # -- the hosted fine-tune: 200 tok x $0.30/1M + 200 tok x $1.20/1M; $18 a run a month
    hosted = answer.candidates[0]
    c_b = D("0.00006") + D("0.00024")
    assert hosted.option.variable_per_request == c_b
    assert {f.label: f.usd for f in hosted.option.fixed} == {
        "training_amortised": D("18"),  # 2M tok x 3 epochs x $3.00/1M
        "hosting": D("1224"),  # $1.70 x 720 h
    }
    f_b = D("1242")
    assert hosted.option.monthly(v) == f_b + c_b * v == D("1542")
    assert hosted.option.per_success(v) == D("1542") / (v * D("0.9"))
    # break-even on cost per successful answer
    v_star = (D("0.8") * f_b - D("0.9") * f_a) / (D("0.9") * c_a - D("0.8") * c_b)
    assert v_star == D("126475200")
    assert hosted.break_even_requests == v_star
    assert hosted.cheaper_above == "ft-hosted"
    assert hosted.payback_months is None  # $1,524 a month before training > $325.04
    assert hosted.success_range == (D("0.8"), D("1.0"))
    assert hosted.per_success_range == (D("1542") / (v * D("0.8")), D("1542") / v)

    # -- the serverless fine-tune: no hosting, pays its $18 run back
    serverless = answer.candidates[1]
    assert serverless.option.monthly(v) == D("18") + D("300")
    assert serverless.payback_months == D(18) / (D("325.04") - D("300"))
    assert serverless.break_even_requests is None  # cheaper per success at every volume
    assert serverless.cheaper_above == "ft-serverless"

    # -- classify, observed: ft:gpt-4o-mini, 300 tok in, 5 out
    observed = classify.current
    assert observed.variable_per_request == D("0.00009") + D("0.000006")
    assert {f.label: f.usd for f in observed.fixed} == {
        "hosting": D("1224"),
        "training_amortised": D("3.00"),  # 500k x 2 x $3.00/1M, every 30 days
    }
    assert observed.success_rate == D("0.75")
    assert observed.training_run_usd == D("3.00")
    # -- its RAG candidate on gpt-4o-mini
    rag = classify.candidates[0].option
    assert {f.label: f.usd for f in rag.variable} == {
        "fresh_input": D("300") * D("0.15") / 10**6,
        "retrieved_context": D("800") * D("0.15") / 10**6,
        "output": D("5") * D("0.6") / 10**6,
        "embedding": D("20") * D("0.02") / 10**6,
        "retrieval": D("0.000004"),
        "rerank": D("0.002"),  # Cohere: $2 per 1,000 searches
    }
    assert {f.label: f.usd for f in rag.fixed} == {
        "vector_store": D(25),
        "indexing_amortised": D("0.03"),  # 1000 docs x 500 tok x $0.02/1M = $0.01, x 30/10
    }
    c_rag = D("0.0021724")
    assert rag.variable_per_request == c_rag
    v_star = (D("0.75") * D("25.03") - D("0.95") * D("1227")) / (
        D("0.95") * D("0.000096") - D("0.75") * c_rag
    )
    # below ~745,646 requests a month RAG's $25.03 of fixed costs beat the $1,227 of hosting and
    # training; above it the fine-tuned classifier's $0.000096 a request wins
    assert classify.candidates[0].break_even_requests == v_star
    assert 745_645 < v_star < 745_646
    assert classify.candidates[0].cheaper_above == "classify (observed)"
    assert classify.candidates[0].payback_months is None  # RAG has no training run


def test_summary_and_record_log_give_the_same_comparison(recorded: Any) -> None:
    summary, path = recorded
    scenarios = analysis.load_scenarios(SCENARIOS)

    from_summary = analysis.as_dict(
        analysis.compare(analysis.traffic_from_summary(summary), scenarios)
    )
    from_log = analysis.as_dict(analysis.compare(analysis.traffic_from_record_log(path), scenarios))

    assert from_log["pipelines"] == from_summary["pipelines"]
    assert from_log["source"].startswith("record log ")


def test_explain_prints_the_arithmetic_and_the_price_sources(recorded: Any) -> None:
    summary, _ = recorded
    text = analysis.render_text(
        analysis.compare(
            analysis.traffic_from_summary(summary), analysis.load_scenarios(SCENARIOS)
        ),
        explain=True,
    )

    assert "200 tok (given) x $0.3/1M  [bundled:openai/ft:gpt-4o-mini]" in text
    assert "2000000 tok x 3 epochs x $3/1M = $18 a run" in text
    assert "openai.com/api/pricing" in text
    assert "1 search a query x $0.002 a search  [bundled:cohere/rerank-v3.5]" in text
    assert "break-even at 126475200 requests a month; above it ft-hosted is cheaper" in text
    assert "V* = (s_a*F_b - s_b*F_a) / (s_b*c_a - s_a*c_b)" in text
    assert "observed: 8 of 10 requests with an outcome" in text


def test_the_monthly_volume_defaults_to_the_observed_rate(recorded: Any) -> None:
    summary, _ = recorded
    traffic = analysis.traffic_from_summary(summary)

    answer = analysis.compare(traffic).pipelines[0]

    assert answer.monthly_requests == D(10) * D(2_592_000) / traffic.period_s
    assert "observed: 10 requests in" in answer.volume_note


def test_a_bad_scenario_names_the_field() -> None:
    with pytest.raises(costwatch.ConfigError, match=r"scenarios\.candidates\.0\.kind"):
        analysis.load_scenarios({"candidates": [{"name": "x", "pipeline": "p", "kind": "magic"}]})
