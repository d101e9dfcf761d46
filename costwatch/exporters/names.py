"""THE metric contract: every metric costwatch exports, in one place.

Dashboards, alert rules and recording rules are written against exactly these names (a test
fails when a file under ``dashboards/`` or ``exporters/`` references a metric not defined here).
The Prometheus exporter and the OpenTelemetry exporter both build their instruments from these
specs, so a name, a label set or a bucket list changes here or nowhere.

Prometheus names are the exposed series names (counters end in ``_total``).  The OpenTelemetry
name is the same with dots and without the suffixes the OTel→Prometheus translation adds back:
``costwatch.cost.usd`` (a counter with no unit) reaches Prometheus as ``costwatch_cost_usd_total``
through the collector's Prometheus exporter, ``costwatch.duration`` (unit ``s``) as
``costwatch_duration_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from costwatch._core import labels

MetricKind = Literal["counter", "gauge", "histogram"]

SPEND_LABELS: tuple[str, ...] = (
    "service",
    "provider",
    "model",
    "stage",
    "strategy",
    "feature",
    "team",
    "tenant",
)
"""Labels common to spend metrics (docs/design.md), in exposition order."""

REQUEST_LABELS: tuple[str, ...] = ("service", "strategy", "feature", "team", "tenant", "pipeline")
"""A ``costwatch.request`` spans several calls: it has no provider, model or stage of its own."""

CACHE_LABELS: tuple[str, ...] = ("service", "feature", "team", "tenant", "cache")

LIFECYCLE_LABELS: tuple[str, ...] = (
    "service",
    "kind",
    "name",
    "strategy",
    "pipeline",
    "feature",
    "team",
    "tenant",
)
"""A cost that is not a call: what it paid for (``kind``), its ``name`` (a training job, a
knowledge base, a deployment) and the pipeline and strategy it belongs to."""

OUTCOME_LABELS: tuple[str, ...] = (*REQUEST_LABELS, "outcome")

PIPELINE_LABELS: tuple[str, ...] = (
    "service",
    "pipeline",
    "strategy",
    "provider",
    "model",
    "component",
)
"""A pipeline's traffic profile: the calls inside its requests by model and cost component
(``fresh_input``, ``retrieved_context``, ``output``, ``embedding``, ``retrieval``, ``rerank``,
``other``; see ``costwatch.accounting._components``)."""

GUARDED_LABELS: tuple[str, ...] = tuple(labels.DEFAULT_LABEL_LIMITS)
"""Free-form labels that pass through the cardinality guard (``_core.labels``)."""

TOKEN_TYPE_VALUES: tuple[str, ...] = ("input", "cache_read", "cache_write", "output", "reasoning")
STATUS_VALUES: tuple[str, ...] = ("ok", "error")
CACHE_RESULT_VALUES: tuple[str, ...] = ("hit", "miss", "error", "skip")
OUTCOME_VALUES: tuple[str, ...] = ("success", "failure")
LIFECYCLE_KIND_VALUES: tuple[str, ...] = (
    "training",
    "indexing",
    "hosting",
    "vector_store",
    "other",
)

DURATION_BUCKETS: tuple[float, ...] = (
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
)
"""LLM-sized latency buckets in seconds (the GenAI semantic-convention advice, doubling)."""

REQUEST_COST_BUCKETS: tuple[float, ...] = (
    0.00001,
    0.00003,
    0.0001,
    0.0003,
    0.001,
    0.003,
    0.01,
    0.03,
    0.1,
    0.3,
    1.0,
    3.0,
    10.0,
)
"""Dollars per ``costwatch.request``: from a cached embedding lookup to a long agent run."""

TOKEN_USAGE_BUCKETS: tuple[float, ...] = (
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
)
"""The advised buckets of ``gen_ai.client.token.usage`` (powers of 4)."""

OTHER = labels.OTHER
"""The value a guarded label takes once its distinct-value limit is reached."""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric: its Prometheus and OpenTelemetry identities."""

    name: str
    """The Prometheus name as exposed (counters end in ``_total``)."""
    kind: MetricKind
    help: str
    labels: tuple[str, ...]
    otel_name: str
    otel_unit: str = ""
    buckets: tuple[float, ...] = ()
    multiprocess_mode: str = ""
    """For gauges under prometheus-client multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``)."""
    extension: bool = False
    """Beyond the core contract (docs/design.md marks it "extension"): exported, not required on
    a dashboard."""

    @property
    def family(self) -> str:
        """The family name prometheus-client takes (counters without ``_total``)."""
        if self.kind == "counter":
            return self.name.removesuffix("_total")
        return self.name

    def series_names(self) -> tuple[str, ...]:
        """Every series name this metric exposes in the Prometheus text format."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


COST_USD = MetricSpec(
    "costwatch_cost_usd_total",
    "counter",
    "Dollars spent on LLM, embedding and retrieval calls (priced calls only).",
    SPEND_LABELS,
    "costwatch.cost.usd",
)
TOKENS = MetricSpec(
    "costwatch_tokens_total",
    "counter",
    "Billed tokens by token_type (input, cache_read, cache_write, output, reasoning).",
    (*SPEND_LABELS, "token_type"),
    "costwatch.tokens",
    "{token}",
)
REQUESTS = MetricSpec(
    "costwatch_requests_total",
    "counter",
    "Calls recorded, by status (ok or error).",
    (*SPEND_LABELS, "status"),
    "costwatch.requests",
    "{request}",
)
DURATION = MetricSpec(
    "costwatch_duration_seconds",
    "histogram",
    "Latency of recorded calls in seconds.",
    SPEND_LABELS,
    "costwatch.duration",
    "s",
    DURATION_BUCKETS,
)
REQUEST_COST = MetricSpec(
    "costwatch_request_cost_usd",
    "histogram",
    "Dollars per costwatch.request (one user-facing request), by pipeline.",
    REQUEST_LABELS,
    "costwatch.request.cost.usd",
    "",
    REQUEST_COST_BUCKETS,
)
CONTEXT_TOKENS = MetricSpec(
    "costwatch_context_tokens_total",
    "counter",
    "Input tokens that came from retrieved context, by retrieval source.",
    (*SPEND_LABELS, "source"),
    "costwatch.context.tokens",
    "{token}",
)
CONTEXT_COST = MetricSpec(
    "costwatch_context_cost_usd_total",
    "counter",
    "The share of input cost that retrieved-context tokens made, by retrieval source.",
    (*SPEND_LABELS, "source"),
    "costwatch.context.cost.usd",
)
UNPRICED = MetricSpec(
    "costwatch_unpriced_requests_total",
    "counter",
    "Calls to models without a known price (their cost is unknown, never reported as 0).",
    SPEND_LABELS,
    "costwatch.unpriced.requests",
    "{request}",
)
CACHE_REQUESTS = MetricSpec(
    "costwatch_cache_requests_total",
    "counter",
    "Retrieval cache lookups by result (hit, miss, error, skip).",
    (*CACHE_LABELS, "result"),
    "costwatch.cache.requests",
    "{request}",
)
CACHE_SAVED = MetricSpec(
    "costwatch_cache_saved_usd_total",
    "counter",
    "Dollars the retrieval cache saved (what the calls it answered would have cost).",
    CACHE_LABELS,
    "costwatch.cache.saved.usd",
)
BUDGET_SPENT = MetricSpec(
    "costwatch_budget_spent_usd",
    "gauge",
    "Dollars spent in the current window of a budget.",
    ("service", "budget"),
    "costwatch.budget.spent.usd",
    "",
    (),
    "mostrecent",
)
BUDGET_LIMIT = MetricSpec(
    "costwatch_budget_limit_usd",
    "gauge",
    "The dollar limit of a budget's window.",
    ("service", "budget"),
    "costwatch.budget.limit.usd",
    "",
    (),
    "mostrecent",
)
BUDGET_BLOCKED = MetricSpec(
    "costwatch_budget_blocked_total",
    "counter",
    "Calls a block budget refused before they reached the provider.",
    ("service", "budget"),
    "costwatch.budget.blocked",
    "{request}",
)
BUDGET_STATE_LOST = MetricSpec(
    "costwatch_budget_state_lost_total",
    "counter",
    "Times a budget's recorded spend was found gone from Redis (restarted empty, evicted): "
    "spend counted from $0 again.  Counted once per loss, by the process that found it.",
    ("service", "budget"),
    "costwatch.budget.state_lost",
    "{event}",
    extension=True,
)
INTERNAL_ERRORS = MetricSpec(
    "costwatch_internal_errors_total",
    "counter",
    "costwatch's own failures (swallowed, the host call was unaffected), by component.",
    ("service", "component"),
    "costwatch.internal.errors",
    "{error}",
)
LABEL_OVERFLOW = MetricSpec(
    "costwatch_label_overflow_total",
    "counter",
    "Label values replaced by 'other' because the label reached its distinct-value limit.",
    ("service", "label"),
    "costwatch.label.overflow",
    "{value}",
    extension=True,
)

LIFECYCLE_COST = MetricSpec(
    "costwatch_lifecycle_cost_usd_total",
    "counter",
    "Dollars of one-off costs that are not calls: training runs, indexing runs (an indexing "
    "run's calls are also in costwatch_cost_usd_total).",
    LIFECYCLE_LABELS,
    "costwatch.lifecycle.cost.usd",
)
FIXED_COST_RATE = MetricSpec(
    "costwatch_fixed_cost_usd_per_hour",
    "gauge",
    "Declared recurring costs (hosting, GPU nodes, vector store plans) in dollars per hour; "
    "every process declaring one exports the same rate: aggregate with max by (name).",
    LIFECYCLE_LABELS,
    "costwatch.fixed_cost.usd_per_hour",
    "",
    (),
    "mostrecent",
)
OUTCOMES = MetricSpec(
    "costwatch_outcomes_total",
    "counter",
    "costwatch.request blocks by the outcome they were given (success, failure).",
    OUTCOME_LABELS,
    "costwatch.outcomes",
    "{request}",
)
OUTCOME_COST = MetricSpec(
    "costwatch_outcome_cost_usd_total",
    "counter",
    "Dollars of the costwatch.request blocks of each outcome (cost per success = the "
    "pipeline's request cost / its successes).",
    OUTCOME_LABELS,
    "costwatch.outcome.cost.usd",
)
OUTCOMES_UNMATCHED = MetricSpec(
    "costwatch_outcomes_unmatched_total",
    "counter",
    "Late outcomes whose request id matched no waiting request (unknown, expired, duplicate).",
    ("service", "reason"),
    "costwatch.outcomes.unmatched",
    "{outcome}",
    extension=True,
)

PIPELINE_COST = MetricSpec(
    "costwatch_pipeline_cost_usd_total",
    "counter",
    "Dollars of the calls inside each pipeline's requests, by model and cost component.",
    PIPELINE_LABELS,
    "costwatch.pipeline.cost.usd",
)
PIPELINE_TOKENS = MetricSpec(
    "costwatch_pipeline_tokens_total",
    "counter",
    "Tokens of the calls inside each pipeline's requests, by model and cost component.",
    PIPELINE_LABELS,
    "costwatch.pipeline.tokens",
    "{token}",
)

PROMETHEUS_METRICS: tuple[MetricSpec, ...] = (
    COST_USD,
    TOKENS,
    REQUESTS,
    DURATION,
    REQUEST_COST,
    CONTEXT_TOKENS,
    CONTEXT_COST,
    UNPRICED,
    CACHE_REQUESTS,
    CACHE_SAVED,
    BUDGET_SPENT,
    BUDGET_LIMIT,
    BUDGET_BLOCKED,
    BUDGET_STATE_LOST,
    INTERNAL_ERRORS,
    LABEL_OVERFLOW,
    LIFECYCLE_COST,
    FIXED_COST_RATE,
    OUTCOMES,
    OUTCOME_COST,
    OUTCOMES_UNMATCHED,
    PIPELINE_COST,
    PIPELINE_TOKENS,
)
"""Everything the Prometheus exporter exposes (and, with dots, the ``costwatch.*`` OTel metrics)."""

# --- OpenTelemetry GenAI semantic conventions -------------------------------------------------

GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
GEN_AI_DATA_SOURCE_ID = "gen_ai.data_source.id"
ERROR_TYPE = "error.type"

GEN_AI_PROVIDER_NAMES = {
    "aws": "aws.bedrock",
    "azure": "azure.ai.openai",
    "google": "gcp.gen_ai",
    "mistral": "mistral_ai",
    "x-ai": "x_ai",
    "ibm": "ibm.watsonx.ai",
}
"""costwatch's provider label -> the well-known ``gen_ai.provider.name`` value where the
convention spells it differently (others, ``openai``, ``anthropic``, ``groq``..., are equal)."""


def gen_ai_provider_name(provider: str) -> str:
    return GEN_AI_PROVIDER_NAMES.get(provider, provider)


GEN_AI_TOKEN_USAGE = MetricSpec(
    "gen_ai_client_token_usage",
    "histogram",
    "Number of input and output tokens used.",
    (
        GEN_AI_OPERATION_NAME,
        GEN_AI_PROVIDER_NAME,
        GEN_AI_REQUEST_MODEL,
        GEN_AI_RESPONSE_MODEL,
        GEN_AI_TOKEN_TYPE,
    ),
    "gen_ai.client.token.usage",
    "{token}",
    TOKEN_USAGE_BUCKETS,
)
GEN_AI_OPERATION_DURATION = MetricSpec(
    "gen_ai_client_operation_duration_seconds",
    "histogram",
    "GenAI operation duration.",
    (
        GEN_AI_OPERATION_NAME,
        GEN_AI_PROVIDER_NAME,
        GEN_AI_REQUEST_MODEL,
        GEN_AI_RESPONSE_MODEL,
        ERROR_TYPE,
    ),
    "gen_ai.client.operation.duration",
    "s",
    DURATION_BUCKETS,
)
"""``name`` is where the collector's Prometheus exporter puts these (dots → ``_``, unit suffix)."""

OTEL_GEN_AI_METRICS: tuple[MetricSpec, ...] = (GEN_AI_TOKEN_USAGE, GEN_AI_OPERATION_DURATION)

ALL_METRICS: tuple[MetricSpec, ...] = (*PROMETHEUS_METRICS, *OTEL_GEN_AI_METRICS)


def defined_series_names() -> frozenset[str]:
    """Every name a dashboard or rule may reference: the series, and each histogram's family."""
    return frozenset(
        {series for spec in ALL_METRICS for series in spec.series_names()}
        | {spec.name for spec in ALL_METRICS}
    )


def spec_by_name(name: str) -> MetricSpec:
    """The spec exposing series ``name`` (``costwatch_duration_seconds_bucket`` included)."""
    for spec in ALL_METRICS:
        if name in spec.series_names() or name == spec.name:
            return spec
    raise KeyError(name)
