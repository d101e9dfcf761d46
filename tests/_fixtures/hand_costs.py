"""Usages the fake provider reports, the token partition costwatch must record for them and
their cost computed by hand from the published per-million prices: gpt-4o-mini $0.15 input /
$0.075 cached input / $0.60 output; o4-mini $1.10 / $0.275 / $4.40 (reasoning bills as
output); text-embedding-3-small $0.02; Claude Sonnet 4 $3 input / $0.30 cache read / $3.75
5-minute and $6 one-hour cache write / $15 output."""

from __future__ import annotations

from decimal import Decimal

from costwatch._core.record import TokenUsage
from tests._fixtures.fake_providers import AnthropicUsage, OpenAIUsage

M = Decimal(1_000_000)
REPLY = "Hello from the fake provider."
MESSAGES = [{"role": "user", "content": "What is the refund policy?"}]

MINI_USAGE = OpenAIUsage(prompt_tokens=1200, cached_tokens=1024, completion_tokens=300)
MINI_TOKENS = TokenUsage(input=176, cache_read=1024, output=300)
MINI_COST = (176 * Decimal("0.15") + 1024 * Decimal("0.075") + 300 * Decimal("0.60")) / M

O4_USAGE = OpenAIUsage(
    prompt_tokens=2000, cached_tokens=1536, completion_tokens=900, reasoning_tokens=640
)
O4_TOKENS = TokenUsage(input=464, cache_read=1536, output=260, reasoning=640)
O4_COST = (464 * Decimal("1.10") + 1536 * Decimal("0.275") + 900 * Decimal("4.40")) / M

EMBEDDING_PRICE = Decimal("0.02") / M
"""text-embedding-3-small, per token."""

CLAUDE = "claude-sonnet-4-20250514"
CLAUDE_USAGE = AnthropicUsage(
    input_tokens=100,
    cache_read_input_tokens=2000,
    cache_write_5m=1000,
    cache_write_1h=500,
    output_tokens=250,
)
CLAUDE_TOKENS = TokenUsage(
    input=100, cache_read=2000, cache_write=1500, output=250, cache_write_1h=500
)
CLAUDE_COST = (
    100 * Decimal(3)
    + 2000 * Decimal("0.30")
    + 1000 * Decimal("3.75")
    + 500 * Decimal(6)
    + 250 * Decimal(15)
) / M
