"""``costwatch estimate``: what a prompt would cost, tokens (estimated) times the price."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from costwatch._core.money import format_usd
from costwatch._core.record import TokenUsage
from costwatch._core.tokens import (
    CHARS_PER_TOKEN,
    count_tokens,
    encoding_is_native,
    encoding_name_for,
)
from costwatch.pricing._catalog import PriceCatalog
from costwatch.pricing._price import Price


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """What a prompt would cost: tokens (estimated) times the resolved price."""

    model: str
    provider: str
    input_tokens: int
    output_tokens: int
    method: str
    """``tiktoken`` or ``heuristic``."""
    encoding: str
    price: Price | None
    input_cost_usd: Decimal | None
    output_cost_usd: Decimal | None
    total_cost_usd: Decimal | None


def estimate_cost(
    text: str,
    model: str,
    provider: str | None,
    catalog: PriceCatalog,
    expected_output_tokens: int = 0,
) -> CostEstimate:
    """Estimate the cost of sending ``text`` to ``model`` and getting ``expected_output_tokens``.

    ``provider`` may be None: it is inferred from the model name, or taken from the user's
    price file when only that names the model.  Costs are ``None`` when the model has no price.
    """
    if expected_output_tokens < 0:
        raise ValueError("expected_output_tokens must be >= 0")
    input_tokens, method = count_tokens(text, model)
    price = catalog.resolve(provider or "", model)
    resolution = catalog.resolution(provider or "", model)
    chosen = provider or (resolution.provider if resolution is not None else "")
    input_cost = output_cost = total = None
    if price is not None:
        usage = TokenUsage(input=input_tokens, output=expected_output_tokens)
        total, input_cost = price.cost_split(usage)
        output_cost = total - input_cost
    return CostEstimate(
        model=model,
        provider=chosen or "unknown",
        input_tokens=input_tokens,
        output_tokens=expected_output_tokens,
        method=method,
        encoding=encoding_name_for(model),
        price=price,
        input_cost_usd=input_cost,
        output_cost_usd=output_cost,
        total_cost_usd=total,
    )


def _usd(value: Decimal | None) -> str:
    return "unknown (no price)" if value is None else f"${format_usd(value)}"


def format_estimate(estimate: CostEstimate) -> str:
    """The ``costwatch estimate`` report."""
    how = (
        f"tiktoken {estimate.encoding}"
        if estimate.method == "tiktoken"
        else f"heuristic, ~{CHARS_PER_TOKEN} chars/token (tiktoken encoding unavailable)"
    )
    if estimate.method == "tiktoken" and not encoding_is_native(estimate.model):
        how += f" (approximation: {estimate.model} has its own tokenizer)"
    lines = [
        f"model          {estimate.model}",
        f"provider       {estimate.provider}",
        f"input tokens   {estimate.input_tokens}  [{how}]",
        f"output tokens  {estimate.output_tokens}  [expected, as given]",
        f"input cost     {_usd(estimate.input_cost_usd)}",
        f"output cost    {_usd(estimate.output_cost_usd)}",
        f"total          {_usd(estimate.total_cost_usd)}",
    ]
    if estimate.price is not None:
        lines.append(f"price source   {estimate.price.source}")
    else:
        lines.append(
            "no price known for this model: add it to a price file (see `costwatch prices MODEL`)"
        )
    return "\n".join(lines)
