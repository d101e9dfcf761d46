"""``Price``: the per-token USD prices of one model, and the arithmetic that bills a call.

:meth:`Price.cost_split` is the one place a call's cost is computed (the recorder's hot path: a
handful of Decimal multiply-adds); :meth:`Price.cost` and :meth:`Price.input_cost` read its two
halves.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Context, Decimal

from costwatch._core.record import ZERO, TokenUsage
from costwatch.pricing._gaps import AUDIO_AT_TEXT_RATE, gaps

MTOK = Decimal(1_000_000)
HALF = Decimal("0.5")
CTX = Context(prec=34)
"""The context for deriving per-token prices (divisions): independent of the host's context."""


def per_token(per_million: Decimal) -> Decimal:
    """USD per million tokens -> USD per token."""
    return CTX.divide(per_million, MTOK)


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
    price.  ``input_audio`` / ``output_audio`` missing bill at the input / output price, but a
    call with audio tokens is then marked (``price_source`` ends in ``:audio-at-text-rate``) and
    counted in :data:`costwatch.pricing.gaps`: the audio rate is not known, never silently text.
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
    batch_discount: Decimal = HALF
    """Multiplier applied when ``batch=True`` (OpenAI and Anthropic batch APIs: 50 %)."""
    tiers: tuple[PriceTier, ...] = ()
    """Ascending by ``above_prompt_tokens``; each tier's price has no tiers of its own."""
    per_request: Decimal = ZERO
    per_web_search: Decimal = ZERO
    per_file_search: Decimal = ZERO
    service_tiers: tuple[tuple[str, Price], ...] = ()
    """``(tier, price)`` pairs: the price of a call served at that processing tier."""
    matched: str = field(default="", compare=False)
    """What the lookup matched, for ``costwatch prices``: e.g. ``genai-prices:openai/gpt-4o``."""
    provenance: str = field(default="", compare=False)
    """Where the numbers come from: the published page and the date it was read (bundled)."""
    inherited: tuple[str, ...] = field(default=(), compare=False)
    """Token types a user price did not give, inherited from the catalog (``costwatch prices``
    says so)."""

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
        if (usage.input_audio or usage.output_audio) and self.audio_unknown(usage):
            gaps.note(AUDIO_AT_TEXT_RATE, self.matched or self.source, calls)
        return total, input_side

    def cost(self, usage: TokenUsage, *, batch: bool = False, requests: int = 1) -> Decimal:
        """USD cost of ``usage``; ``requests`` multiplies ``per_request`` (e.g. search units)."""
        return self.cost_split(usage, requests, batch)[0]

    def input_cost(self, usage: TokenUsage, *, batch: bool = False) -> Decimal:
        """The input-side part of :meth:`cost`: fresh input, cache reads and cache writes."""
        return self.cost_split(usage, 1, batch)[1]

    def audio_unknown(self, usage: TokenUsage) -> bool:
        """True when ``usage`` has audio tokens this price has no audio rate for."""
        return bool(
            (usage.input_audio and self.input_audio is None)
            or (usage.output_audio and self.output_audio is None)
        )

    def source_for(self, usage: TokenUsage) -> str:
        """``source``, marked ``:audio-at-text-rate`` when the call's audio tokens were billed
        at the text rate because no audio rate is known."""
        if (usage.input_audio or usage.output_audio) and self.audio_unknown(usage):
            return f"{self.source}:{AUDIO_AT_TEXT_RATE}"
        return self.source

    def _search_fees(self, usage: TokenUsage) -> Decimal:
        """The server-side searches ``usage`` ran, at this price's (untiered) fees."""
        return self.per_web_search * usage.web_searches + self.per_file_search * usage.file_searches

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
        total = ZERO
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
        inherited = self.inherited

        def note(kind: str, given: Decimal | None, fallback: str) -> str:
            if kind in inherited:
                return "inherited from the catalog, scaled"
            return "" if given is not None else fallback

        rows: dict[str, tuple[Decimal, str]] = {
            "input": (self.input * MTOK, ""),
            "cache_read": (
                self._cache_read * MTOK,
                note("cache_read", self.cache_read, "input price"),
            ),
            "cache_write": (
                self._cache_write * MTOK,
                note("cache_write", self.cache_write, "input price"),
            ),
            "cache_write_1h": (
                self._cache_write_1h * MTOK,
                note("cache_write_1h", self.cache_write_1h, "cache-write price"),
            ),
            "output": (self.output * MTOK, ""),
            "reasoning": (
                self._reasoning * MTOK,
                note("reasoning", self.reasoning, "output price"),
            ),
            "input_audio": (
                (self.input if self.input_audio is None else self.input_audio) * MTOK,
                note("input_audio", self.input_audio, "unknown: audio billed as text, marked"),
            ),
            "output_audio": (
                (self.output if self.output_audio is None else self.output_audio) * MTOK,
                note("output_audio", self.output_audio, "unknown: audio billed as text, marked"),
            ),
        }
        return rows
