"""Prices: hand-computed costs from published per-million prices, layering, memoisation, YAML."""

from __future__ import annotations

import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costwatch._core.errors import ConfigError
from costwatch._core.record import TokenUsage
from costwatch.pricing import (
    Price,
    PriceCatalog,
    PriceTier,
    _genai_prices,
    format_price_table,
    load_user_prices,
    model_candidates,
)

M = 1_000_000


def usd(text: str) -> Decimal:
    return Decimal(text)


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    """One catalog for the read-only price checks (genai-prices data loads once)."""
    return PriceCatalog()


def price_of(catalog: PriceCatalog, provider: str, model: str) -> Price:
    price = catalog.resolve(provider, model)
    assert price is not None, f"{provider}/{model} should be priced"
    return price


# --- published prices, hand-computed ----------------------------------------------------------


def test_gpt_4o_mini_bills_fresh_input_cached_input_and_output(catalog: PriceCatalog) -> None:
    # $0.15 / $0.075 cached / $0.60 per 1M tokens
    price = price_of(catalog, "openai", "gpt-4o-mini")
    usage = TokenUsage(input=1000, cache_read=2000, output=500)
    # 1000 * 0.15/M + 2000 * 0.075/M + 500 * 0.60/M
    assert price.cost(usage) == usd("0.00015") + usd("0.00015") + usd("0.0003")
    assert price.input_cost(usage) == usd("0.0003")
    assert price.source == "genai-prices"
    assert not price.fine_tuned


def test_a_dated_snapshot_resolves_to_its_model(catalog: PriceCatalog) -> None:
    dated = price_of(catalog, "openai", "gpt-4o-mini-2024-07-18")
    assert dated.cost(TokenUsage(input=M)) == usd("0.15")


@pytest.mark.parametrize(
    ("model", "usage", "expected"),
    [
        # o3-mini: $1.10 in / $4.40 out; reasoning bills as output
        ("o3-mini", TokenUsage(input=2000, output=300, reasoning=1200), "0.0088"),
        # o4-mini: $1.10 in / $0.275 cached / $4.40 out
        ("o4-mini", TokenUsage(input=1000, cache_read=4000, output=100, reasoning=900), "0.0066"),
    ],
)
def test_reasoning_tokens_are_priced_as_output(
    catalog: PriceCatalog, model: str, usage: TokenUsage, expected: str
) -> None:
    price = price_of(catalog, "openai", model)
    assert price.reasoning is None  # no separate price published
    assert price.cost(usage) == usd(expected)


def test_claude_sonnet_4_bills_cache_reads_and_5_minute_and_1_hour_cache_writes(
    catalog: PriceCatalog,
) -> None:
    # $3 in, $0.30 cache read, $3.75 5-min write, $6 1-hour write, $15 out
    price = price_of(catalog, "anthropic", "claude-sonnet-4-20250514")
    usage = TokenUsage(
        input=100, cache_read=10_000, cache_write=3000, cache_write_1h=1000, output=400
    )
    expected = (
        usd("0.0003")  # 100 fresh input
        + usd("0.003")  # 10k cache reads
        + usd("0.0075")  # 2000 5-minute cache writes
        + usd("0.006")  # 1000 1-hour cache writes
        + usd("0.006")  # 400 output
    )
    assert price.cost(usage) == expected == usd("0.0228")
    assert price.input_cost(usage) == usd("0.0168")


def test_one_hour_cache_writes_never_exceed_the_cache_writes_they_belong_to(
    catalog: PriceCatalog,
) -> None:
    price = price_of(catalog, "anthropic", "claude-sonnet-4-0")
    inconsistent = TokenUsage(cache_write=1000, cache_write_1h=5000)
    assert price.cost(inconsistent) == usd("0.006")  # 1000 tokens at the 1-hour price


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("google", "claude-sonnet-4@20250514"),  # Vertex AI
        ("aws", "us.anthropic.claude-sonnet-4-20250514-v1:0"),  # Bedrock
    ],
)
def test_claude_on_vertex_and_bedrock_bills_one_hour_cache_writes_at_twice_the_input_price(
    catalog: PriceCatalog, provider: str, model: str
) -> None:
    """genai-prices lists only the 5-minute write there; Anthropic's 2x input rule applies."""
    price = price_of(catalog, provider, model)
    usage = TokenUsage(cache_write=1500, cache_write_1h=500)
    assert price.cost(usage) == (1000 * usd("3.75") + 500 * usd("6")) / M


def test_a_model_without_a_one_hour_price_bills_it_as_a_cache_write(
    catalog: PriceCatalog,
) -> None:
    price = price_of(catalog, "openai", "gpt-4o-mini")  # no cache writes at all: input price
    assert price.cost(TokenUsage(cache_write=100, cache_write_1h=100)) == 100 * usd("0.15") / M


def test_claude_3_5_haiku_cache_prices(catalog: PriceCatalog) -> None:
    # $0.80 in, $0.08 cache read, $1 cache write, $4 out
    price = price_of(catalog, "anthropic", "claude-3-5-haiku-latest")
    usage = TokenUsage(input=500, cache_read=20_000, cache_write=5000, output=1000)
    assert price.cost(usage) == usd("0.0004") + usd("0.0016") + usd("0.005") + usd("0.004")


