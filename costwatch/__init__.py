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

from costwatch._batch import record_batch_results
from costwatch._budget import budget
from costwatch._budget_alerts import BudgetAlert
from costwatch._cache import RetrievalCache
from costwatch._context import tags
from costwatch._decorators import embedding, generation, retrieval
from costwatch._errors import BudgetExceeded, ConfigError
from costwatch._instrument import instrument, uninstrument
from costwatch._ledger import Summary
from costwatch._record import CostRecord, TokenUsage
from costwatch._recorder import record
from costwatch._request import request
from costwatch._runtime import configure, runtime
from costwatch.exporters.prometheus import serve_metrics

__all__ = [
    "BudgetAlert",
    "BudgetExceeded",
    "ConfigError",
    "CostRecord",
    "RetrievalCache",
    "Summary",
    "TokenUsage",
    "budget",
    "configure",
    "embedding",
    "generation",
    "instrument",
    "record",
    "record_batch_results",
    "request",
    "retrieval",
    "serve_metrics",
    "summary",
    "tags",
    "uninstrument",
]

__version__ = "0.1.0"


def summary() -> Summary:
    """In-process totals by strategy, stage, model, feature and request pipeline."""
    return runtime().ledger.summary()
