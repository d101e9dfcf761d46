"""The record log: one JSON line per priced event, rotating, and as OpenTelemetry log events."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

import costwatch
from costwatch.accounting._recordlog import SCHEMA, read_record_log, record_log_files
from costwatch.exporters.recordlog import RecordLogSink


def _record_some(n: int) -> None:
    for _ in range(n):
        with costwatch.request("answer", strategy="rag") as req:
            costwatch.record(provider="openai", model="gpt-4o-mini", input_tokens=1000)
            req.outcome("success")


def test_every_line_has_the_schema_its_type_and_the_price_source(tmp_path: Path) -> None:
    sink = RecordLogSink(tmp_path / "r.jsonl")
    costwatch.configure(service="svc", strict=True, prometheus=False, warm_up=False, sinks=[sink])
    try:
        costwatch.fixed_cost("gpu", usd_per_hour="3.5", pipeline="answer")
        costwatch.record_training(model="gpt-4o-mini", training_tokens=1000)
        _record_some(1)
    finally:
        costwatch._configure.shutdown()
        sink.close()

    lines = [json.loads(raw) for raw in (tmp_path / "r.jsonl").read_text().splitlines()]

    assert [line["type"] for line in lines] == [
        "fixed_cost",
        "lifecycle",
        "call",
        "request",
        "outcome",
    ]
    assert all(line["schema"] == SCHEMA and "price_source" in line for line in lines)
    call = lines[2]
    assert (Decimal(call["cost_usd"]), call["price_source"], call["pipeline"]) == (
        Decimal("0.00015"),
        "genai-prices",
        "answer",
    )
    assert call["usage"]["input"] == 1000
    assert lines[1]["detail"]["usd_per_mtok"] == "3.00"
    assert lines[0]["usd_per_hour"] == "3.5"


def test_the_file_rotates_and_is_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    sink = RecordLogSink(path, max_bytes=4000, backups=50)
    costwatch.configure(service="svc", strict=True, prometheus=False, warm_up=False, sinks=[sink])
    try:
        _record_some(40)
    finally:
        costwatch._configure.shutdown()
        sink.close()

    files = record_log_files(path)
    lines = list(read_record_log(path))

    assert len(files) > 3 and files[-1] == str(path)
    assert len(lines) == 120
    requests = [line for line in lines if line["type"] == "request"]
    assert [int(r["request_id"].split("-")[1]) for r in requests] == sorted(
        int(r["request_id"].split("-")[1]) for r in requests
    )
    assert sum(Decimal(r["cost_usd"]) for r in requests) == Decimal("0.006")


def test_a_line_of_another_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"schema": "other/1", "type": "call"}\n')

    with pytest.raises(ValueError, match=r"r\.jsonl:1"):
        list(read_record_log(path))


def test_lines_are_also_opentelemetry_log_events() -> None:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    sink = RecordLogSink(logger_provider=provider)
    costwatch.configure(service="svc", strict=True, prometheus=False, warm_up=False, sinks=[sink])
    try:
        _record_some(1)
    finally:
        costwatch._configure.shutdown()

    logs = exporter.get_finished_logs()
    kinds = [log.log_record.attributes["costwatch.type"] for log in logs]  # type: ignore[index]
    assert kinds == ["call", "request", "outcome"]
    body = json.loads(str(logs[0].log_record.body))
    assert (body["schema"], Decimal(body["cost_usd"])) == (SCHEMA, Decimal("0.00015"))
    assert logs[0].log_record.event_name == "costwatch.record"


def test_an_event_that_cannot_be_written_never_reaches_the_host(tmp_path: Path) -> None:
    from costwatch._core.failopen import errors
    from costwatch._core.sink import LifecycleCost

    sink = RecordLogSink(tmp_path / "r.jsonl")
    costwatch.configure(service="svc", strict=False, prometheus=False, warm_up=False, sinks=[sink])
    before = errors.counts().get("exporter.recordlog", 0)
    try:
        # its detail is not (name, value) pairs: building the line's fields fails
        broken = LifecycleCost("training", "run", Decimal(1), "user", detail=(("epochs",),))  # type: ignore[arg-type]
        sink.on_lifecycle(broken)
    finally:
        costwatch._configure.shutdown()
        sink.close()
    assert errors.counts()["exporter.recordlog"] == before + 1
    assert list(read_record_log(tmp_path / "r.jsonl")) == []