def test_gemini_long_context_tier_applies_to_all_tokens_above_200k_prompt_tokens(
    catalog: PriceCatalog,
) -> None:
    # gemini-2.5-pro: $1.25 in / $10 out up to 200k prompt tokens, $2.50 / $15 above
    price = price_of(catalog, "google", "gemini-2.5-pro")
    assert [tier.above_prompt_tokens for tier in price.tiers] == [200_000]
    assert price.cost(TokenUsage(input=150_000, output=1000)) == usd("0.1875") + usd("0.01")
    assert price.cost(TokenUsage(input=200_000, output=1000)) == usd("0.25") + usd("0.01")
    assert price.cost(TokenUsage(input=250_000, output=1000)) == usd("0.625") + usd("0.015")


def test_cached_prompt_tokens_count_towards_the_long_context_threshold(
    catalog: PriceCatalog,
) -> None:
    # claude-sonnet-4-5 above 200k prompt tokens: $6 in, $0.60 cache read, $22.50 out
    price = price_of(catalog, "anthropic", "claude-sonnet-4-5")
    usage = TokenUsage(input=1000, cache_read=199_500, output=1000)
    assert price.cost(usage) == usd("0.006") + usd("0.1197") + usd("0.0225")


@pytest.mark.parametrize(
    ("provider", "model", "usage"),
    [
        ("openai", "gpt-4o-mini", TokenUsage(input=1234, cache_read=5678, output=910)),
        ("openai", "o4-mini", TokenUsage(input=3000, cache_read=1000, output=50, reasoning=700)),
        (
            "anthropic",
            "claude-sonnet-4-0",
            TokenUsage(input=10, cache_read=900, cache_write=80, output=77),
        ),
        ("anthropic", "claude-sonnet-4-5", TokenUsage(input=5, cache_read=250_000, output=9)),
        ("google", "gemini-2.5-pro", TokenUsage(input=300_001, output=2)),
        ("google", "gemini-2.5-flash", TokenUsage(input=42, cache_read=7, output=13)),
    ],
)
def test_costs_agree_with_genai_prices_own_calculation(
    catalog: PriceCatalog, provider: str, model: str, usage: TokenUsage
) -> None:
    import genai_prices

    reference = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=usage.prompt_total,
            cache_read_tokens=usage.cache_read,
            cache_write_tokens=usage.cache_write,
            output_tokens=usage.output + usage.reasoning,
        ),
        model,
        provider_id=provider,
    )
    assert price_of(catalog, provider, model).cost(usage) == reference.total_price


# --- bundled supplement --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "tokens", "expected"),
    [
        ("text-embedding-3-small", M, "0.02"),
        ("text-embedding-3-large", 12_345, "0.00160485"),
        ("text-embedding-ada-002", 2 * M, "0.20"),
    ],
)
def test_embeddings_bill_input_tokens(
    catalog: PriceCatalog, model: str, tokens: int, expected: str
) -> None:
    price = price_of(catalog, "openai", model)
    assert price.source == "bundled"
    assert price.cost(TokenUsage(input=tokens)) == usd(expected)


@pytest.mark.parametrize(
    ("model", "usage", "expected"),
    [
        # ft:gpt-4o-mini: $0.30 in / $0.15 cached / $1.20 out
        (
            "ft:gpt-4o-mini-2024-07-18:acme::x1",
            TokenUsage(input=1000, cache_read=1000, output=1000),
            "0.00165",
        ),
        # the date suffix is optional
        ("ft:gpt-4o-mini:acme:support:abc123", TokenUsage(input=M), "0.30"),
        # ft:gpt-4o: $3.75 / $1.875 / $15
        ("ft:gpt-4o-2024-08-06:acme::y", TokenUsage(input=M, cache_read=M, output=M), "20.625"),
        # ft:gpt-3.5-turbo: $3 / $6 (legacy MMDD snapshot suffix)
        ("ft:gpt-3.5-turbo-0125:acme::z", TokenUsage(input=M, output=M), "9"),
        # ft:gpt-4.1: $3 / $0.75 / $12
        ("ft:gpt-4.1-2025-04-14:acme::a", TokenUsage(input=M, cache_read=M, output=M), "15.75"),
        # ft:gpt-4.1-mini: $0.80 / $0.20 / $3.20
        ("ft:gpt-4.1-mini-2025-04-14:acme::b", TokenUsage(input=M, cache_read=M, output=M), "4.2"),
        # ft:gpt-4.1-nano: $0.20 / $0.05 / $0.80
        ("ft:gpt-4.1-nano-2025-04-14:acme::c", TokenUsage(input=M, cache_read=M, output=M), "1.05"),
    ],
)
def test_fine_tuned_openai_models_resolve_through_their_base_model(
    catalog: PriceCatalog, model: str, usage: TokenUsage, expected: str
) -> None:
    price = price_of(catalog, "openai", model)
    assert (price.source, price.fine_tuned) == ("bundled", True)
    assert price.cost(usage) == usd(expected)
    assert catalog.is_fine_tuned(model)


