"""A call as budgets see it (``BudgetCall``) and the ``match=`` selectors compiled against its
dimensions (provider, model, stage, strategy) and tags.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from costwatch._core.errors import ConfigError
from costwatch._core.record import TokenUsage

MATCH_DIMENSIONS = ("provider", "model", "stage", "strategy")
"""Call attributes ``match`` can select on; any other key is looked up in the call's tags
(``team``, ``feature``, ``tenant`` and whatever else ``costwatch.tags`` set)."""


class PriceLike(Protocol):
    """What budgets need of ``costwatch.pricing.Price``."""

    def cost(self, usage: TokenUsage) -> Decimal: ...


@dataclass(slots=True)
class BudgetCall:
    """One call as budgets see it: its dimensions, tags and what it could cost at most."""

    provider: str
    model: str
    stage: str
    strategy: str
    tags: Mapping[str, str]
    price: PriceLike | None
    prompt_tokens: int
    max_output_tokens: int | None
    fixed_cost_usd: Decimal | None = None
    """A fixed per-call price (retrievals, reranker searches) instead of token prices."""


Matcher = tuple[str, bool, frozenset[str], tuple[str, ...]]


def compile_match(match: Mapping[str, object] | None) -> tuple[Matcher, ...]:
    if match is None:
        return ()
    if not isinstance(match, Mapping):
        raise ConfigError("match", match, "expected a mapping like {'team': 'support'}")
    matchers: list[Matcher] = []
    for key, raw in match.items():
        if not isinstance(key, str) or not key:
            raise ConfigError("match", key, "keys must be non-empty strings")
        values: Iterable[object] = (raw,) if isinstance(raw, str) else _iterable(key, raw)
        allowed = []
        for value in values:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"match.{key}", raw, "values must be non-empty strings")
            allowed.append(value)
        if not allowed:
            raise ConfigError(f"match.{key}", raw, "needs at least one value")
        patterns = tuple(v for v in allowed if any(ch in v for ch in "*?["))
        exact = frozenset(v for v in allowed if v not in patterns)
        matchers.append((key, key in MATCH_DIMENSIONS, exact, patterns))
    return tuple(matchers)


def _iterable(key: str, raw: object) -> Iterable[object]:
    if isinstance(raw, (list, tuple, set, frozenset)):
        return raw
    raise ConfigError(f"match.{key}", raw, "expected a string or a list of strings")
