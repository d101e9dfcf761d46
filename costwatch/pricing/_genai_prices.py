"""The genai-prices adapter: its data snapshot read into :class:`Price` layers.

genai-prices matches names loosely (``starts_with`` / ``contains`` clauses), which would price
``claude-sonnet-4-5-2025929`` or ``gemini-2.5-pro-ultra`` as a real model.  A match is taken
only when the name *is* one of the model's names (its id, an ``equals`` name, a clause's own
literal) or reduces to one through well-formed snapshot suffixes (see
:mod:`costwatch.pricing._names`).  A model's conditional prices (effective dates, DeepSeek's
time-of-day windows) become a :class:`~costwatch.pricing._timeline.Conditional` layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from costwatch._core.record import SERVICE_TIERS, ZERO
from costwatch.pricing._names import model_candidates
from costwatch.pricing._price import CTX, HALF, Price, PriceTier, per_token
from costwatch.pricing._timeline import Condition, Conditional, Fixed

_KEYS = {
    "input": ("input_mtok", "input_text_mtok"),
    "output": ("output_mtok", "output_text_mtok"),
    "cache_read": ("cache_read_mtok", "cache_text_read_mtok"),
    "cache_write": ("cache_write_mtok", "cache_text_write_mtok"),
    "cache_write_1h": ("cache_write_1h_mtok", "cache_text_write_1h_mtok"),
    "reasoning": ("output_reasoning_mtok", "output_text_reasoning_mtok"),
    "input_audio": ("input_audio_mtok",),
    "output_audio": ("output_audio_mtok",),
}


def _value(prices: Any, keys: tuple[str, ...]) -> Any:
    values = prices.__dict__
    for key in keys:
        value = values.get(key)
        if value is not None:
            return value
    return None


def _at(value: Any, prompt_tokens: int) -> Decimal | None:
    """A genai-prices price (Decimal or TieredPrices, per million) at a prompt size, per token."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return per_token(value)
    applicable = value.base
    for tier in reversed(value.tiers):
        if prompt_tokens > tier.start:
            applicable = tier.price
            break
    return per_token(Decimal(applicable))


def _batch_ratio(info: Any, standard: Any) -> Decimal:
    """Batch multiplier from genai-prices' ``processing=batch`` variant, else 50 %."""
    for variant in info.price_variants or ():
        if variant.when != {"processing": "batch"}:
            continue
        batch_in = _at(_value(variant.prices, _KEYS["input"]), 0)
        std_in = _at(_value(standard, _KEYS["input"]), 0)
        if batch_in is not None and std_in:
            return CTX.divide(batch_in, std_in)
    return HALF


def _per_call(prices: Any, key: str) -> Decimal:
    """A genai-prices price per thousand (requests, searches) as a price per one."""
    per_k = prices.__dict__.get(key)
    return CTX.divide(Decimal(per_k), Decimal(1000)) if per_k else ZERO


def _price(provider_id: str, info: Any, prices: Any, fine_tuned: bool) -> Price | None:
    base = _from_set(provider_id, info, prices, fine_tuned, _batch_ratio(info, prices), None)
    if base is None:
        return None
    tiers = []
    for variant in info.price_variants or ():
        tier = variant.when.get("service_tier") if len(variant.when) == 1 else None
        if tier in SERVICE_TIERS:
            price = _from_set(
                provider_id, info, variant.prices, fine_tuned, base.batch_discount, base
            )
            if price is not None:
                tiers.append((str(tier), price))
    return replace(base, service_tiers=tuple(tiers)) if tiers else base


def _from_set(
    provider_id: str,
    info: Any,
    prices: Any,
    fine_tuned: bool,
    batch_discount: Decimal,
    base: Price | None,
) -> Price | None:
    """A :class:`Price` from one genai-prices price set; a tier's (``base`` given) takes the
    per-call fees of the standard price, which tier price sets do not repeat."""
    raw = {kind: _value(prices, keys) for kind, keys in _KEYS.items()}
    per_request = _per_call(prices, "requests_kcount")
    per_web_search = _per_call(prices, "web_searches_kcount")
    per_file_search = _per_call(prices, "storage_searches_kcount")
    if base is not None:
        per_request = per_request or base.per_request
        per_web_search = per_web_search or base.per_web_search
        per_file_search = per_file_search or base.per_file_search
    if raw["input"] is None and raw["output"] is None and not per_request:
        return None  # not token-priced (per character, per second) or no price published

    claude = "claude" in str(info.id).lower()

    def build(prompt_tokens: int, tiers: tuple[PriceTier, ...]) -> Price:
        input_price = _at(raw["input"], prompt_tokens) or ZERO
        cache_write = _at(raw["cache_write"], prompt_tokens)
        cache_write_1h = _at(raw["cache_write_1h"], prompt_tokens)
        if cache_write_1h is None and cache_write is not None and claude:
            # Claude on Vertex AI or Bedrock: genai-prices lists the 5-minute write only; a
            # one-hour write bills at twice the input price there as at Anthropic.
            cache_write_1h = input_price * 2
        return Price(
            input=input_price,
            output=_at(raw["output"], prompt_tokens) or ZERO,
            cache_read=_at(raw["cache_read"], prompt_tokens),
            cache_write=cache_write,
            cache_write_1h=cache_write_1h,
            reasoning=_at(raw["reasoning"], prompt_tokens),
            input_audio=_at(raw["input_audio"], prompt_tokens),
            output_audio=_at(raw["output_audio"], prompt_tokens),
            source="genai-prices",
            fine_tuned=fine_tuned,
            batch_discount=batch_discount,
            tiers=tiers,
            per_request=per_request,
            per_web_search=per_web_search,
            per_file_search=per_file_search,
            matched=f"genai-prices:{provider_id}/{info.id}",
            provenance="genai-prices data snapshot",
        )

    starts = sorted(
        {
            int(tier.start)
            for value in raw.values()
            if value is not None and not isinstance(value, Decimal)
            for tier in value.tiers
        }
    )
    tiers = tuple(PriceTier(start, build(start + 1, ())) for start in starts)
    return build(0, tiers)