def test_fine_tuned_prices_do_not_leak_to_the_base_model(catalog: PriceCatalog) -> None:
    assert price_of(catalog, "openai", "gpt-4o-mini").cost(TokenUsage(input=M)) == usd("0.15")
    assert not catalog.is_fine_tuned("gpt-4o-mini")


def test_reranker_searches_are_priced_per_call(catalog: PriceCatalog) -> None:
    # Cohere Rerank 3.5: $2 per 1000 searches (a search: one query, up to 100 documents)
    price = price_of(catalog, "cohere", "rerank-v3.5")
    assert price.cost(TokenUsage()) == usd("0.002")
    assert price.cost(TokenUsage(), requests=3) == usd("0.006")
    assert price.input_cost(TokenUsage()) == 0


def test_server_side_searches_are_priced_per_search_at_their_list_price(
    catalog: PriceCatalog,
) -> None:
    # Anthropic web search $10 per 1000 searches; OpenAI web search $10 and file search $2.50
    # per 1000 calls.  Neither is tiered, batch-discounted nor part of the input-side cost.
    sonnet = price_of(catalog, "anthropic", "claude-sonnet-4-5")
    assert sonnet.cost(TokenUsage(web_searches=3)) == usd("0.03")
    long_prompt = TokenUsage(input=250_000, web_searches=1)
    assert sonnet.cost(long_prompt) == 250_000 * usd("6") / M + usd("0.01")
    mini = price_of(catalog, "openai", "gpt-4o-mini")
    usage = TokenUsage(input=1000, web_searches=2, file_searches=4)
    tokens = 1000 * usd("0.15") / M
    assert mini.cost_split(usage) == (tokens + usd("0.02") + usd("0.01"), tokens)
    assert mini.cost(usage, batch=True) == tokens / 2 + usd("0.03")
    assert "web search            0.01 USD per search" in format_price_table(catalog, "gpt-4o-mini")
    assert "file search           0.0025 USD per search" in format_price_table(
        catalog, "gpt-4o-mini"
    )


def test_the_audio_parts_of_input_and_output_bill_at_the_audio_rates(
    catalog: PriceCatalog,
) -> None:
    # gpt-audio: text $2.50 in / $10 out, audio $32 in / $64 out per million tokens.
    price = price_of(catalog, "openai", "gpt-audio")
    usage = TokenUsage(input=1000, output=100, input_audio=600, output_audio=100)
    input_side = (400 * usd("2.50") + 600 * usd("32")) / M
    assert price.cost_split(usage) == (input_side + 100 * usd("64") / M, input_side)
    # A model without audio prices bills audio as text.
    mini = price_of(catalog, "openai", "gpt-4o-mini")
    assert mini.cost(usage) == mini.cost(TokenUsage(input=1000, output=100))
    assert "input (audio)         32" in format_price_table(catalog, "gpt-audio")


def test_openai_processing_tiers_have_their_own_published_prices(catalog: PriceCatalog) -> None:
    # o4-mini: standard $1.10 / $0.275 cached / $4.40; flex $0.55 / $0.138 / $2.20;
    # priority $2 / $0.50 / $8.  The tiers keep the standard price's per-search fees.
    price = price_of(catalog, "openai", "o4-mini")
    flex, priority = price.for_service_tier("flex"), price.for_service_tier("priority")
    assert flex is not None and priority is not None
    usage = TokenUsage(input=1000, cache_read=1000, output=1000, web_searches=1)
    assert flex.cost(usage) == (
        1000 * usd("0.55") + 1000 * usd("0.138") + 1000 * usd("2.20")
    ) / M + usd("0.01")
    assert priority.cost(usage) == (1000 * usd(2) + 1000 * usd("0.5") + 1000 * usd(8)) / M + usd(
        "0.01"
    )
    assert price_of(catalog, "openai", "gpt-4o-mini").for_service_tier("flex") is None
    assert "service_tier=priority: input 2, cache read 0.5" in format_price_table(
        catalog, "o4-mini"
    )


def test_user_prices_can_price_searches_and_audio() -> None:
    catalog = PriceCatalog(
        {
            "models": [
                {
                    "provider": "acme",
                    "model": "m1",
                    "input_per_mtok": 1,
                    "output_per_mtok": 2,
                    "web_search_usd": "0.005",
                    "file_search_usd": "0.001",
                    "input_audio_per_mtok": 4,
                    "output_audio_per_mtok": 8,
                },
            ]
        }
    )
    price = price_of(catalog, "acme", "m1")
    assert price.cost(TokenUsage(web_searches=2, file_searches=3)) == usd("0.013")
    assert price.cost(TokenUsage(input=M, output=M, input_audio=M, output_audio=M)) == usd("12")


# --- layering, user prices -----------------------------------------------------------------------


