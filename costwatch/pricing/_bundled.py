"""The bundled supplement to genai-prices: embeddings, OpenAI fine-tuned inference, rerankers.

Plain data, in the same shape as the user YAML layer (``models: [...]``, USD per million
tokens), so one validator checks both.  It sits between the user layer and genai-prices:
user > bundled > genai-prices.

Sources (published list prices, checked 2026-11):

* OpenAI embeddings and fine-tuned inference: https://openai.com/api/pricing/ (sections
  "Embeddings" and "Fine-tuning"; inference prices of a fine-tuned model, training excluded).
  genai-prices 0.2.3 agrees on the embedding prices and on the ``ft:`` input/output prices it
  knows, but has no cached-input price for fine-tuned models, which is why they live here.
* Cohere Rerank: https://cohere.com/pricing ("Rerank: $2.00 per 1K searches").  A *search* is
  one query over at most 100 documents (longer documents are split into chunks that count as
  documents).  It is priced with ``per_request_usd``: :meth:`costwatch.pricing._catalog.Price.cost`
  charges it once per call, or ``requests=`` times when the caller counted search units.
* Cohere embeddings: https://cohere.com/pricing (Embed 3: $0.10 per 1M tokens).
* Voyage rerankers: https://docs.voyageai.com/docs/pricing (rerank-2 / rerank-2.5: $0.05 per 1M
  tokens, rerank-2-lite / rerank-2.5-lite: $0.02 per 1M tokens; tokens of query + documents).
  Voyage embeddings are already in genai-prices and are not repeated here.

``ft:`` entries are keyed by their *base model without the date suffix*:
``ft:gpt-4o-mini-2024-07-18:acme::x1`` resolves through ``ft:gpt-4o-mini``.
"""

from __future__ import annotations

from typing import Any

BUNDLED_PRICES: dict[str, Any] = {
    "models": [
        # --- OpenAI embeddings (input only) -----------------------------------------------
        {"provider": "openai", "model": "text-embedding-3-small", "input_per_mtok": "0.02"},
        {"provider": "openai", "model": "text-embedding-3-large", "input_per_mtok": "0.13"},
        {"provider": "openai", "model": "text-embedding-ada-002", "input_per_mtok": "0.10"},
        # --- OpenAI fine-tuned inference ----------------------------------------------------
        {
            "provider": "openai",
            "model": "ft:gpt-4o-mini",
            "input_per_mtok": "0.30",
            "cache_read_per_mtok": "0.15",
            "output_per_mtok": "1.20",
            "fine_tuned": True,
        },
        {
            "provider": "openai",
            "model": "ft:gpt-4o",
            "input_per_mtok": "3.75",
            "cache_read_per_mtok": "1.875",
            "output_per_mtok": "15.00",
            "fine_tuned": True,
        },
        {
            "provider": "openai",
            "model": "ft:gpt-3.5-turbo",
            "input_per_mtok": "3.00",
            "output_per_mtok": "6.00",
            "fine_tuned": True,
        },
        {
            "provider": "openai",
            "model": "ft:gpt-4.1",
            "input_per_mtok": "3.00",
            "cache_read_per_mtok": "0.75",
            "output_per_mtok": "12.00",
            "fine_tuned": True,
        },
        {
            "provider": "openai",
            "model": "ft:gpt-4.1-mini",
            "input_per_mtok": "0.80",
            "cache_read_per_mtok": "0.20",
            "output_per_mtok": "3.20",
            "fine_tuned": True,
        },
        {
            "provider": "openai",
            "model": "ft:gpt-4.1-nano",
            "input_per_mtok": "0.20",
            "cache_read_per_mtok": "0.05",
            "output_per_mtok": "0.80",
            "fine_tuned": True,
        },
        {
            # reinforcement fine-tuning of o4-mini: reasoning tokens bill at the output price
            "provider": "openai",
            "model": "ft:o4-mini",
            "input_per_mtok": "4.00",
            "cache_read_per_mtok": "1.00",
            "output_per_mtok": "16.00",
            "fine_tuned": True,
        },
        {
            "provider": "openai",
            "model": "ft:davinci-002",
            "input_per_mtok": "12.00",
            "output_per_mtok": "12.00",
            "fine_tuned": True,
        },
        {
            "provider": "openai",
            "model": "ft:babbage-002",
            "input_per_mtok": "1.60",
            "output_per_mtok": "1.60",
            "fine_tuned": True,
        },
        # --- Cohere embeddings and rerankers ------------------------------------------------
        {"provider": "cohere", "model": "embed-english-v3.0", "input_per_mtok": "0.10"},
        {"provider": "cohere", "model": "embed-multilingual-v3.0", "input_per_mtok": "0.10"},
        {"provider": "cohere", "model": "embed-english-light-v3.0", "input_per_mtok": "0.10"},
        {"provider": "cohere", "model": "embed-multilingual-light-v3.0", "input_per_mtok": "0.10"},
        {"provider": "cohere", "model": "rerank-v3.5", "per_request_usd": "0.002"},
        {"provider": "cohere", "model": "rerank-english-v3.0", "per_request_usd": "0.002"},
        {"provider": "cohere", "model": "rerank-multilingual-v3.0", "per_request_usd": "0.002"},
        # --- Voyage rerankers (token priced) ------------------------------------------------
        {"provider": "voyageai", "model": "rerank-2", "input_per_mtok": "0.05"},
        {"provider": "voyageai", "model": "rerank-2-lite", "input_per_mtok": "0.02"},
        {"provider": "voyageai", "model": "rerank-2.5", "input_per_mtok": "0.05"},
        {"provider": "voyageai", "model": "rerank-2.5-lite", "input_per_mtok": "0.02"},
    ]
}
