"""A bad label value never breaks ``/metrics``, the host's own metrics, or an OTLP export.

A lone surrogate (what ``json.loads('"\\ud800"')`` gives for a tenant id read from a request)
cannot be encoded as UTF-8, and a 10 KB model name would be repeated in every series of the
model.  Values are repaired where costwatch takes them in, the repair is counted in
``costwatch_internal_errors_total{component="labels"}``, and every scrape is served and parses.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

import costwatch
from costwatch._core.labels import MAX_VALUE_LENGTH
from tests.integration.exporters.test_multiprocess import SERVER, multiproc_env_in, run_python

LONE_SURROGATE = json.loads('"tenant-\\ud800"')
LONG_MODEL = "m" * 10_000


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def scrape(port: int) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.status, resp.read().decode("utf-8")


@pytest.fixture
def bad_calls() -> Any:
    """A decorated generation whose model comes from the call."""

    @costwatch.generation(provider="openai")
    def answer(prompt: str, model: str) -> dict[str, Any]:
        return {"model": model, "usage": {"prompt_tokens": 10, "completion_tokens": 2}}

    return answer


def test_a_scrape_with_bad_label_values_is_served_whole_and_parses(bad_calls: Any) -> None:
    registry = CollectorRegistry()
    host_requests = Counter("host_requests", "The host application's own metric", registry=registry)
    host_requests.inc(3)
    costwatch.configure(service="svc", registry=registry, warm_up=False)
    server = costwatch.serve_metrics(0, registry=registry)
    try:
        with costwatch.tags(tenant=LONE_SURROGATE, feature="faq"):
            bad_calls("hello", model="gpt-4o-mini")
            bad_calls("hello", model="gpt-4o-mini")
        with costwatch.tags(tenant="fine"):
            bad_calls("hello", model=LONG_MODEL)
        costwatch.record(provider="openai", model="gpt-4o-mini", input_tokens=1, stage="\udfff")

        for _ in range(2):  # every scrape, not only the first
            status, text = scrape(server.port)
            assert status == 200
            found = samples(text)
            assert ("host_requests_total", {}, 3.0) in found
            requests = {
                (labels["tenant"], labels["model"], labels["stage"]): value
                for name, labels, value in found
                if name == "costwatch_requests_total"
            }
            assert requests[("tenant-\ufffd", "gpt-4o-mini", "generation")] == 2
            assert requests[("fine", "m" * MAX_VALUE_LENGTH, "generation")] == 1
            assert requests[("", "gpt-4o-mini", "\ufffd")] == 1
            errors = {
                labels["component"]: value
                for name, labels, value in found
                if name == "costwatch_internal_errors_total"
            }
            assert errors["labels"] == 3  # the tenant (one tags block), the model, the stage
    finally:
        server.shutdown()
        costwatch._configure.shutdown()
    summary = costwatch.summary()
    assert set(summary.by_tenant) <= {"tenant-\ufffd", "fine", ""}


MP_WORKER = r"""
import json
import costwatch

costwatch.configure(service="mp", prometheus=True, otel=False, warm_up=False)
with costwatch.tags(tenant=json.loads('"tenant-\\ud800"')):
    costwatch.record(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=2)
costwatch.record(provider="openai", model="x" * 5000, input_tokens=10, output_tokens=2)
"""


def test_multiprocess_files_never_hold_a_series_that_breaks_the_scrape(tmp_path: Path) -> None:
    env = multiproc_env_in(tmp_path)
    worker = run_python(MP_WORKER, env=env)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    server = run_python(SERVER, env=env)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        for _ in range(2):
            status, text = scrape(port)
            assert status == 200
            found = samples(text)
            tenants = {
                labels["tenant"]: labels["model"]
                for name, labels, _ in found
                if name == "costwatch_requests_total"
            }
            assert tenants == {"tenant-\ufffd": "gpt-4o-mini", "": "x" * MAX_VALUE_LENGTH}
            assert (
                "costwatch_internal_errors_total",
                {"service": "mp", "component": "labels"},
                2.0,
            ) in found
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.communicate(timeout=10)


def test_an_otlp_export_of_bad_label_values_encodes(bad_calls: Any) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    costwatch.configure(
        service="svc", prometheus=False, otel=True, meter_provider=provider, warm_up=False
    )
    try:
        with costwatch.tags(tenant=LONE_SURROGATE):
            bad_calls("hello", model=LONG_MODEL)
        data = reader.get_metrics_data()
        assert data is not None
        # What the OTLP exporter sends: protobuf refuses a string that is not valid UTF-8.
        payload = encode_metrics(data).SerializeToString()
        assert b"tenant-\xef\xbf\xbd" in payload
        attributes = [
            dict(point.attributes or {})
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == "costwatch.requests"
            for point in metric.data.data_points
        ]
        assert attributes and all(a["model"] == "m" * MAX_VALUE_LENGTH for a in attributes)
        assert costwatch.summary().internal_errors["labels"] == 2
    finally:
        costwatch._configure.shutdown()
