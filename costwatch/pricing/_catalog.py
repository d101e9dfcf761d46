"""Prices: a layered catalog (user YAML > bundled > genai-prices), resolved once per model.

``PriceCatalog.resolve(provider, model)`` turns a provider and model name into a :class:`Price`
(per-token USD ``Decimal`` prices plus long-context tiers) or ``None`` when no layer knows the
model.  The answer is memoised per ``(provider, model)``; genai-prices is consulted at most once
per pair (its ``calc_price`` costs ~120 µs, far too slow for every call), and
:meth:`Price.cost` is a handful of Decimal multiply-adds.

Layers, first match wins:

1. user prices (``configure(prices=...)``: a YAML file or the same structure as a dict) for
   negotiated, self-hosted (GPU-hour) and custom models;
2. the bundled supplement (:mod:`costwatch.pricing._bundled`): embeddings, OpenAI ``ft:``
   inference prices with cached input, rerankers;
3. genai-prices' data snapshot, read through its own provider/model matching.

Every :class:`Price` carries ``source`` (``"user"``, ``"bundled"`` or ``"genai-prices"``).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from costwatch._core.errors import ConfigError
from costwatch._core.forks import new_lock
from costwatch._core.money import format_usd
from costwatch._core.record import SERVICE_TIERS, TokenUsage

_ZERO = Decimal(0)
_MTOK = Decimal(1_000_000)
_HALF = Decimal("0.5")
_CTX = Context(prec=34)
"""The context for deriving per-token prices (divisions): independent of the host's context."""

_MEMO_LIMIT = 50_000
"""Distinct (provider, model) pairs memoised; past it lookups still work, uncached."""


# --------------------------------------------------------------------------------------------
# Price
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceTier:
    """Long-context tier: when a call's prompt (fresh input + cache reads + cache writes) has
    *more than* ``above_prompt_tokens`` tokens, **all** of its tokens bill at ``price``
    (the "cliff" model genai-prices and the providers use)."""

    above_prompt_tokens: int
    price: Price


