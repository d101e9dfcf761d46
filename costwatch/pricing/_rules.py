"""Price rules: the user's price file (and the bundled table, same shape), validated.

A file is ``{"models": [entry, ...]}``; each entry prices one ``provider`` and an exact
``model`` name or a ``match`` glob, in USD per million tokens (or GPU-hour, or per request).
``valid_from`` / ``valid_to`` (a date, or an ISO datetime; UTC when naive) bound the time the
entry is in force: a call is priced at the entry in force at its timestamp, and an entry whose
window does not hold the call's time is skipped (the next layer prices it).
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from costwatch._core.errors import ConfigError
from costwatch._core.record import ZERO
from costwatch.pricing._names import canonical_provider, looks_fine_tuned
from costwatch.pricing._price import CTX, HALF, Price, PriceTier, per_token

_PerMillion = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
_Positive = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]

ALWAYS = (-math.inf, math.inf)


class _TierSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    above_prompt_tokens: int = Field(ge=0)
    input_per_mtok: _PerMillion
    output_per_mtok: _PerMillion
    cache_read_per_mtok: _PerMillion | None = None
    cache_write_per_mtok: _PerMillion | None = None
    cache_write_1h_per_mtok: _PerMillion | None = None


class _RuleSpec(BaseModel):
    """One ``models:`` entry of the user price YAML (all prices USD per million tokens)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = Field(min_length=1)
    model: str | None = Field(default=None, min_length=1)
    match: str | None = Field(default=None, min_length=1)
    input_per_mtok: _PerMillion | None = None
    output_per_mtok: _PerMillion | None = None
    cache_read_per_mtok: _PerMillion | None = None
    cache_write_per_mtok: _PerMillion | None = None
    cache_write_1h_per_mtok: _PerMillion | None = None
    reasoning_per_mtok: _PerMillion | None = None
    input_audio_per_mtok: _PerMillion | None = None
    output_audio_per_mtok: _PerMillion | None = None
    per_request_usd: _PerMillion | None = None
    web_search_usd: _PerMillion | None = None
    file_search_usd: _PerMillion | None = None
    gpu_hour_usd: _Positive | None = None
    tokens_per_second: _Positive | None = None
    output_weight: _PerMillion | None = None
    fine_tuned: bool | None = None
    batch_discount: Decimal = Field(default=HALF, ge=0, le=1, allow_inf_nan=False)
    long_context: list[_TierSpec] = Field(default_factory=list)
    """Long-context tiers: prices for calls whose prompt has more than ``above_prompt_tokens``."""
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    source: str | None = Field(default=None, min_length=1)
    """Where the numbers come from (a pricing page URL)."""
    checked: date | None = None
    """The date the source was read."""
    supersedes: str | None = Field(default=None, min_length=1)
    """The layer whose (stale) data this entry replaces in its window (``genai-prices``)."""


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[_RuleSpec] = Field(default_factory=list)
    training: list[dict[str, Any]] = Field(default_factory=list)
    """Training prices (``_training_prices``): validated there, when a training run is priced."""


@dataclass(frozen=True, slots=True)
class PriceRule:
    """A user or bundled price: for ``provider`` (``*`` = any) and an exact model name or a
    glob ``pattern`` (matched case-insensitively), in force from ``valid_from`` (inclusive) to
    ``valid_to`` (exclusive), UTC seconds."""

    provider: str
    model: str | None
    pattern: str | None
    price: Price
    valid_from: float = -math.inf
    valid_to: float = math.inf

    def describe(self) -> str:
        return f"{self.provider}/{self.model if self.model is not None else self.pattern}"

    def matches(self, candidates: Sequence[str]) -> bool:
        if self.model is not None:
            return self.model in candidates
        assert self.pattern is not None
        return any(fnmatch.fnmatchcase(name, self.pattern) for name in candidates)

    def in_force(self, ts: float) -> bool:
        return self.valid_from <= ts < self.valid_to


