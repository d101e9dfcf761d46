"""The demo's closing comparison: for each pipeline, what a successful answer costs now, what
the alternative would cost, and the monthly volume at which the choice flips."""

from __future__ import annotations

from typing import Any

from costwatch.accounting._ledger import Summary

DEMO_SCENARIOS: dict[str, Any] = {
    "current": {
        # The demo runs a day's traffic in seconds: evaluate at realistic monthly volumes.
        "answer_question": {"monthly_requests": 300_000, "reindex_every_days": 7},
        "classify_ticket": {"monthly_requests": 150_000, "retrain_every_days": 30},
        "draft_reply": {"monthly_requests": 40_000, "retrain_every_days": 30},
        "summarize_thread": {"monthly_requests": 40_000},
    },
    "candidates": [
        {
            "name": "fine-tuned gpt-4o-mini (serverless)",
            "pipeline": "answer_question",
            "kind": "fine_tuned",
            "base_model": "gpt-4o-mini",
            "training_tokens": 3_000_000,
            "epochs": 3,
            "retrain_every_days": 7,  # the knowledge base changes weekly
            "prompt_tokens": 80,  # the instructions are learnt; no retrieved context
            "success_rate": "0.78",  # stale between retrains: below RAG's observed rate
        },
        {
            "name": "fine-tuned gpt-4o-mini on Azure ($1.70/h)",
            "pipeline": "answer_question",
            "kind": "fine_tuned",
            "base_model": "gpt-4o-mini",
            "training_tokens": 3_000_000,
            "epochs": 3,
            "retrain_every_days": 7,
            "hosting_usd_per_hour": "1.70",
            "prompt_tokens": 80,
            "success_rate": "0.78",
        },
        {
            "name": "RAG on gpt-4o-mini + Cohere rerank",
            "pipeline": "classify_ticket",
            "kind": "rag",
            "model": "gpt-4o-mini",
            "query_tokens": 60,
            "context_tokens": 1200,
            "reranker": {"provider": "cohere", "model": "rerank-v3.5"},
            "retrieval_usd_per_query": "0.000004",
            "vector_store_usd_per_month": 50,
            "documents": 20_000,
            "tokens_per_document": 300,
            "reindex_every_days": 30,
            "success_rate": "0.90",
        },
    ],
}


def closing_comparison(summary: Summary, *, explain: bool = False) -> tuple[str, Any]:
    """``(text, comparison)``: the story in a few lines; with ``explain`` then the full
    comparison with every figure's arithmetic and price source."""
    from costwatch import analysis
    from costwatch.analysis._economics import show

    comparison = analysis.compare(
        analysis.traffic_from_summary(summary), analysis.load_scenarios(DEMO_SCENARIOS)
    )
    lines = ["RAG or fine-tuning? What a successful answer costs, and when the choice flips:"]
    for pc in comparison.pipelines:
        v = pc.monthly_requests
        now = pc.current.per_success(v)
        lines.append(
            f"  {pc.pipeline} [{pc.current.strategy}] at {show(v)} requests a month: "
            f"${show(now) if now is not None else 'n/a'} per successful answer now"
        )
        for verdict in pc.candidates:
            alt = verdict.option.per_success(v)
            flip = (
                f"the choice flips at {show(verdict.break_even_requests)} requests a month "
                f"(above it: {verdict.cheaper_above})"
                if verdict.break_even_requests is not None
                else f"{verdict.cheaper_above} is cheaper at any volume"
            )
            lines.append(
                f"    vs {verdict.option.name}: ${show(alt) if alt is not None else 'n/a'}; {flip}"
            )
    text = "\n".join(lines) + "\n"
    if explain:
        text += "\n" + analysis.render_text(comparison, explain=True)
    return text, comparison
