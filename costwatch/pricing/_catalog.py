"""``PriceCatalog``: resolves (provider, model) to the :class:`Price` in force at a call's time.

Layers, first that prices the model at that time wins:

1. user prices (``configure(prices=...)``: a YAML file or the same structure as a dict) for
   negotiated, self-hosted (GPU-hour) and custom models;
2. the bundled table (:mod:`costwatch.pricing._bundled`): what genai-prices lacks or has stale;
3. genai-prices' data snapshot (:mod:`costwatch.pricing._genai_prices`).

Then two completions, so a price is whole: a user entry without some token-type prices
inherits them from the catalog's entry for the same model, scaled by the entry's own input
(input side) or output (output side) ratio; a provider route (Bedrock, Vertex AI, Azure) whose
price has no long-context tier inherits the first-party model's tiers, scaled the same way per
token type (AWS bills Sonnet 4.5 above 200k prompt tokens at twice its own base rate).

What a (provider, model) resolves to is memoised: a constant price, or a
:class:`~costwatch.pricing._timeline.Timeline` when an effective date or a time-of-day window
applies, evaluated at each call's time (``clock``, injectable) for two float comparisons.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from costwatch._core.forks import new_rlock
from costwatch.pricing import _genai_prices
from costwatch.pricing._names import (
    base_name,
    canonical_provider,
    infer_provider,
    looks_fine_tuned,
    model_candidates,
    snapshot_date,
    vendor,
)
from costwatch.pricing._price import CTX, Price, PriceTier
from costwatch.pricing._rules import ALWAYS, PriceRule, RuleTable, load_user_prices
from costwatch.pricing._timeline import Dated, Layer, Timeline

_MEMO_LIMIT = 50_000
"""Distinct (provider, model) pairs memoised; past it lookups still work, uncached."""

ROUTES = frozenset({"aws", "google", "azure"})
"""Providers that serve other vendors' models (Claude on Bedrock and Vertex, GPT on Azure)."""

