"""A hand-built traffic profile, recorded through the public API, whose every figure a test can
compute by hand: two pipelines, their outcomes and lifecycle costs.

``answer`` (RAG, 10 requests), each request:
  embedding  50 tok of text-embedding-3-small ($0.02/1M)           = $0.000001
  retrieval  one query at $0.000004                                 = $0.000004
  generation gpt-4o-mini ($0.15/1M in, $0.60/1M out), 1000 tok in of which 400 are the
             retrieved document, 200 out: fresh input 600 tok = $0.00009, context 400 tok =
             $0.00006, output = $0.00012
  8 succeed, 2 fail.  Lifecycle: an indexing run (1M tok of embeddings = $0.02) and a vector
  store at $50 a month.
``classify`` (fine-tuned, 4 requests), each ft:gpt-4o-mini ($0.30/1M in, $1.20/1M out) 300 tok
  in, 5 out = $0.000096; 3 succeed, 1 fails.  Lifecycle: a training run of 500k tok x 2 epochs
  at $3.00/1M = $3.00, hosting at $1.70 an hour.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import costwatch

DOC = " ".join(["kb"] * 400)  # 400 tokens with gpt-4o-mini's tokenizer
FT_MODEL = "ft:gpt-4o-mini-2024-07-18:acme::x1"


def record_profile() -> None:
    @costwatch.retrieval(source="kb", price_usd=Decimal("0.000004"))
    def search(query: str) -> list[dict[str, Any]]:
        return [{"id": "kb-1", "text": DOC}]

    with costwatch.indexing("answer", knowledge_base="kb"):
        costwatch.record(
            provider="openai",
            model="text-embedding-3-small",
            input_tokens=1_000_000,
            stage="embedding",
        )
    costwatch.fixed_cost(
        "vector-store", usd_per_month=50, kind="vector_store", pipeline="answer", strategy="rag"
    )
    ids = []
    for i in range(10):
        with costwatch.request("answer", strategy="rag") as req:
            costwatch.record(
                provider="openai",
                model="text-embedding-3-small",
                input_tokens=50,
                stage="embedding",
            )
            search("how do refunds work?")
            costwatch.record(
                provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=200
            )
            if i < 6:
                req.outcome("success" if i < 5 else "failure")
        ids.append(req.request_id)
    for request_id, value in zip(
        ids[6:], ("success", "success", "success", "failure"), strict=True
    ):
        costwatch.outcome(request_id, value)

    costwatch.record_training(
        model="gpt-4o-mini", training_tokens=500_000, epochs=2, pipeline="classify"
    )
    costwatch.fixed_cost("classifier-hosting", usd_per_hour="1.70", pipeline="classify")
    for i in range(4):
        with costwatch.request("classify", strategy="fine_tuned") as req:
            costwatch.record(provider="openai", model=FT_MODEL, input_tokens=300, output_tokens=5)
            req.outcome("success" if i else "failure")


SCENARIOS: dict[str, Any] = {
    "monthly_requests": 1_000_000,
    "current": {
        "answer": {"reindex_every_days": 15},
        "classify": {"retrain_every_days": 30},
    },
    "candidates": [
        {
            "name": "ft-hosted",
            "pipeline": "answer",
            "kind": "fine_tuned",
            "base_model": "gpt-4o-mini",
            "training_tokens": 2_000_000,
            "epochs": 3,
            "retrain_every_days": 30,
            "hosting_usd_per_hour": "1.70",
            "prompt_tokens": 200,
            "success_rate": "0.9",
        },
        {
            "name": "ft-serverless",
            "pipeline": "answer",
            "kind": "fine_tuned",
            "base_model": "gpt-4o-mini",
            "training_tokens": 2_000_000,
            "epochs": 3,
            "retrain_every_days": 30,
            "prompt_tokens": 200,
            "success_rate": "0.9",
        },
        {
            "name": "rag-mini",
            "pipeline": "classify",
            "kind": "rag",
            "model": "gpt-4o-mini",
            "query_tokens": 20,
            "context_tokens": 800,
            "reranker": {"provider": "cohere", "model": "rerank-v3.5"},
            "retrieval_usd_per_query": "0.000004",
            "vector_store_usd_per_month": 25,
            "documents": 1000,
            "tokens_per_document": 500,
            "reindex_every_days": 10,
            "success_rate": "0.95",
        },
    ],
}