@dataclass(frozen=True, slots=True)
class Price:
    """Per-token USD prices of one model, with the fallbacks already applied.

    ``cache_read`` / ``cache_write`` missing bill at the input price, ``cache_write_1h``
    missing bills at the (5-minute) cache-write price, ``reasoning`` missing bills at the output
    price, ``input_audio`` / ``output_audio`` missing bill at the input / output price.
    ``per_request`` is a fixed price per call (rerank searches, per-request fees);
    ``per_web_search`` and ``per_file_search`` price each server-side search a call ran (they
    are billed as they are: neither tiered nor batch-discounted).  ``service_tiers`` are the
    prices of OpenAI's processing tiers (``flex``, ``priority``) where they are published.
    """

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    reasoning: Decimal | None = None
    input_audio: Decimal | None = None
    output_audio: Decimal | None = None
    source: str = "user"
    fine_tuned: bool = False
    batch_discount: Decimal = _HALF
    """Multiplier applied when ``batch=True`` (OpenAI and Anthropic batch APIs: 50 %)."""
    tiers: tuple[PriceTier, ...] = ()
    """Ascending by ``above_prompt_tokens``; each tier's price has no tiers of its own."""
    per_request: Decimal = _ZERO
    per_web_search: Decimal = _ZERO
    per_file_search: Decimal = _ZERO
    service_tiers: tuple[tuple[str, Price], ...] = ()
    """``(tier, price)`` pairs: the price of a call served at that processing tier."""
    matched: str = field(default="", compare=False)
    """What the lookup matched, for ``costwatch prices``: e.g. ``genai-prices:openai/gpt-4o``."""

    _cache_read: Decimal = field(init=False, repr=False, compare=False)
    _cache_write: Decimal = field(init=False, repr=False, compare=False)
    _cache_write_1h: Decimal = field(init=False, repr=False, compare=False)
    _reasoning: Decimal = field(init=False, repr=False, compare=False)
    _input_audio_extra: Decimal = field(init=False, repr=False, compare=False)
    """What an audio input token costs more than a text one (audio is a part of input)."""
    _output_audio_extra: Decimal = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cache_read = self.input if self.cache_read is None else self.cache_read
        cache_write = self.input if self.cache_write is None else self.cache_write
        cache_1h = cache_write if self.cache_write_1h is None else self.cache_write_1h
        reasoning = self.output if self.reasoning is None else self.reasoning
        object.__setattr__(self, "_cache_read", cache_read)
        object.__setattr__(self, "_cache_write", cache_write)
        object.__setattr__(self, "_cache_write_1h", cache_1h)
        object.__setattr__(self, "_reasoning", reasoning)
        audio_in = self.input if self.input_audio is None else self.input_audio
        audio_out = self.output if self.output_audio is None else self.output_audio
        object.__setattr__(self, "_input_audio_extra", audio_in - self.input)
        object.__setattr__(self, "_output_audio_extra", audio_out - self.output)
        starts = [tier.above_prompt_tokens for tier in self.tiers]
        if starts != sorted(starts):
            raise ValueError("price tiers must be sorted by above_prompt_tokens")

    # -- the hot path ------------------------------------------------------------------------

    def for_prompt(self, prompt_tokens: int) -> Price:
        """The price that applies to a call with ``prompt_tokens`` input-side tokens."""
        chosen = self
        for tier in self.tiers:
            if prompt_tokens > tier.above_prompt_tokens:
                chosen = tier.price
            else:
                break
        return chosen

    def of_tier(self, index: int) -> Price:
        """The price of tier ``index`` (see :meth:`tier_index`) with no tiers of its own: what a
        sum of calls of that tier bills at (the sum's prompt can pass a tier no call did)."""
        if index:
            return self.tiers[index - 1].price
        return replace(self, tiers=()) if self.tiers else self

    def for_service_tier(self, tier: str) -> Price | None:
        """The price of a call served at processing ``tier``, or None when none is published."""
        for name, price in self.service_tiers:
            if name == tier:
                return price
        return None

    def tier_index(self, prompt_tokens: int) -> int:
        """0 for this price, ``i`` for ``tiers[i - 1]``: which one a call's prompt bills at."""
        index = 0
        for i, tier in enumerate(self.tiers, 1):
            if prompt_tokens > tier.above_prompt_tokens:
                index = i
            else:
                break
        return index

    def cost(self, usage: TokenUsage, *, batch: bool = False, requests: int = 1) -> Decimal:
        """USD cost of ``usage``; ``requests`` multiplies ``per_request`` (e.g. search units)."""
        price = self.for_prompt(usage.prompt_total) if self.tiers else self
        total = price._input_side(usage)
        if usage.output:
            total += price._output_side(usage)
        if usage.reasoning:
            total += price._reasoning * usage.reasoning
        if requests and price.per_request:
            total += price.per_request * requests
        if batch:
            total *= price.batch_discount
        if usage.web_searches or usage.file_searches:
            total += self._search_fees(usage)
        return total

    def cost_split(
        self, usage: TokenUsage, calls: int = 1, batch: bool = False
    ) -> tuple[Decimal, Decimal]:
        """``(cost, input-side cost)`` of ``usage`` in one pass (the recorder's hot path).

        ``usage`` may be the sum of ``calls`` calls that bill at this price (one tier): the
        per-request price is then charged ``calls`` times.  ``batch``: at the batch rate.
        """
        price = self.for_prompt(usage.prompt_total) if self.tiers else self
        input_side = price._input_side(usage)
        total = input_side
        if usage.output:
            total += price._output_side(usage)
        if usage.reasoning:
            total += price._reasoning * usage.reasoning
        if price.per_request:
            total += price.per_request * calls
        if batch:
            discount = price.batch_discount
            total, input_side = total * discount, input_side * discount
        if usage.web_searches or usage.file_searches:
            total += self._search_fees(usage)
        return total, input_side

    def _search_fees(self, usage: TokenUsage) -> Decimal:
        """The server-side searches ``usage`` ran, at this price's (untiered) fees."""
        return self.per_web_search * usage.web_searches + self.per_file_search * usage.file_searches

    def input_cost(self, usage: TokenUsage, *, batch: bool = False) -> Decimal:
        """The input-side part of :meth:`cost`: fresh input, cache reads and cache writes."""
        price = self.for_prompt(usage.prompt_total) if self.tiers else self
        total = price._input_side(usage)
        if batch:
            total *= price.batch_discount
        return total

    def _output_side(self, usage: TokenUsage) -> Decimal:
        """Visible output, its audio part at the audio rate."""
        total = self.output * usage.output
        if usage.output_audio:
            total += self._output_audio_extra * min(usage.output_audio, usage.output)
        return total

    def _input_side(self, usage: TokenUsage) -> Decimal:
        # Plain Decimal operators (twice as fast as Context methods here): prices have a few
        # significant digits and token counts at most ~10, so every product and sum is exact
        # under any context with 20+ digits of precision (Python's default is 28).
        total = _ZERO
        if usage.input:
            total = self.input * usage.input
            if usage.input_audio:
                total += self._input_audio_extra * min(usage.input_audio, usage.input)
        if usage.cache_read:
            total += self._cache_read * usage.cache_read
        cache_write = usage.cache_write
        if cache_write:
            one_hour = usage.cache_write_1h
            if one_hour:
                if one_hour > cache_write:  # a subset by contract; never bill negative tokens
                    one_hour = cache_write
                total += self._cache_write_1h * one_hour
                cache_write -= one_hour
            if cache_write:
                total += self._cache_write * cache_write
        return total

    # -- display -------------------------------------------------------------------------------

    def per_million(self) -> dict[str, tuple[Decimal, str]]:
        """USD per million tokens per token type, with a note where a fallback applies."""
        rows: dict[str, tuple[Decimal, str]] = {
            "input": (self.input * _MTOK, ""),
            "cache_read": (
                self._cache_read * _MTOK,
                "" if self.cache_read is not None else "input price",
            ),
            "cache_write": (
                self._cache_write * _MTOK,
                "" if self.cache_write is not None else "input price",
            ),
            "cache_write_1h": (
                self._cache_write_1h * _MTOK,
                "" if self.cache_write_1h is not None else "cache-write price",
            ),
            "output": (self.output * _MTOK, ""),
            "reasoning": (
                self._reasoning * _MTOK,
                "" if self.reasoning is not None else "output price",
            ),
        }
        if self.input_audio is not None:
            rows["input_audio"] = (self.input_audio * _MTOK, "")
        if self.output_audio is not None:
            rows["output_audio"] = (self.output_audio * _MTOK, "")
        return rows


