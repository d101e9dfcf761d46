"""Price verification: each call's cost against the provider's published per-million prices.

Every expected figure is the arithmetic from the published prices (USD per million tokens,
``M``), with the page it comes from and the date it was read.  Calls go the way an application
makes them: SDK-shaped responses through ``instrument()`` (OpenAI, Azure OpenAI, Anthropic,
Bedrock, Vertex AI, Gemini; Groq, DeepSeek, Together and Mistral through the OpenAI SDK at their
base URLs) over HTTP to the local fake endpoint, dicts through the decorators, and ``record()``.
Each call is priced at an injected clock: the prices in force at that instant, whatever time the
test runs at.  ``None`` is "no price": a model that does not exist is never guessed.

Sources (all read 2026-12-04 unless a case says otherwise):
  OPENAI    https://platform.openai.com/docs/pricing
  AZURE     https://azure.microsoft.com/en-us/pricing/details/cognitive-services/openai-service/
            (global deployments: OpenAI's list prices)
  ANTHROPIC https://docs.anthropic.com/en/docs/about-claude/pricing (incl. "Long context pricing")
  BEDROCK   https://aws.amazon.com/bedrock/pricing/ (Anthropic; regional endpoints +10 %)
  VERTEX    https://cloud.google.com/vertex-ai/generative-ai/pricing
  GEMINI    https://ai.google.dev/gemini-api/docs/pricing
  GROQ      https://groq.com/pricing
  DEEPSEEK  https://api-docs.deepseek.com/quick_start/pricing (the 2025-09-05 and 2025-09-29
            changes; before 2025-09-05 16:00 UTC, a 50 %+ discount 16:30-00:30 UTC)
  MISTRAL   https://mistral.ai/pricing#api-pricing (mistral-small-latest -> Small 4 2026-03-16)
  TOGETHER  https://www.together.ai/pricing
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from google import genai

from costwatch import _configure
from costwatch.pricing import gaps
from tests._fixtures.capture import CaptureSink
from tests._fixtures.fake_providers import (  # noqa: F401 - the fixture
    AnthropicUsage,
    FakeProvider,
    GeminiUsage,
    OpenAIUsage,
    fake_provider_fixture,
    http_client_to_the_fake,
)
from tests._fixtures.runtime import configure_for_test

M = Decimal(1_000_000)
MESSAGES = [{"role": "user", "content": "What is the refund policy?"}]


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[arg-type]


NOW = utc(2026, 12, 1, 12)
"""The default instant of a case: the prices in force on the day the sources were read."""

GROQ = "https://api.groq.com/openai/v1"
DEEPSEEK = "https://api.deepseek.com/v1"
TOGETHER = "https://api.together.xyz/v1"
MISTRAL = "https://api.mistral.ai/v1"


@dataclass(frozen=True)
class Case:
    route: str
    """openai | openai@<base url> | azure | anthropic | bedrock | vertex | gemini |
    dict:<provider> | record:<provider>"""
    model: str
    usage: Any
    cost: Decimal | None
    source: str = ""
    """The price_source the record carries ("" = not checked)."""
    at: float = NOW
    prices: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def oai(prompt: int, completion: int, **kw: int) -> OpenAIUsage:
    return OpenAIUsage(prompt_tokens=prompt, completion_tokens=completion, **kw)


def ant(input_tokens: int, output_tokens: int, **kw: int) -> AnthropicUsage:
    return AnthropicUsage(input_tokens=input_tokens, output_tokens=output_tokens, **kw)


def gem(prompt: int, candidates: int, **kw: int) -> GeminiUsage:
    return GeminiUsage(prompt_token_count=prompt, candidates_token_count=candidates, **kw)


def compat(prompt: int, completion: int, **details: int) -> dict[str, Any]:
    """An OpenAI-compatible usage dict (Mistral, Together... return this shape)."""
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    if details:
        usage["prompt_tokens_details"] = details
    return usage


USER_PRICES = {
    "models": [
        # a negotiated gpt-4o rate without a cache-read price: inherits OpenAI's, scaled
        {
            "provider": "openai",
            "model": "gpt-4o",
            "input_per_mtok": "2.00",
            "output_per_mtok": "8.00",
        },
        # a self-hosted fine-tune priced from its GPU-hour, served through an OpenAI-compatible API
        {
            "provider": "self-hosted",
            "model": "llama-3-70b-ft",
            "gpu_hour_usd": "4.10",
            "tokens_per_second": 2500,
            "fine_tuned": True,
        },
        # a negotiated Claude rate that ends on 2026-07-01: list prices after that
        {
            "provider": "anthropic",
            "model": "claude-haiku-4-5",
            "input_per_mtok": "0.80",
            "output_per_mtok": "4.00",
            "valid_to": "2026-07-01",
        },
    ]
}

CASES = [
    # --- OpenAI (OPENAI) -------------------------------------------------------------------
    # gpt-4o-mini $0.15 input, $0.075 cached, $0.60 output
    pytest.param(
        Case(
            "openai",
            "gpt-4o-mini",
            oai(1200, 300, cached_tokens=1024),
            (176 * Decimal("0.15") + 1024 * Decimal("0.075") + 300 * Decimal("0.60")) / M,
            "genai-prices",
        ),
        id="openai-gpt-4o-mini-cached",
    ),
    pytest.param(
        Case(
            "openai",
            "gpt-4o-mini-2024-07-18",
            oai(1000, 200),
            (1000 * Decimal("0.15") + 200 * Decimal("0.60")) / M,
        ),
        id="openai-dated-snapshot",
    ),
    # gpt-4o $2.50 / $1.25 cached / $10
    pytest.param(
        Case(
            "openai",
            "gpt-4o",
            oai(2000, 500, cached_tokens=1000),
            (1000 * Decimal("2.50") + 1000 * Decimal("1.25") + 500 * Decimal("10")) / M,
        ),
        id="openai-gpt-4o",
    ),
    # gpt-4.1 $2 / $0.50 / $8
    pytest.param(
        Case(
            "openai",
            "gpt-4.1",
            oai(10000, 2000, cached_tokens=4000),
            (6000 * Decimal("2") + 4000 * Decimal("0.50") + 2000 * Decimal("8")) / M,
        ),
        id="openai-gpt-4.1",
    ),
    # gpt-4.1-mini $0.40 / $1.60
    pytest.param(
        Case(
            "openai",
            "gpt-4.1-mini",
            oai(10000, 2000),
            (10000 * Decimal("0.40") + 2000 * Decimal("1.60")) / M,
        ),
        id="openai-gpt-4.1-mini",
    ),
    # gpt-4.1-nano $0.10 / $0.025 cached / $0.40
    pytest.param(
        Case(
            "openai",
            "gpt-4.1-nano",
            oai(10000, 2000, cached_tokens=8000),
            (2000 * Decimal("0.10") + 8000 * Decimal("0.025") + 2000 * Decimal("0.40")) / M,
        ),
        id="openai-gpt-4.1-nano",
    ),
    # o3 $2 / $8; reasoning tokens bill as output
    pytest.param(
        Case(
            "openai",
            "o3",
            oai(5000, 3000, reasoning_tokens=2000),
            (5000 * Decimal("2") + 3000 * Decimal("8")) / M,
        ),
        id="openai-o3-reasoning",
    ),
    # o4-mini $1.10 / $0.275 cached / $4.40
    pytest.param(
        Case(
            "openai",
            "o4-mini",
            oai(2000, 900, cached_tokens=1536, reasoning_tokens=640),
            (464 * Decimal("1.10") + 1536 * Decimal("0.275") + 900 * Decimal("4.40")) / M,
        ),
        id="openai-o4-mini",
    ),
    # gpt-5 $1.25 / $0.125 cached / $10
    pytest.param(
        Case(
            "openai",
            "gpt-5",
            oai(8000, 4000, cached_tokens=2000, reasoning_tokens=3000),
            (6000 * Decimal("1.25") + 2000 * Decimal("0.125") + 4000 * Decimal("10")) / M,
        ),
        id="openai-gpt-5",
    ),
    # gpt-5-mini $0.25 / $2
    pytest.param(
        Case(
            "openai",
            "gpt-5-mini",
            oai(8000, 4000),
            (8000 * Decimal("0.25") + 4000 * Decimal("2")) / M,
        ),
        id="openai-gpt-5-mini",
    ),
    # gpt-4o-audio-preview: text $2.50 / $10, audio $40 / $80
    pytest.param(
        Case(
            "openai",
            "gpt-4o-audio-preview",
            oai(1000, 200, audio_prompt_tokens=600, audio_completion_tokens=150),
            (400 * Decimal("2.50") + 600 * Decimal("40") + 50 * Decimal("10") + 150 * Decimal("80"))
            / M,
            "bundled",
        ),
        id="openai-gpt-4o-audio-preview-audio-rates",
    ),
    pytest.param(
        Case(
            "openai",
            "gpt-4o-audio-preview-2024-12-17",
            oai(1000, 200, audio_prompt_tokens=600),
            (400 * Decimal("2.50") + 600 * Decimal("40") + 200 * Decimal("10")) / M,
            "bundled",
        ),
        id="openai-gpt-4o-audio-preview-dated",
    ),
    # gpt-4o-mini-audio-preview: text $0.15 / $0.60, audio $10 / $20
    pytest.param(
        Case(
            "openai",
            "gpt-4o-mini-audio-preview",
            oai(1000, 200, audio_prompt_tokens=600, audio_completion_tokens=150),
            (
                400 * Decimal("0.15")
                + 600 * Decimal("10")
                + 50 * Decimal("0.60")
                + 150 * Decimal("20")
            )
            / M,
            "bundled",
        ),
        id="openai-gpt-4o-mini-audio-preview-audio-rates",
    ),
    # gpt-audio: text $2.50 / $10, audio $32 / $64
    pytest.param(
        Case(
            "openai",
            "gpt-audio",
            oai(1000, 200, audio_prompt_tokens=600, audio_completion_tokens=150),
            (400 * Decimal("2.50") + 600 * Decimal("32") + 50 * Decimal("10") + 150 * Decimal("64"))
            / M,
        ),
        id="openai-gpt-audio",
    ),
    # gpt-4 (legacy -0613 snapshot) $30 / $60
    pytest.param(
        Case(
            "openai", "gpt-4-0613", oai(1000, 100), (1000 * Decimal("30") + 100 * Decimal("60")) / M
        ),
        id="openai-legacy-mmdd-snapshot",
    ),
    # fine-tuned gpt-4o-mini inference $0.30 / $1.20
    pytest.param(
        Case(
            "openai",
            "ft:gpt-4o-mini-2024-07-18:acme::x1",
            oai(1000, 100),
            (1000 * Decimal("0.30") + 100 * Decimal("1.20")) / M,
            "bundled",
        ),
        id="openai-fine-tuned",
    ),
    # gap: gpt-4o-mini publishes no audio rate: audio tokens at the text rate, marked
    pytest.param(
        Case(
            "openai",
            "gpt-4o-mini",
            oai(1000, 200, audio_prompt_tokens=100),
            (1000 * Decimal("0.15") + 200 * Decimal("0.60")) / M,
            "genai-prices:audio-at-text-rate",
        ),
        id="gap-audio-rate-unknown-is-marked",
    ),
    # gap: not a snapshot suffix, not a model
    pytest.param(Case("openai", "gpt-4o-mini-v2", oai(1000, 200), None), id="gap-openai-v2"),
    pytest.param(
        Case("openai", "gpt-4o-mini-2024-13-45", oai(1000, 200), None), id="gap-openai-invalid-date"
    ),
    # --- Azure OpenAI (AZURE): a deployment name, priced as the model the response names ----
    pytest.param(
        Case(
            "azure",
            "support-bot-prod",
            oai(1200, 300, cached_tokens=1024),
            (176 * Decimal("0.15") + 1024 * Decimal("0.075") + 300 * Decimal("0.60")) / M,
            extra={"deployed": "gpt-4o-mini-2024-07-18"},
        ),
        id="azure-deployment-gpt-4o-mini",
    ),
    pytest.param(
        Case(
            "azure",
            "writer",
            oai(2000, 500, cached_tokens=1000),
            (1000 * Decimal("2.50") + 1000 * Decimal("1.25") + 500 * Decimal("10")) / M,
            extra={"deployed": "gpt-4o-2024-08-06"},
        ),
        id="azure-deployment-gpt-4o",
    ),
    pytest.param(
        Case(
            "azure",
            "reasoner",
            oai(2000, 900, reasoning_tokens=640),
            (2000 * Decimal("1.10") + 900 * Decimal("4.40")) / M,
            extra={"deployed": "o4-mini-2025-04-16"},
        ),
        id="azure-deployment-o4-mini",
    ),
    # record(response_model=...) prices a deployment the same way
    pytest.param(
        Case(
            "record:azure",
            "support-bot-prod",
            {"input_tokens": 1000, "output_tokens": 200},
            (1000 * Decimal("0.15") + 200 * Decimal("0.60")) / M,
            extra={"response_model": "gpt-4o-mini-2024-07-18"},
        ),
        id="azure-record-response-model",
    ),
    # --- Anthropic (ANTHROPIC) --------------------------------------------------------------
    # Sonnet 4.5 $3 / $15, cache read $0.30, 5-min write $3.75, 1-hour write $6
    pytest.param(
        Case(
            "anthropic",
            "claude-sonnet-4-5-20250929",
            ant(1000, 500, cache_read_input_tokens=2000, cache_write_5m=1000),
            (
                1000 * Decimal("3")
                + 2000 * Decimal("0.30")
                + 1000 * Decimal("3.75")
                + 500 * Decimal("15")
            )
            / M,
        ),
        id="anthropic-sonnet-4.5",
    ),
    # above 200k prompt tokens: $6 / $22.50, cache read $0.60
    pytest.param(
        Case(
            "anthropic",
            "claude-sonnet-4-5-20250929",
            ant(150_000, 2000, cache_read_input_tokens=60_000),
            (150_000 * Decimal("6") + 60_000 * Decimal("0.60") + 2000 * Decimal("22.50")) / M,
        ),
        id="anthropic-sonnet-4.5-long-context",
    ),
    pytest.param(
        Case(
            "anthropic",
            "claude-sonnet-4-20250514",
            ant(250_000, 1000),
            (250_000 * Decimal("6") + 1000 * Decimal("22.50")) / M,
            "bundled",
        ),
        id="anthropic-sonnet-4-long-context",
    ),
    pytest.param(
        Case(
            "anthropic",
            "claude-sonnet-4-20250514",
            ant(1000, 500, cache_write_1h=2000),
            (1000 * Decimal("3") + 2000 * Decimal("6") + 500 * Decimal("15")) / M,
        ),
        id="anthropic-sonnet-4-one-hour-write",
    ),
    # Haiku 4.5 $1 / $5, cache read $0.10
    pytest.param(
        Case(
            "anthropic",
            "claude-haiku-4-5-20251001",
            ant(10_000, 1000, cache_read_input_tokens=5000),
            (10_000 * Decimal("1") + 5000 * Decimal("0.10") + 1000 * Decimal("5")) / M,
        ),
        id="anthropic-haiku-4.5",
    ),
    # Opus 4.1 $15 / $75, 5-min write $18.75
    pytest.param(
        Case(
            "anthropic",
            "claude-opus-4-1-20250805",
            ant(1000, 500, cache_write_5m=1000),
            (1000 * Decimal("15") + 1000 * Decimal("18.75") + 500 * Decimal("75")) / M,
        ),
        id="anthropic-opus-4.1",
    ),
    # Haiku 3.5 $0.80 / $4
    pytest.param(
        Case(
            "anthropic",
            "claude-3-5-haiku-20241022",
            ant(1000, 500),
            (1000 * Decimal("0.80") + 500 * Decimal("4")) / M,
        ),
        id="anthropic-haiku-3.5",
    ),
    # Sonnet 3.7 $3 / $15, web search $10 per 1,000 searches
    pytest.param(
        Case(
            "anthropic",
            "claude-3-7-sonnet-20250219",
            ant(1000, 500, web_search_requests=3),
            (1000 * Decimal("3") + 500 * Decimal("15")) / M + 3 * Decimal("10") / 1000,
        ),
        id="anthropic-web-search",
    ),
    pytest.param(
        Case(
            "anthropic",
            "claude-3-5-sonnet-latest",
            ant(1000, 500),
            (1000 * Decimal("3") + 500 * Decimal("15")) / M,
        ),
        id="anthropic-latest-alias",
    ),
    # gap: a mistyped date is not a snapshot
    pytest.param(
        Case("anthropic", "claude-sonnet-4-5-2025929", ant(1000, 500), None),
        id="gap-anthropic-mistyped-date",
    ),
    # a user rate in force until 2026-07-01, list prices after
    pytest.param(
        Case(
            "anthropic",
            "claude-haiku-4-5-20251001",
            ant(1000, 500),
            (1000 * Decimal("0.80") + 500 * Decimal("4.00")) / M,
            "user",
            at=utc(2026, 5, 1),
            prices=USER_PRICES,
        ),
        id="user-effective-dated-rate-in-force",
    ),
    pytest.param(
        Case(
            "anthropic",
            "claude-haiku-4-5-20251001",
            ant(1000, 500),
            (1000 * Decimal("1") + 500 * Decimal("5")) / M,
            "genai-prices",
            prices=USER_PRICES,
        ),
        id="user-effective-dated-rate-expired",
    ),
    # --- Bedrock (BEDROCK) -------------------------------------------------------------------
    # Sonnet 4.5 global $3 / $15; above 200k $6 / $22.50
    pytest.param(
        Case(
            "bedrock",
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            ant(1000, 500),
            (1000 * Decimal("3") + 500 * Decimal("15")) / M,
        ),
        id="bedrock-sonnet-4.5-global",
    ),
    pytest.param(
        Case(
            "bedrock",
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            ant(230_000, 2000),
            (230_000 * Decimal("6") + 2000 * Decimal("22.50")) / M,
            "genai-prices:tiers-from-anthropic",
        ),
        id="bedrock-sonnet-4.5-global-long-context",
    ),
    # regional (us.) $3.30 / $16.50; above 200k $6.60 / $24.75
    pytest.param(
        Case(
            "bedrock",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            ant(1000, 500),
            (1000 * Decimal("3.30") + 500 * Decimal("16.50")) / M,
        ),
        id="bedrock-sonnet-4.5-regional",
    ),
    pytest.param(
        Case(
            "bedrock",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            ant(200_000, 2000, cache_read_input_tokens=30_000),
            (200_000 * Decimal("6.60") + 30_000 * Decimal("0.66") + 2000 * Decimal("24.75")) / M,
        ),
        id="bedrock-sonnet-4.5-regional-long-context",
    ),
    # Sonnet 4 above 200k $6 / $22.50
    pytest.param(
        Case(
            "bedrock",
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            ant(250_000, 1000),
            (250_000 * Decimal("6") + 1000 * Decimal("22.50")) / M,
        ),
        id="bedrock-sonnet-4-long-context",
    ),
    # Haiku 3.5 $0.80 / $4
    pytest.param(
        Case(
            "bedrock",
            "anthropic.claude-3-5-haiku-20241022-v1:0",
            ant(1000, 500),
            (1000 * Decimal("0.80") + 500 * Decimal("4")) / M,
        ),
        id="bedrock-haiku-3.5",
    ),
    # Haiku 4.5 global $1 / $0.10 read / $5; regional $1.10 / $0.11 / $5.50
    pytest.param(
        Case(
            "bedrock",
            "global.anthropic.claude-haiku-4-5-20251001-v1:0",
            ant(1000, 500, cache_read_input_tokens=1000),
            (1000 * Decimal("1") + 1000 * Decimal("0.10") + 500 * Decimal("5")) / M,
        ),
        id="bedrock-haiku-4.5-global",
    ),
    pytest.param(
        Case(
            "bedrock",
            "us.anthropic.claude-haiku-4-5-20251001-v1:0",
            ant(1000, 500, cache_read_input_tokens=1000),
            (1000 * Decimal("1.10") + 1000 * Decimal("0.11") + 500 * Decimal("5.50")) / M,
        ),
        id="bedrock-haiku-4.5-regional",
    ),
    pytest.param(
        Case("bedrock", "global.anthropic.claude-sonnet-4-5-2025929-v1:0", ant(1000, 500), None),
        id="gap-bedrock-mistyped-date",
    ),
    # --- Vertex AI (VERTEX) ------------------------------------------------------------------
    pytest.param(
        Case(
            "vertex",
            "claude-sonnet-4-5@20250929",
            ant(1000, 500),
            (1000 * Decimal("3") + 500 * Decimal("15")) / M,
        ),
        id="vertex-sonnet-4.5",
    ),
    pytest.param(
        Case(
            "vertex",
            "claude-sonnet-4-5@20250929",
            ant(230_000, 2000),
            (230_000 * Decimal("6") + 2000 * Decimal("22.50")) / M,
        ),
        id="vertex-sonnet-4.5-long-context",
    ),
    pytest.param(
        Case(
            "vertex",
            "claude-sonnet-4@20250514",
            ant(250_000, 1000),
            (250_000 * Decimal("6") + 1000 * Decimal("22.50")) / M,
        ),
        id="vertex-sonnet-4-long-context",
    ),
    pytest.param(
        Case(
            "vertex",
            "claude-opus-4-1@20250805",
            ant(1000, 500),
            (1000 * Decimal("15") + 500 * Decimal("75")) / M,
        ),
        id="vertex-opus-4.1",
    ),
    pytest.param(
        Case(
            "vertex",
            "claude-haiku-4-5@20251001",
            ant(1000, 500),
            (1000 * Decimal("1") + 500 * Decimal("5")) / M,
        ),
        id="vertex-haiku-4.5",
    ),
    # Gemini 2.5 Pro on Vertex AI $1.25 / $10, from a decorated function returning JSON
    pytest.param(
        Case(
            "dict:vertex_ai",
            "gemini-2.5-pro",
            {"promptTokenCount": 1000, "candidatesTokenCount": 500},
            (1000 * Decimal("1.25") + 500 * Decimal("10")) / M,
        ),
        id="vertex-gemini-2.5-pro-dict",
    ),
    # --- Gemini API (GEMINI) -----------------------------------------------------------------
    # 2.5 Pro $1.25 / $10 up to 200k prompt tokens; $2.50 / $15 (cached $0.25) above
    pytest.param(
        Case(
            "gemini",
            "gemini-2.5-pro",
            gem(100_000, 2000),
            (100_000 * Decimal("1.25") + 2000 * Decimal("10")) / M,
        ),
        id="gemini-2.5-pro",
    ),
    pytest.param(
        Case(
            "gemini",
            "gemini-2.5-pro",
            gem(250_000, 2000, cached_content_token_count=50_000),
            (200_000 * Decimal("2.50") + 50_000 * Decimal("0.25") + 2000 * Decimal("15")) / M,
        ),
        id="gemini-2.5-pro-long-context",
    ),
    # 2.5 Flash $0.30 / $0.03 cached / $2.50 (thinking included), audio input $1.00
    pytest.param(
        Case(
            "gemini",
            "gemini-2.5-flash",
            gem(3000, 400, cached_content_token_count=2048, thoughts_token_count=600),
            (952 * Decimal("0.30") + 2048 * Decimal("0.03") + 1000 * Decimal("2.50")) / M,
        ),
        id="gemini-2.5-flash-thinking",
    ),
    pytest.param(
        Case(
            "gemini",
            "gemini-2.5-flash",
            gem(1000, 100, audio_prompt_token_count=600),
            (400 * Decimal("0.30") + 600 * Decimal("1.00") + 100 * Decimal("2.50")) / M,
        ),
        id="gemini-2.5-flash-audio",
    ),
    # 2.0 Flash $0.10 / $0.40 (stable -001)
    pytest.param(
        Case(
            "gemini",
            "gemini-2.0-flash-001",
            gem(1000, 500),
            (1000 * Decimal("0.10") + 500 * Decimal("0.40")) / M,
        ),
        id="gemini-2.0-flash-001",
    ),
    # 2.5 Flash-Lite $0.10 / $0.40, audio input $0.30
    pytest.param(
        Case(
            "gemini",
            "gemini-2.5-flash-lite",
            gem(1000, 100, audio_prompt_token_count=500),
            (500 * Decimal("0.10") + 500 * Decimal("0.30") + 100 * Decimal("0.40")) / M,
        ),
        id="gemini-2.5-flash-lite-audio",
    ),
    # 1.5 Pro: $1.25 / $5 up to 128k, $2.50 / $10 above
    pytest.param(
        Case(
            "gemini",
            "gemini-1.5-pro-002",
            gem(150_000, 1000),
            (150_000 * Decimal("2.50") + 1000 * Decimal("10")) / M,
        ),
        id="gemini-1.5-pro-long-context",
    ),
    pytest.param(
        Case("gemini", "gemini-2.5-pro-ultra", gem(1000, 500), None), id="gap-gemini-no-such-model"
    ),
    # --- Groq (GROQ) -------------------------------------------------------------------------
    pytest.param(
        Case(
            f"openai@{GROQ}",
            "llama-3.3-70b-versatile",
            oai(1000, 200),
            (1000 * Decimal("0.59") + 200 * Decimal("0.79")) / M,
        ),
        id="groq-llama-3.3-70b",
    ),
    pytest.param(
        Case(
            f"openai@{GROQ}",
            "llama-3.1-8b-instant",
            oai(10_000, 2000),
            (10_000 * Decimal("0.05") + 2000 * Decimal("0.08")) / M,
        ),
        id="groq-llama-3.1-8b",
    ),
    pytest.param(
        Case(
            f"openai@{GROQ}",
            "meta-llama/llama-4-scout-17b-16e-instruct",
            oai(10_000, 2000),
            (10_000 * Decimal("0.11") + 2000 * Decimal("0.34")) / M,
        ),
        id="groq-llama-4-scout",
    ),
    # --- DeepSeek (DEEPSEEK) -----------------------------------------------------------------
    # until 2025-09-05 16:00 UTC: chat $0.27 / $0.07 hit / $1.10, reasoner $0.55 / $0.14 / $2.19
    # from 00:30 to 16:30 UTC; both $0.135 / $0.035 / $0.55 from 16:30 to 00:30 UTC
    pytest.param(
        Case(
            f"openai@{DEEPSEEK}",
            "deepseek-chat",
            oai(1000, 200, cached_tokens=400),
            (600 * Decimal("0.27") + 400 * Decimal("0.07") + 200 * Decimal("1.10")) / M,
            "genai-prices",
            at=utc(2025, 6, 2, 10),
        ),
        id="deepseek-chat-standard-hours-2025-06",
    ),
    pytest.param(
        Case(
            f"openai@{DEEPSEEK}",
            "deepseek-chat",
            oai(1000, 200, cached_tokens=400),
            (600 * Decimal("0.135") + 400 * Decimal("0.035") + 200 * Decimal("0.55")) / M,
            "genai-prices",
            at=utc(2025, 6, 2, 17),
        ),
        id="deepseek-chat-off-peak-2025-06",
    ),
    pytest.param(
        Case(
            f"openai@{DEEPSEEK}",
            "deepseek-reasoner",
            oai(1000, 200, cached_tokens=400),
            (600 * Decimal("0.55") + 400 * Decimal("0.14") + 200 * Decimal("2.19")) / M,
            at=utc(2025, 6, 2, 10),
        ),
        id="deepseek-reasoner-standard-hours-2025-06",
    ),
    pytest.param(
        Case(
            f"openai@{DEEPSEEK}",
            "deepseek-reasoner",
            oai(1000, 200, cached_tokens=400),
            (600 * Decimal("0.135") + 400 * Decimal("0.035") + 200 * Decimal("0.55")) / M,
            at=utc(2025, 6, 3, 0, 15),
        ),
        id="deepseek-reasoner-off-peak-past-midnight",
    ),
    # from 2025-09-05 16:00 UTC: $0.56 / $0.07 hit / $1.68, no night discount
    pytest.param(
        Case(
            f"openai@{DEEPSEEK}",
            "deepseek-chat",
            oai(1000, 200, cached_tokens=400),
            (600 * Decimal("0.56") + 400 * Decimal("0.07") + 200 * Decimal("1.68")) / M,
            "bundled:supersedes-genai-prices",
            at=utc(2025, 9, 10, 20),
        ),
        id="deepseek-chat-2025-09-list",
    ),
    # from 2025-09-29 (V3.2): $0.28 / $0.028 hit / $0.42
    pytest.param(
        Case(
            f"openai@{DEEPSEEK}",
            "deepseek-chat",
            oai(1000, 200, cached_tokens=400),
            (600 * Decimal("0.28") + 400 * Decimal("0.028") + 200 * Decimal("0.42")) / M,
            "bundled:supersedes-genai-prices",
        ),
        id="deepseek-chat-v3.2",
    ),
    pytest.param(
        Case(
            f"openai@{DEEPSEEK}",
            "deepseek-reasoner",
            oai(1000, 200, cached_tokens=400, reasoning_tokens=100),
            (600 * Decimal("0.28") + 400 * Decimal("0.028") + 200 * Decimal("0.42")) / M,
            "bundled:supersedes-genai-prices",
        ),
        id="deepseek-reasoner-v3.2",
    ),
    # --- Mistral (MISTRAL) -------------------------------------------------------------------
    # Small 3.1 (-2503) $0.10 / $0.30: a -YYMM snapshot, priced as the alias was at its date
    pytest.param(
        Case(
            "dict:mistral",
            "mistral-small-2503",
            compat(1000, 500),
            (1000 * Decimal("0.10") + 500 * Decimal("0.30")) / M,
        ),
        id="mistral-small-2503",
    ),
    pytest.param(
        Case(
            f"openai@{MISTRAL}",
            "mistral-small-latest",
            oai(1000, 500),
            (1000 * Decimal("0.10") + 500 * Decimal("0.30")) / M,
            "bundled:supersedes-genai-prices",
            at=utc(2026, 1, 10),
        ),
        id="mistral-small-latest-before-small-4",
    ),
    # Small 4 (from 2026-03-16) $0.15 / $0.60
    pytest.param(
        Case(
            f"openai@{MISTRAL}",
            "mistral-small-latest",
            oai(1000, 500),
            (1000 * Decimal("0.15") + 500 * Decimal("0.60")) / M,
            "genai-prices",
        ),
        id="mistral-small-latest-small-4",
    ),
    pytest.param(
        Case(
            "dict:mistral",
            "mistral-small-2603",
            compat(1000, 500),
            (1000 * Decimal("0.15") + 500 * Decimal("0.60")) / M,
        ),
        id="mistral-small-2603",
    ),
    # Codestral $0.30 / $0.90, Medium 3 $0.40 / $2
    pytest.param(
        Case(
            "dict:mistral",
            "codestral-2501",
            compat(1000, 500),
            (1000 * Decimal("0.30") + 500 * Decimal("0.90")) / M,
        ),
        id="mistral-codestral-2501",
    ),
    pytest.param(
        Case(
            "dict:mistral",
            "mistral-medium-2505",
            compat(1000, 500),
            (1000 * Decimal("0.40") + 500 * Decimal("2")) / M,
        ),
        id="mistral-medium-2505",
    ),
    pytest.param(
        Case("dict:mistral", "mistral-small-25x3", compat(1000, 500), None),
        id="gap-mistral-malformed-version",
    ),
    # --- Together (TOGETHER) -----------------------------------------------------------------
    pytest.param(
        Case(
            f"openai@{TOGETHER}",
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            oai(1000, 200),
            (1000 * Decimal("0.88") + 200 * Decimal("0.88")) / M,
        ),
        id="together-llama-3.3-70b",
    ),
    pytest.param(
        Case(
            f"openai@{TOGETHER}",
            "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
            oai(1000, 200),
            (1000 * Decimal("0.18") + 200 * Decimal("0.18")) / M,
        ),
        id="together-llama-3.1-8b",
    ),
    # --- the user's price file ---------------------------------------------------------------
    # negotiated gpt-4o $2 / $8 against list $2.50 / $1.25 cached / $10: cached tokens inherit
    # the list cache-read price scaled by 2.00/2.50, $1.00
    pytest.param(
        Case(
            "openai",
            "gpt-4o",
            oai(2000, 500, cached_tokens=1000),
            (1000 * Decimal("2") + 1000 * Decimal("1.00") + 500 * Decimal("8")) / M,
            "user",
            prices=USER_PRICES,
        ),
        id="user-rate-inherits-cache-read-scaled",
    ),
    # a self-hosted model: $4.10 per GPU-hour at 2500 tokens/s, called through the OpenAI SDK
    pytest.param(
        Case(
            "openai",
            "llama-3-70b-ft",
            oai(1000, 200),
            1200 * Decimal("4.10") / (3600 * 2500),
            "user",
            prices=USER_PRICES,
        ),
        id="user-self-hosted-gpu-hour",
    ),
    pytest.param(
        Case("openai", "llama-3-70b-ft-v2", oai(1000, 200), None, prices=USER_PRICES),
        id="gap-user-model-not-borrowed-by-a-sibling",
    ),
]


@pytest.fixture
def configured(capture: CaptureSink) -> Any:
    """``configured(at, prices)``: costwatch at a stopped (or moving: a callable) clock."""

    def configure(at: float | Callable[[], float], prices: dict[str, Any] | None) -> Any:
        return configure_for_test(capture, at if callable(at) else (lambda: at), prices)

    yield configure
    _configure.shutdown()


def _call(cw: Any, fake: FakeProvider, case: Case) -> None:
    route = case.route
    if route == "openai" or route.startswith("openai@"):
        fake.openai_usage = case.usage
        if route == "openai":
            client = openai.OpenAI(base_url=fake.openai_base_url, api_key="t", max_retries=0)
        else:
            client = openai.OpenAI(
                base_url=route.split("@", 1)[1],
                api_key="t",
                max_retries=0,
                http_client=http_client_to_the_fake(fake),
            )
        cw.instrument(client).chat.completions.create(model=case.model, messages=MESSAGES)
    elif route == "azure":
        fake.openai_usage = case.usage
        fake.azure_deployments = {case.model: case.extra["deployed"]}
        client = openai.AzureOpenAI(
            azure_endpoint=fake.base_url, api_version="2024-10-21", api_key="t", max_retries=0
        )
        cw.instrument(client).chat.completions.create(model=case.model, messages=MESSAGES)
    elif route in ("anthropic", "bedrock", "vertex"):
        fake.anthropic_usage = case.usage
        if route == "anthropic":
            claude: Any = anthropic.Anthropic(
                base_url=fake.anthropic_base_url, api_key="t", max_retries=0
            )
        elif route == "bedrock":
            claude = anthropic.AnthropicBedrock(
                aws_region="us-east-1",
                aws_access_key="AKIDEXAMPLE",
                aws_secret_key="secret",
                base_url=fake.base_url,
                max_retries=0,
            )
        else:
            claude = anthropic.AnthropicVertex(
                region="us-east5",
                project_id="acme",
                access_token="t",
                max_retries=0,
                base_url=fake.base_url + "/v1",
            )
        cw.instrument(claude).messages.create(model=case.model, max_tokens=1024, messages=MESSAGES)
    elif route == "gemini":
        fake.gemini_usage = case.usage
        client = genai.Client(api_key="t", http_options={"base_url": fake.base_url})
        cw.instrument(client).models.generate_content(model=case.model, contents="Refunds?")
    elif route.startswith("dict:"):
        provider = route.split(":", 1)[1]
        key = "usageMetadata" if "promptTokenCount" in case.usage else "usage"

        @cw.generation(provider=provider, model=case.model)
        def answer() -> dict[str, Any]:
            return {"model": case.model, key: case.usage}

        answer()
    elif route.startswith("record:"):
        cw.record(
            provider=route.split(":", 1)[1],
            model=case.model,
            **case.usage,
            **case.extra,
        )
    else:  # pragma: no cover - a typo in the table
        raise AssertionError(route)


@pytest.mark.parametrize("case", CASES)
def test_a_call_costs_what_the_provider_bills(
    configured: Any, capture: CaptureSink, fake_provider: FakeProvider, case: Case
) -> None:
    cw = configured(case.at, case.prices)

    _call(cw, fake_provider, case)

    [record] = capture.records
    assert record.cost_usd == case.cost
    if case.source:
        assert record.price_source == case.source
    if case.cost is None:
        assert record.price_source is None


def test_the_table_covers_every_provider_and_every_kind_of_gap() -> None:
    ids = [param.id or "" for param in CASES]
    assert len(ids) >= 60
    for prefix in (
        "openai-",
        "azure-",
        "anthropic-",
        "bedrock-",
        "vertex-",
        "gemini-",
        "groq-",
        "deepseek-",
        "mistral-",
        "together-",
        "user-",
    ):
        assert any(i.startswith(prefix) for i in ids), prefix
    for gap in ("long-context", "audio", "off-peak", "2025-09-list", "gap-", "inherits"):
        assert any(gap in i for i in ids), gap


# --- time: each call at its own time ------------------------------------------------------------


def test_calls_on_either_side_of_the_off_peak_boundary_bill_at_their_own_rates(
    configured: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """One process, one client: the clock passes 16:30 UTC between two calls (DeepSeek's
    discount window before September 2025).  The first call's rate is not kept."""
    now = [utc(2025, 6, 2, 16, 29, 59)]
    cw = configured(lambda: now[0], None)
    fake_provider.openai_usage = oai(1000, 200)
    client = cw.instrument(
        openai.OpenAI(
            base_url=DEEPSEEK,
            api_key="t",
            max_retries=0,
            http_client=http_client_to_the_fake(fake_provider),
        )
    )

    client.chat.completions.create(model="deepseek-chat", messages=MESSAGES)
    now[0] = utc(2025, 6, 2, 16, 30)
    client.chat.completions.create(model="deepseek-chat", messages=MESSAGES)
    now[0] = utc(2025, 6, 3, 0, 30)
    client.chat.completions.create(model="deepseek-chat", messages=MESSAGES)

    standard = (1000 * Decimal("0.27") + 200 * Decimal("1.10")) / M
    discount = (1000 * Decimal("0.135") + 200 * Decimal("0.55")) / M
    assert [r.cost_usd for r in capture.records] == [standard, discount, standard]
    assert cw.summary().total_usd == 2 * standard + discount


