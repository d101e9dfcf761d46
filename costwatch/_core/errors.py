"""Exceptions costwatch raises into the host on purpose (and only these)."""

from __future__ import annotations

import functools
import re
from dataclasses import KW_ONLY, asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

_URL_CREDENTIALS = re.compile(r"://[^\s]*@")


def redact(value: object) -> object:
    """``value`` with the credentials of a URL in it (``redis://user:password@host``) hidden."""
    if isinstance(value, str) and "@" in value and "://" in value:
        return _URL_CREDENTIALS.sub("://***@", value)
    return value


class ConfigError(ValueError):
    """Invalid configuration: the message names the field and the bad value (the credentials
    of a URL hidden: a Redis URL's password never reaches a log)."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        value = redact(value)
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"costwatch: invalid {field}={value!r}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled from its fields (a pool's worker raising into its parent, a task queue):
        # the default would call it with the message alone.
        return type(self), (self.field, self.value, self.reason)


@dataclass(eq=False, repr=False)
class BudgetExceeded(RuntimeError):
    """A ``block`` budget refused a call before it reached the provider.

    A dataclass for its fields only: compared by identity, with the message (its ``args`` and
    ``str``) and ``repr`` of an exception.
    """

    budget: str
    _: KW_ONLY
    spent_usd: Decimal
    limit_usd: Decimal
    window: str
    resets_at: datetime | None
    reason: str = "limit"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled from its fields, as ConfigError: the default would call it with the message.
        return functools.partial(type(self), **asdict(self)), ()

    def __post_init__(self) -> None:
        when = self.resets_at.isoformat() if self.resets_at is not None else "unknown"
        super().__init__(
            f"costwatch budget {self.budget!r} ({self.window}) refused the call: {self.reason}; "
            f"spent ${self.spent_usd} of ${self.limit_usd}, resets at {when}"
        )
