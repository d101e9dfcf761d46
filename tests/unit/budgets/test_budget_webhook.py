"""Alert webhooks: a JSON POST from a background thread, with a timeout and retries.

A real HTTP server on a loopback port receives the posts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from costwatch.budgets._alerts import BudgetAlert, WebhookSender
from costwatch.budgets._backend import MemoryBudgetBackend
from costwatch.budgets._budget import Budget, BudgetCall, BudgetRegistry


class Receiver:
    """Answers each POST with the next status from ``statuses`` (then 200), after ``delay_s``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.lock = threading.Lock()
        self.statuses: list[int] = []
        self.delay_s = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.attempts += 1
                time.sleep(receiver.delay_s)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.bodies.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def alert() -> BudgetAlert:
    return BudgetAlert(
        budget="support",
        kind="threshold",
        threshold=0.8,
        spent_usd=Decimal("40.5"),
        limit_usd=Decimal("50"),
        window="month",
        window_id="2025-03",
        resets_at=datetime(2025, 4, 1, tzinfo=UTC),
        action="block",
        service="bot",
        fired_at=datetime(2025, 3, 20, tzinfo=UTC),
    )


def test_webhook_posts_the_alert_as_json(receiver: Receiver) -> None:
    sender = WebhookSender(timeout_s=1.0)
    sender.send(receiver.url, alert())
    assert sender.flush(5)
    assert receiver.bodies == [
        {
            "budget": "support",
            "kind": "threshold",
            "threshold": 0.8,
            "spent_usd": "40.5",
            "limit_usd": "50",
            "window": "month",
            "window_id": "2025-03",
            "resets_at": "2025-04-01T00:00:00+00:00",
            "action": "block",
            "service": "bot",
            "fired_at": "2025-03-20T00:00:00+00:00",
            "message": alert().message,
        }
    ]
    assert (sender.delivered, sender.failed) == (1, 0)


def test_webhook_retries_server_errors_with_backoff(receiver: Receiver) -> None:
    naps: list[float] = []
    sender = WebhookSender(timeout_s=1.0, retries=3, backoff_s=0.01, sleep=naps.append)
    receiver.statuses = [500, 503]
    sender.send(receiver.url, alert())
    assert sender.flush(5)
    assert receiver.attempts == 3
    assert len(receiver.bodies) == 1
    assert naps == [0.01, 0.02]


def test_webhook_gives_up_after_its_retries_without_blocking_the_caller(
    receiver: Receiver,
) -> None:
    sender = WebhookSender(timeout_s=0.1, retries=1, backoff_s=0.0)
    receiver.delay_s = 0.3  # every attempt times out
    started = time.perf_counter()
    sender.send(receiver.url, alert())
    assert time.perf_counter() - started < 0.05  # queued, not sent, on the caller's thread
    assert sender.flush(5)
    assert (sender.delivered, sender.failed) == (0, 1)
    assert receiver.attempts == 2


def test_a_budget_threshold_reaches_its_webhook(receiver: Receiver) -> None:
    registry = BudgetRegistry(MemoryBudgetBackend(), time.time, lambda: (), service="bot")
    registry.add(Budget("b", 1, "day", thresholds=(0.5,), webhook_url=receiver.url))
    registry.charge(
        BudgetCall("openai", "gpt-4o-mini", "generation", "base", {}, None, 0, 0),
        Decimal("0.6"),
    )
    assert registry.flush()
    assert registry.worker.webhooks.flush(5)
    assert [(b["budget"], b["threshold"], b["service"]) for b in receiver.bodies] == [
        ("b", 0.5, "bot")
    ]
    registry.close()


def test_a_webhook_that_times_out_is_counted_as_an_internal_error(receiver: Receiver) -> None:
    from tests._fixtures.capture import CaptureSink

    sink = CaptureSink()
    sender = WebhookSender(timeout_s=0.1, retries=0, backoff_s=0.0)
    registry = BudgetRegistry(MemoryBudgetBackend(), time.time, lambda: (sink,), webhooks=sender)
    registry.add(Budget("b", 1, "day", thresholds=(0.5,), webhook_url=receiver.url))
    receiver.delay_s = 0.3  # the attempt times out
    registry.charge(
        BudgetCall("openai", "gpt-4o-mini", "generation", "base", {}, None, 0, 0),
        Decimal("0.6"),
    )
    assert registry.flush()
    assert sender.flush(5)
    assert sender.failed == 1
    assert sink.internal_errors == ["budget_webhook"]
    registry.close()