def test_user_prices_win_over_bundled_and_genai_prices() -> None:
    catalog = PriceCatalog(
        {
            "models": [
                {
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "input_per_mtok": 0.12,
                    "output_per_mtok": 0.50,
                    "cache_read_per_mtok": 0.06,
                },
                {
                    "provider": "openai",
                    "match": "ft:gpt-4o-mini*",
                    "input_per_mtok": 0.25,
                    "output_per_mtok": 1.0,
                },
            ]
        }
    )
    mini = price_of(catalog, "openai", "gpt-4o-mini-2024-07-18")
    assert mini.source == "user"
    usage = TokenUsage(input=1000, cache_read=1000, output=1000)
    assert mini.cost(usage) == usd("0.00012") + usd("0.00006") + usd("0.0005")

    tuned = price_of(catalog, "openai", "ft:gpt-4o-mini-2024-07-18:acme::x1")
    assert (tuned.source, tuned.fine_tuned) == ("user", True)
    assert tuned.cost(TokenUsage(input=M, output=M)) == usd("1.25")
    # other models still come from the lower layers
    assert price_of(catalog, "openai", "gpt-4o").source == "genai-prices"
    assert price_of(catalog, "openai", "text-embedding-3-small").source == "bundled"


def test_missing_cache_and_reasoning_prices_fall_back_to_input_and_output() -> None:
    catalog = PriceCatalog(
        {"models": [{"provider": "acme", "model": "m1", "input_per_mtok": 2, "output_per_mtok": 8}]}
    )
    price = price_of(catalog, "acme", "m1")
    usage = TokenUsage(cache_read=M, cache_write=M, cache_write_1h=M // 2, reasoning=M)
    assert price.cost(usage) == usd("2") + usd("2") + usd("8")


def test_self_hosted_gpu_hour_price_becomes_a_per_token_price() -> None:
    # per-token = gpu_hour_usd / (3600 * tokens_per_second); output tokens weigh 3x
    catalog = PriceCatalog(
        {
            "models": [
                {
                    "provider": "self-hosted",
                    "model": "llama-3-70b-ft",
                    "gpu_hour_usd": 4.10,
                    "tokens_per_second": 2500,
                    "output_weight": 3,
                    "fine_tuned": True,
                }
            ]
        }
    )
    price = price_of(catalog, "self-hosted", "llama-3-70b-ft")
    one_hour_of_tokens = 3600 * 2500
    assert abs(price.cost(TokenUsage(input=one_hour_of_tokens)) - usd("4.10")) < usd("1e-24")
    assert abs(price.cost(TokenUsage(output=one_hour_of_tokens // 3)) - usd("4.10")) < usd("1e-24")
    assert abs(
        price.cost(TokenUsage(input=1000, output=100)) - usd("4.10") * 1300 / 9_000_000
    ) < usd("1e-24")
    assert price.fine_tuned and catalog.is_fine_tuned("llama-3-70b-ft")


def test_your_own_price_applies_to_your_model_whatever_provider_the_call_names() -> None:
    """A self-hosted model behind an OpenAI-compatible server is called through the OpenAI SDK:
    its calls say ``openai``.  Your price still applies, but never over a price that exists."""
    catalog = PriceCatalog(
        {
            "models": [
                {
                    "provider": "self-hosted",
                    "model": "llama-3-70b-ft",
                    "input_per_mtok": 1,
                    "output_per_mtok": 2,
                },
                {
                    "provider": "azure",
                    "model": "gpt-4o-mini",
                    "input_per_mtok": "0.10",
                    "output_per_mtok": "0.40",
                },  # a negotiated Azure rate
            ]
        }
    )
    assert price_of(catalog, "openai", "llama-3-70b-ft").source == "user"
    assert price_of(catalog, "openai", "gpt-4o-mini").input == usd("0.15") / M  # OpenAI's own
    assert price_of(catalog, "azure", "gpt-4o-mini").input == usd("0.10") / M
    assert catalog.resolve("openai", "llama-3-8b") is None


def test_batch_applies_the_50_percent_discount(catalog: PriceCatalog) -> None:
    usage = TokenUsage(input=1000, cache_read=2000, output=500)
    mini = price_of(catalog, "openai", "gpt-4o-mini")
    assert mini.cost(usage, batch=True) == usd("0.0003")
    haiku = price_of(catalog, "anthropic", "claude-3-5-haiku-latest")
    assert haiku.cost(usage, batch=True) == haiku.cost(usage) / 2
    assert mini.input_cost(usage, batch=True) == usd("0.00015")


def test_user_batch_discount_overrides_the_default() -> None:
    catalog = PriceCatalog(
        {
            "models": [
                {
                    "provider": "acme",
                    "model": "m",
                    "input_per_mtok": 1,
                    "output_per_mtok": 1,
                    "batch_discount": 0.25,
                }
            ]
        }
    )
    assert price_of(catalog, "acme", "m").cost(TokenUsage(input=M), batch=True) == usd("0.25")


def test_a_yaml_price_file_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "models:\n"
        "  - provider: anthropic\n"
        "    model: claude-sonnet-4-0\n"
        "    input_per_mtok: 2.40\n"
        "    output_per_mtok: 12\n"
        "    cache_write_1h_per_mtok: 4.80\n"
    )
    price = price_of(PriceCatalog(str(path)), "anthropic", "claude-sonnet-4-0")
    assert price.source == "user"
    assert price.cost(TokenUsage(input=M, cache_write=M, cache_write_1h=M)) == usd("7.2")


# --- unknown models, names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "gpt-nonexistent-9"), ("self-hosted", "llama-3-70b"), ("", "no-such-model")],
)
def test_an_unknown_model_has_no_price_rather_than_zero(
    catalog: PriceCatalog, provider: str, model: str
) -> None:
    assert catalog.resolve(provider, model) is None


@pytest.mark.parametrize(
    ("provider", "model", "per_mtok_input"),
    [
        ("azure_openai", "gpt-4o", "2.5"),
        ("az.ai.openai", "gpt-4o-mini", "0.15"),
        ("gcp.gemini", "models/gemini-2.5-flash", "0.3"),
        ("vertex_ai", "projects/p/locations/us/publishers/google/models/gemini-2.5-flash", "0.3"),
        ("OpenAI", "GPT-4o-mini", "0.15"),
        ("", "claude-3-5-haiku-latest", "0.8"),
    ],
)
def test_provider_aliases_and_model_prefixes_are_normalised(
    catalog: PriceCatalog, provider: str, model: str, per_mtok_input: str
) -> None:
    assert price_of(catalog, provider, model).cost(TokenUsage(input=M)) == usd(per_mtok_input)


def test_model_candidates_strip_prefixes_and_snapshot_suffixes() -> None:
    assert model_candidates("models/gemini-2.5-pro")[-1] == "gemini-2.5-pro"
    assert "claude-3-5-sonnet" in model_candidates("anthropic.claude-3-5-sonnet-20240620-v1:0")
    assert "claude-3-5-sonnet" in model_candidates("claude-3-5-sonnet@20240620")
    assert model_candidates("ft:gpt-4o-mini-2024-07-18:acme::x1") == (
        "ft:gpt-4o-mini-2024-07-18:acme::x1",
        "ft:gpt-4o-mini-2024-07-18",
        "ft:gpt-4o-mini",
    )
    assert "ft:gpt-4o-mini" in model_candidates("gpt-4o-mini-2024-07-18.ft-0123abcd")


# --- memoisation ---------------------------------------------------------------------------------


def test_resolution_is_memoised_and_genai_prices_is_asked_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, tuple[str, ...]]] = []
    real = _genai_prices.lookup

    def counting(provider: str, candidates: Any, fine_tuned: bool) -> Any:
        calls.append((provider, tuple(candidates)))
        return real(provider, candidates, fine_tuned)

    monkeypatch.setattr(_genai_prices, "lookup", counting)
    catalog = PriceCatalog()
    first = catalog.resolve("openai", "gpt-4o-mini")
    second = catalog.resolve("openai", "gpt-4o-mini")
    assert first is second is not None
    assert catalog.resolve("openai", "gpt-nonexistent") is None
    assert catalog.resolve("openai", "gpt-nonexistent") is None
    assert [c[0] for c in calls] == ["openai", "openai"]
    assert catalog.genai_lookups == 2