def _format_loc(prefix: str, loc: Sequence[int | str]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def timestamp(value: datetime | date | None, default: float) -> float:
    """UTC seconds of a date (midnight UTC) or datetime (UTC when naive)."""
    if value is None:
        return default
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _rule_from_spec(spec: _RuleSpec, where: str, origin: str) -> PriceRule:
    token_priced = spec.input_per_mtok is not None or spec.output_per_mtok is not None
    gpu_priced = spec.gpu_hour_usd is not None or spec.tokens_per_second is not None
    if spec.model is not None and spec.match is not None:
        raise ConfigError(f"{where}.match", spec.match, "give either model or match, not both")
    if spec.model is None and spec.match is None:
        raise ConfigError(f"{where}.model", None, "each entry needs a model name or a match glob")
    if gpu_priced:
        if token_priced:
            raise ConfigError(
                f"{where}.gpu_hour_usd",
                spec.gpu_hour_usd,
                "give either gpu_hour_usd + tokens_per_second or input/output_per_mtok, not both",
            )
        if spec.gpu_hour_usd is None:
            raise ConfigError(f"{where}.gpu_hour_usd", None, "required with tokens_per_second")
        if spec.tokens_per_second is None:
            raise ConfigError(f"{where}.tokens_per_second", None, "required with gpu_hour_usd")
    elif spec.output_weight is not None:
        raise ConfigError(
            f"{where}.output_weight",
            spec.output_weight,
            "only applies to GPU-hour (gpu_hour_usd) prices",
        )
    if not token_priced and not gpu_priced and spec.per_request_usd is None:
        raise ConfigError(
            f"{where}.input_per_mtok",
            None,
            "no price: give input_per_mtok/output_per_mtok, gpu_hour_usd + tokens_per_second, "
            "or per_request_usd",
        )
    valid_from = timestamp(spec.valid_from, -math.inf)
    valid_to = timestamp(spec.valid_to, math.inf)
    if valid_from >= valid_to:
        raise ConfigError(f"{where}.valid_to", spec.valid_to, "must be later than valid_from")

    def opt(value: Decimal | None) -> Decimal | None:
        return None if value is None else per_token(value)

    if spec.gpu_hour_usd is not None and spec.tokens_per_second is not None:
        # Self-hosted: one GPU-hour processes 3600 * tokens_per_second tokens, so a token costs
        # gpu_hour_usd / (3600 * tokens_per_second).  Output tokens cost output_weight times
        # that (decoding is slower than prefill; default 1 = priced alike).
        input_price = CTX.divide(
            spec.gpu_hour_usd, CTX.multiply(Decimal(3600), spec.tokens_per_second)
        )
        weight = Decimal(1) if spec.output_weight is None else spec.output_weight
        output_price = CTX.multiply(input_price, weight)
    else:
        input_price = per_token(spec.input_per_mtok or ZERO)
        output_price = per_token(spec.output_per_mtok or ZERO)
    name = spec.model if spec.model is not None else spec.match
    assert name is not None
    fine_tuned = spec.fine_tuned if spec.fine_tuned is not None else looks_fine_tuned(name)
    provider = "*" if spec.provider.strip() == "*" else canonical_provider(spec.provider)
    source = origin
    if spec.supersedes:
        source = f"{origin}:supersedes-{spec.supersedes}"
    provenance = ""
    if spec.source:
        provenance = spec.source + (f" (read {spec.checked.isoformat()})" if spec.checked else "")
    common: dict[str, Any] = {
        "source": source,
        "fine_tuned": fine_tuned,
        "batch_discount": spec.batch_discount,
        "per_request": spec.per_request_usd or ZERO,
        "per_web_search": spec.web_search_usd or ZERO,
        "per_file_search": spec.file_search_usd or ZERO,
        "matched": f"{origin}:{provider}/{name}",
        "provenance": provenance,
    }
    common.update(
        reasoning=opt(spec.reasoning_per_mtok),
        input_audio=opt(spec.input_audio_per_mtok),
        output_audio=opt(spec.output_audio_per_mtok),
    )

    def priced(input: Decimal, output: Decimal, rates: _TierSpec | _RuleSpec) -> Price:
        return Price(
            input=input,
            output=output,
            cache_read=opt(rates.cache_read_per_mtok),
            cache_write=opt(rates.cache_write_per_mtok),
            cache_write_1h=opt(rates.cache_write_1h_per_mtok),
            **common,
        )

    tiers: list[PriceTier] = []
    for i, tier in enumerate(spec.long_context):
        if tiers and tier.above_prompt_tokens <= tiers[-1].above_prompt_tokens:
            raise ConfigError(
                f"{where}.long_context[{i}].above_prompt_tokens",
                tier.above_prompt_tokens,
                "tiers must be in ascending order",
            )
        tier_price = priced(per_token(tier.input_per_mtok), per_token(tier.output_per_mtok), tier)
        tiers.append(PriceTier(tier.above_prompt_tokens, tier_price))
    price = replace(priced(input_price, output_price, spec), tiers=tuple(tiers))
    model = spec.model.strip().lower() if spec.model is not None else None
    pattern = spec.match.strip().lower() if spec.match is not None else None
    return PriceRule(provider, model, pattern, price, valid_from, valid_to)


def _read_source(source: Mapping[str, Any] | Sequence[Any] | str | os.PathLike[str]) -> Any:
    if isinstance(source, (str, os.PathLike)):
        import yaml

        path = os.fspath(source)
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except OSError as exc:
            raise ConfigError("prices", path, f"cannot read price file: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError("prices", path, "not UTF-8 text (a YAML file is)") from None
        except yaml.YAMLError as exc:
            raise ConfigError("prices", path, f"invalid YAML: {exc}") from None
        return {} if data is None else data
    return source


def load_user_prices(
    source: Mapping[str, Any] | Sequence[Any] | str | os.PathLike[str] | None,
    *,
    origin: str = "user",
    field_prefix: str = "prices",
) -> tuple[PriceRule, ...]:
    """Validate a price YAML file (path) or the same structure as a dict into price rules.

    The structure is ``{"models": [{provider, model | match, input_per_mtok, ...}, ...]}`` (a
    bare list of entries is accepted too).  Errors raise :class:`costwatch.ConfigError` naming
    the field, e.g. ``prices.models[1].output_per_mtok``.
    """
    if source is None:
        return ()
    data = _read_source(source)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        data = {"models": list(data)}
    if not isinstance(data, Mapping):
        raise ConfigError(field_prefix, data, "expected a mapping with a 'models' list")
    try:
        parsed = _PriceFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(
            _format_loc(field_prefix, first["loc"]), first.get("input"), first["msg"]
        ) from None
    return tuple(
        _rule_from_spec(spec, _format_loc(field_prefix, ("models", i)), origin)
        for i, spec in enumerate(parsed.models)
    )


class RuleTable:
    """Rules by exact (provider, model), glob rules in order; the first name that has rules
    wins, and all of that name's rules (their validity windows) are returned."""

    def __init__(self, rules: Iterable[PriceRule]) -> None:
        self.exact: dict[tuple[str, str], list[PriceRule]] = {}
        self.globs: list[PriceRule] = []
        for rule in rules:
            if rule.model is not None:
                self.exact.setdefault((rule.provider, rule.model), []).append(rule)
            else:
                self.globs.append(rule)

    def lookup(self, provider: str, candidates: Sequence[str]) -> tuple[PriceRule, ...]:
        exact = self.exact
        for name in candidates:
            rules = exact.get((provider, name)) or exact.get(("*", name))
            if rules:
                return tuple(rules)
        return tuple(
            rule
            for rule in self.globs
            if rule.provider in (provider, "*") and rule.matches(candidates)
        )

    def lookup_any_provider(self, candidates: Sequence[str]) -> tuple[PriceRule, ...]:
        """The rules for one of ``candidates`` whatever their provider."""
        for name in candidates:
            for (_, rule_model), rules in self.exact.items():
                if rule_model == name:
                    return tuple(rules)
        return tuple(rule for rule in self.globs if rule.matches(candidates))

    def any_fine_tuned(self, candidates: Sequence[str]) -> bool:
        for (_, name), rules in self.exact.items():
            if name in candidates and any(rule.price.fine_tuned for rule in rules):
                return True
        return any(rule.price.fine_tuned and rule.matches(candidates) for rule in self.globs)