def per_token(per_million: Decimal) -> Decimal:
    """USD per million tokens -> USD per token."""
    return _CTX.divide(per_million, _MTOK)


# --------------------------------------------------------------------------------------------
# Provider and model names
# --------------------------------------------------------------------------------------------

_PROVIDER_ALIASES: dict[str, str] = {
    # OpenAI and Azure OpenAI
    "openai": "openai",
    "azure": "azure",
    "azure_openai": "azure",
    "azure-openai": "azure",
    "azureopenai": "azure",
    "az.ai.openai": "azure",
    "az.ai.inference": "azure",
    # Anthropic
    "anthropic": "anthropic",
    "claude": "anthropic",
    # Google (Gemini API and Vertex AI)
    "google": "google",
    "gemini": "google",
    "google_genai": "google",
    "google-genai": "google",
    "google.genai": "google",
    "vertex": "google",
    "vertex_ai": "google",
    "vertexai": "google",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    # AWS Bedrock
    "aws": "aws",
    "bedrock": "aws",
    "aws.bedrock": "aws",
    "aws_bedrock": "aws",
    "amazon": "aws",
    # others, spelled the way SDKs and the OTel GenAI conventions spell them
    "mistral": "mistral",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "cohere": "cohere",
    "voyage": "voyageai",
    "voyageai": "voyageai",
    "voyage_ai": "voyageai",
    "xai": "x-ai",
    "x-ai": "x-ai",
    "grok": "x-ai",
    "deepseek": "deepseek",
    "groq": "groq",
    "together": "together",
    "together_ai": "together",
    "togetherai": "together",
    "fireworks": "fireworks",
    "fireworks_ai": "fireworks",
    "perplexity": "perplexity",
    "openrouter": "openrouter",
}


