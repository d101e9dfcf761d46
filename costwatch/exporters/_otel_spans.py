"""Optional GenAI spans (``OTelSink(spans=True)``): one span per recorded call, carrying its cost.

Names and attributes follow the GenAI span conventions: ``chat gpt-4o-mini``,
``embeddings text-embedding-3-small``, ``retrieval kb``; kind ``CLIENT`` (``INTERNAL`` for a tool
run in process).  The span is written when the call is recorded, with the call's own start and
end times, as a child of whatever span is current there.  Costs about 25 µs a call with the SDK,
hence opt-in.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from costwatch._core.record import CostRecord
from costwatch.exporters.names import (
    ERROR_TYPE,
    GEN_AI_DATA_SOURCE_ID,
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    gen_ai_provider_name,
)

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider


_OPERATION_BY_STAGE = {
    "generation": "chat",
    "embedding": "embeddings",
    "retrieval": "retrieval",
    "rerank": "rerank",
    "tool": "execute_tool",
}


def operation_name(record: CostRecord) -> str:
    """``gen_ai.operation.name`` of a record: its own, else derived from its stage."""
    return record.operation or _OPERATION_BY_STAGE.get(record.stage, record.stage)


def span_name(operation: str, record: CostRecord) -> str:
    """``{gen_ai.operation.name} {model}``; retrievals are named after their data source."""
    if operation == "retrieval":
        return f"retrieval {record.source}" if record.source else "retrieval"
    return f"{operation} {record.model}" if record.model else operation


class SpanWriter:
    def __init__(self, tracer_provider: TracerProvider | None) -> None:
        from opentelemetry import trace

        from costwatch._version import __version__

        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self._tracer = provider.get_tracer("costwatch", __version__)
        self._client = trace.SpanKind.CLIENT
        self._internal = trace.SpanKind.INTERNAL
        self._status_error = trace.Status(trace.StatusCode.ERROR)

    def write(self, record: CostRecord) -> None:
        operation = operation_name(record)
        end_ns = int(record.timestamp * 1e9) if record.timestamp else time.time_ns()
        start_ns = end_ns - int(record.latency_s * 1e9)
        span = self._tracer.start_span(
            span_name(operation, record),
            kind=self._internal if operation == "execute_tool" else self._client,
            start_time=start_ns,
            attributes=attributes(operation, record),
        )
        if record.status != "ok":
            span.set_status(self._status_error)
        span.end(end_time=end_ns)


def attributes(operation: str, record: CostRecord) -> dict[str, Any]:
    usage = record.usage
    attrs: dict[str, Any] = {GEN_AI_OPERATION_NAME: operation}
    if record.provider:
        attrs[GEN_AI_PROVIDER_NAME] = gen_ai_provider_name(record.provider)
    if record.model:
        attrs[GEN_AI_REQUEST_MODEL] = record.model
    if record.response_model:
        attrs[GEN_AI_RESPONSE_MODEL] = record.response_model
    if operation == "retrieval" and record.source:
        attrs[GEN_AI_DATA_SOURCE_ID] = record.source
    if record.usage_source not in ("none", "invalid") and operation != "retrieval":
        attrs["gen_ai.usage.input_tokens"] = usage.prompt_total
        attrs["gen_ai.usage.output_tokens"] = usage.output + usage.reasoning
        if usage.cache_read:
            attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read
        if usage.cache_write:
            attrs["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write
        if usage.reasoning:
            attrs["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning
    if record.status != "ok":
        attrs[ERROR_TYPE] = record.error_type or "_OTHER"
    if record.cost_usd is not None:
        attrs["costwatch.cost.usd"] = float(record.cost_usd)
    else:
        attrs["costwatch.unpriced"] = True
    attrs["costwatch.stage"] = record.stage
    attrs["costwatch.strategy"] = record.strategy
    attrs["costwatch.usage_source"] = record.usage_source
    for key in ("feature", "team", "tenant", "pipeline", "request_id", "price_source"):
        value = getattr(record, key)
        if value:
            attrs[f"costwatch.{key}"] = value
    for source, tokens in record.context_tokens.items():
        attrs[f"costwatch.context.{source}.tokens"] = tokens
    if record.incomplete:
        attrs["costwatch.incomplete"] = True
    if record.cache_hit:
        attrs["costwatch.cache_hit"] = True
    return attrs