def test_concurrent_first_resolution_looks_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = _genai_prices.lookup

    def counting(provider: str, candidates: Any, fine_tuned: bool) -> Any:
        calls.append(provider)
        return real(provider, candidates, fine_tuned)

    monkeypatch.setattr(_genai_prices, "lookup", counting)
    catalog = PriceCatalog()
    barrier = threading.Barrier(16)
    seen: list[Price | None] = []

    def worker() -> None:
        barrier.wait()
        seen.append(catalog.resolve("anthropic", "claude-sonnet-4-0"))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["anthropic"]
    assert len(seen) == 16 and all(p is seen[0] for p in seen) and seen[0] is not None


def test_without_genai_prices_only_user_and_bundled_prices_resolve() -> None:
    catalog = PriceCatalog(genai_prices=False)
    assert catalog.resolve("openai", "gpt-4o-mini") is None
    assert price_of(catalog, "openai", "text-embedding-3-small").source == "bundled"


def test_building_a_catalog_does_not_import_genai_prices() -> None:
    code = (
        "import sys\n"
        "from costwatch.pricing import PriceCatalog\n"
        "PriceCatalog({'models': [{'provider': 'a', 'model': 'b', 'input_per_mtok': 1}]})\n"
        "print('genai_prices' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.stdout.strip() == "False"


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        (
            {"provider": "openai", "model": "m", "input_per_mtok": "cheap"},
            "prices.models[0].input_per_mtok",
        ),
        (
            {"provider": "openai", "model": "m", "output_per_mtok": -1},
            "prices.models[0].output_per_mtok",
        ),
        (
            {"provider": "openai", "model": "m", "inptu_per_mtok": 1},
            "prices.models[0].inptu_per_mtok",
        ),
        ({"provider": "openai", "input_per_mtok": 1}, "prices.models[0].model"),
        (
            {"provider": "openai", "model": "m", "match": "m*", "input_per_mtok": 1},
            "prices.models[0].match",
        ),
        ({"provider": "x", "model": "m", "gpu_hour_usd": 4}, "prices.models[0].tokens_per_second"),
        (
            {
                "provider": "x",
                "model": "m",
                "gpu_hour_usd": 4,
                "tokens_per_second": 10,
                "input_per_mtok": 1,
            },
            "prices.models[0].gpu_hour_usd",
        ),
        (
            {"provider": "x", "model": "m", "tokens_per_second": 0, "gpu_hour_usd": 1},
            "prices.models[0].tokens_per_second",
        ),
        ({"provider": "x", "model": "m"}, "prices.models[0].input_per_mtok"),
        (
            {"provider": "x", "model": "m", "input_per_mtok": 1, "batch_discount": 2},
            "prices.models[0].batch_discount",
        ),
        (
            {"provider": "x", "model": "m", "input_per_mtok": 1, "valid_from": "soon"},
            "prices.models[0].valid_from",
        ),
        (
            {
                "provider": "x",
                "model": "m",
                "input_per_mtok": 1,
                "valid_from": "2026-02-01",
                "valid_to": "2026-01-01",
            },
            "prices.models[0].valid_to",
        ),
        (
            {
                "provider": "x",
                "model": "m",
                "input_per_mtok": 1,
                "long_context": [{"above_prompt_tokens": 200000, "input_per_mtok": 2}],
            },
            "prices.models[0].long_context[0].output_per_mtok",
        ),
    ],
)
def test_invalid_user_prices_raise_a_config_error_naming_the_field(
    entry: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_user_prices({"models": [entry]})
    assert info.value.field == field
    assert field in str(info.value)


def test_a_yaml_error_names_the_field_and_a_missing_file_names_the_setting(
    tmp_path: Path,
) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "models:\n"
        "  - provider: openai\n"
        "    model: gpt-4o-mini\n"
        "    input_per_mtok: 0.12\n"
        "  - provider: openai\n"
        "    model: gpt-4o\n"
        "    output_per_mtok: lots\n"
    )
    with pytest.raises(ConfigError) as info:
        PriceCatalog(str(path))
    assert info.value.field == "prices.models[1].output_per_mtok"
    with pytest.raises(ConfigError) as missing:
        PriceCatalog(str(tmp_path / "nope.yaml"))
    assert missing.value.field == "prices"