def canonical_provider(provider: str) -> str:
    """Provider id as genai-prices spells it (``azure_openai`` -> ``azure``).

    ``gemini``/``vertex_ai`` -> ``google``; unknown providers come back lower-cased.
    """
    key = provider.strip().lower()
    return _PROVIDER_ALIASES.get(key, key)


_BEDROCK_PREFIX = re.compile(
    r"^(?:(?:us|eu|apac|global|us-gov)\.)?(?:anthropic|meta|amazon|mistral|cohere|ai21|deepseek)\."
)
_VERSION_SUFFIX = re.compile(
    r"(?:-v\d+(?::\d+)?"  # bedrock  -v1:0
    r"|@\d{8}|@latest"  # vertex   @20240620
    r"|-\d{4}-\d{2}-\d{2}"  # openai   -2024-07-18
    r"|-20\d{6}"  # anthropic -20240620
    r"|-(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"  # openai legacy -0613 (MMDD)
    r"|-latest)$"
)


def _strip_versions(name: str) -> str:
    for _ in range(3):
        stripped = _VERSION_SUFFIX.sub("", name)
        if stripped == name:
            break
        name = stripped
    return name


def model_candidates(model: str) -> tuple[str, ...]:
    """Names to try for ``model``, most specific first.

    The name as given (lower-cased), then without ``models/`` / Vertex resource prefixes,
    without a ``provider/`` prefix, without Bedrock vendor prefixes, and without dated snapshot
    suffixes.  A fine-tuned ``ft:BASE:org:name:id`` (or Azure's ``BASE.ft-id``) also yields
    ``ft:BASE`` and ``ft:BASE-without-date``, which is how the bundled ``ft:`` prices are keyed.
    """
    name = model.strip().lower()
    out: list[str] = []

    def add(candidate: str) -> None:
        if candidate and candidate not in out:
            out.append(candidate)

    add(name)
    if name.startswith("ft:") or ".ft-" in name:
        base = name[3:].split(":", 1)[0] if name.startswith("ft:") else name.split(".ft-", 1)[0]
        add("ft:" + base)
        add("ft:" + _strip_versions(base))
        return tuple(out)
    base = name
    if "/models/" in base:
        base = base.rsplit("/models/", 1)[1]
    elif base.startswith("models/"):
        base = base[len("models/") :]
    add(base)
    prefix, sep, rest = base.partition("/")
    if sep and prefix in _PROVIDER_ALIASES:
        base = rest
        add(base)
    base = _BEDROCK_PREFIX.sub("", base)
    add(base)
    add(_strip_versions(base))
    return tuple(out)


_OPENAI_PREFIXES = (
    "gpt-",
    "chatgpt-",
    "text-embedding-",
    "davinci",
    "babbage",
    "dall-e",
    "whisper",
    "tts-",
    "omni-moderation",
    "codex-",
    "computer-use",
)
_O_SERIES = re.compile(r"^o\d(?:-|$)")


def infer_provider(model: str) -> str | None:
    """Best guess of the provider from a model name (for the CLI, where it may be omitted)."""
    name = model.strip().lower()
    if name.startswith("models/"):
        name = name[len("models/") :]
    if name.startswith(("ft:", *_OPENAI_PREFIXES)) or ".ft-" in name or _O_SERIES.match(name):
        return "openai"
    if name.startswith("claude"):
        return "anthropic"
    if name.startswith(("gemini", "tunedmodels/")):
        return "google"
    if name.startswith(("embed-", "command", "rerank-v", "rerank-english", "rerank-multilingual")):
        return "cohere"
    if name.startswith(("voyage", "rerank-2")):
        return "voyageai"
    if name.startswith(("mistral", "mixtral", "codestral", "ministral", "pixtral", "magistral")):
        return "mistral"
    if name.startswith("grok"):
        return "x-ai"
    if name.startswith("deepseek"):
        return "deepseek"
    try:
        from genai_prices import data_snapshot

        found = data_snapshot.get_snapshot().find_provider(name, None, None)
    except LookupError:
        return None
    return str(found.id)