def test_a_price_change_between_calls_is_billed_from_the_change_on(
    configured: Any, capture: CaptureSink
) -> None:
    """DeepSeek's list of 2025-09-05 16:00 UTC, between two calls of one decorated function."""
    now = [utc(2025, 9, 5, 15, 59)]
    cw = configured(lambda: now[0], None)

    @cw.generation(provider="deepseek", model="deepseek-chat")
    def answer() -> dict[str, Any]:
        return {"model": "deepseek-chat", "usage": compat(1000, 200)}

    answer()
    now[0] = utc(2025, 9, 5, 16, 0)
    answer()

    assert [(r.cost_usd, r.price_source) for r in capture.records] == [
        ((1000 * Decimal("0.27") + 200 * Decimal("1.10")) / M, "genai-prices"),
        ((1000 * Decimal("0.56") + 200 * Decimal("1.68")) / M, "bundled:supersedes-genai-prices"),
    ]


def test_audio_billed_at_the_text_rate_is_counted(configured: Any, capture: CaptureSink) -> None:
    cw = configured(NOW, None)
    gaps.reset()
    cw.record(provider="openai", model="gpt-4o-mini", input_tokens=1000, input_audio_tokens=400)
    cw.record(provider="openai", model="gpt-4o-mini", input_tokens=1000, input_audio_tokens=400)
    cw.record(
        provider="openai", model="gpt-4o-audio-preview", input_tokens=1000, input_audio_tokens=400
    )

    assert gaps.counts() == {("audio-at-text-rate", "genai-prices:openai/gpt-4o-mini"): 2}
    assert [r.price_source for r in capture.records] == [
        "genai-prices:audio-at-text-rate",
        "genai-prices:audio-at-text-rate",
        "bundled",
    ]