def test_tiers_must_be_ascending() -> None:
    base = Price(input=Decimal(1), output=Decimal(1))
    with pytest.raises(ValueError, match="sorted"):
        Price(
            input=Decimal(1), output=Decimal(1), tiers=(PriceTier(200, base), PriceTier(100, base))
        )


# --- `costwatch prices MODEL` --------------------------------------------------------------------


def test_the_price_table_shows_per_million_prices_source_and_fallbacks(
    catalog: PriceCatalog,
) -> None:
    text = format_price_table(catalog, "ft:gpt-4o-mini-2024-07-18:acme::x1")
    assert "bundled" in text and "fine-tuned  yes" in text
    assert "0.3" in text and "0.15" in text and "1.2" in text
    assert "(= input price)" in text  # no cache-write price published
    tiers = format_price_table(catalog, "gemini-2.5-pro", "google")
    assert "above 200000 prompt tokens" in tiers


def test_the_price_table_of_an_unknown_model_says_how_to_add_one(catalog: PriceCatalog) -> None:
    text = format_price_table(catalog, "in-house-7b", "self-hosted")
    assert "no price" in text
    assert "provider: self-hosted" in text and "model: in-house-7b" in text


# --- snapshot suffixes: only well-formed ones resolve ---------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "resolves_as"),
    [
        ("openai", "gpt-4o-mini-2024-07-18", "genai-prices:openai/gpt-4o-mini"),
        ("openai", "gpt-4-0613", "genai-prices:openai/gpt-4"),
        ("anthropic", "claude-sonnet-4-5-20250929", "genai-prices:anthropic/claude-sonnet-4-5"),
        ("anthropic", "claude-3-5-sonnet-latest", "genai-prices:anthropic/claude-3-5-sonnet"),
        ("google", "claude-sonnet-4-5@20250929", "genai-prices:google/claude-sonnet-4-5"),
        ("google", "gemini-2.0-flash-001", "genai-prices:google/gemini-2.0-flash"),
        ("mistral", "mistral-small-2503", "bundled:mistral/mistral-small-latest"),
        ("mistral", "mistral-small-2506", "genai-prices:mistral/mistral-small-3.2-24b-instruct"),
        (
            "aws",
            "eu.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "genai-prices:aws/regional.anthropic.claude-sonnet-4-5-20250929-v1:0",
        ),
        ("anthropic", "claude-sonnet-4-5-2025929", None),  # 2025-09-29 mistyped
        ("anthropic", "claude-sonnet-4-5-20251345", None),  # month 13
        ("openai", "gpt-4o-mini-v2", None),
        ("openai", "gpt-4o-mini-1399", None),  # neither MMDD nor YYMM
        ("google", "gemini-2.5-pro-ultra", None),
        ("aws", "global.anthropic.claude-sonnet-4-5-2025929-v1:0", None),
    ],
)
def test_only_well_formed_snapshot_suffixes_resolve_to_a_known_model(
    catalog: PriceCatalog, provider: str, model: str, resolves_as: str | None
) -> None:
    price = catalog.resolve(provider, model)
    assert (price.matched if price is not None else None) == resolves_as