def provider_for_url(url: str) -> str | None:
    """The provider whose API lives at ``url``, by genai-prices' API URL patterns
    (``https://api.groq.com/openai/v1`` -> ``groq``); None for a local server or an unknown
    host."""
    from genai_prices import data_snapshot

    try:
        found = data_snapshot.get_snapshot().find_provider(None, None, url)
    except LookupError:
        return None
    return str(found.id)


def _looks_fine_tuned(model: str) -> bool:
    name = model.strip().lower()
    return name.startswith("ft:") or ".ft-" in name or name.startswith("tunedmodels/")


# --------------------------------------------------------------------------------------------
# User (and bundled) price rules
# --------------------------------------------------------------------------------------------

_PerMillion = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
_Positive = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]


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
    batch_discount: Decimal = Field(default=_HALF, ge=0, le=1, allow_inf_nan=False)


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[_RuleSpec] = Field(default_factory=list)
    training: list[dict[str, Any]] = Field(default_factory=list)
    """Training prices (``_training_prices``): validated there, when a training run is priced."""


@dataclass(frozen=True, slots=True)
class PriceRule:
    """A user or bundled price: for ``provider`` (``*`` = any) and an exact model name or a
    glob ``pattern`` (matched case-insensitively)."""

    provider: str
    model: str | None
    pattern: str | None
    price: Price

    def describe(self) -> str:
        return f"{self.provider}/{self.model if self.model is not None else self.pattern}"


