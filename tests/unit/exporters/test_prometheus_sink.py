"""The Prometheus sink: what each costwatch event becomes on a registry, under the contract."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from costwatch._core.errors import ConfigError
from costwatch._core.failopen import errors
from costwatch._core.labels import LabelGuard
from costwatch._core.record import CostRecord, TokenUsage
from costwatch._core.sink import CacheEvent, FixedCost, LifecycleCost, Outcome, RequestEnd
from costwatch.exporters import names
from costwatch.exporters._prom_client import ClientMetrics
from costwatch.exporters.prometheus import PrometheusSink, is_multiprocess

SPEND = {
    "service": "svc",
    "provider": "openai",
    "model": "gpt-4o-mini",
    "stage": "generation",
    "strategy": "rag",
    "feature": "faq",
    "team": "support",
    "tenant": "acme",
}


def make_record(**overrides: Any) -> CostRecord:
    fields: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "stage": "generation",
        "usage": TokenUsage(input=900, cache_read=100, output=120),
        "cost_usd": Decimal("0.000237"),
        "latency_s": 0.7,
        "strategy": "rag",
        "service": "svc",
        "feature": "faq",
        "team": "support",
        "tenant": "acme",
        "operation": "chat",
    }
    fields.update(overrides)
    return CostRecord(**fields)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def sink(registry: CollectorRegistry) -> PrometheusSink:
    return PrometheusSink(registry, service="svc", label_limits={"tenant": 100})


@pytest.fixture
def strict_errors() -> Iterator[None]:
    previous = errors.strict
    errors.strict = True
    yield
    errors.strict = previous


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_priced_call_adds_its_cost_tokens_request_and_latency(
    sink: PrometheusSink, registry: CollectorRegistry
) -> None:
    sink.on_record(make_record())
    sink.on_record(make_record(cost_usd=Decimal("0.000763"), latency_s=3.0))

    assert value(registry, "costwatch_cost_usd_total", **SPEND) == pytest.approx(0.001)
    assert value(registry, "costwatch_tokens_total", **SPEND, token_type="input") == 1800
    assert value(registry, "costwatch_tokens_total", **SPEND, token_type="cache_read") == 200
    assert value(registry, "costwatch_tokens_total", **SPEND, token_type="output") == 240
    assert value(registry, "costwatch_requests_total", **SPEND, status="ok") == 2
    assert value(registry, "costwatch_duration_seconds_count", **SPEND) == 2
    assert value(registry, "costwatch_duration_seconds_sum", **SPEND) == pytest.approx(3.7)
    assert value(registry, "costwatch_duration_seconds_bucket", **SPEND, le="0.64") == 0
    assert value(registry, "costwatch_duration_seconds_bucket", **SPEND, le="1.28") == 1
    assert value(registry, "costwatch_duration_seconds_bucket", **SPEND, le="5.12") == 2
    assert value(registry, "costwatch_duration_seconds_bucket", **SPEND, le="+Inf") == 2


def test_token_types_without_tokens_expose_no_series(
    sink: PrometheusSink, registry: CollectorRegistry
) -> None:
    sink.on_record(make_record(usage=TokenUsage(input=10, output=5)))

    exposed = generate_latest(registry).decode()
    assert 'token_type="input"' in exposed
    assert 'token_type="cache_read"' not in exposed
    assert 'token_type="reasoning"' not in exposed


def test_an_unpriced_model_is_counted_and_never_reported_as_zero_dollars(
    sink: PrometheusSink, registry: CollectorRegistry
) -> None:
    labels = {**SPEND, "model": "my-own-llm"}
    sink.on_record(make_record(model="my-own-llm", cost_usd=None))

    assert value(registry, "costwatch_unpriced_requests_total", **labels) == 1
    assert value(registry, "costwatch_cost_usd_total", **labels) is None
    assert value(registry, "costwatch_requests_total", **labels, status="ok") == 1


def test_failed_calls_are_counted_under_status_error(
    sink: PrometheusSink, registry: CollectorRegistry
) -> None:
    sink.on_record(make_record(status="error", error_type="RateLimitError"))

    assert value(registry, "costwatch_requests_total", **SPEND, status="error") == 1
    assert value(registry, "costwatch_requests_total", **SPEND, status="ok") is None


def test_duration_buckets_are_llm_sized_and_created_series_are_disabled(
    sink: PrometheusSink, registry: CollectorRegistry
) -> None:
    sink.on_record(make_record())
    sink.on_request_end(
        RequestEnd("answer", "rag", Decimal("0.01"), 0, 1.0, "ok", "svc", "faq", "support", "acme")
    )

    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    bounds = [
        s.labels["le"]
        for s in families["costwatch_duration_seconds"].samples
        if s.name.endswith("_bucket")
    ]
    assert bounds == [*(str(b) for b in names.DURATION_BUCKETS), "+Inf"]
    assert not [s for f in families.values() for s in f.samples if s.name.endswith("_created")]


def test_building_a_sink_leaves_the_hosts_own_created_series_alone() -> None:
    from prometheus_client import Counter, metrics

    before = metrics._use_created
    PrometheusSink(CollectorRegistry(), service="svc", label_limits={})

    assert metrics._use_created is before
    host = CollectorRegistry()
    Counter("host_jobs", "the host's own counter", registry=host).inc()
    assert (host.get_sample_value("host_jobs_created") is not None) is before


def test_retrieved_context_tokens_and_cost_are_exported_per_source(
    sink: PrometheusSink, registry: CollectorRegistry
) -> None:
    sink.on_record(
        make_record(
            context_tokens={"kb": 600, "web": 100},
            context_cost_usd={"kb": Decimal("0.00009"), "web": Decimal("0.000015")},
        )
    )

    assert value(registry, "costwatch_context_tokens_total", **SPEND, source="kb") == 600
    assert value(registry, "costwatch_context_tokens_total", **SPEND, source="web") == 100
    assert value(registry, "costwatch_context_cost_usd_total", **SPEND, source="kb") == (
        pytest.approx(0.00009)
    )


def test_request_cost_histogram_is_labelled_by_pipeline(
    sink: PrometheusSink, registry: CollectorRegistry
) -> None:
    for cost in ("0.002", "0.02"):
        sink.on_request_end(
            RequestEnd(
                "answer_question",
                "rag",
                Decimal(cost),
                0,
                1.2,
                "ok",
                "svc",
                "faq",
                "support",
                "acme",
            )
        )
    labels = {
        "service": "svc",
        "strategy": "rag",
        "feature": "faq",
        "team": "support",
        "tenant": "acme",
        "pipeline": "answer_question",
    }

    assert value(registry, "costwatch_request_cost_usd_count", **labels) == 2
    assert value(registry, "costwatch_request_cost_usd_sum", **labels) == pytest.approx(0.022)
    assert value(registry, "costwatch_request_cost_usd_bucket", **labels, le="0.003") == 1
    assert value(registry, "costwatch_request_cost_usd_bucket", **labels, le="0.03") == 2


def test_cache_lookups_and_savings(sink: PrometheusSink, registry: CollectorRegistry) -> None:
    for result, saved in (("hit", "0.004"), ("hit", "0.006"), ("miss", "0"), ("error", "0")):
        sink.on_cache(CacheEvent("kb", result, Decimal(saved), "svc", "faq", "support", "acme"))
    labels = {
        "service": "svc",
        "feature": "faq",
        "team": "support",
        "tenant": "acme",
        "cache": "kb",
    }

    assert value(registry, "costwatch_cache_requests_total", **labels, result="hit") == 2
    assert value(registry, "costwatch_cache_requests_total", **labels, result="miss") == 1
    assert value(registry, "costwatch_cache_requests_total", **labels, result="error") == 1
    assert value(registry, "costwatch_cache_saved_usd_total", **labels) == pytest.approx(0.01)


def test_budget_gauges_blocked_calls_and_internal_errors(
    sink: PrometheusSink, registry: CollectorRegistry
) -> None:
    sink.on_budget("support-daily", Decimal("12.5"), Decimal("50"))
    sink.on_budget("support-daily", Decimal("13.25"), Decimal("50"))
    sink.on_budget_blocked("support-daily")
    sink.on_internal_error("cache")
    sink.on_internal_error("cache")

    assert (
        value(registry, "costwatch_budget_spent_usd", service="svc", budget="support-daily")
        == 13.25
    )
    assert (
        value(registry, "costwatch_budget_limit_usd", service="svc", budget="support-daily") == 50
    )
    assert (
        value(registry, "costwatch_budget_blocked_total", service="svc", budget="support-daily")
        == 1
    )
    assert value(registry, "costwatch_internal_errors_total", service="svc", component="cache") == 2


def test_sinks_built_again_on_one_registry_share_its_metrics(registry: CollectorRegistry) -> None:
    PrometheusSink(registry, service="svc", label_limits={}).on_record(make_record())
    PrometheusSink(registry, service="svc", label_limits={}).on_record(make_record())

    assert value(registry, "costwatch_requests_total", **SPEND, status="ok") == 2


def test_every_exposed_family_is_in_the_contract(
    sink: PrometheusSink, registry: CollectorRegistry
) -> None:
    sink.on_record(make_record(context_tokens={"kb": 1}, context_cost_usd={"kb": Decimal(0)}))
    sink.on_record(make_record(cost_usd=None, status="error"))
    sink.on_record(make_record(pipeline="a", input_cost_usd=Decimal("0.0001")))
    sink.on_request_end(RequestEnd("a", "rag", Decimal("0.1"), 0, 1.0, "ok", "svc", "", "", ""))
    sink.on_cache(CacheEvent("kb", "hit", Decimal("0.1"), "svc", "", "", ""))
    sink.on_budget("b", Decimal(1), Decimal(2))
    sink.on_budget_blocked("b")
    sink.on_budget_state_lost("b")
    sink.on_internal_error("x")
    sink.on_outcome(Outcome("success", "a", "rag", Decimal("0.1"), "a-1", "svc"))
    sink.on_outcome(Outcome("success", "", "", Decimal(0), "a-9", "svc", unmatched="unknown"))
    sink.on_lifecycle(LifecycleCost("training", "ft", Decimal(3), "bundled"))
    sink.on_lifecycle(FixedCost("gpu", "hosting", Decimal("3.9"), 0.0))
    for i in range(101):
        sink.on_record(make_record(tenant=f"t{i}"))

    exposed = {
        s.name: tuple(sorted(s.labels))
        for f in text_string_to_metric_families(generate_latest(registry).decode())
        for s in f.samples
    }
    specs = {series: spec for spec in names.PROMETHEUS_METRICS for series in spec.series_names()}
    assert set(exposed) == set(specs)
    for series, labels in exposed.items():
        expected = set(specs[series].labels) | ({"le"} if series.endswith("_bucket") else set())
        assert set(labels) == expected, series


def test_a_tenant_fed_ten_thousand_values_exposes_its_limit_plus_other(
    registry: CollectorRegistry,
) -> None:
    sink = PrometheusSink(registry, service="svc", label_limits={"tenant": 25})
    for i in range(10_000):
        sink.on_record(make_record(tenant=f"tenant-{i}", cost_usd=Decimal("0.001")))

    samples = [
        s
        for f in text_string_to_metric_families(generate_latest(registry).decode())
        if f.name == "costwatch_cost_usd"
        for s in f.samples
    ]
    tenants = {s.labels["tenant"] for s in samples}
    assert len(tenants) == 26
    assert tenants == {f"tenant-{i}" for i in range(25)} | {"other"}
    assert (
        value(registry, "costwatch_label_overflow_total", service="svc", label="tenant")
        == 10_000 - 25
    )
    assert value(registry, "costwatch_cost_usd_total", **{**SPEND, "tenant": "other"}) == (
        pytest.approx(0.001 * (10_000 - 25))
    )
    assert sum(s.value for s in samples) == pytest.approx(10.0)


def test_a_repeated_cache_event_past_the_tenant_limit_counts_every_overflow(
    registry: CollectorRegistry,
) -> None:
    sink = PrometheusSink(registry, service="svc", label_limits={"tenant": 1})
    admitted = CacheEvent("kb", "hit", Decimal("0.5"), "svc", "faq", "team", "acme")
    overflowing = CacheEvent("kb", "hit", Decimal("0.25"), "svc", "faq", "team", "globex")
    for _ in range(3):  # the same event objects again and again, as a hot cache sends them
        sink.on_cache(admitted)
        sink.on_cache(overflowing)
    labels = {"service": "svc", "feature": "faq", "team": "team", "cache": "kb"}
    assert (
        value(registry, "costwatch_cache_requests_total", **labels, tenant="acme", result="hit")
        == 3
    )
    assert (
        value(registry, "costwatch_cache_requests_total", **labels, tenant="other", result="hit")
        == 3
    )
    assert value(
        registry, "costwatch_cache_saved_usd_total", **labels, tenant="other"
    ) == pytest.approx(0.75)
    assert value(registry, "costwatch_label_overflow_total", service="svc", label="tenant") == 3


def test_counts_are_exact_when_many_threads_record_at_once(
    sink: PrometheusSink, registry: CollectorRegistry
) -> None:
    def work() -> None:
        for _ in range(2000):
            sink.on_record(make_record(cost_usd=Decimal("0.000001")))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert value(registry, "costwatch_requests_total", **SPEND, status="ok") == 16_000
    assert value(registry, "costwatch_tokens_total", **SPEND, token_type="input") == 16_000 * 900
    assert value(registry, "costwatch_cost_usd_total", **SPEND) == 0.016


def test_the_multiprocess_path_exposes_the_same_samples_as_the_single_process_path() -> None:
    events = [
        make_record(),
        make_record(cost_usd=None, model="unknown", status="error"),
        make_record(context_tokens={"kb": 40}, context_cost_usd={"kb": Decimal("0.00001")}),
        *(make_record(tenant=f"t{i}") for i in range(5)),
    ]
    single_registry, client_registry = CollectorRegistry(), CollectorRegistry()
    single = PrometheusSink(single_registry, service="svc", label_limits={"tenant": 3})
    client = ClientMetrics(client_registry, LabelGuard({"tenant": 3}), "svc")
    for record in events:
        single.on_record(record)
        client.on_record(record)
    request = RequestEnd("answer", "rag", Decimal("0.004"), 0, 1.0, "ok", "svc", "faq", "", "t9")
    single.on_request_end(request)
    client.on_request_end(request)
    cache = CacheEvent("kb", "hit", Decimal("0.002"), "svc", "faq", "", "acme")
    single.on_cache(cache)
    client.on_cache(cache)
    single.on_budget("b", Decimal("1.5"), Decimal("3"))
    client.on_budget("b", Decimal("1.5"), Decimal("3"))
    single.on_budget_blocked("b")
    client.on_budget_blocked("b")
    single.on_internal_error("cache")
    client.on_internal_error("cache")

    def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[Any, ...]], float]:
        # Multiprocess files never carry _created; plain metrics on a plain registry do.
        text = generate_latest(registry).decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if not s.name.endswith("_created")
        }

    assert samples(client_registry) == pytest.approx(samples(single_registry))


def test_multiprocess_mode_needs_the_directory_set_before_prometheus_client_loads() -> None:
    assert not is_multiprocess()
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        PrometheusSink(CollectorRegistry(), service="svc", label_limits={}, multiprocess=True)


def test_an_invalid_label_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="label_limits"):
        PrometheusSink(CollectorRegistry(), service="svc", label_limits={"tenant": 0})


def test_a_broken_record_raises_in_strict_mode(sink: PrometheusSink, strict_errors: None) -> None:
    with pytest.raises(TypeError):
        sink.on_record(make_record(latency_s="slow"))


def test_a_broken_record_is_swallowed_and_counted_outside_strict_mode(
    sink: PrometheusSink, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(errors, "strict", False)
    monkeypatch.setattr(errors, "listeners", [sink.on_internal_error])

    sink.on_record(make_record(latency_s="slow"))

    assert (
        value(
            registry,
            "costwatch_internal_errors_total",
            service="svc",
            component="exporter.prometheus",
        )
        == 1
    )
