"""What a pipeline's money went on, by component: the unit of the RAG-or-fine-tuning question.

A generation's cost splits into its fresh input (the prompt without retrieved context), the
retrieved context (``context_cost_usd``) and its output; the other stages are a component each.
Exporters, the ledger's readers and the analysis all split calls with :func:`split`, so a
profile read from ``summary()``, from Prometheus or from the record log adds up the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from costwatch._core.record import ZERO

COMPONENTS: tuple[str, ...] = (
    "fresh_input",
    "retrieved_context",
    "output",
    "embedding",
    "retrieval",
    "rerank",
    "other",
)
"""Per-request (variable) components, in display order."""

_ONE = Decimal(1)
_BY_STAGE = {"embedding": "embedding", "retrieval": "retrieval", "rerank": "rerank"}
CONTEXT_SHARE_QUANTUM = Decimal("1e-20")
"""Dollars of a context share are rounded here (far below a nano-dollar).  A share is a
quotient: unrounded it has 28 significant digits, and sums of such numbers round differently
by grouping, so ``summary()`` (sums of rows) and the record log (a split per call) would differ
in the last digit.  Rounded to a fixed exponent, every sum under $10^8 is exact."""


def context_share(input_cost_usd: Decimal, context_tokens: int, prompt_tokens: int) -> Decimal:
    """The part of a call's input-side cost its ``context_tokens`` of ``prompt_tokens`` made."""
    share = (input_cost_usd * context_tokens / prompt_tokens).quantize(CONTEXT_SHARE_QUANTUM)
    # no trailing zeros (they would carry into every figure computed from the share)
    return share.quantize(_ONE) if share == share.to_integral_value() else share.normalize()


def split(
    stage: str,
    cost_usd: Decimal | None,
    input_cost_usd: Decimal | None,
    tokens: Mapping[str, int],
    context_tokens: int,
    context_cost_usd: Decimal,
) -> list[tuple[str, Decimal | None, int]]:
    """``(component, dollars, tokens)`` of one call or of a sum of calls of one stage.

    Dollars are ``None`` where the calls were unpriced.  Tokens: input-side tokens for the
    input components, output plus reasoning for ``output``.
    """
    prompt = tokens.get("input", 0) + tokens.get("cache_read", 0) + tokens.get("cache_write", 0)
    if stage == "generation":
        out_tokens = tokens.get("output", 0) + tokens.get("reasoning", 0)
        if cost_usd is None:
            return [
                ("fresh_input", None, prompt - context_tokens),
                ("retrieved_context", None, context_tokens),
                ("output", None, out_tokens),
            ]
        input_side = input_cost_usd if input_cost_usd is not None else ZERO
        return [
            ("fresh_input", input_side - context_cost_usd, prompt - context_tokens),
            ("retrieved_context", context_cost_usd, context_tokens),
            ("output", cost_usd - input_side, out_tokens),
        ]
    return [(_BY_STAGE.get(stage, "other"), cost_usd, prompt)]
