"""Exceptions costwatch raises into the host on purpose (and only these)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal

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


class BudgetExceeded(RuntimeError):
    """A ``block`` budget refused a call before it reached the provider."""

    def __init__(
        self,
        budget: str,
        *,
        spent_usd: Decimal,
        limit_usd: Decimal,
        window: str,
        resets_at: datetime | None,
        reason: str = "limit",
    ) -> None:
        self.budget = budget
        self.spent_usd = spent_usd
        self.limit_usd = limit_usd
        self.window = window
        self.resets_at = resets_at
        self.reason = reason
        when = resets_at.isoformat() if resets_at is not None else "unknown"
        super().__init__(
            f"costwatch budget {budget!r} ({window}) refused the call: {reason}; "
            f"spent ${spent_usd} of ${limit_usd}, resets at {when}"
        )
