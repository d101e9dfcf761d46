"""Budgets shared through a real Redis: Lua reservations, windows, expiry, alerts, processes.

Every test gets an empty ``redis-server`` (fixture ``redis_server``).  Clocks are injected, so
window rollover, month boundaries and reservation expiry are exact even though Redis runs in
real time: the scripts take ``now`` from the caller.
"""

from __future__ import annotations

import multiprocessing
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

import costwatch
from costwatch._core.errors import BudgetExceeded
from costwatch._core.record import TokenUsage
from costwatch.budgets._alerts import BudgetAlert
from costwatch.budgets._backend import BUDGET_INDEX_KEY, BudgetKeys, ReserveRequest, Settlement
from costwatch.budgets._budget import (
    Budget,
    BudgetCall,
    BudgetRegistry,
    BudgetStatusError,
    Window,
    budget_status,
)
from costwatch.budgets._redis_backend import RedisBudgetBackend
from costwatch.pricing import Price
from tests._fixtures.capture import CaptureSink

REPO = Path(__file__).resolve().parents[3]
PRICE = Price(input=Decimal("0.000001"), output=Decimal("0.000004"))
WORST = Decimal("0.003")  # 1000 prompt tokens + 500 max output tokens at PRICE


def ts(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[arg-type, misc]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def call(tags: Mapping[str, str] | None = None, price: Price | None = PRICE) -> BudgetCall:
    return BudgetCall(
        provider="openai",
        model="gpt-4o-mini",
        stage="generation",
        strategy="rag",
        tags=tags if tags is not None else {"team": "support"},
        price=price,
        prompt_tokens=1000,
        max_output_tokens=500,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(ts(2025, 3, 14, 12, 0))


@pytest.fixture
def sink() -> CaptureSink:
    return CaptureSink()


@pytest.fixture
def registry(redis_server: str, clock: Clock, sink: CaptureSink) -> Iterator[BudgetRegistry]:
    # the injected clock drives windows and hold expiry (Redis's own TIME is tested apart)
    backend = RedisBudgetBackend.from_url(redis_server, timeout_s=2.0, server_time=False)
    reg = BudgetRegistry(backend, clock, lambda: (sink,), service="svc")
    yield reg
    reg.close()


@pytest.fixture
def client(redis_server: str) -> Iterator[Any]:
    conn = redis.Redis.from_url(redis_server, decode_responses=True)
    yield conn
    conn.close()


def spend(registry: BudgetRegistry, amount: str, tags: Mapping[str, str] | None = None) -> None:
    reservation = registry.reserve(call(tags))
    assert reservation is not None
    reservation.settle(Decimal(amount))
    assert registry.flush()


# --------------------------------------------------------------------------- storage layout


def test_a_reservation_is_held_and_settled_in_integer_nano_dollars(
    registry: BudgetRegistry, client: Any
) -> None:
    registry.add(Budget("support", 10, "day", action="block"))
    reservation = registry.reserve(call())
    assert reservation is not None
    assert client.hget("{cw:b:support}:holdamt", "_t") == "3000000"  # $0.003 held
    reservation.settle(Decimal("0.0012345"))
    assert registry.flush()
    spent = client.hgetall("{cw:b:support}:spent")
    assert spent["t"] == "1234500"
    assert client.hget("{cw:b:support}:holdamt", "_t") == "0"
    status = registry.status("support")
    assert (status.spent_usd, status.reserved_usd, status.holds) == (Decimal("0.0012345"), 0, 0)


def test_every_key_of_a_budget_shares_one_hash_tag_and_its_state_never_expires(
    registry: BudgetRegistry, client: Any
) -> None:
    """A TTL on the spend would let a volatile-* eviction policy pick it before cache entries;
    only the alert claims and the writers' batch numbers expire."""
    registry.add(Budget("team-a", 10, "1h", thresholds=(0.0001,)))
    spend(registry, "0.5")
    registry.reserve(call())  # a hold in flight
    keys = set(client.keys("*"))
    assert BUDGET_INDEX_KEY in keys
    budget_keys = keys - {BUDGET_INDEX_KEY}
    assert budget_keys and all(k.startswith("{cw:b:team-a}:") for k in budget_keys)
    state = {"{cw:b:team-a}:spent", "{cw:b:team-a}:holds", "{cw:b:team-a}:holdamt"}
    assert state <= budget_keys
    for key in budget_keys:
        if key in state:
            assert client.ttl(key) == -1, key
        else:
            assert key.startswith(("{cw:b:team-a}:alert:", "{cw:b:team-a}:applied:")), key
            assert client.ttl(key) > 0, key


def test_large_amounts_stay_exact_integers_in_lua(registry: BudgetRegistry, client: Any) -> None:
    registry.add(Budget("big", 8_000_000, "month"))
    for _ in range(3):
        spend(registry, "2500000.123456789")
    assert registry.status("big").spent_usd == Decimal("7500000.370370367")
    assert client.hget("{cw:b:big}:spent", "t") == "7500000370370367"


def test_scripts_are_reloaded_after_script_flush(registry: BudgetRegistry, client: Any) -> None:
    registry.add(Budget("b", 10, "day"))
    spend(registry, "0.1")
    client.script_flush()
    spend(registry, "0.1")
    assert registry.status("b").spent_usd == Decimal("0.2")


def test_a_settlement_batch_retried_after_reaching_redis_is_charged_once(
    registry: BudgetRegistry, client: Any
) -> None:
    registry.add(Budget("b", 10, "day"))
    held = registry.reserve(call())
    assert held is not None
    window = registry.get("b").window
    now_ms = int(registry.clock() * 1000)
    keys = BudgetKeys("b")
    batch = Settlement(keys, window, "proc-a", 7, held_ids(held), 500_000_000, now_ms, 0)
    later = Settlement(keys, window, "proc-a", 8, [], 1, now_ms, 0)
    first, again, _, late_retry = registry.backend.settle([batch, batch, later, batch])
    assert (first.duplicate, again.duplicate, late_retry.duplicate) == (False, True, True)
    assert (late_retry.spent, late_retry.reserved) == (500_000_001, 0)
    # One small key per process and budget, kept a day after the process's last batch (not a
    # marker per batch that expires while a long outage is still being retried).
    assert client.keys("{cw:b:b}:applied:*") == ["{cw:b:b}:applied:proc-a"]
    assert client.get("{cw:b:b}:applied:proc-a") == "8"
    assert 86_000 < client.ttl("{cw:b:b}:applied:proc-a") <= 86_400


def held_ids(reservation: Any) -> list[str]:
    return [hold_id for _, hold_id in reservation._holds]


# --------------------------------------------------------------------------- limits and time


def test_block_raises_with_spent_limit_and_reset_time(
    registry: BudgetRegistry, sink: CaptureSink
) -> None:
    registry.add(Budget("daily", "0.01", "day", action="block"))
    spend(registry, "0.008")
    with pytest.raises(BudgetExceeded) as caught:
        registry.reserve(call())
    assert caught.value.spent_usd == Decimal("0.008")
    assert caught.value.limit_usd == Decimal("0.01")
    assert caught.value.resets_at == datetime(2025, 3, 15, tzinfo=UTC)
    assert sink.blocked == ["daily"]


def test_a_call_matching_several_budgets_reserves_on_all_in_one_round_trip(
    registry: BudgetRegistry, client: Any
) -> None:
    registry.add(Budget("team", 1, "day", match={"team": "support"}))
    registry.add(Budget("everything", 1, "month"))
    registry.add(Budget("tiny", "0.001", "day", action="block", match={"team": "tiny"}))
    client.script_flush()  # the first round trip meets NOSCRIPT on every command
    reservation = registry.reserve(call())
    assert reservation is not None
    assert sorted(reservation.budgets) == ["everything", "team"]
    assert registry.status("team").reserved_usd == WORST
    assert registry.status("everything").reserved_usd == WORST
    with pytest.raises(BudgetExceeded) as caught:
        registry.reserve(call({"team": "tiny"}))
    assert caught.value.budget == "tiny"
    assert registry.flush()
    assert registry.status("everything").reserved_usd == WORST  # the refused call's released


def test_rolling_window_rollover(registry: BudgetRegistry, clock: Clock) -> None:
    registry.add(Budget("hourly", "0.005", "1h", action="block"))
    spend(registry, "0.004")
    clock.now += 59 * 60
    with pytest.raises(BudgetExceeded) as caught:
        registry.reserve(call())
    assert caught.value.resets_at == datetime(2025, 3, 14, 13, 0, tzinfo=UTC)
    clock.now += 60
    assert registry.reserve(call()) is not None


def test_calendar_month_boundary(registry: BudgetRegistry, clock: Clock) -> None:
    clock.now = ts(2024, 12, 31, 23, 59, 59)
    registry.add(Budget("monthly", "0.005", "month", action="block"))
    spend(registry, "0.004")
    with pytest.raises(BudgetExceeded):
        registry.reserve(call())
    clock.now = ts(2025, 1, 1, 0, 0, 0)
    status = registry.status("monthly")
    assert (status.window_id, status.spent_usd) == ("2025-01", 0)
    assert registry.reserve(call()) is not None


def test_reservations_of_a_dead_process_expire(registry: BudgetRegistry, clock: Clock) -> None:
    registry.add(Budget("b", "0.004", "day", action="block", reservation_ttl_s=300))
    assert registry.reserve(call()) is not None  # never settled: its process died
    with pytest.raises(BudgetExceeded):
        registry.reserve(call())
    clock.now += 301
    assert registry.reserve(call()) is not None
    assert registry.status("b").holds == 1


def test_alerts_fire_once_per_window(registry: BudgetRegistry, clock: Clock) -> None:
    alerts: list[BudgetAlert] = []
    clock.now = ts(2025, 1, 31, 22, 0)
    registry.add(Budget("m", 1, "month", thresholds=(0.5, 0.8), on_alert=alerts.append))
    for _ in range(5):
        spend(registry, "0.2")
    clock.now = ts(2025, 2, 1, 1, 0)
    for _ in range(3):
        spend(registry, "0.2")
    assert [(a.threshold, a.window_id) for a in alerts] == [
        (0.5, "2025-01"),
        (0.8, "2025-01"),
        (0.5, "2025-02"),
    ]


def test_settlements_still_queued_at_interpreter_exit_are_applied(redis_server: str) -> None:
    script = f"""
import time
from decimal import Decimal
from costwatch.budgets._budget import Budget, BudgetCall, BudgetRegistry
from costwatch.budgets._redis_backend import RedisBudgetBackend
registry = BudgetRegistry(RedisBudgetBackend.from_url({redis_server!r}), time.time,
                          batch_delay_s=60)  # the settle thread would wait a minute
registry.add(Budget("exit", 10, "day"))
call = BudgetCall("openai", "m", "generation", "base", {{}}, None, 0, 0)
registry.charge(call, Decimal("1.25"))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    backend = RedisBudgetBackend.from_url(redis_server, timeout_s=2.0)
    reading = backend.read(BudgetKeys("exit"), Window("day"), 0)
    backend.close()
    assert reading.spent == 1_250_000_000


# --------------------------------------------------------------------------- processes

SHARED_LIMIT = Decimal("1")
CALLS_PER_PROCESS = 500


def _reserve_worker(url: str, index: int, barrier: Any, results: Any) -> None:
    """500 concurrent calls (50 threads) that reserve, 'run', and settle ≤ their worst case."""
    registry = BudgetRegistry(RedisBudgetBackend.from_url(url, timeout_s=5.0), time.time)
    registry.add(Budget("shared", SHARED_LIMIT, "month", action="block", thresholds=()))
    rng = random.Random(index)
    outputs = [rng.randint(0, 500) for _ in range(CALLS_PER_PROCESS)]
    settled: list[Decimal] = []
    blocked = [0]
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            reservation = registry.reserve(call())
        except BudgetExceeded:
            with lock:
                blocked[0] += 1
            return
        assert reservation is not None
        time.sleep((outputs[i] % 4) / 1000)  # the provider call
        cost = PRICE.cost(TokenUsage(input=1000, output=outputs[i]))
        reservation.settle(cost)
        with lock:
            settled.append(cost)

    barrier.wait()
    with ThreadPoolExecutor(50) as pool:
        list(pool.map(one, range(CALLS_PER_PROCESS)))
    assert registry.flush(30)
    results.put((index, str(sum(settled, Decimal(0))), len(settled), blocked[0]))
    registry.close()


def test_four_processes_of_concurrent_reservations_never_overspend(redis_server: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_reserve_worker, args=(redis_server, i, barrier, results))
        for i in range(4)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=90) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    settled = sum((Decimal(total) for _, total, _, _ in outcomes), Decimal(0))
    admitted = sum(n for _, _, n, _ in outcomes)
    blocked = sum(n for _, _, _, n in outcomes)
    assert admitted + blocked == 4 * CALLS_PER_PROCESS
    assert blocked > 0 and admitted > 0

    backend = RedisBudgetBackend.from_url(redis_server, timeout_s=2.0)
    budget = Budget("shared", SHARED_LIMIT, "month")
    reading = backend.read(budget.keys, budget.window, 0)
    backend.close()
    assert reading.spent == int(settled * 10**9)  # exactly the sum of the settled costs
    assert (reading.reserved, reading.holds) == (0, 0)
    # every call settled at or below its reservation: the hard limit holds
    assert settled <= SHARED_LIMIT
    assert settled > SHARED_LIMIT - 50 * 4 * WORST  # and the budget was actually used


def _alert_worker(url: str, index: int, barrier: Any, results: Any) -> None:
    """Charges $0.01 at a time, in January then February, and reports the alerts it delivered."""
    clock = Clock(ts(2025, 1, 20, 12, 0))
    fired: list[tuple[str, float, str]] = []
    registry = BudgetRegistry(
        RedisBudgetBackend.from_url(url, timeout_s=5.0, server_time=False), clock
    )
    registry.add(
        Budget(
            "shared-alerts",
            1,
            "month",
            thresholds=(0.5, 0.8, 1.0),
            on_alert=lambda a: fired.append((a.kind, a.threshold, a.window_id)),
        )
    )
    for month in (1, 2):
        clock.now = ts(2025, month, 20, 12, 0)
        barrier.wait()
        for i in range(50):
            registry.charge(call(), Decimal("0.01"))
            if i % 3 == 0:
                registry.flush()
        assert registry.flush(30)
        barrier.wait()
    results.put((index, fired))
    registry.close()


def test_each_threshold_alert_fires_exactly_once_per_window_across_processes(
    redis_server: str,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_alert_worker, args=(redis_server, i, barrier, results))
        for i in range(3)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=90) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    fired = sorted(alert for _, alerts in outcomes for alert in alerts)
    assert fired == sorted(
        ("threshold", t, month) for t in (0.5, 0.8, 1.0) for month in ("2025-01", "2025-02")
    )


# --------------------------------------------------------------------------- status


def test_budget_status_lists_every_budget_registered_in_redis(
    registry: BudgetRegistry, clock: Clock, redis_server: str
) -> None:
    clock.now = time.time()
    registry.add(Budget("support-daily", 50, "day", action="block", match={"team": "support"}))
    registry.add(Budget("search-hourly", "2.5", "1h", match={"team": "search"}))
    spend(registry, "12.5")
    held = registry.reserve(call({"team": "search"}))
    assert held is not None
    assert registry.flush()
    text = budget_status(redis_server)
    lines = text.splitlines()
    assert lines[0].split() == [
        "BUDGET", "WINDOW", "ACTION", "SPENT", "RESERVED", "LIMIT", "USED", "RESETS", "AT", "(UTC)",
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["support-daily"][1:7] == [
        "day", "block", "$12.500000", "$0.000000", "$50", "25.0%",
    ]  # fmt: skip
    assert rows["search-hourly"][1:6] == ["1h", "warn", "$0.000000", "$0.003000", "$2.5"]
    tomorrow = datetime.fromtimestamp(clock.now, UTC).date().toordinal() + 1
    assert rows["support-daily"][7] == datetime.fromordinal(tomorrow).strftime("%Y-%m-%d")


def test_budget_status_says_when_none_is_configured_or_redis_is_unreachable(
    redis_server: str,
) -> None:
    assert "no budgets are configured" in budget_status(redis_server)
    with pytest.raises(BudgetStatusError, match="no Redis configured"):
        budget_status(None)
    from tests._fixtures.redis_proc import free_port

    started = time.perf_counter()
    with pytest.raises(BudgetStatusError, match="is unreachable") as unreachable:
        budget_status(f"redis://:secret@127.0.0.1:{free_port()}/0", timeout_s=0.2)
    assert "secret" not in str(unreachable.value)
    assert time.perf_counter() - started < 2


# --------------------------------------------------------------------------- public API


@pytest.fixture
def cw_redis(redis_server: str, capture: CaptureSink) -> Iterator[Any]:
    costwatch.configure(
        service="test",
        strict=True,
        prometheus=False,
        otel=False,
        redis_url=redis_server,
        sinks=[capture],
    )
    yield costwatch
    costwatch._configure.shutdown()


def test_configured_redis_backs_public_budgets(cw_redis: Any, client: Any) -> None:
    cw_redis.budget("support", limit_usd=1, window="month", match={"team": "support"})
    with cw_redis.tags(team="support"):
        cw_redis.record(
            provider="openai", model="gpt-4o-mini", input_tokens=1_000_000, output_tokens=0
        )
    assert cw_redis.runtime().budgets.flush()
    assert client.hget("{cw:b:support}:spent", "t") == "150000000"  # $0.15 in nano-dollars
    assert "support" in client.hgetall(BUDGET_INDEX_KEY)


def test_a_reservation_run_twice_holds_once_and_its_release_frees_it_all(
    registry: BudgetRegistry,
) -> None:
    """redis-py resends a cluster command whose reply timed out, so one reservation can run
    twice with the same hold id: it is held once, and releasing it leaves no phantom hold."""
    registry.add(Budget("twice", "0.006", "day", action="block"))  # two calls' worst case
    assert registry.flush()
    budget = registry.get("twice")
    now_ms = int(registry.clock() * 1000)
    request = ReserveRequest(
        budget.keys, budget.window, now_ms, budget.limit_nano, 3_000_000, "p.0",
        budget.hold_ms, True, budget.epoch, False,
    )  # fmt: skip
    first, again = registry.backend.reserve([request, request])
    assert first.granted and again.granted
    assert registry.status("twice").reserved_usd == WORST
    release = Settlement(budget.keys, budget.window, "proc-a", 1, ["p.0"], 0, now_ms, 0)
    registry.backend.settle([release])

    granted = 0
    for _ in range(3):
        try:
            held = registry.reserve(call())
        except BudgetExceeded:
            continue
        assert held is not None
        granted += 1
    assert granted == 2  # the whole limit is free again
