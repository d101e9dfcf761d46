"""The OpenTelemetry sink, read through the SDK's InMemoryMetricReader and span exporter."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry import metrics as metrics_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from costwatch._core.record import CostRecord, TokenUsage
from costwatch._core.sink import CacheEvent, FixedCost, LifecycleCost, Outcome, RequestEnd
from costwatch.exporters import names
from costwatch.exporters.otel import OTelSink
from costwatch.exporters.prometheus import PrometheusSink

TOKEN_BUCKETS = [
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
]
DURATION_BUCKETS = [
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
]


def make_record(**overrides: Any) -> CostRecord:
    fields: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "stage": "generation",
        "usage": TokenUsage(input=900, cache_read=100, output=120, reasoning=30),
        "cost_usd": Decimal("0.000237"),
        "latency_s": 0.7,
        "strategy": "rag",
        "service": "svc",
        "feature": "faq",
        "team": "support",
        "tenant": "acme",
        "operation": "chat",
        "response_model": "gpt-4o-mini-2024-07-18",
        "timestamp": 1_700_000_000.0,
    }
    fields.update(overrides)
    return CostRecord(**fields)


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> MeterProvider:
    return MeterProvider(metric_readers=[reader])


@pytest.fixture
def sink(provider: MeterProvider) -> OTelSink:
    return OTelSink(provider, service="svc", label_limits={"tenant": 100})


def collect(reader: InMemoryMetricReader) -> dict[str, Metric]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }


def points(metric: Metric) -> list[Any]:
    return list(metric.data.data_points)


def test_token_usage_follows_the_genai_semantic_conventions(
    sink: OTelSink, reader: InMemoryMetricReader
) -> None:
    sink.on_record(make_record())

    metric = collect(reader)["gen_ai.client.token.usage"]
    assert metric.unit == "{token}"
    by_type = {p.attributes["gen_ai.token.type"]: p for p in points(metric)}
    assert by_type["input"].sum == 1000  # fresh input + cache reads: all input-side tokens
    assert by_type["output"].sum == 150  # visible output + reasoning
    for point in by_type.values():
        assert isinstance(point, HistogramDataPoint)
        assert list(point.explicit_bounds) == TOKEN_BUCKETS
        assert {k: v for k, v in (point.attributes or {}).items() if k != "gen_ai.token.type"} == {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        }


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("aws", "aws.bedrock"),
        ("azure", "azure.ai.openai"),
        ("google", "gcp.gen_ai"),
        ("x-ai", "x_ai"),
        ("groq", "groq"),
        ("anthropic", "anthropic"),
    ],
)
def test_the_provider_takes_its_well_known_semantic_convention_name(
    sink: OTelSink, reader: InMemoryMetricReader, label: str, name: str
) -> None:
    sink.on_record(make_record(provider=label))

    metric = collect(reader)["gen_ai.client.operation.duration"]
    assert {p.attributes["gen_ai.provider.name"] for p in points(metric)} == {name}


def test_operation_duration_carries_error_type_only_on_failure(
    sink: OTelSink, reader: InMemoryMetricReader
) -> None:
    sink.on_record(make_record(latency_s=0.5))
    sink.on_record(make_record(latency_s=2.0, status="error", error_type="RateLimitError"))

    metric = collect(reader)["gen_ai.client.operation.duration"]
    assert metric.unit == "s"
    by_error = {p.attributes.get("error.type"): p for p in points(metric)}
    assert set(by_error) == {None, "RateLimitError"}
    assert by_error[None].sum == 0.5
    assert by_error["RateLimitError"].sum == 2.0
    assert list(by_error[None].explicit_bounds) == DURATION_BUCKETS


def test_embeddings_report_input_tokens_and_retrievals_report_no_tokens(
    sink: OTelSink, reader: InMemoryMetricReader
) -> None:
    sink.on_record(
        make_record(
            stage="embedding",
            operation="embeddings",
            model="text-embedding-3-small",
            response_model="",
            usage=TokenUsage(input=64),
        )
    )
    sink.on_record(
        make_record(
            stage="retrieval",
            operation="retrieval",
            provider="",
            model="",
            response_model="",
            usage=TokenUsage(),
            source="kb",
            cost_usd=Decimal("0.0001"),
        )
    )

    got = collect(reader)
    tokens = points(got["gen_ai.client.token.usage"])
    assert [
        (p.attributes["gen_ai.operation.name"], p.attributes["gen_ai.token.type"], p.sum)
        for p in tokens
    ] == [("embeddings", "input", 64)]
    operations = {
        p.attributes["gen_ai.operation.name"]
        for p in points(got["gen_ai.client.operation.duration"])
    }
    assert operations == {"embeddings", "retrieval"}


def test_unknown_usage_is_not_reported_as_zero_tokens(
    sink: OTelSink, reader: InMemoryMetricReader
) -> None:
    sink.on_record(make_record(usage=TokenUsage(), usage_source="none"))

    assert "gen_ai.client.token.usage" not in collect(reader)


def test_costwatch_metrics_keep_their_names_units_and_attributes(
    sink: OTelSink, reader: InMemoryMetricReader
) -> None:
    sink.on_record(
        make_record(context_tokens={"kb": 400}, context_cost_usd={"kb": Decimal("0.00006")})
    )
    sink.on_record(make_record(model="my-llm", cost_usd=None))
    sink.on_record(make_record(pipeline="answer", input_cost_usd=Decimal("0.0001")))
    sink.on_request_end(
        RequestEnd("answer", "rag", Decimal("0.003"), 0, 1.0, "ok", "svc", "faq", "support", "acme")
    )
    sink.on_cache(CacheEvent("kb", "hit", Decimal("0.002"), "svc", "faq", "support", "acme"))
    sink.on_budget("daily", Decimal("4"), Decimal("50"))
    sink.on_budget_blocked("daily")
    sink.on_budget_state_lost("daily")
    sink.on_internal_error("cache")
    sink.on_outcome(Outcome("success", "answer", "rag", Decimal("0.003"), "answer-1", "svc"))
    sink.on_outcome(Outcome("failure", "", "", Decimal(0), "x", "svc", unmatched="expired"))
    sink.on_lifecycle(LifecycleCost("indexing", "kb", Decimal("0.5"), "calls", pipeline="answer"))
    sink.on_lifecycle(FixedCost("ft-hosting", "hosting", Decimal("1.7"), 0.0))

    got = collect(reader)
    for spec in names.PROMETHEUS_METRICS:
        if spec is names.LABEL_OVERFLOW:
            continue
        metric = got[spec.otel_name]
        assert metric.unit == spec.otel_unit, spec.otel_name
        for point in points(metric):
            assert set(point.attributes) == set(spec.labels), spec.otel_name
    assert got["costwatch.cost.usd"].unit == ""
    assert getattr(got["costwatch.cost.usd"].data, "is_monotonic", False) is True
    assert [p.value for p in points(got["costwatch.unpriced.requests"])] == [1]
    request_cost = points(got["costwatch.request.cost.usd"])[0]
    assert list(request_cost.explicit_bounds) == list(names.REQUEST_COST_BUCKETS)
    assert request_cost.attributes["pipeline"] == "answer"
    assert [p.value for p in points(got["costwatch.budget.limit.usd"])] == [50.0]
    assert [p.value for p in points(got["costwatch.fixed_cost.usd_per_hour"])] == [1.7]
    assert [p.value for p in points(got["costwatch.lifecycle.cost.usd"])] == [0.5]


def test_otel_and_prometheus_report_the_same_dollars_and_tokens(
    sink: OTelSink, reader: InMemoryMetricReader
) -> None:
    registry = CollectorRegistry()
    prom = PrometheusSink(registry, service="svc", label_limits={})
    records = [
        make_record(
            strategy=strategy,
            stage=stage,
            cost_usd=Decimal(cost),
            usage=TokenUsage(input=i * 7, output=i * 3, cache_read=i),
        )
        for i, (strategy, stage, cost) in enumerate(
            [
                ("rag", "generation", "0.00123"),
                ("rag", "embedding", "0.00002"),
                ("fine_tuned", "generation", "0.0042"),
                ("rag", "retrieval", "0.0001"),
                ("hybrid", "generation", "0.0007"),
                ("fine_tuned", "generation", "0.0013"),
            ],
            start=1,
        )
    ]
    for record in records:
        sink.on_record(record)
        prom.on_record(record)

    otel_cost: dict[tuple[str, str], float] = defaultdict(float)
    for p in points(collect(reader)["costwatch.cost.usd"]):
        otel_cost[p.attributes["strategy"], p.attributes["stage"]] += p.value
    prom_cost: dict[tuple[str, str], float] = defaultdict(float)
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == "costwatch_cost_usd_total":
                prom_cost[s.labels["strategy"], s.labels["stage"]] += s.value
    assert otel_cost == pytest.approx(prom_cost)
    assert sum(otel_cost.values()) == pytest.approx(0.00755)

    otel_tokens: dict[str, float] = defaultdict(float)
    for p in points(collect(reader)["costwatch.tokens"]):
        otel_tokens[p.attributes["token_type"]] += p.value
    prom_tokens: dict[str, float] = defaultdict(float)
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == "costwatch_tokens_total":
                prom_tokens[s.labels["token_type"]] += s.value
    assert otel_tokens == prom_tokens == {"input": 147, "cache_read": 21, "output": 63}


def test_recording_only_queues_and_collection_catches_up(
    sink: OTelSink, reader: InMemoryMetricReader
) -> None:
    for _ in range(50):
        sink.on_record(make_record())

    got = collect(reader)
    assert [p.value for p in points(got["costwatch.requests"])] == [50]
    assert [p.count for p in points(got["costwatch.duration"])] == [50]
    sink.on_record(make_record())
    assert [p.count for p in points(collect(reader)["costwatch.duration"])] == [51]


def test_the_queue_is_bounded_when_nothing_collects(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    sink = OTelSink(provider, service="svc", max_pending=16)
    for _ in range(100):
        sink.on_record(make_record())
        assert len(sink._state.pending) < 16

    assert [p.value for p in points(collect(reader)["costwatch.requests"])] == [100]


def test_a_full_queue_costs_the_recording_thread_a_small_batch_not_the_backlog(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    sink = OTelSink(provider, service="svc", max_pending=100)
    for _ in range(99):
        sink.on_record(make_record())
    assert len(sink._state.pending) == 99

    sink.on_record(make_record())

    assert len(sink._state.pending) == 100 - 32
    assert [p.value for p in points(collect(reader)["costwatch.requests"])] == [100]
    assert not sink._state.pending


def test_a_tenant_fed_ten_thousand_values_exposes_its_limit_plus_other(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    sink = OTelSink(provider, service="svc", label_limits={"tenant": 10})
    for i in range(10_000):
        sink.on_record(make_record(tenant=f"tenant-{i}", cost_usd=Decimal("0.001")))

    got = collect(reader)
    tenants = {p.attributes["tenant"] for p in points(got["costwatch.cost.usd"])}
    assert tenants == {f"tenant-{i}" for i in range(10)} | {"other"}
    assert [p.value for p in points(got["costwatch.label.overflow"])] == [10_000 - 10]
    assert sum(p.value for p in points(got["costwatch.cost.usd"])) == pytest.approx(10.0)


def test_sinks_built_again_on_one_provider_share_its_instruments(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    OTelSink(provider, service="svc").on_record(make_record())
    OTelSink(provider, service="svc").on_record(make_record())

    got = collect(reader)
    assert [p.value for p in points(got["costwatch.requests"])] == [2]


def test_the_sink_never_installs_a_global_meter_provider() -> None:
    before = metrics_api.get_meter_provider()
    sink = OTelSink(service="svc")
    sink.on_record(make_record())
    sink.flush()

    assert metrics_api.get_meter_provider() is before
    assert not isinstance(metrics_api.get_meter_provider(), MeterProvider)


def test_spans_follow_genai_span_conventions_and_carry_the_cost(provider: MeterProvider) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OTelSink(provider, service="svc", spans=True, tracer_provider=tracer_provider)

    sink.on_record(make_record(latency_s=0.25))
    sink.on_record(
        make_record(
            stage="embedding",
            operation="embeddings",
            model="text-embedding-3-small",
            usage=TokenUsage(input=8),
        )
    )
    sink.on_record(
        make_record(
            stage="retrieval",
            operation="retrieval",
            source="kb",
            provider="",
            model="",
            usage=TokenUsage(),
            cost_usd=Decimal("0.0001"),
        )
    )
    sink.on_record(make_record(status="error", error_type="APITimeoutError", cost_usd=None))

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [
        "chat gpt-4o-mini",
        "embeddings text-embedding-3-small",
        "retrieval kb",
        "chat gpt-4o-mini",
    ]
    chat = spans[0]
    chat_attrs = dict(chat.attributes or {})
    assert chat.kind is SpanKind.CLIENT
    assert chat.end_time == 1_700_000_000 * 10**9
    assert chat.start_time == chat.end_time - 250_000_000
    assert chat_attrs["costwatch.cost.usd"] == pytest.approx(0.000237)
    assert chat_attrs["gen_ai.usage.input_tokens"] == 1000
    assert chat_attrs["gen_ai.usage.output_tokens"] == 150
    assert chat_attrs["gen_ai.provider.name"] == "openai"
    assert dict(spans[2].attributes or {})["gen_ai.data_source.id"] == "kb"
    failed = spans[3]
    failed_attrs = dict(failed.attributes or {})
    assert failed.status.status_code is StatusCode.ERROR
    assert failed_attrs["error.type"] == "APITimeoutError"
    assert "costwatch.cost.usd" not in failed_attrs
    assert failed_attrs["costwatch.unpriced"] is True


def test_importing_the_otel_exporter_does_not_import_the_sdk() -> None:
    code = (
        "import sys, costwatch.exporters.otel; "
        "print(any(m.startswith('opentelemetry.sdk') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