_INPUT_SIDE = ("cache_read", "cache_write", "cache_write_1h", "input_audio")
_OUTPUT_SIDE = ("reasoning", "output_audio")

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Resolution:
    """How a model resolves: its layers, for ``costwatch prices``."""

    provider: str
    user: Dated | None
    bundled: Dated | None
    genai: Layer | None
    direct: Timeline | Price | None
    """The first-party price a route inherits long-context tiers from."""
    pinned_at: float | None
    """A dated snapshot priced through its ``-latest`` alias is priced at its own date."""
    evaluate: Callable[[float], Price | None]
    window: Callable[[float], tuple[float, float]]
    """Around a time, the window in which the price does not change."""
    constant: bool


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._user = RuleTable(load_user_prices(user))
        self._use_genai = genai_prices
        self._clock = clock
        self._bundled: RuleTable | None = None
        self._memo: dict[tuple[str, str], Price | Timeline | None] = {}
        self._resolutions: dict[tuple[str, str], Resolution | None] = {}
        self._fine_tuned: dict[str, bool] = {}
        self._lock = new_rlock()
        self.genai_lookups = 0
        """How many (provider, model) pairs were looked up in genai-prices (memoisation check)."""

    def resolve(self, provider: str, model: str, at: float | None = None) -> Price | None:
        """The price of ``model`` at ``provider`` in force at ``at`` (UTC seconds; default: now
        by the catalog's clock), or ``None`` when no layer knows it.

        ``provider`` may be an alias (``azure_openai``, ``gcp.gemini``, ``bedrock``...) or empty,
        in which case it is inferred from the model name.  Memoised and thread-safe.
        """
        key = (provider, model)
        entry = self._memo.get(key, _MISSING)
        if entry is _MISSING:
            with self._lock:
                entry = self._entry(provider, model)
        if entry.__class__ is Timeline:
            timeline: Timeline = entry
            return timeline.at(self._clock() if at is None else at)
        price: Price | None = entry
        return price

    def is_timed(self, provider: str, model: str) -> bool:
        """True when the price of ``model`` depends on the time of the call (an effective date
        ahead or behind, a time-of-day window): each call is then priced at its own time."""
        self.resolve(provider, model)
        entry = self._memo.get((provider, model))
        if not isinstance(entry, Timeline):
            return False
        # No boundary ahead: every call from now on bills at today's price, so a sum of calls
        # priced when read is exact.
        return entry.window(self._clock())[1] != math.inf

    def resolution(self, provider: str, model: str) -> Resolution | None:
        """The layers ``model`` resolves through (``costwatch prices``)."""
        self.resolve(provider, model)
        known = self._resolutions.get((provider, model), _MISSING)
        if known is not _MISSING:
            return known  # type: ignore[no-any-return]
        with self._lock:  # past the memo limit
            return self._resolve_layers(provider, model)

    def is_fine_tuned(self, model: str) -> bool:
        """``ft:`` / Azure ``.ft-`` / Gemini ``tunedModels/`` names, or flagged in the catalog."""
        known = self._fine_tuned.get(model)
        if known is not None:
            return known
        candidates = model_candidates(model)
        result = (
            looks_fine_tuned(model)
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

    def _bundled_table(self) -> RuleTable:
        table = self._bundled
        if table is None:
            from costwatch.pricing._bundled import bundled_rules

            table = RuleTable(bundled_rules())
            self._bundled = table
        return table

    # -- building a resolution ---------------------------------------------------------------

    def _build(self, provider: str, model: str) -> Price | Timeline | None:
        resolution = self._resolve_layers(provider, model)
        if len(self._resolutions) < _MEMO_LIMIT:
            self._resolutions[(provider, model)] = resolution
        if resolution is None:
            return None
        if resolution.constant:
            return resolution.evaluate(0.0)
        return Timeline(resolution.evaluate, resolution.window)

    def _resolve_layers(self, provider: str, model: str) -> Resolution | None:
        candidates = model_candidates(model)
        if not provider.strip():
            provider = infer_provider(model) or ""
        if not provider:
            # No provider and none inferable: a model only the user's price file knows.
            rules = self._user.lookup_any_provider(candidates)
            if not rules:
                return None
            provider = rules[0].provider
            return self._resolution(provider, model, Dated(rules), None, None, ("", None), None)
        canonical = canonical_provider(provider)
        user_rules = self._user.lookup(canonical, candidates)
        bundled_rules = self._bundled_table().lookup(canonical, candidates)
        genai: Layer | None = None
        matched = _matched_name(user_rules) or _matched_name(bundled_rules)
        if self._use_genai:
            self.genai_lookups += 1
            fine_tuned = looks_fine_tuned(model) or self._user.any_fine_tuned(candidates)
            found = _genai_prices.lookup(canonical, candidates, fine_tuned)
            if found is not None:
                genai, genai_name, exact = found
                bundled_name = _matched_name(bundled_rules)
                if (
                    exact
                    and bundled_name is not None
                    and candidates.index(genai_name) < candidates.index(bundled_name)
                ):
                    # genai-prices knows this very name (mistral-small-2506); the bundled entry
                    # is for a less specific one (mistral-small-latest): not this model's.
                    bundled_rules = ()
                matched = _matched_name(user_rules) or _matched_name(bundled_rules) or genai_name
        user = Dated(user_rules) if user_rules else None
        bundled = Dated(bundled_rules) if bundled_rules else None
        if user is None and bundled is None and genai is None:
            # Nobody prices it under this provider: your own price for the model under another
            # provider name (a self-hosted model served by an OpenAI-compatible server is called
            # through the OpenAI SDK) rather than no price at all.
            rules = self._user.lookup_any_provider(candidates)
            if not rules:
                return None
            user = Dated(rules)
        pinned = None
        date = snapshot_date(model)
        if matched and matched.endswith("-latest") and date is not None:
            pinned = date.timestamp()
        direct: Timeline | Price | None = None
        first_party = vendor(base_name(model)) if canonical in ROUTES else None
        if first_party is not None and canonical_provider(first_party) != canonical:
            first_party = canonical_provider(first_party)
            direct = self._entry(first_party, base_name(model))
        else:
            first_party = None
        return self._resolution(
            canonical, model, user, bundled, genai, (first_party or "", direct), pinned
        )

    def _entry(self, provider: str, model: str) -> Price | Timeline | None:
        """The memoised resolution of (provider, model), built on first use (lock held)."""
        key = (provider, model)
        entry = self._memo.get(key, _MISSING)
        if entry is _MISSING:
            entry = self._build(provider, model)
            if len(self._memo) < _MEMO_LIMIT:
                self._memo[key] = entry
        return entry  # type: ignore[no-any-return]

    def _resolution(
        self,
        provider: str,
        model: str,
        user: Dated | None,
        bundled: Dated | None,
        genai: Layer | None,
        route: tuple[str, Timeline | Price | None],
        pinned: float | None,
    ) -> Resolution:
        direct = route[1]
        ordered: tuple[Layer, ...] = tuple(x for x in (user, bundled, genai) if x is not None)

        def evaluate(ts: float) -> Price | None:
            if pinned is not None:
                ts = pinned
            price = None
            rest: tuple[Layer, ...] = ()
            for i, layer in enumerate(ordered):
                price = layer.at(ts)
                if price is not None:
                    rest = ordered[i + 1 :]
                    break
            if price is None:
                return None
            if price.source == "user":
                for layer in rest:
                    listed = layer.at(ts)
                    if listed is not None:
                        price = inherit(price, listed)
                        break
            if not price.tiers and direct is not None:
                listed = direct.at(ts) if isinstance(direct, Timeline) else direct
                if listed is not None and listed.tiers:
                    price = with_tiers_of(price, listed, route[0])
            return price

        def window(ts: float) -> tuple[float, float]:
            """Around ``ts``, the time in which the price does not change: the windows of the
            layer that prices it, of the layers above it (one may come into force), of the one
            below when the price inherits from it, and of the first party's tiers."""
            if pinned is not None:
                return ALWAYS  # a snapshot's price is the one in force at its own date
            lo, hi = ALWAYS
            used: list[Layer] = []
            for i, layer in enumerate(ordered):
                used.append(layer)
                if layer.at(ts) is not None:
                    used.extend(ordered[i + 1 : i + 2] if layer is user else ())
                    break
            if isinstance(direct, Timeline):
                used.append(direct)
            for layer in used:
                layer_lo, layer_hi = layer.window(ts)
                lo, hi = max(lo, layer_lo), min(hi, layer_hi)
            return lo, hi

        constant = pinned is not None or (
            all(layer.constant for layer in ordered) and not isinstance(direct, Timeline)
        )
        return Resolution(
            provider, user, bundled, genai, direct, pinned, evaluate, window, constant
        )


def _matched_name(rules: Sequence[PriceRule]) -> str | None:
    return rules[0].model if rules else None


def _ratio(mine: Decimal, listed: Decimal) -> Decimal | None:
    return CTX.divide(mine, listed) if listed else None


def inherit(price: Price, listed: Price) -> Price:
    """``price`` (a user entry) with the token-type prices it does not give taken from
    ``listed`` (the catalog's price for the same model), scaled by the entry's own input
    (input side) or output (output side) ratio."""
    missing = [
        kind
        for kind in (*_INPUT_SIDE, *_OUTPUT_SIDE)
        if getattr(price, kind) is None and getattr(listed, kind) is not None
    ]
    if not missing:
        return price
    in_ratio = _ratio(price.input, listed.input)
    out_ratio = _ratio(price.output, listed.output)
    given: dict[str, Decimal] = {}
    for kind in missing:
        ratio = in_ratio if kind in _INPUT_SIDE else out_ratio
        if ratio is None:
            continue
        given[kind] = CTX.multiply(getattr(listed, kind), ratio)
    if not given:
        return price
    return replace(price, inherited=tuple(given), **given)  # type: ignore[arg-type]


def with_tiers_of(price: Price, first_party: Price, provider: str) -> Price:
    """``price`` (a provider route's) with ``first_party``'s long-context tiers, each token
    type's tier rate scaled by the route's own rate over the first party's base rate."""
    tiers = []
    for tier in first_party.tiers:
        scaled: dict[str, Any] = {}
        for kind in ("input", "output", "cache_read", "cache_write", "cache_write_1h"):
            mine = getattr(price, kind)
            base = getattr(first_party, kind)
            above = getattr(tier.price, kind)
            if mine is None or base is None or above is None or not base:
                continue
            scaled[kind] = CTX.multiply(mine, CTX.divide(above, base))
        tiers.append(PriceTier(tier.above_prompt_tokens, replace(price, tiers=(), **scaled)))
    return replace(
        price,
        tiers=tuple(tiers),
        source=f"{price.source}:tiers-from-{provider}",
    )