def _format_loc(prefix: str, loc: Sequence[int | str]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _rule_from_spec(spec: _RuleSpec, where: str, source: str) -> PriceRule:
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

    def opt(value: Decimal | None) -> Decimal | None:
        return None if value is None else per_token(value)

    if spec.gpu_hour_usd is not None and spec.tokens_per_second is not None:
        # Self-hosted: one GPU-hour processes 3600 * tokens_per_second tokens, so a token costs
        # gpu_hour_usd / (3600 * tokens_per_second).  Output tokens cost output_weight times
        # that (decoding is slower than prefill; default 1 = priced alike).
        input_price = _CTX.divide(
            spec.gpu_hour_usd, _CTX.multiply(Decimal(3600), spec.tokens_per_second)
        )
        weight = Decimal(1) if spec.output_weight is None else spec.output_weight
        output_price = _CTX.multiply(input_price, weight)
    else:
        input_price = per_token(spec.input_per_mtok or _ZERO)
        output_price = per_token(spec.output_per_mtok or _ZERO)
    name = spec.model if spec.model is not None else spec.match
    assert name is not None
    fine_tuned = spec.fine_tuned if spec.fine_tuned is not None else _looks_fine_tuned(name)
    provider = "*" if spec.provider.strip() == "*" else canonical_provider(spec.provider)
    price = Price(
        input=input_price,
        output=output_price,
        cache_read=opt(spec.cache_read_per_mtok),
        cache_write=opt(spec.cache_write_per_mtok),
        cache_write_1h=opt(spec.cache_write_1h_per_mtok),
        reasoning=opt(spec.reasoning_per_mtok),
        input_audio=opt(spec.input_audio_per_mtok),
        output_audio=opt(spec.output_audio_per_mtok),
        source=source,
        fine_tuned=fine_tuned,
        batch_discount=spec.batch_discount,
        per_request=spec.per_request_usd or _ZERO,
        per_web_search=spec.web_search_usd or _ZERO,
        per_file_search=spec.file_search_usd or _ZERO,
        matched=f"{source}:{provider}/{name}",
    )
    if spec.model is not None:
        return PriceRule(provider, spec.model.strip().lower(), None, price)
    return PriceRule(provider, None, spec.match.strip().lower() if spec.match else None, price)


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


class _RuleTable:
    """Exact (provider, model) rules in a dict, glob rules in order; first match wins."""

    def __init__(self, rules: Iterable[PriceRule]) -> None:
        self.exact: dict[tuple[str, str], PriceRule] = {}
        self.globs: list[PriceRule] = []
        for rule in rules:
            if rule.model is not None:
                self.exact.setdefault((rule.provider, rule.model), rule)
            else:
                self.globs.append(rule)

    def lookup(self, provider: str, candidates: Sequence[str]) -> PriceRule | None:
        exact = self.exact
        for name in candidates:
            rule = exact.get((provider, name)) or exact.get(("*", name))
            if rule is not None:
                return rule
        for rule in self.globs:
            if rule.provider not in (provider, "*") or rule.pattern is None:
                continue
            if any(fnmatch.fnmatchcase(name, rule.pattern) for name in candidates):
                return rule
        return None

    def lookup_any_provider(self, candidates: Sequence[str]) -> PriceRule | None:
        """The first rule for one of ``candidates`` whatever its provider."""
        for name in candidates:
            for (_, rule_model), rule in self.exact.items():
                if rule_model == name:
                    return rule
        for rule in self.globs:
            if rule.pattern is not None and any(
                fnmatch.fnmatchcase(name, rule.pattern) for name in candidates
            ):
                return rule
        return None

    def any_fine_tuned(self, candidates: Sequence[str]) -> bool:
        for (_, name), rule in self.exact.items():
            if rule.price.fine_tuned and name in candidates:
                return True
        return any(
            rule.price.fine_tuned
            and rule.pattern is not None
            and any(fnmatch.fnmatchcase(name, rule.pattern) for name in candidates)
            for rule in self.globs
        )


# --------------------------------------------------------------------------------------------
# genai-prices
# --------------------------------------------------------------------------------------------

_GENAI_KEYS = {
    "input": ("input_mtok", "input_text_mtok"),
    "output": ("output_mtok", "output_text_mtok"),
    "cache_read": ("cache_read_mtok", "cache_text_read_mtok"),
    "cache_write": ("cache_write_mtok", "cache_text_write_mtok"),
    "cache_write_1h": ("cache_write_1h_mtok", "cache_text_write_1h_mtok"),
    "reasoning": ("output_reasoning_mtok", "output_text_reasoning_mtok"),
    "input_audio": ("input_audio_mtok",),
    "output_audio": ("output_audio_mtok",),
}


def _genai_value(prices: Any, keys: tuple[str, ...]) -> Any:
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
        batch_in = _at(_genai_value(variant.prices, _GENAI_KEYS["input"]), 0)
        std_in = _at(_genai_value(standard, _GENAI_KEYS["input"]), 0)
        if batch_in is not None and std_in:
            return _CTX.divide(batch_in, std_in)
    return _HALF


def _per_call(prices: Any, key: str) -> Decimal:
    """A genai-prices price per thousand (requests, searches) as a price per one."""
    per_k = prices.__dict__.get(key)
    return _CTX.divide(Decimal(per_k), Decimal(1000)) if per_k else _ZERO


def _price_from_genai(provider_id: str, info: Any, fine_tuned: bool, now: datetime) -> Price | None:
    prices = info.get_prices(now)
    base = _genai_price(provider_id, info, prices, fine_tuned, _batch_ratio(info, prices), None)
    if base is None:
        return None
    tiers = []
    for variant in info.price_variants or ():
        tier = variant.when.get("service_tier") if len(variant.when) == 1 else None
        if tier in SERVICE_TIERS:
            price = _genai_price(
                provider_id, info, variant.prices, fine_tuned, base.batch_discount, base
            )
            if price is not None:
                tiers.append((str(tier), price))
    return replace(base, service_tiers=tuple(tiers)) if tiers else base


def _genai_price(
    provider_id: str,
    info: Any,
    prices: Any,
    fine_tuned: bool,
    batch_discount: Decimal,
    base: Price | None,
) -> Price | None:
    """A :class:`Price` from one genai-prices price set; a tier's (``base`` given) takes the
    per-call fees of the standard price, which tier price sets do not repeat."""
    raw = {kind: _genai_value(prices, keys) for kind, keys in _GENAI_KEYS.items()}
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
        input_price = _at(raw["input"], prompt_tokens) or _ZERO
        cache_write = _at(raw["cache_write"], prompt_tokens)
        cache_write_1h = _at(raw["cache_write_1h"], prompt_tokens)
        if cache_write_1h is None and cache_write is not None and claude:
            # Claude on Vertex AI or Bedrock: genai-prices lists the 5-minute write only; a
            # one-hour write bills at twice the input price there as at Anthropic.
            cache_write_1h = input_price * 2
        return Price(
            input=input_price,
            output=_at(raw["output"], prompt_tokens) or _ZERO,
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


def _genai_lookup(provider: str, candidates: Sequence[str], fine_tuned: bool) -> Price | None:
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
        return _price_from_genai(str(found_provider.id), info, fine_tuned, datetime.now(UTC))
    return None


# --------------------------------------------------------------------------------------------
# The catalog
# --------------------------------------------------------------------------------------------

_MISSING: Any = object()


class PriceCatalog:
    """Resolves (provider, model) to a :class:`Price`: user > bundled > genai-prices.

    Construction validates the user prices (raising :class:`costwatch.ConfigError`) and imports
    nothing heavy; the bundled table and genai-prices load on the first :meth:`resolve` (call
    :meth:`warm_up` at start-up, e.g. in a thread, to keep that off a request).
    """

    def __init__(
        self,
        user: Mapping[str, Any] | Sequence[Any] | str | os.PathLike[str] | None = None,
        *,
        genai_prices: bool = True,
    ) -> None:
        self._user = _RuleTable(load_user_prices(user))
        self._use_genai = genai_prices
        self._bundled: _RuleTable | None = None
        self._memo: dict[tuple[str, str], Price | None] = {}
        self._fine_tuned: dict[str, bool] = {}
        self._lock = new_lock()
        self.genai_lookups = 0
        """How many (provider, model) pairs were looked up in genai-prices (memoisation check)."""

    def resolve(self, provider: str, model: str) -> Price | None:
        """The price of ``model`` at ``provider``, or ``None`` when no layer knows it.

        ``provider`` may be an alias (``azure_openai``, ``gcp.gemini``, ``bedrock``...) or empty,
        in which case it is inferred from the model name.  Memoised and thread-safe.
        """
        key = (provider, model)
        price = self._memo.get(key, _MISSING)
        if price is not _MISSING:
            return price  # type: ignore[no-any-return]
        with self._lock:
            price = self._memo.get(key, _MISSING)
            if price is _MISSING:
                price = self._lookup(provider, model)
                if len(self._memo) < _MEMO_LIMIT:
                    self._memo[key] = price
        return price  # type: ignore[no-any-return]

    def is_fine_tuned(self, model: str) -> bool:
        """``ft:`` / Azure ``.ft-`` / Gemini ``tunedModels/`` names, or flagged in the catalog."""
        known = self._fine_tuned.get(model)
        if known is not None:
            return known
        candidates = model_candidates(model)
        result = (
            _looks_fine_tuned(model)
            or self._user.any_fine_tuned(candidates)
            or self._bundled_table().any_fine_tuned(candidates)
        )
        if len(self._fine_tuned) < _MEMO_LIMIT:
            self._fine_tuned[model] = result
        return result

    def warm_up(self) -> None:
        """Load the bundled table and genai-prices' data now rather than on the first call."""
        self._bundled_table()
        if self._use_genai:
            from genai_prices import data_snapshot

            data_snapshot.get_snapshot()

    def _bundled_table(self) -> _RuleTable:
        table = self._bundled
        if table is None:
            from costwatch.pricing._bundled import BUNDLED_PRICES

            table = _RuleTable(
                load_user_prices(BUNDLED_PRICES, origin="bundled", field_prefix="bundled")
            )
            self._bundled = table
        return table

    def _lookup(self, provider: str, model: str) -> Price | None:
        if not provider.strip():
            provider = infer_provider(model) or ""
            if not provider:
                return None
        canonical = canonical_provider(provider)
        candidates = model_candidates(model)
        for table in (self._user, self._bundled_table()):
            rule = table.lookup(canonical, candidates)
            if rule is not None:
                return rule.price
        if self._use_genai:
            self.genai_lookups += 1
            fine_tuned = _looks_fine_tuned(model) or self._user.any_fine_tuned(candidates)
            price = _genai_lookup(canonical, candidates, fine_tuned)
            if price is not None:
                return price
        # Nobody prices it under this provider: your own price for the model under another
        # provider name (a self-hosted model served by an OpenAI-compatible server is called
        # through the OpenAI SDK) rather than no price at all.
        rule = self._user.lookup_any_provider(candidates)
        return rule.price if rule is not None else None


# --------------------------------------------------------------------------------------------
# `costwatch prices MODEL`
# --------------------------------------------------------------------------------------------

_ROW_LABELS = {
    "input": "input",
    "cache_read": "cache read",
    "cache_write": "cache write (5 min)",
    "cache_write_1h": "cache write (1 hour)",
    "output": "output",
    "reasoning": "reasoning",
    "input_audio": "input (audio)",
    "output_audio": "output (audio)",
}


def format_price_table(catalog: PriceCatalog, model: str, provider: str | None = None) -> str:
    """Human-readable price of ``model`` (USD per million tokens), its source and fallbacks."""
    chosen = provider or infer_provider(model) or ""
    price = catalog.resolve(chosen, model)
    shown_provider = chosen or "unknown"
    if price is None:
        return (
            f"no price known for model {model!r} (provider {shown_provider!r}).\n"
            "Its calls are recorded with cost_usd=None and counted in "
            "costwatch_unpriced_requests_total.\n"
            "Add it to a price file (configure(prices=...) or COSTWATCH_PRICES):\n\n"
            "models:\n"
            f"  - provider: {chosen or 'PROVIDER'}\n"
            f"    model: {model}\n"
            "    input_per_mtok: 0.00\n"
            "    output_per_mtok: 0.00\n"
        )
    lines = [
        f"model       {model}",
        f"provider    {canonical_provider(chosen) if chosen else shown_provider}",
        f"source      {price.source} ({price.matched})"
        if price.matched
        else f"source      {price.source}",
        f"fine-tuned  {'yes' if catalog.is_fine_tuned(model) or price.fine_tuned else 'no'}",
        "",
        f"{'token type':<22}USD per 1M tokens",
    ]
    for kind, (value, note) in price.per_million().items():
        suffix = f"  (= {note})" if note else ""
        lines.append(f"{_ROW_LABELS[kind]:<22}{format_usd(value)}{suffix}")
    if price.per_request:
        lines.append(f"{'per request':<22}{format_usd(price.per_request)} USD per call")
    if price.per_web_search:
        lines.append(f"{'web search':<22}{format_usd(price.per_web_search)} USD per search")
    if price.per_file_search:
        lines.append(f"{'file search':<22}{format_usd(price.per_file_search)} USD per search")
    lines.append(f"{'batch':<22}x{format_usd(price.batch_discount)} with batch=True")
    for tier in price.tiers:
        lines.append(f"above {tier.above_prompt_tokens} prompt tokens: {_rates(tier.price)}")
    for name, tiered in price.service_tiers:
        lines.append(f"service_tier={name}: {_rates(tiered)}")
    return "\n".join(lines)


def _rates(price: Price) -> str:
    """A price's per-million rates on one line."""
    rows = price.per_million().items()
    return ", ".join(f"{_ROW_LABELS[kind]} {format_usd(value)}" for kind, (value, _) in rows)
