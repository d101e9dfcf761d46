"""Published prices of fine-tuning *training*, per million training tokens (USD).

Training is billed per token processed: the training file's tokens times the epochs (OpenAI's
finished job reports the product as ``trained_tokens``).  Inference of the fine-tuned model is
priced in ``_bundled`` (``ft:`` entries); this table is only the training runs.

Kept in its own module while ``costwatch/pricing`` is being restructured; every entry carries
its source and the date it was read, and a user's price file may add or override entries under
``training:`` (see :func:`training_price`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from costwatch._core.errors import ConfigError


class TrainingPrice(NamedTuple):
    """USD per million training tokens of one base model, and where the figure comes from."""

    provider: str
    model: str
    usd_per_mtok: Decimal
    source: str
    """``bundled``, ``user`` or ``explicit`` (given to ``record_training`` itself)."""
    reference: str
    """Where the figure was published, and when it was read."""


_OPENAI = "https://openai.com/api/pricing/ (Fine-tuning: training), as quoted in issue 17, 2026-12"

BUNDLED_TRAINING_PRICES: tuple[TrainingPrice, ...] = (
    TrainingPrice("openai", "gpt-4o-mini", Decimal("3.00"), "bundled", _OPENAI),
    TrainingPrice("openai", "gpt-4o", Decimal("25.00"), "bundled", _OPENAI),
    TrainingPrice("openai", "gpt-4.1", Decimal("25.00"), "bundled", _OPENAI),
    TrainingPrice("openai", "gpt-4.1-mini", Decimal("5.00"), "bundled", _OPENAI),
    TrainingPrice("openai", "gpt-4.1-nano", Decimal("1.50"), "bundled", _OPENAI),
)
"""Longest names first is not needed: lookup strips a date suffix and matches exactly."""


def base_model_name(model: str) -> str:
    """``ft:gpt-4o-mini-2024-07-18:acme::x1`` and ``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``."""
    name = model.strip().lower()
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    parts = name.split("-")
    # a trailing YYYY-MM-DD date
    if len(parts) > 3 and [len(p) for p in parts[-3:]] == [4, 2, 2] and parts[-3].isdigit():
        name = "-".join(parts[:-3])
    return name


def training_price(provider: str, model: str, user_prices: Any = None) -> TrainingPrice | None:
    """The training price of ``model`` (a base model, dated or not, or an ``ft:`` name):
    the user's ``training:`` entries first, then the bundled ones; ``None`` when unknown."""
    base = base_model_name(model)
    for entry in _user_entries(user_prices):
        if entry.provider == provider and entry.model == base:
            return entry
    for entry in BUNDLED_TRAINING_PRICES:
        if entry.provider == provider and entry.model == base:
            return entry
    return None


def _user_entries(user_prices: Any) -> list[TrainingPrice]:
    """``training: [{provider, model, per_mtok, reference?}]`` of a price file or mapping."""
    if user_prices is None:
        return []
    data: Any = user_prices
    if isinstance(user_prices, (str, os.PathLike)):
        import yaml

        with open(user_prices, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    if not isinstance(data, Mapping):
        return []
    out: list[TrainingPrice] = []
    for i, raw in enumerate(data.get("training") or ()):
        where = f"prices.training[{i}]"
        if not isinstance(raw, Mapping):
            raise ConfigError(where, raw, "must be a mapping with provider, model, per_mtok")
        try:
            per_mtok = Decimal(str(raw["per_mtok"]))
            provider, model = str(raw["provider"]), base_model_name(str(raw["model"]))
        except (KeyError, ArithmeticError) as exc:
            raise ConfigError(where, raw, f"needs provider, model and per_mtok ({exc})") from exc
        if per_mtok < 0:
            raise ConfigError(f"{where}.per_mtok", raw["per_mtok"], "must not be negative")
        out.append(
            TrainingPrice(
                provider, model, per_mtok, "user", str(raw.get("reference", "price file"))
            )
        )
    return out
