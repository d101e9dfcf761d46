"""What ``costwatch compare`` and ``costwatch reprice`` do, as functions the CLI calls: read the
traffic from where it was asked, compare or re-price, and render text, JSON or HTML."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime
from typing import Any

from costwatch._core.errors import ConfigError
from costwatch.analysis._economics import Comparison, compare
from costwatch.analysis._report import as_dict, render_text
from costwatch.analysis._scenarios import load_scenarios
from costwatch.analysis._traffic import Traffic, traffic_from_record_log

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(field: str, value: str | None, default: float) -> float:
    """Unix seconds, an ISO 8601 time, or a duration before now (``90m``, ``24h``, ``7d``)."""
    if value is None:
        return default
    text = value.strip()
    match = _DURATION.fullmatch(text)
    if match:
        return time.time() - float(match[1]) * _SECONDS[match[2]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ConfigError(field, value, "Unix seconds, ISO 8601 or a duration like 24h") from None


def read_traffic(
    *,
    record_log: str | None = None,
    prometheus: str | None = None,
    start: str | None = None,
    end: str | None = None,
    service: str | None = None,
) -> Traffic:
    """The traffic of a record log (a path) or of a Prometheus server (a URL) over a range."""
    if (record_log is None) == (prometheus is None):
        raise ConfigError("source", None, "give --record-log PATH or --prometheus URL")
    if record_log is not None:
        if not os.path.exists(record_log):
            raise ConfigError("record_log", record_log, "no such file")
        return traffic_from_record_log(record_log)
    from costwatch.analysis._prometheus import traffic_from_prometheus

    now = time.time()
    until = parse_time("end", end, now)
    since = parse_time("start", start, until - 3600)
    if since >= until:
        raise ConfigError("start", start, "must be before the end")
    return traffic_from_prometheus(str(prometheus), since, until, service=service)


def run_compare(
    traffic: Traffic,
    *,
    scenarios: str | dict[str, Any] | None = None,
    prices: Any = None,
    as_json: bool = False,
    explain: bool = False,
    html: str | None = None,
) -> tuple[str, Comparison]:
    """``(what to print, the comparison)``; with ``html`` the report is written there too."""
    comparison = compare(traffic, load_scenarios(scenarios), prices=prices)
    if html is not None:
        from costwatch.analysis._html import render_html

        with open(html, "w", encoding="utf-8") as fh:
            fh.write(render_html(comparison))
    if as_json:
        return json.dumps(as_dict(comparison), indent=2, sort_keys=True) + "\n", comparison
    return render_text(comparison, explain=explain), comparison


def run_reprice(
    record_log: str,
    *,
    prices: Any = None,
    start: str | None = None,
    end: str | None = None,
    write_to: str | None = None,
    as_json: bool = False,
) -> str:
    from costwatch.analysis._reprice import reprice_record_log

    result = reprice_record_log(
        record_log,
        prices=prices,
        start=None if start is None else parse_time("start", start, 0.0),
        end=None if end is None else parse_time("end", end, 0.0),
        write_to=write_to,
    )
    if as_json:
        return json.dumps(result.as_dict(), indent=2, sort_keys=True) + "\n"
    return result.render_text()
