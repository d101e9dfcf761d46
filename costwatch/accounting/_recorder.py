"""Turn one finished call into a priced, attributed ``CostRecord`` and hand it to every sink."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from costwatch._core import context as _context
from costwatch._core import runtime as _runtime
from costwatch._core.context import (
    NO_ATTRIBUTION,
    request_var,
    resolve_strategy,
    scopes_var,
    tags_var,
)
from costwatch._core.failopen import errors
from costwatch._core.labels import clean_value, is_clean
from costwatch._core.record import (
    EMPTY_USAGE,
    SERVICE_TIERS,
    ZERO,
    CostRecord,
    Status,
    TokenUsage,
    UsageSource,
    counts,
)
from costwatch.accounting._components import context_share
from costwatch.accounting._tally import ENTRY_LIMIT

if TYPE_CHECKING:
    from costwatch._configure import Runtime
    from costwatch._core.record import Tokens
    from costwatch.accounting._tally import Tally
    from costwatch.budgets._budget import BudgetCall, Reservation
    from costwatch.pricing import Price


class _Unresolved:
    """No price resolved yet (distinct from a resolved ``None``: the model has no price)."""


_UNRESOLVED = _Unresolved()


_MAX_ALIASES = 256


@dataclass(slots=True, eq=False)
class _Priced:
    """The price a site resolved for its last model: most sites call one model, so the next call
    of the same model (and the same catalog) reuses it instead of resolving again."""

    catalog: object
    model: str
    response_model: str
    priced_as: str
    """The model the call is priced as: the requested one, or the model its response named
    when only that one has a price (an Azure deployment name, a proxy's alias)."""
    price: Price | None
    timed: bool = False
    """The price changes with time (an effective date ahead, a time-of-day window): it is
    resolved again for each call, at the call's time, and never summed in the tally."""


@dataclass(slots=True, eq=False)
class _Kept:
    """The tally entry the last tallied call of a site added to, kept for the next call like it
    (same tally, model, attribution, request name and resolved strategy) when the entry does
    not depend on the call's tokens (a price without long-context tiers): that call skips
    building and hashing its key."""

    tally: Tally | None
    model: str
    attribution: tuple[str, ...]
    pipeline: str
    strategy: str
    entry: list[Any]


_NOTHING_PRICED = _Priced(None, "", "", "", None)
_NOTHING_KEPT = _Kept(None, "", (), "", "", [])


class CallSpec:
    """What a wrapped call site is: fixed at decoration / instrumentation time."""

    __slots__ = (
        "provider",
        "model",
        "stage",
        "operation",
        "source",
        "price_usd",
        "batch",
        "service_tier",
        "_untallied",
        "_priced",
        "_kept",
        "_aliases",
        "_tiers",
        "_standard",
    )

    def __init__(
        self,
        provider: str,
        model: str,
        stage: str,
        operation: str,
        source: str = "",
        price_usd: Decimal | None = None,
        batch: bool = False,
        service_tier: str = "",
    ) -> None:
        self.provider = clean_value("provider", provider)
        self.model = model
        self.stage = clean_value("stage", stage)
        self.operation = operation
        self.source = source
        self.price_usd = price_usd
        """A fixed per-call price (retrieval, reranker searches) instead of a token price."""
        self.batch = batch
        """Priced at the model's batch rate (Batch APIs)."""
        self.service_tier = service_tier
        """Priced at this processing tier's price (OpenAI ``flex``, ``priority``) where one is
        published; a flex call of a model without one bills at its batch rate."""
        self._untallied = price_usd is not None or batch or bool(service_tier)
        """Calls of this site are not priced by the tally's plain token price."""
        self._priced = _NOTHING_PRICED
        self._kept = _NOTHING_KEPT
        self._tiers: dict[str, CallSpec] = {}
        """This site at the processing tiers its responses reported, made when first needed."""
        self._standard = self
        """This site at the standard tier (set on the specs ``at_tier`` makes)."""
        self._aliases: dict[str, str] = {}
        """Requested model without a price -> the priced model its responses named: what a
        budget reserves at before the next call."""

    def model_for(self, kwargs: Mapping[str, Any]) -> str:
        """The model a call of this site asks for: the site's own, else the call's ``model=``."""
        model = self.model
        if not model:
            value = kwargs.get("model")
            model = value if isinstance(value, str) else ""
        return model

    def price_for(
        self, rt: Runtime, model: str, response_model: str = ""
    ) -> tuple[str, Price | None]:
        """``(model priced as, its price)``: the one price resolution of a call.

        A requested model without a price is priced as the model its response names when that
        one has a price (an Azure deployment name, a proxy's alias), and the site learns the
        alias, so that a budget reserves at it before the next call.  A fixed per-call price
        (``price_usd``) has no token price.
        """
        priced = self._priced
        if (
            priced.catalog is rt.catalog
            and priced.model == model
            and priced.response_model == response_model
        ):
            if priced.timed:
                return priced.priced_as, rt.catalog.resolve(self.provider, priced.priced_as)
            return priced.priced_as, priced.price
        priced_as, price = model, None
        if self.price_usd is None:
            price = rt.catalog.resolve(self.provider, model)
            if price is None:
                alias = response_model or self._aliases.get(model, "")
                if alias and alias != model:
                    price = rt.catalog.resolve(self.provider, alias)
                    if price is not None:
                        priced_as = alias
                        if len(self._aliases) < _MAX_ALIASES:
                            self._aliases[model] = alias
        timed = price is not None and rt.catalog.is_timed(self.provider, priced_as)
        self._priced = _Priced(rt.catalog, model, response_model, priced_as, price, timed)
        return priced_as, price

    def preflight(
        self, model: str, prompt_tokens: int, max_output_tokens: int | None
    ) -> Reservation | None:
        """Reserve the worst-case cost against matching budgets (may raise BudgetExceeded)."""
        rt = _runtime.runtime()
        if not rt.budgets.active:
            return None
        return rt.budgets.reserve(self.budget_call(rt, model, prompt_tokens, max_output_tokens))

    async def apreflight(
        self, model: str, prompt_tokens: int, max_output_tokens: int | None
    ) -> Reservation | None:
        """The asyncio twin of :meth:`preflight`: reserves without blocking the event loop."""
        rt = _runtime.runtime()
        if not rt.budgets.active:
            return None
        call = self.budget_call(rt, model, prompt_tokens, max_output_tokens)
        return await rt.budgets.areserve(call)

    def budget_call(
        self,
        rt: Runtime,
        model: str,
        prompt_tokens: int,
        max_output_tokens: int | None,
        price: Price | _Unresolved | None = _UNRESOLVED,
    ) -> BudgetCall:
        """The call as budgets see it; ``price``: the model's price when already resolved."""
        from costwatch.budgets._budget import BudgetCall

        tag_values = tags_var.get()
        if isinstance(price, _Unresolved):
            price = self.price_for(rt, model)[1]
        if price is not None and self.service_tier:
            price = price.for_service_tier(self.service_tier) or price
        fine_tuned = price.fine_tuned if price is not None else rt.catalog.is_fine_tuned(model)
        return BudgetCall(
            provider=self.provider,
            model=model,
            stage=self.stage,
            strategy=resolve_strategy(fine_tuned, request_var.get(), tag_values),
            tags=tag_values,
            price=price,
            prompt_tokens=prompt_tokens,
            max_output_tokens=max_output_tokens,
            fixed_cost_usd=self.price_usd,
        )

    def emit(
        self,
        model: str | None,
        usage: TokenUsage | None,
        latency_s: float,
        *,
        status: Status = "ok",
        error_type: str = "",
        response_model: str = "",
        usage_source: UsageSource = "reported",
        incomplete: bool = False,
        prompt: object = None,
        estimate_text: str | None = None,
        reservation: Reservation | None = None,
        cache_hit: bool = False,
        context_texts: Sequence[str] = (),
    ) -> CostRecord | None:
        """Record one finished call; never raises into the host (except in strict mode)."""
        try:
            return self._emit(
                model or self.model or response_model or "unknown",
                usage,
                latency_s,
                status,
                error_type,
                response_model,
                usage_source,
                incomplete,
                prompt,
                estimate_text,
                reservation,
                cache_hit,
                context_texts,
            )
        except Exception as exc:
            errors.report("recorder", exc)
            return None

    def emit_failure(
        self,
        model: str | None,
        exc: BaseException,
        latency_s: float,
        reservation: Reservation | None = None,
    ) -> CostRecord | None:
        """Record a call that raised ``exc``: no tokens, ``status="error"``, its error type."""
        return self.emit(
            model,
            EMPTY_USAGE,
            latency_s,
            status="error",
            error_type=type(exc).__name__,
            usage_source="none",
            reservation=reservation,
        )

    def _emit(
        self,
        model: str,
        usage: TokenUsage | None,
        latency_s: float,
        status: Status,
        error_type: str,
        response_model: str,
        usage_source: UsageSource,
        incomplete: bool,
        prompt: object,
        estimate_text: str | None,
        reservation: Reservation | None,
        cache_hit: bool,
        context_texts: Sequence[str],
    ) -> CostRecord:
        rt = _runtime.runtime()
        if usage is None:
            usage, usage_source = _estimate(rt, model, prompt, estimate_text)
        record = self.build(rt, model, usage, latency_s, status, response_model, usage_source)
        if incomplete:
            record.incomplete = True
        if error_type:
            record.error_type = error_type
        if cache_hit:
            record.cache_hit = True
        self.deliver(rt, record, reservation, context_texts)
        return record

    def build(
        self,
        rt: Runtime,
        model: str,
        usage: TokenUsage,
        latency_s: float,
        status: Status,
        response_model: str,
        usage_source: UsageSource,
    ) -> CostRecord:
        """Price and attribute one call (the hot path: positional, no optional work)."""
        if not is_clean(model) or not is_clean(response_model):  # repaired, and counted, once
            repaired = clean_value("model", model)
            if response_model:
                same = response_model == model
                response_model = repaired if same else clean_value("model", response_model)
            model = repaired
        if usage.service_tier and usage.service_tier != self.service_tier:
            # The response says which processing tier served the call: price it at that one.
            tiered = self.at_tier(usage.service_tier)
            if tiered is not self:
                return tiered.build(
                    rt, model, usage, latency_s, status, response_model, usage_source
                )
        fixed = self.price_usd
        batch = self.batch
        if fixed is not None:
            cost: Decimal | None = fixed
            input_cost: Decimal | None = ZERO
            price_source: str | None = "fixed"
            fine_tuned = False
        else:
            model, price = self.price_for(rt, model, response_model)
            if price is not None:
                if self.service_tier:
                    price, batch = self._at_service_tier(price)
                cost, input_cost = price.cost_split(usage, 1, batch)
                price_source = price.source_for(usage)
                fine_tuned = price.fine_tuned
            else:
                cost = input_cost = price_source = None
                fine_tuned = rt.catalog.is_fine_tuned(model)
        tag_values = tags_var.get()
        req = request_var.get()
        if req is None and not tag_values:
            strategy = "fine_tuned" if fine_tuned else "base"
        else:
            strategy = resolve_strategy(fine_tuned, req, tag_values)
        record = CostRecord(
            self.provider,
            model,
            self.stage,
            usage,
            cost,
            latency_s,
            status,
            input_cost,
            strategy,
            rt.service,
            tag_values.get("feature", ""),
            tag_values.get("team", ""),
            tag_values.get("tenant", ""),
            self.operation,
            response_model,
            price_source,
            usage_source,
            rt.clock(),
            tag_values,
        )
        if self.source:
            record.source = self.source
        if batch:
            record.batch = True
        if self.service_tier:
            record.service_tier = self.service_tier
        return record

    def at_tier(self, tier: str) -> CallSpec:
        """This call site at processing ``tier``: OpenAI ``flex`` or ``priority``; any other
        (``default``, ``auto``...) is the standard one."""
        standard = self._standard
        if tier not in SERVICE_TIERS:
            return standard
        spec = standard._tiers.get(tier)
        if spec is None:
            spec = CallSpec(
                self.provider,
                self.model,
                self.stage,
                self.operation,
                self.source,
                self.price_usd,
                self.batch,
                service_tier=tier,
            )
            spec._standard = standard
            standard._tiers[tier] = spec
        return spec

    def _at_service_tier(self, price: Price) -> tuple[Price, bool]:
        """``(price, at the batch rate)`` of a call served at this spec's processing tier."""
        tiered = price.for_service_tier(self.service_tier)
        if tiered is not None:
            return tiered, self.batch
        return price, self.batch or self.service_tier == "flex"  # OpenAI: flex = batch prices

    def _entry(
        self,
        rt: Runtime,
        model: str,
        attribution: tuple[str, ...],
        tokens: Tokens,
        price: Price | None,
        pipeline: str = "",
        strategy: str = "",
    ) -> list[Any] | None:
        """The tally entry a call of ``model`` (priced at ``price``; unpriced ones are
        counted when read) adds to; kept for the next call when it does not depend on the
        call's tokens (no long-context tiers).  Inside a request (``pipeline``), the key holds
        the ``strategy`` the call resolved to in place of the tags' one.  ``None`` when the
        call is not tallied: its model or provider is past its label limit (see
        ``Tally.guarded_entry``), or its model name cannot be exported as it is (``build``
        repairs it)."""
        if not is_clean(model):
            return None
        tally = rt.tally
        keyed = (*attribution[:3], strategy) if pipeline else attribution
        tier = 0
        if price is not None and price.tiers:
            tier = price.tier_index(tokens[0] + tokens[1] + tokens[2])
        entry = tally.guarded_entry(self.provider, self.stage, model, keyed, tier, pipeline)
        if entry is not None and not (price is not None and price.tiers):
            self._kept = _Kept(tally, model, attribution, pipeline, strategy, entry)
        return entry

    def deliver(
        self,
        rt: Runtime,
        record: CostRecord,
        reservation: Reservation | None,
        context_texts: Sequence[str] = (),
    ) -> None:
        """Request attribution, cost scopes, budget settlement, then every sink."""
        req = request_var.get()
        if req is not None:
            record.pipeline = req.name
            record.request_id = req.request_id
            if context_texts:
                req.add_context(self.source or "default", list(context_texts))
            elif self.stage == "generation" and req.pending_context:
                _attribute_context(record, req.take_context(), record.input_cost_usd)
            req.add_call(record.stage, record.strategy, record.cost_usd)
        cost = record.cost_usd
        scopes = scopes_var.get()
        if scopes:
            for scope in scopes:
                scope.add(cost)
        if reservation is not None:
            reservation.settle(cost)
        elif rt.budgets.active:
            price = self.price_for(rt, record.model)[1] if self.price_usd is None else None
            rt.budgets.charge(self.budget_call(rt, record.model, 0, 0, price), cost)
        for sink in rt.sinks:
            sink.on_record(record)

    def record_usage(
        self,
        rt: Runtime,
        model: str,
        extracted: tuple[Tokens, str],
        latency_s: float,
        reservation: Reservation | None,
    ) -> None:
        """The common case: a successful call that reported its usage (``extracted``: what
        ``extract_tokens`` read from its response, its tokens and the model it names).

        With a budget, in a cache scope, with a fixed price, at the batch rate or a processing
        tier, or inside a request with retrieved context waiting: ``deliver(build(...))``.
        Otherwise the ledger and the in-process Prometheus exporter get it through
        ``rt.tally``, priced when read (a request's calls under its name, the request adding
        their cost as it goes); a ``CostRecord`` is built only for the other sinks, if any.
        """
        tokens, response_model = extracted
        model = model or response_model or "unknown"
        req = request_var.get() if _context.scoped else None
        if (
            reservation is not None
            or rt.budgets.active
            or self._untallied
            or (tokens[6] is not None and tokens[6].service_tier)
            or (_context.scoped and (scopes_var.get() or (req is not None and req.pending_context)))
        ):
            self._deliver_usage(rt, model, tokens, latency_s, response_model, reservation)
            return
        attribution = tags_var.get().attribution if _context.tagged else NO_ATTRIBUTION
        kept = self._kept
        if req is not None:
            priced_as, price = self.price_for(rt, model, response_model)
            if self._priced.timed:  # a timed price bills each call at its own time
                self._deliver_usage(rt, model, tokens, latency_s, response_model, None)
                return
            fine_tuned = price.fine_tuned if price is not None else rt.catalog.is_fine_tuned(model)
            strategy = resolve_strategy(fine_tuned, req, tags_var.get())
            if (
                kept.tally is rt.tally
                and kept.attribution is attribution
                and kept.model == priced_as
                and kept.pipeline == req.name
                and kept.strategy == strategy
            ):
                entry = kept.entry
            else:
                found = self._entry(rt, priced_as, attribution, tokens, price, req.name, strategy)
                if found is None:  # a model or provider past its label limit: on its own
                    self._deliver_usage(rt, model, tokens, latency_s, response_model, None)
                    return
                entry = found
            model = priced_as
            cost = None if price is None else price.cost_split(TokenUsage.of(tokens))[0]
            req.add_call(self.stage, strategy, cost)
        elif (
            kept.tally is rt.tally
            and kept.attribution is attribution
            and kept.model == model
            and not kept.pipeline
        ):
            entry = kept.entry
        else:
            priced_as, price = self.price_for(rt, model, response_model)
            timed = self._priced.timed  # a timed price bills each call at its own time
            found = None if timed else self._entry(rt, priced_as, attribution, tokens, price)
            if found is None:  # timed, or a model or provider past its label limit: on its own
                self._deliver_usage(rt, model, tokens, latency_s, response_model, None)
                return
            model, entry = priced_as, found
        entry.extend(tokens + (latency_s,))  # noqa: RUF005 - faster than (*tokens, ...)
        if len(entry) > ENTRY_LIMIT:
            rt.tally.fold(entry)
        if rt.untallied_sinks:
            record = self.build(
                rt, model, TokenUsage.of(tokens), latency_s, "ok", response_model, "reported"
            )
            if req is not None:
                record.pipeline = req.name
                record.request_id = req.request_id
            for sink in rt.untallied_sinks:
                sink.on_record(record)

    def _deliver_usage(
        self,
        rt: Runtime,
        model: str,
        tokens: Tokens,
        latency_s: float,
        response_model: str,
        reservation: Reservation | None,
    ) -> None:
        """A successful call with reported usage, priced and fanned out on its own."""
        usage = TokenUsage.of(tokens)
        self.deliver(
            rt,
            self.build(rt, model, usage, latency_s, "ok", response_model, "reported"),
            reservation,
        )


def _estimate(
    rt: Runtime, model: str, prompt: object, completion: str | None
) -> tuple[TokenUsage, UsageSource]:
    """Usage the provider did not report: tiktoken counts (or the marked heuristic)."""
    if not rt.estimate or (prompt is None and not completion):
        return EMPTY_USAGE, "none"
    from costwatch._core.tokens import count_prompt_tokens, count_tokens

    prompt_tokens = count_prompt_tokens(prompt, model)
    output_tokens = count_tokens(completion, model)[0] if completion else 0
    return TokenUsage(input=prompt_tokens, output=output_tokens), "estimated"


def _attribute_context(
    record: CostRecord, pending: Mapping[str, list[str]], input_cost: Decimal | None
) -> None:
    """Attribute retrieved documents to this generation's input tokens and input cost.

    Tokens are counted with the generating model's tokenizer and capped at the prompt size
    (a prompt cannot hold more context than its own tokens); the cost share is the context's
    fraction of all input-side tokens times the input-side cost.
    """
    from costwatch._core.tokens import count_tokens

    counts = {
        src: count_tokens("\n".join(texts), record.model)[0] for src, texts in pending.items()
    }
    total = sum(counts.values())
    prompt_total = record.usage.prompt_total
    if total == 0 or prompt_total == 0:
        return
    if total > prompt_total:
        scaled = {src: n * prompt_total // total for src, n in counts.items()}
        counts = scaled
    record.context_tokens = {src: n for src, n in counts.items() if n}
    if input_cost is not None:
        record.context_cost_usd = {
            src: context_share(input_cost, n, prompt_total)
            for src, n in record.context_tokens.items()
        }


def record(
    *,
    provider: str,
    model: str,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
    stage: str = "generation",
    latency_s: float = 0.0,
    status: Status = "ok",
    operation: str = "",
    cache_write_1h_tokens: int = 0,
    batch: bool = False,
    web_searches: int = 0,
    file_searches: int = 0,
    input_audio_tokens: int = 0,
    output_audio_tokens: int = 0,
    service_tier: str = "",
    response_model: str = "",
) -> CostRecord | None:
    """Record a call costwatch did not wrap.  Returns the priced ``CostRecord``.

    The token arguments are the ``token_type`` partition: ``input_tokens`` is fresh input
    (without cache reads or writes) and ``output_tokens`` is visible output (without
    reasoning tokens), so their sum is the billed total.  ``batch=True`` prices the call at the
    model's batch rate (a Batch API result).  ``web_searches`` and ``file_searches`` are
    server-side searches the call ran, billed per search; ``input_audio_tokens`` and
    ``output_audio_tokens`` the audio parts of ``input_tokens`` and ``output_tokens``, billed
    at the audio rates; ``service_tier`` the processing tier that served the call (OpenAI
    ``flex``, ``priority``), priced at that tier's price.  ``response_model`` is the model the
    response named: a call to an Azure deployment name (or a proxy's alias) is priced as that
    model when ``model`` itself has no price, as the SDK path does.
    """
    fresh, read, write, output, reasoning, write_1h, web, files, audio_in, audio_out = counts(
        _RECORD_COUNTS,  # a ValueError naming the argument that is not a count
        (
            input_tokens,
            cache_read_tokens,
            cache_write_tokens,
            output_tokens,
            reasoning_tokens,
            cache_write_1h_tokens,
            web_searches,
            file_searches,
            input_audio_tokens,
            output_audio_tokens,
        ),
    )
    usage = TokenUsage(
        fresh,
        read,
        write,
        output,
        reasoning,
        write_1h,
        web,
        files,
        audio_in,
        audio_out,
        service_tier if service_tier in SERVICE_TIERS else "",
    )
    spec = CallSpec(
        provider, model, stage, operation or DEFAULT_OPERATION.get(stage, stage), batch=batch
    )
    return spec.emit(model, usage, latency_s, status=status, response_model=response_model)


_RECORD_COUNTS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cache_write_1h_tokens",
    "web_searches",
    "file_searches",
    "input_audio_tokens",
    "output_audio_tokens",
)
"""``record()``'s count arguments, in ``TokenUsage``'s order."""

DEFAULT_OPERATION: dict[str, str] = {
    "generation": "chat",
    "embedding": "embeddings",
    "retrieval": "retrieval",
    "rerank": "rerank",
    "tool": "execute_tool",
}
"""The GenAI operation name of a stage's record when none is given."""
