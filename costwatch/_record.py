"""The two values that flow through costwatch: token usage and the cost record built from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

UsageSource = Literal["reported", "estimated", "none"]
Status = Literal["ok", "error"]

TOKEN_TYPES: tuple[str, ...] = ("input", "cache_read", "cache_write", "output", "reasoning")
"""The ``token_type`` partition of billed tokens (DESIGN.md): summing over it is meaningful."""


@dataclass(slots=True, frozen=True)
class TokenUsage:
    """Billed tokens of one call, partitioned so that the fields sum to the billed total.

    ``input`` is *fresh* input: OpenAI's ``prompt_tokens`` minus its cached tokens, Anthropic's
    ``input_tokens`` as reported.  ``output`` is visible output: completion tokens minus
    reasoning tokens.  ``cache_write_1h`` is the part of ``cache_write`` billed at the one-hour
    cache-write rate (Anthropic); it is a subset, not a sixth partition.
    """

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0
    cache_write_1h: int = 0

    @property
    def total(self) -> int:
        return self.input + self.cache_read + self.cache_write + self.output + self.reasoning

    @property
    def prompt_total(self) -> int:
        """All input-side tokens: fresh input plus cache reads and writes."""
        return self.input + self.cache_read + self.cache_write

    def by_type(self) -> dict[str, int]:
        return {
            "input": self.input,
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
            "output": self.output,
            "reasoning": self.reasoning,
        }

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input + other.input,
            self.cache_read + other.cache_read,
            self.cache_write + other.cache_write,
            self.output + other.output,
            self.reasoning + other.reasoning,
            self.cache_write_1h + other.cache_write_1h,
        )


EMPTY_USAGE = TokenUsage()


@dataclass(slots=True)
class CostRecord:
    """One priced call.  Built once per call and handed, unchanged, to every sink."""

    provider: str
    model: str
    stage: str
    usage: TokenUsage
    cost_usd: Decimal | None
    """``None`` when the model has no price: never reported as $0."""
    latency_s: float
    status: Status = "ok"
    input_cost_usd: Decimal | None = None
    """The input-side part of ``cost_usd`` (fresh input, cache reads and writes)."""
    strategy: str = "base"
    service: str = ""
    feature: str = ""
    team: str = ""
    tenant: str = ""
    operation: str = ""
    """GenAI operation name: ``chat``, ``embeddings``, ``retrieval``, ``generate_content`` ..."""
    response_model: str = ""
    price_source: str | None = None
    """Where the price came from: ``user``, ``bundled``, ``genai-prices`` or ``None``."""
    usage_source: UsageSource = "reported"
    incomplete: bool = False
    """A stream abandoned early or interrupted: recorded once, with what was known."""
    error_type: str = ""
    source: str = ""
    """Retrieval source (``@retrieval(source=...)``)."""
    pipeline: str = ""
    """Name of the enclosing ``costwatch.request``, if any."""
    request_id: str = ""
    context_tokens: dict[str, int] = field(default_factory=dict)
    """Input tokens that came from retrieved context, per retrieval source."""
    context_cost_usd: dict[str, Decimal] = field(default_factory=dict)
    """The share of input cost those context tokens made, per retrieval source."""
    cache_hit: bool = False
    timestamp: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)
    """Every tag in force (including feature/team/tenant) for budget matching."""
