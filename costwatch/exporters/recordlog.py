"""The record log: every call and every lifecycle cost as one JSON line, for exact money at scale.

Prometheus is for trends and alerts, not a ledger: ``increase()`` extrapolates and a counter
reset loses a scrape's worth.  The record log keeps each priced event once, with ``Decimal``
amounts written as strings and the price source on every line, so a period can be summed
exactly, compared (``costwatch compare --record-log``) or re-priced when a price was corrected
(``costwatch reprice``).

Two outputs, either or both:

* a rotating file of JSON lines (``path``; ``max_bytes`` and ``backups`` as
  ``logging.handlers.RotatingFileHandler``: ``path``, ``path.1`` ... ``path.N``, oldest last);
* OpenTelemetry log events through the application's logger provider (``logger_provider``, or
  ``otel_logs=True`` for the global one), event name ``costwatch.record``, the JSON line as the
  body and ``costwatch.type`` / ``costwatch.schema`` as attributes, so a collector can ship
  them to any log backend.

Schema ``costwatch.record/1`` (stable: fields are only ever added).  Every line has ``schema``,
``type``, ``ts`` (the runtime clock, Unix seconds) and ``price_source``, and by ``type``:

``call``       one priced call: every ``CostRecord`` field (``CostRecord.as_dict``); ``cost_usd``
               and ``input_cost_usd`` are decimal strings or null (unpriced), ``usage`` the
               token partition, ``price_source`` ``user``/``bundled``/``genai-prices``/``fixed``
               or null.
``request``    a ``costwatch.request`` ended: pipeline, strategy, request_id, cost_usd, status,
               unpriced_calls, latency_s, service, feature, team, tenant; price_source ``calls``.
``outcome``    how a request ended: outcome, pipeline, strategy, request_id, cost_usd (of that
               request), unmatched (a reason, or "").
``lifecycle``  a one-off cost: kind (training, indexing...), name, cost_usd, provider, model,
               strategy, pipeline, attribution, detail (the arithmetic: tokens, epochs, price
               per million, reference); price_source ``bundled``/``user``/``explicit``/``calls``.
``fixed_cost`` a recurring cost declared: name, kind, usd_per_hour, usd_per_month, started_at,
               attribution; readers keep one declaration per name, never one per process.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import threading
import time
from decimal import Decimal
from typing import Any

import orjson

from costwatch._core.record import CostRecord
from costwatch._core.sink import FailOpenSink, FixedCost, LifecycleCost, Outcome, RequestEnd
from costwatch.accounting._recordlog import SCHEMA, read_record_log, record_log_files

__all__ = ["SCHEMA", "RecordLogSink", "read_record_log", "record_log_files"]

EVENT_NAME = "costwatch.record"
_counter = iter(range(1 << 62))
_counter_lock = threading.Lock()


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (tuple, frozenset, set)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class RecordLogSink(FailOpenSink):
    """Writes every call, request end, outcome and lifecycle cost as one JSON line."""

    component = "exporter.recordlog"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        backups: int = 10,
        logger_provider: Any = None,
        otel_logs: bool = False,
        clock: Any = time.time,
    ) -> None:
        self.path = None if path is None else os.fspath(path)
        self.clock = clock
        self._file: logging.Logger | None = None
        self._handler: logging.Handler | None = None
        if self.path is not None:
            with _counter_lock:
                n = next(_counter)
            logger = logging.getLogger(f"costwatch.recordlog.{n}")
            logger.propagate = False
            logger.setLevel(logging.INFO)
            handler = logging.handlers.RotatingFileHandler(
                self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            self._file, self._handler = logger, handler
        self._otel: Any = None
        if logger_provider is not None or otel_logs:
            from opentelemetry import _logs

            provider = (
                logger_provider if logger_provider is not None else _logs.get_logger_provider()
            )
            from costwatch._version import __version__

            self._otel = provider.get_logger("costwatch", __version__)

    def close(self) -> None:
        if self._handler is not None and self._file is not None:
            self._file.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def _write(self, kind: str, ts: float, fields: dict[str, Any]) -> None:
        line = {"schema": SCHEMA, "type": kind, "ts": ts or self.clock(), **fields}
        text = orjson.dumps(line, default=_default).decode()
        if self._file is not None:
            self._file.info(text)
        if self._otel is not None:
            self._otel.emit(
                timestamp=int(line["ts"] * 1e9),
                body=text,
                attributes={"costwatch.schema": SCHEMA, "costwatch.type": kind},
                event_name=EVENT_NAME,
            )

    def on_record(self, record: CostRecord) -> None:
        fields = record.as_dict()
        fields.pop("timestamp", None)
        fields["tags"] = dict(record.tags)
        self._write("call", record.timestamp, fields)

    def on_request_end(self, event: RequestEnd) -> None:
        fields = {
            "pipeline": event.pipeline,
            "strategy": event.strategy,
            "request_id": event.request_id,
            "cost_usd": str(event.cost_usd),
            "status": event.status,
            "unpriced_calls": event.unpriced_calls,
            "latency_s": event.latency_s,
            "service": event.service,
            "feature": event.feature,
            "team": event.team,
            "tenant": event.tenant,
            "price_source": "calls",
        }
        self._write("request", 0.0, fields)

    def on_outcome(self, event: Outcome) -> None:
        fields = {
            "outcome": event.outcome,
            "pipeline": event.pipeline,
            "strategy": event.strategy,
            "request_id": event.request_id,
            "cost_usd": str(event.cost_usd),
            "unmatched": event.unmatched,
            "service": event.service,
            "feature": event.feature,
            "team": event.team,
            "tenant": event.tenant,
            "price_source": "calls",
        }
        self._write("outcome", 0.0, fields)

    def on_lifecycle(self, event: LifecycleCost | FixedCost) -> None:
        if isinstance(event, FixedCost):
            self._write("fixed_cost", event.started_at, event.as_dict())
        else:
            fields = event.as_dict()
            fields.pop("timestamp", None)
            self._write("lifecycle", event.timestamp, fields)