def test_a_user_model_is_not_borrowed_by_a_name_that_extends_it() -> None:
    catalog = PriceCatalog(
        {
            "models": [
                {
                    "provider": "x",
                    "model": "llama-3-70b-ft",
                    "gpu_hour_usd": 4,
                    "tokens_per_second": 100,
                }
            ]
        }
    )
    assert catalog.resolve("openai", "llama-3-70b-ft") is not None
    assert catalog.resolve("openai", "llama-3-70b-ft-v2") is None
    assert catalog.resolve("openai", "llama-3-70b-ft-2") is None


def test_model_candidates_keep_ill_formed_suffixes() -> None:
    assert model_candidates("claude-sonnet-4-5-2025929") == ("claude-sonnet-4-5-2025929",)
    assert model_candidates("mistral-small-2503") == (
        "mistral-small-2503",
        "mistral-small",
        "mistral-small-latest",
    )
    assert "claude-sonnet-4-5" in model_candidates("us.anthropic.claude-sonnet-4-5-20250929-v1:0")


# --- long-context tiers on every route ------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "base_in", "tier_in", "tier_out"),
    [
        ("anthropic", "claude-sonnet-4-20250514", "3", "6", "22.50"),
        ("aws", "global.anthropic.claude-sonnet-4-5-20250929-v1:0", "3", "6", "22.50"),
        ("aws", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "3.30", "6.60", "24.75"),
        ("aws", "anthropic.claude-sonnet-4-20250514-v1:0", "3", "6", "22.50"),
        ("google", "claude-sonnet-4@20250514", "3", "6", "22.50"),
    ],
)
def test_a_route_without_tier_data_inherits_the_first_party_long_context_tier(
    catalog: PriceCatalog, provider: str, model: str, base_in: str, tier_in: str, tier_out: str
) -> None:
    # Anthropic: above 200k prompt tokens Sonnet 4/4.5 bill $6 / $22.50 (2x input, 1.5x output);
    # AWS bills its regional endpoints 10 % above global at either rate.
    price = price_of(catalog, provider, model)
    assert price.input * M == usd(base_in)
    [tier] = price.tiers
    assert tier.above_prompt_tokens == 200_000
    assert (tier.price.input * M, tier.price.output * M) == (usd(tier_in), usd(tier_out))


# --- prices over time ---------------------------------------------------------------------------


def _ts(*parts: int) -> float:
    from datetime import UTC, datetime

    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[arg-type]


def test_deepseek_is_priced_at_the_time_of_each_call() -> None:
    now = [_ts(2025, 6, 2, 16, 29)]
    catalog = PriceCatalog(clock=lambda: now[0])
    peak = price_of(catalog, "deepseek", "deepseek-chat")
    now[0] = _ts(2025, 6, 2, 16, 30)
    off_peak = price_of(catalog, "deepseek", "deepseek-chat")
    now[0] = _ts(2025, 9, 5, 16)
    september = price_of(catalog, "deepseek", "deepseek-chat")
    assert (peak.input * M, off_peak.input * M, september.input * M) == (
        usd("0.27"),
        usd("0.135"),
        usd("0.56"),
    )
    assert september.source == "bundled:supersedes-genai-prices"
    assert catalog.resolve("deepseek", "deepseek-chat", at=_ts(2026, 1, 1)).input * M == usd("0.28")


def test_a_timed_price_is_evaluated_once_per_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from costwatch.pricing._timeline import Conditional

    evaluations: list[float] = []
    real = Conditional.at

    def counting(self: Conditional, ts: float) -> Any:
        evaluations.append(ts)
        return real(self, ts)

    monkeypatch.setattr(Conditional, "at", counting)
    catalog = PriceCatalog()
    start = _ts(2025, 6, 2, 1)
    for minute in range(600):  # 01:00 to 11:00 UTC: one window (00:30-16:30)
        catalog.resolve("deepseek", "deepseek-chat", at=start + 60 * minute)
    assert set(evaluations) == {start}  # looked at once, for the first call of the window
    catalog.resolve("deepseek", "deepseek-chat", at=_ts(2025, 6, 2, 17))
    assert set(evaluations) == {start, _ts(2025, 6, 2, 17)}


def test_is_timed_only_while_a_price_change_lies_ahead() -> None:
    assert PriceCatalog(clock=lambda: _ts(2025, 6, 2, 10)).is_timed("deepseek", "deepseek-chat")
    later = PriceCatalog(clock=lambda: _ts(2026, 12, 1))
    assert not later.is_timed("deepseek", "deepseek-chat")  # no boundary after 2025-09-29
    assert not later.is_timed("openai", "gpt-4o-mini")


