"""Budgets while Redis is down or hung: ``on_backend_error`` decides, nothing waits for long.

Each test starts its own ``redis-server`` and kills (SIGKILL) or freezes (SIGSTOP) it by pid.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from costwatch._core.errors import BudgetExceeded
from costwatch.budgets._budget import Budget, BudgetCall, BudgetRegistry
from costwatch.budgets._redis_backend import RedisBudgetBackend
from costwatch.pricing import Price
from tests._fixtures.capture import CaptureSink
from tests._fixtures.redis_proc import RedisProcess

PRICE = Price(input=Decimal("0.000001"), output=Decimal("0.000004"))
TIMEOUT_S = 0.1


def call(team: str) -> BudgetCall:
    return BudgetCall(
        "openai", "gpt-4o-mini", "generation", "rag", {"team": team}, PRICE, 1000, 500
    )


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    proc = RedisProcess()
    proc.start()
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        os.kill(proc.proc.pid, signal.SIGCONT)
    proc.cleanup()


@pytest.fixture
def sink() -> CaptureSink:
    return CaptureSink()


@pytest.fixture
def registry(own_redis: RedisProcess, sink: CaptureSink) -> Iterator[BudgetRegistry]:
    backend = RedisBudgetBackend.from_url(own_redis.url, timeout_s=TIMEOUT_S)
    reg = BudgetRegistry(backend, time.time, lambda: (sink,), retry_interval_s=0.1)
    reg.add(Budget("open", 5, "day", action="block", match={"team": "a"}))
    reg.add(
        Budget("closed", 5, "day", action="block", match={"team": "b"}, on_backend_error="deny")
    )
    assert reg.flush()
    yield reg
    reg.close(timeout_s=0.5)


def test_redis_killed_allow_proceeds_and_counts_the_error(
    registry: BudgetRegistry, own_redis: RedisProcess, sink: CaptureSink
) -> None:
    own_redis.stop()
    started = time.perf_counter()
    for _ in range(20):
        assert registry.reserve(call("a")) is None  # the call goes ahead
    assert time.perf_counter() - started < 1.0
    assert registry.backend_errors == 20
    assert sink.internal_errors.count("budget_backend") == 20
    assert sink.blocked == []


def test_redis_killed_deny_raises_budget_exceeded_saying_the_backend_is_unavailable(
    registry: BudgetRegistry, own_redis: RedisProcess, sink: CaptureSink
) -> None:
    own_redis.stop()
    started = time.perf_counter()
    with pytest.raises(BudgetExceeded) as caught:
        registry.reserve(call("b"))
    assert time.perf_counter() - started < 1.0
    assert caught.value.budget == "closed"
    assert "backend unavailable" in caught.value.reason
    assert "unavailable" in str(caught.value)
    assert sink.blocked == ["closed"]


def test_hung_redis_costs_at_most_the_timeout_then_the_breaker_answers_at_once(
    registry: BudgetRegistry, own_redis: RedisProcess
) -> None:
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)  # accepts connections, never answers
    durations = []
    for _ in range(10):
        started = time.perf_counter()
        assert registry.reserve(call("a")) is None
        durations.append(time.perf_counter() - started)
        with pytest.raises(BudgetExceeded):
            registry.reserve(call("b"))
    waited = [d for d in durations if d > TIMEOUT_S / 2]
    # Each wait is the socket timeout (the bound allows for a loaded machine's scheduling: a
    # hung Redis without a timeout would block for ever), and at most three of them ...
    assert len(waited) <= 3 and min(waited) < TIMEOUT_S * 3 and max(waited) < 1.0
    # ... open the breaker: later calls do not touch the socket
    assert sorted(durations)[:6] == pytest.approx([0] * 6, abs=0.002)
    assert registry.backend_errors == 20


def test_settlements_queued_during_an_outage_are_applied_when_redis_returns(
    registry: BudgetRegistry, own_redis: RedisProcess
) -> None:
    held = registry.reserve(call("a"))
    assert held is not None
    own_redis.stop()
    held.settle(Decimal("0.002"))
    registry.charge(call("a"), Decimal("0.25"))
    assert registry.flush(timeout_s=0.3) is False  # kept for retry, not lost
    for _ in range(5):
        assert registry.reserve(call("a")) is None  # enough failures to open the breaker
    own_redis.start()  # same port, empty data set (no persistence)
    started = time.monotonic()
    while not registry.flush(timeout_s=0.2) and time.monotonic() - started < 5:
        time.sleep(0.05)
    recovered_after = time.monotonic() - started
    assert registry.status("open").spent_usd == Decimal("0.252")
    assert registry.reserve(call("a")) is not None  # and reservations work again
    assert recovered_after < 2.5  # one breaker cool-down, then the probe succeeds