def _condition(constraint: Any) -> Condition:
    if constraint is None:
        return Condition("always")
    start_date = getattr(constraint, "start_date", None)
    if start_date is not None:
        day = datetime(start_date.year, start_date.month, start_date.day, tzinfo=UTC)
        return Condition("from", day.timestamp())
    return Condition(
        "daily", _utc_seconds(constraint.start_time), _utc_seconds(constraint.end_time)
    )


def _utc_seconds(value: Any) -> float:
    """Seconds after midnight UTC of a time of day (naive = UTC)."""
    if value.tzinfo is not None:
        moment = datetime.combine(datetime(1970, 1, 2).date(), value).astimezone(UTC)
        value = moment.time()
    return float(value.hour * 3600 + value.minute * 60 + value.second)


def layer(provider_id: str, info: Any, fine_tuned: bool) -> Fixed | Conditional | None:
    """The genai-prices price of ``info`` as a layer: constant, or conditional on time."""
    prices = info.prices
    if not isinstance(prices, list):
        price = _price(provider_id, info, prices, fine_tuned)
        return None if price is None else Fixed(price)
    entries = []
    for conditional in prices:
        price = _price(provider_id, info, conditional.prices, fine_tuned)
        if price is not None:
            entries.append((_condition(conditional.constraint), price))
    if not entries:
        return None
    if len(entries) == 1 and entries[0][0].kind == "always":
        return Fixed(entries[0][1])
    return Conditional(entries)


def _literals(logic: Any, out: set[str]) -> set[str]:
    """Every literal name a match clause names (equals, starts_with, contains, ends_with)."""
    for attr in ("equals", "starts_with", "contains", "ends_with"):
        value = getattr(logic, attr, None)
        if isinstance(value, str):
            out.add(value.lower())
    for attr in ("or_", "and_"):
        for clause in getattr(logic, attr, None) or ():
            _literals(clause, out)
    return out


def accepts(info: Any, model: str) -> str | None:
    """``"exact"`` when ``model`` is one of ``info``'s own names, ``"snapshot"`` when it is a
    well-formed snapshot of one, else None (a different model: genai-prices' loose match)."""
    name = model.strip().lower()
    names = _literals(info.match, {str(info.id).lower()})
    if name in names:
        return "exact"
    if any(reduced in names for reduced in reductions(name) if reduced != name):
        return "snapshot"
    return None


def reductions(name: str) -> tuple[str, ...]:
    """``name`` with well-formed parts removed: its candidates, and its Bedrock form without the
    ``-v1:0`` version but with its region and vendor prefixes (genai-prices matches those)."""
    from costwatch.pricing._names import _BEDROCK_VERSION, snapshot_suffix

    out = list(model_candidates(name))
    trimmed = _BEDROCK_VERSION.sub("", name)
    if trimmed != name:
        out.append(trimmed)
        found = snapshot_suffix(trimmed)
        if found is not None:
            out.append(found[0])
    return tuple(out)


def lookup(
    provider: str, candidates: Sequence[str], fine_tuned: bool
) -> tuple[Fixed | Conditional, str, bool] | None:
    """``(layer, the candidate that matched, whether it is the model's own name)`` from
    genai-prices' data, or None."""
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    known: Any = None
    if provider.lower() != "litellm":  # litellm names its provider in the model: by id, below
        # The provider first, then each name at it: looked up by id with each name, genai-prices
        # would cache one entry per name, found or not (a model made up per call grows it).
        try:
            known = snapshot.find_provider(None, provider, None)
        except LookupError:
            return None
    for name in candidates:
        try:
            if known is not None:
                found_provider, info = snapshot.find_provider_model(name, known, None, None)
            else:
                found_provider, info = snapshot.find_provider_model(name, None, provider, None)
        except LookupError:
            continue
        how = accepts(info, name)
        if how is None:
            continue
        found = layer(str(found_provider.id), info, fine_tuned)
        if found is not None:
            return found, name, how == "exact"
        return None
    return None
