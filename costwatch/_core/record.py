"""The two values that flow through costwatch: token usage and the cost record built from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

UsageSource = Literal["reported", "estimated", "none", "invalid"]
"""Where a record's tokens come from: the provider's report, costwatch's estimate, nowhere, or a
report costwatch refused (a negative, fractional, non-numeric or absurd count): ``"invalid"``
records carry no tokens; each is counted in ``costwatch_internal_errors_total`` as ``usage``."""
Status = Literal["ok", "error"]

TOKEN_TYPES: tuple[str, ...] = ("input", "cache_read", "cache_write", "output", "reasoning")
"""The ``token_type`` partition of billed tokens (docs/design.md): summing over it is meaningful."""


SERVICE_TIERS = frozenset({"flex", "priority"})
"""OpenAI processing tiers priced apart from the standard one (``service_tier``)."""


class Extras(NamedTuple):
    """What a call's price needs beside its token partition (rare: most calls have none).

    Server-side searches, billed per search; the parts of the fresh input and the visible
    output that were audio, billed at the model's audio rates; the processing tier that served
    the call when it is one of ``SERVICE_TIERS``.
    """

    web_searches: int = 0
    file_searches: int = 0
    input_audio: int = 0
    output_audio: int = 0
    service_tier: str = ""


Tokens = tuple[int, int, int, int, int, int, Extras | None]
"""``(input, cache_read, cache_write, output, reasoning, cache_write_1h, extras)``: a
``TokenUsage`` as a plain tuple, which the usage readers return because a tuple costs a tenth of
an object to build.  ``extras`` (searches, audio, processing tier) is None for nearly every call.
The layout is ``TOKENS_LAYOUT``; ``TokenUsage.of`` reads it."""

ZERO = Decimal(0)
"""No dollars: the one zero every sum of money starts from."""

MAX_COUNT = 2**40 - 1
"""The largest token (or search) count accepted, about 1.1 x 10^12: a call reporting more is a
broken report.  One less than a power of two, so that a bitwise OR of counts checks them all:
``0 <= a | b | c <= MAX_COUNT`` holds exactly when every one is in range."""


class InvalidUsage(ValueError):
    """A reported count that is not a token count: the message names the field."""

    def __init__(self, field: str, value: object) -> None:
        super().__init__(
            f"costwatch: usage field {field!r} is {value!r}: "
            f"a token count is an int from 0 to {MAX_COUNT}"
        )
        self.field = field


def count(field: str, value: object) -> int:
    """``value`` as a count: an int in ``0..MAX_COUNT``, or an integral float (``12.0``);
    anything else (negative, fractional, bool, None, str...) raises ``InvalidUsage`` naming
    ``field``."""
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise InvalidUsage(field, value)
    return value


def counts(fields: tuple[str, ...], values: tuple[Any, ...]) -> tuple[int, ...]:
    """Every value as a count (see ``count``): the slow path the readers take when their one
    combined check failed."""
    return tuple(count(field, value) for field, value in zip(fields, values, strict=True))


TOKENS_LAYOUT: tuple[str, ...] = (*TOKEN_TYPES, "cache_write_1h", "extras")
"""The names of a ``Tokens`` tuple's positions, in order."""


@dataclass(slots=True, eq=False, repr=False)
class TokenUsage:
    """Billed tokens of one call, partitioned so that the fields sum to the billed total.

    ``input`` is *fresh* input: OpenAI's ``prompt_tokens`` minus its cached tokens, Anthropic's
    ``input_tokens`` as reported.  ``output`` is visible output: completion tokens minus
    reasoning tokens.  ``cache_write_1h`` is the part of ``cache_write`` billed at the one-hour
    cache-write rate (Anthropic); it is a subset, not a sixth partition.

    ``input_audio`` and ``output_audio`` are the parts of ``input`` and ``output`` that were
    audio (subsets, like ``cache_write_1h``), billed at the audio rates.  ``web_searches`` and
    ``file_searches`` are not tokens: they count the server-side tool calls the provider bills
    per call (Anthropic's and OpenAI's web search, OpenAI's file search), so that the cost
    includes their fees.  They stay outside the partition and ``total``.  ``service_tier`` is
    the processing tier the provider says served the call, when it is priced apart (OpenAI
    ``flex``, ``priority``).

    Treated as immutable, but not a frozen dataclass: it is built on every wrapped call and a
    frozen dataclass costs several times more to construct.  Its equality, hash and repr are
    its own (the repr leaves out the zero extras).
    """

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0
    cache_write_1h: int = 0
    web_searches: int = 0
    file_searches: int = 0
    input_audio: int = 0
    output_audio: int = 0
    service_tier: str = ""

    @classmethod
    def of(cls, tokens: Tokens) -> TokenUsage:
        """The usage a reader's ``Tokens`` tuple holds."""
        extras = tokens[6]
        if extras is None:
            return cls(tokens[0], tokens[1], tokens[2], tokens[3], tokens[4], tokens[5])
        return cls(tokens[0], tokens[1], tokens[2], tokens[3], tokens[4], tokens[5], *extras)

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

    def details(self) -> dict[str, int]:
        """What the usage holds beside the partition, where it is not zero: the one-hour part of
        cache writes, the audio parts, the server-side searches."""
        values = {
            "cache_write_1h": self.cache_write_1h,
            "input_audio": self.input_audio,
            "output_audio": self.output_audio,
            "web_searches": self.web_searches,
            "file_searches": self.file_searches,
        }
        return {name: value for name, value in values.items() if value}

    def _key(self) -> tuple[int | str, ...]:
        return (
            self.input,
            self.cache_read,
            self.cache_write,
            self.output,
            self.reasoning,
            self.cache_write_1h,
            self.web_searches,
            self.file_searches,
            self.input_audio,
            self.output_audio,
            self.service_tier,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenUsage):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"TokenUsage(input={self.input}, cache_read={self.cache_read}, "
            f"cache_write={self.cache_write}, output={self.output}, reasoning={self.reasoning}, "
            f"cache_write_1h={self.cache_write_1h}"
            + (f", web_searches={self.web_searches}" if self.web_searches else "")
            + (f", file_searches={self.file_searches}" if self.file_searches else "")
            + (f", input_audio={self.input_audio}" if self.input_audio else "")
            + (f", output_audio={self.output_audio}" if self.output_audio else "")
            + (f", service_tier={self.service_tier!r}" if self.service_tier else "")
            + ")"
        )

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input + other.input,
            self.cache_read + other.cache_read,
            self.cache_write + other.cache_write,
            self.output + other.output,
            self.reasoning + other.reasoning,
            self.cache_write_1h + other.cache_write_1h,
            self.web_searches + other.web_searches,
            self.file_searches + other.file_searches,
            self.input_audio + other.input_audio,
            self.output_audio + other.output_audio,
            self.service_tier if self.service_tier == other.service_tier else "",
        )