def test_user_entries_are_in_force_in_their_window_only() -> None:
    catalog = PriceCatalog(
        {
            "models": [
                {
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "input_per_mtok": "0.10",
                    "output_per_mtok": "0.40",
                    "valid_from": "2026-01-01",
                    "valid_to": "2026-07-01T00:00:00Z",
                },
                {
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "input_per_mtok": "0.12",
                    "output_per_mtok": "0.48",
                    "valid_from": "2026-07-01",
                },
            ]
        }
    )

    def input_at(*parts: int) -> tuple[Decimal, str]:
        price = catalog.resolve("openai", "gpt-4o-mini", at=_ts(*parts))
        assert price is not None
        return price.input * M, price.source

    assert input_at(2025, 12, 31, 23, 59) == (usd("0.15"), "genai-prices")
    assert input_at(2026, 1, 1) == (usd("0.10"), "user")
    assert input_at(2026, 6, 30, 23, 59) == (usd("0.10"), "user")
    assert input_at(2026, 7, 1) == (usd("0.12"), "user")


# --- the user's entries are whole ----------------------------------------------------------------


def test_a_user_entry_inherits_missing_token_prices_scaled_by_its_own_ratio(
    catalog: PriceCatalog,
) -> None:
    # Sonnet 4.5 list: $3 input, $0.30 read, $3.75 / $6 writes, $15 output.  Negotiated: $2.40
    # input (x0.8), $12 output: the cache prices follow the input ratio.
    mine = PriceCatalog(
        {
            "models": [
                {
                    "provider": "anthropic",
                    "model": "claude-sonnet-4-5",
                    "input_per_mtok": "2.40",
                    "output_per_mtok": "12",
                }
            ]
        }
    )
    price = price_of(mine, "anthropic", "claude-sonnet-4-5-20250929")
    assert price.source == "user"
    assert (price.cache_read * M, price.cache_write * M, price.cache_write_1h * M) == (  # type: ignore[operator]
        usd("0.24"),
        usd("3.00"),
        usd("4.80"),
    )
    assert set(price.inherited) == {"cache_read", "cache_write", "cache_write_1h"}
    table = format_price_table(mine, "claude-sonnet-4-5-20250929", "anthropic")
    assert "cache read            0.24  (= inherited from the catalog, scaled)" in table


def test_a_model_only_in_the_user_file_resolves_without_a_provider() -> None:
    catalog = PriceCatalog(
        {
            "models": [
                {
                    "provider": "self-hosted",
                    "model": "llama-3-70b-ft",
                    "gpu_hour_usd": "4.10",
                    "tokens_per_second": 2500,
                }
            ]
        }
    )
    assert price_of(catalog, "", "llama-3-70b-ft").source == "user"
    assert "provider    self-hosted" in format_price_table(catalog, "llama-3-70b-ft")


# --- the bundled table ---------------------------------------------------------------------------


def test_every_bundled_price_says_where_it_comes_from() -> None:
    from costwatch.pricing._bundled import bundled_rules

    rules = bundled_rules()
    assert len(rules) > 20
    for rule in rules:
        assert rule.price.provenance.startswith("https://"), rule.describe()
        assert "(read 20" in rule.price.provenance, rule.describe()


# --- `costwatch prices` as data -------------------------------------------------------------------


def test_the_price_view_has_tiers_audio_batch_and_processing_tiers_with_a_source_each() -> None:
    from datetime import UTC, datetime

    from costwatch.pricing import price_view

    catalog = PriceCatalog()
    view = price_view(catalog, "gemini-2.5-pro")
    conditions = {row.condition for row in view.rows}
    assert {"", "above 200000 prompt tokens", "batch=True"} <= conditions
    assert all(row.source.startswith("genai-prices") for row in view.rows)
    [long_input] = [r for r in view.rows if r.condition.startswith("above") and r.item == "input"]
    assert long_input.usd == usd("2.5") and long_input.unit == "per 1M tokens"

    audio = price_view(catalog, "gpt-4o-audio-preview")
    rates = {(r.item, r.condition): r for r in audio.rows}
    assert rates[("input (audio)", "")].usd == usd("40")
    assert rates[("output (audio)", "")].usd == usd("80")
    assert "platform.openai.com" in rates[("input", "")].provenance
    assert rates[("input", "")].source == "bundled"
    unknown = {(r.item, r.condition): r for r in price_view(catalog, "gpt-4o-mini").rows}
    assert unknown[("input (audio)", "")].note.startswith("unknown")

    tiers = {r.condition for r in price_view(catalog, "o4-mini").rows}
    assert {"service_tier=flex", "service_tier=priority"} <= tiers

    at = datetime(2025, 9, 10, tzinfo=UTC)
    dated = price_view(catalog, "deepseek-chat", at=at)
    assert dated.valid_from == datetime(2025, 9, 5, 16, tzinfo=UTC)
    assert dated.valid_to == datetime(2025, 9, 29, tzinfo=UTC)
    assert all(row.valid_from == dated.valid_from for row in dated.rows)
    assert {r.usd for r in dated.rows if r.item == "input" and not r.condition} == {usd("0.56")}
