"""costwatch: runtime cost monitoring for LLM applications.

Exact dollars, tokens and latency for every generation, embedding and retrieval call, attributed
to service, feature, team, tenant, pipeline stage and strategy (RAG / fine-tuned); a Redis-backed
retrieval cache that counts what it saved; budgets that warn or block before a call overspends;
Prometheus and OpenTelemetry exporters.

    import costwatch

    costwatch.configure(service="support-bot")
    client = costwatch.instrument(OpenAI())
    with costwatch.tags(feature="faq", team="support"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])
    print(costwatch.summary().total_usd)
"""

from __future__ import annotations

from costwatch._configure import configure, runtime, shutdown
from costwatch._core.context import context_executor, tags, wrap
from costwatch._core.errors import BudgetExceeded, ConfigError
from costwatch._core.record import CostRecord, TokenUsage
from costwatch._core.sink import (
    BaseSink,
    CacheEvent,
    FixedCost,
    LifecycleCost,
    Outcome,
    RequestEnd,
    Sink,
)
from costwatch._version import __version__ as __version__
from costwatch.accounting._ledger import Summary
from costwatch.accounting._lifecycle import fixed_cost, indexing, record_training
from costwatch.accounting._outcomes import outcome
from costwatch.accounting._recorder import record
from costwatch.accounting._request import request
from costwatch.budgets._alerts import BudgetAlert
from costwatch.budgets._budget import budget
from costwatch.cache._retrieval_cache import RetrievalCache
from costwatch.capture._batch import record_batch_results
from costwatch.capture._classes import instrument, uninstrument
from costwatch.capture._decorators import embedding, generation, retrieval
from costwatch.exporters.prometheus import serve_metrics

__all__ = [
    "BaseSink",
    "BudgetAlert",
    "BudgetExceeded",
    "CacheEvent",
    "ConfigError",
    "CostRecord",
    "FixedCost",
    "LifecycleCost",
    "Outcome",
    "RequestEnd",
    "RetrievalCache",
    "Sink",
    "Summary",
    "TokenUsage",
    "budget",
    "configure",
    "context_executor",
    "embedding",
    "fixed_cost",
    "generation",
    "indexing",
    "instrument",
    "outcome",
    "record",
    "record_batch_results",
    "record_training",
    "request",
    "retrieval",
    "serve_metrics",
    "shutdown",
    "summary",
    "tags",
    "uninstrument",
    "wrap",
]


def summary() -> Summary:
    """In-process totals by strategy, stage, model, feature and request pipeline."""
    return runtime().ledger.summary()