EMPTY_USAGE = TokenUsage()
_NO_TOKENS: Mapping[str, int] = MappingProxyType({})
_NO_COST: Mapping[str, Decimal] = MappingProxyType({})
_NO_TAGS: Mapping[str, str] = MappingProxyType({})


class CostRecord:
    """One priced call.  Built once per call and handed, unchanged, to every sink.

    A plain class with class-level defaults for the rarely set fields (the others are set by
    ``__init__``, whose signature holds their defaults): it is built on every wrapped call, and
    this costs a tenth of an equivalent dataclass.
    """

    provider: str
    model: str
    stage: str
    usage: TokenUsage
    cost_usd: Decimal | None
    """``None`` when the model has no price: never reported as $0."""
    latency_s: float
    status: Status
    input_cost_usd: Decimal | None
    """The input-side part of ``cost_usd`` (fresh input, cache reads and writes)."""
    strategy: str
    service: str
    feature: str
    team: str
    tenant: str
    operation: str
    """GenAI operation name: ``chat``, ``embeddings``, ``retrieval`` ..."""
    response_model: str
    price_source: str | None
    """Where the price came from: ``user``, ``bundled``, ``genai-prices``, ``fixed`` or ``None``."""
    usage_source: UsageSource
    incomplete: bool = False
    """A stream abandoned early or interrupted: recorded once, with what was known."""
    error_type: str = ""
    source: str = ""
    """Retrieval source (``@retrieval(source=...)``)."""
    pipeline: str = ""
    """Name of the enclosing ``costwatch.request``, if any."""
    request_id: str = ""
    context_tokens: Mapping[str, int] = _NO_TOKENS
    """Input tokens that came from retrieved context, per retrieval source."""
    context_cost_usd: Mapping[str, Decimal] = _NO_COST
    """The share of input cost those context tokens made, per retrieval source."""
    cache_hit: bool = False
    batch: bool = False
    """Priced at the model's batch rate (a Batch API result; OpenAI flex processing of a model
    without a published flex price)."""
    service_tier: str = ""
    """The processing tier the call was priced at (OpenAI ``flex``, ``priority``), if any."""
    timestamp: float
    tags: Mapping[str, str]
    """Every tag in force (including feature/team/tenant), for budget matching."""

    def __init__(
        self,
        provider: str,
        model: str,
        stage: str,
        usage: TokenUsage,
        cost_usd: Decimal | None,
        latency_s: float,
        status: Status = "ok",
        input_cost_usd: Decimal | None = None,
        strategy: str = "base",
        service: str = "",
        feature: str = "",
        team: str = "",
        tenant: str = "",
        operation: str = "",
        response_model: str = "",
        price_source: str | None = None,
        usage_source: UsageSource = "reported",
        timestamp: float = 0.0,
        tags: Mapping[str, str] = _NO_TAGS,
        **rare: Any,
    ) -> None:
        self.provider = provider
        self.model = model
        self.stage = stage
        self.usage = usage
        self.cost_usd = cost_usd
        self.latency_s = latency_s
        self.status = status
        self.input_cost_usd = input_cost_usd
        self.strategy = strategy
        self.service = service
        self.feature = feature
        self.team = team
        self.tenant = tenant
        self.operation = operation
        self.response_model = response_model
        self.price_source = price_source
        self.usage_source = usage_source
        self.timestamp = timestamp
        self.tags = tags
        for name, value in rare.items():
            if name not in _RARE:
                raise TypeError(f"CostRecord has no field {name!r}")
            setattr(self, name, value)

    def __repr__(self) -> str:
        return (
            f"CostRecord(provider={self.provider!r}, model={self.model!r}, stage={self.stage!r}, "
            f"strategy={self.strategy!r}, cost_usd={self.cost_usd!r}, usage={self.usage!r}, "
            f"status={self.status!r}, latency_s={self.latency_s:.6f})"
        )

    def as_dict(self) -> dict[str, Any]:
        """Every field, JSON-friendly (Decimal as str)."""
        out: dict[str, Any] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if isinstance(value, Decimal):
                value = str(value)
            elif isinstance(value, TokenUsage):
                value = value.by_type() | value.details()
            elif isinstance(value, Mapping):
                value = {k: str(v) if isinstance(v, Decimal) else v for k, v in value.items()}
            out[name] = value
        return out


_RARE = frozenset(
    {
        "incomplete",
        "error_type",
        "source",
        "pipeline",
        "request_id",
        "context_tokens",
        "context_cost_usd",
        "cache_hit",
    }
)
_FIELDS = tuple(CostRecord.__annotations__)
