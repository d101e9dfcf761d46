"""Budget windows: parsing ``"1h"``/``"7d"``/``"day"``/``"month"``, where ``now`` falls in one
(buckets, window id), when it resets, and how long its keys and alert claims live.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from costwatch._core.errors import ConfigError

ROLLING_BUCKETS = 60
"""A rolling window is summed over 60 sub-windows: it slides in steps of 1/60 of its length."""

_ROLLING_RE = re.compile(r"^([1-9][0-9]{0,4})([mhd])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400}
_CALENDAR = ("day", "month")


class WindowPosition:
    """Where ``now`` falls in a window: valid for every ``now`` in ``[start, end)``."""

    __slots__ = ("cur", "min", "start", "end", "window_id")

    def __init__(self, cur: int, min_bucket: int, start: float, end: float, window_id: str) -> None:
        self.cur = cur
        self.min = min_bucket
        self.start = start
        self.end = end
        self.window_id = window_id


class Window:
    """A rolling window (``"1h"``, ``"24h"``, ``"1d"``, ``"7d"``, any ``<n>m|h|d``) or a
    calendar window in UTC (``"day"``, ``"month"``).

    Rolling windows are the sum of 60 sub-window buckets (``"1h"``: one-minute buckets), so the
    spend counted is that of the last 59-60 sub-windows.  Calendar windows have one bucket per
    UTC day or month and reset at its end.
    """

    __slots__ = ("spec", "kind", "seconds", "bucket_s", "buckets", "script_args", "_cached")

    def __init__(self, spec: str) -> None:
        if not isinstance(spec, str):
            raise ConfigError("window", spec, 'expected "1h", "24h", "7d", "day" or "month"')
        self.spec = spec
        self._cached: WindowPosition | None = None
        if spec in _CALENDAR:
            self.kind = "calendar"
            self.seconds = 86400 if spec == "day" else 31 * 86400
            self.bucket_s = self.seconds
            self.buckets = 1
            self.script_args: tuple[str, int, int] = (spec[0], 0, 1)
            """How the budget scripts locate a moment in this window: kind, size, count."""
            return
        found = _ROLLING_RE.match(spec)
        if found is None:
            raise ConfigError(
                "window",
                spec,
                'expected a rolling window like "1h", "24h", "7d" (minutes m, hours h, days d) '
                'or a calendar window "day" or "month" (UTC)',
            )
        seconds = int(found.group(1)) * _UNIT_S[found.group(2)]
        if seconds > 400 * 86400:
            raise ConfigError("window", spec, "rolling windows are limited to 400 days")
        self.kind = "rolling"
        self.seconds = seconds
        self.bucket_s = seconds // ROLLING_BUCKETS
        self.buckets = ROLLING_BUCKETS
        self.script_args = ("r", self.bucket_s * 1000, ROLLING_BUCKETS)

    def locate(self, now: float) -> WindowPosition:
        cached = self._cached
        if cached is not None and cached.start <= now < cached.end:
            return cached
        position = self._compute(now)
        self._cached = position
        return position

    def _compute(self, now: float) -> WindowPosition:
        if self.kind == "rolling":
            cur = int(now // self.bucket_s)
            start = float(cur * self.bucket_s)
            return WindowPosition(
                cur, cur - self.buckets + 1, start, start + self.bucket_s, self.spec
            )
        if self.spec == "day":
            cur = int(now // 86400)
            start = float(cur * 86400)
            day = datetime.fromtimestamp(start, UTC).date().isoformat()
            return WindowPosition(cur, cur, start, start + 86400, day)
        moment = datetime.fromtimestamp(now, UTC)
        first = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        if moment.month == 12:
            following = datetime(moment.year + 1, 1, 1, tzinfo=UTC)
        else:
            following = datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)
        cur = moment.year * 12 + moment.month - 1
        return WindowPosition(
            cur,
            cur,
            first.timestamp(),
            following.timestamp(),
            f"{moment.year:04d}-{moment.month:02d}",
        )

    def resets_at(self, position: WindowPosition, oldest_bucket: int) -> float | None:
        """Calendar: the end of the period.  Rolling: when the oldest counted spend ages out
        (``None`` when nothing is counted)."""
        if self.kind == "calendar":
            return position.end
        if oldest_bucket < 0:
            return None
        return float((oldest_bucket + self.buckets) * self.bucket_s)

    def spent_ttl_s(self, position: WindowPosition, now: float) -> int:
        """How long the spend hash must live after a write: the spend expires with the window."""
        if self.kind == "rolling":
            return self.seconds + self.bucket_s + 60
        return max(60, int(position.end - now) + 3600)

    def claim(self, position: WindowPosition, label: str, now: float) -> tuple[str, int, int]:
        """(claim key, dedupe ms, key ttl s) making an alert fire once per window.

        Calendar windows: once per period (the key names the period).  Rolling windows have no
        periods: an alert fires at most once per window length.
        """
        if self.kind == "calendar":
            return f"{position.window_id}:{label}", -1, max(60, int(position.end - now) + 86400)
        return f"{self.spec}:{label}", self.seconds * 1000, self.seconds + 3600
