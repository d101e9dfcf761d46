"""``costwatch reprice``: a period of the record log priced again after a price correction."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import costwatch
from costwatch import analysis
from costwatch.accounting._recordlog import read_record_log
from costwatch.exporters.recordlog import RecordLogSink


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_corrected_price_reprices_only_the_period_asked(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "r.jsonl"
    sink = RecordLogSink(path, clock=clock)
    costwatch.configure(
        service="s", strict=True, prometheus=False, warm_up=False, clock=clock, sinks=[sink]
    )
    try:
        for t in (1000.0, 2000.0, 3000.0):
            clock.now = t
            with costwatch.request("answer"):
                costwatch.record(
                    provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=100
                )
    finally:
        costwatch._configure.shutdown()
        sink.close()
    corrected = {
        "models": [
            {
                "provider": "openai",
                "model": "gpt-4o-mini",
                "input_per_mtok": "0.20",
                "output_per_mtok": "0.80",
            }
        ]
    }

    result = analysis.reprice_record_log(
        path, prices=corrected, start=1500.0, end=3500.0, write_to=tmp_path / "new.jsonl"
    )

    model = result.models[("openai", "gpt-4o-mini")]
    assert model.calls == 2
    assert model.recorded_usd == 2 * (Decimal("0.00015") + Decimal("0.00006"))
    assert model.repriced_usd == 2 * (Decimal("0.0002") + Decimal("0.00008"))
    assert model.sources_before == {"genai-prices"} and model.source_after == "user"
    assert "genai-prices -> user" in result.render_text()
    lines = list(read_record_log([tmp_path / "new.jsonl"]))
    assert [Decimal(line["cost_usd"]) for line in lines] == [Decimal("0.00028")] * 2
    assert all(Decimal(line["repriced_from"]) == Decimal("0.00021") for line in lines)
