"""Budgets you can trust at scale, against real ``redis-server`` processes: lost state found and
counted, one clock (Redis's), nothing lost at exit, $0 calls free, a process's own settled calls
never block it, capped holds, user callbacks off the settlement thread.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from costwatch._core.errors import BudgetExceeded
from costwatch.budgets import Budget, BudgetAlert
from costwatch.budgets._budget import BudgetCall, BudgetRegistry, budget_status
from costwatch.budgets._redis_backend import RedisBudgetBackend
from costwatch.pricing._catalog import Price
from tests._fixtures.capture import CaptureSink
from tests._fixtures.redis_proc import RedisProcess

REPO = Path(__file__).resolve().parents[3]
PRICE = Price(input=Decimal("0.000001"), output=Decimal("0.000004"))
WORST = Decimal("0.003")  # 1000 prompt tokens + 500 output tokens at PRICE


def call(
    *, price: Price | None = PRICE, max_out: int | None = 500, fixed: Decimal | None = None
) -> BudgetCall:
    return BudgetCall("openai", "m", "generation", "base", {}, price, 1000, max_out, fixed)


def skewed(offset_s: float) -> Callable[[], float]:
    return lambda: time.time() + offset_s


@pytest.fixture
def sink() -> CaptureSink:
    return CaptureSink()


@pytest.fixture
def make_registry(redis_server: str, sink: CaptureSink) -> Iterator[Callable[..., BudgetRegistry]]:
    made: list[BudgetRegistry] = []

    def make(clock: Callable[[], float] = time.time, **options: Any) -> BudgetRegistry:
        backend = RedisBudgetBackend.from_url(redis_server, timeout_s=2.0)
        registry = BudgetRegistry(backend, clock, lambda: (sink,), **options)
        made.append(registry)
        return registry

    yield make
    for registry in made:
        registry.close()


def spend(registry: BudgetRegistry, amount: str) -> None:
    reservation = registry.reserve(call())
    assert reservation is not None
    reservation.settle(Decimal(amount))
    assert registry.flush()


# --------------------------------------------------------------------------- one clock


def test_a_process_ten_minutes_ahead_does_not_free_another_process_s_hold(
    make_registry: Callable[..., BudgetRegistry],
) -> None:
    honest = make_registry()
    ahead = make_registry(skewed(600))
    for registry in (honest, ahead):
        registry.add(Budget("one", 1, "day", action="block", reservation_ttl_s=60))
    big = call(fixed=Decimal("0.6"))
    assert honest.reserve(big) is not None  # held for 60 s by Redis's clock
    with pytest.raises(BudgetExceeded):
        ahead.reserve(big)  # $1.20 would be granted if its clock expired the hold


def test_a_process_a_day_ahead_still_counts_today_s_spend(
    make_registry: Callable[..., BudgetRegistry],
) -> None:
    honest = make_registry()
    ahead = make_registry(skewed(86_400))
    for registry in (honest, ahead):
        registry.add(Budget("daily", "0.005", "day", action="block"))
    spend(honest, WORST.to_eng_string())
    with pytest.raises(BudgetExceeded):
        ahead.reserve(call())  # its clock says tomorrow: a local window would be empty
    status = ahead.status("daily")
    assert status.spent_usd == WORST
    assert status.window_id == time.strftime("%Y-%m-%d", time.gmtime())


def test_rolling_spend_does_not_drop_out_early_for_a_process_ahead(
    make_registry: Callable[..., BudgetRegistry],
) -> None:
    honest = make_registry()
    ahead = make_registry(skewed(2 * 3600))
    for registry in (honest, ahead):
        registry.add(Budget("hourly", "0.005", "1h", action="block"))
    spend(honest, WORST.to_eng_string())
    with pytest.raises(BudgetExceeded):
        ahead.reserve(call())
    assert ahead.status("hourly").spent_usd == WORST


# --------------------------------------------------------------------------- lost state


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    proc = RedisProcess()
    proc.start()
    yield proc
    proc.cleanup()


def test_redis_restarted_empty_is_found_counted_alerted_and_follows_each_policy(
    own_redis: RedisProcess, sink: CaptureSink
) -> None:
    alerts: list[BudgetAlert] = []
    registry = BudgetRegistry(
        RedisBudgetBackend.from_url(own_redis.url, timeout_s=2.0), time.time, lambda: (sink,)
    )
    registry.add(
        Budget("strict", "0.01", "day", action="block", on_state_lost="deny",
               on_alert=alerts.append)
    )  # fmt: skip
    registry.add(Budget("lenient", "0.01", "day", action="block", on_alert=alerts.append))
    try:
        for _ in range(3):
            spend(registry, "0.003")  # $0.009 of $0.01 on both
        own_redis.stop()
        own_redis.start()  # no persistence: empty
        with pytest.raises(BudgetExceeded, match="on_state_lost='deny'") as caught:
            for _ in range(5):  # the first calls may meet the breaker after the restart
                try:
                    registry.reserve(call())
                except BudgetExceeded as exc:
                    if "unavailable" not in str(exc):
                        raise
                time.sleep(0.3)
        assert caught.value.budget == "strict"
        assert registry.flush()
        assert sorted(sink.state_lost) == ["lenient", "strict"]
        assert sorted(a.budget for a in alerts if a.kind == "state_lost") == [
            "lenient",
            "strict",
        ]
        # allow: spend counts from $0 again, and the loss is not reported twice
        lenient_only = BudgetRegistry(
            RedisBudgetBackend.from_url(own_redis.url, timeout_s=2.0), time.time, lambda: (sink,)
        )
        lenient_only.add(Budget("lenient", "0.01", "day", action="block"))
        spend(lenient_only, "0.003")
        assert sorted(sink.state_lost) == ["lenient", "strict"]
        lenient_only.close()
        # the definitions were published again: `costwatch budget status` lists both
        text = budget_status(own_redis.url)
        assert "strict" in text and "lenient" in text
    finally:
        registry.close()


def test_an_evicted_spend_key_is_found_by_every_process_and_counted_once(
    make_registry: Callable[..., BudgetRegistry], redis_server: str, sink: CaptureSink
) -> None:
    first, second = make_registry(), make_registry()
    for registry in (first, second):
        registry.add(Budget("shared", 1, "day"))
        spend(registry, "0.1")
    client = redis.Redis.from_url(redis_server)
    client.delete("{cw:b:shared}:spent")  # what an allkeys-* eviction does
    client.close()
    spend(first, "0.1")
    spend(second, "0.1")
    assert sink.state_lost == ["shared"]
    assert first.state_lost + second.state_lost == 1
    assert first.status("shared").spent_usd == Decimal("0.2")


# --------------------------------------------------------------------------- $0 and holds


def evalsha_calls(url: str) -> int:
    client = redis.Redis.from_url(url)
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    client.close()
    return int(stats.get("calls", 0))


def test_a_free_call_is_never_refused_and_makes_no_round_trip(own_redis: RedisProcess) -> None:
    # a Redis of its own: other tests' registries refresh their gauges on the shared one
    redis_server = own_redis.url
    registry = BudgetRegistry(RedisBudgetBackend.from_url(redis_server, timeout_s=2.0))
    registry.add(Budget("spent", "0.003", "day", action="block"))
    spend(registry, "0.003")
    with pytest.raises(BudgetExceeded):
        registry.reserve(call())
    assert registry.flush()  # the "blocked" alert's claim is an EVALSHA of the worker's
    before = evalsha_calls(redis_server)
    for _ in range(20):  # a cached retrieval: a known price of $0
        reservation = registry.reserve(call(fixed=Decimal(0)))
        assert reservation is not None
        reservation.settle(Decimal(0))
    assert evalsha_calls(redis_server) == before
    with pytest.raises(BudgetExceeded):  # an unpriced call may cost anything: still checked
        registry.reserve(call(price=None))
    registry.close()


def test_a_process_s_own_settled_call_never_blocks_its_next_call(
    make_registry: Callable[..., BudgetRegistry],
) -> None:
    registry = make_registry(batch_delay_s=30)  # the settlement thread would be late
    registry.add(Budget("tight", "0.005", "day", action="block"))
    registry.flush()
    for _ in range(3):  # each holds $0.003 and costs $0.001: three fit in $0.005
        reservation = registry.reserve(call())
        assert reservation is not None
        reservation.settle(Decimal("0.001"))
    with pytest.raises(BudgetExceeded):  # $0.003 spent + $0.003 would pass $0.005
        registry.reserve(call())
    assert registry.flush()
    assert registry.status("tight").spent_usd == Decimal("0.003")


def test_a_huge_max_tokens_holds_at_most_the_limit_and_leaves_nothing_behind(
    make_registry: Callable[..., BudgetRegistry], sink: CaptureSink
) -> None:
    alerts: list[BudgetAlert] = []
    registry = make_registry()
    registry.add(Budget("warned", 1, "day", on_alert=alerts.append, thresholds=()))
    reservation = registry.reserve(call(max_out=10**17))
    assert reservation is not None
    status = registry.status("warned")
    assert status.reserved_usd == Decimal("1.000000001")
    reservation.settle(Decimal("0.002"))
    assert registry.flush()
    status = registry.status("warned")
    assert (status.reserved_usd, status.spent_usd) == (0, Decimal("0.002"))
    for _ in range(5):
        spend(registry, "0.001")
    assert [a.kind for a in alerts] == ["exceeded"]  # only the call that could pass the limit


def test_holds_of_a_killed_process_expire_after_reservation_ttl_by_redis_s_clock(
    redis_server: str,
) -> None:
    script = f"""
import os, time
from costwatch.budgets._budget import Budget, BudgetCall, BudgetRegistry
from costwatch.budgets._redis_backend import RedisBudgetBackend
from costwatch.pricing._catalog import Price
from decimal import Decimal
registry = BudgetRegistry(RedisBudgetBackend.from_url({redis_server!r}), lambda: time.time() - 3600)
registry.add(Budget("held", 1, "day", action="block", reservation_ttl_s=1))
call = BudgetCall("openai", "m", "generation", "base", {{}}, None, 0, 0, Decimal("0.9"))
assert registry.reserve(call) is not None
os.kill(os.getpid(), 9)
"""
    subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=30)
    registry = BudgetRegistry(RedisBudgetBackend.from_url(redis_server, timeout_s=2.0))
    registry.add(Budget("held", 1, "day", action="block"))
    assert registry.status("held").holds == 1
    time.sleep(1.2)
    assert registry.reserve(call(fixed=Decimal("0.9"))) is not None  # the dead hold expired
    registry.close()


# --------------------------------------------------------------------------- exits


def _fork_child(url: str) -> None:
    registry = BudgetRegistry(RedisBudgetBackend.from_url(url, timeout_s=2.0), batch_delay_s=60)
    registry.add(Budget("exit", 10, "day"))
    for _ in range(10):
        reservation = registry.reserve(call())
        assert reservation is not None
        reservation.settle(Decimal("0.01"))
    # returns at once: the settlement thread is asleep for a minute; the child leaves through
    # os._exit after its multiprocessing finalisers


def test_a_fork_started_multiprocessing_child_applies_its_settlements_at_exit(
    redis_server: str,
) -> None:
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_fork_child, args=(redis_server,)) for _ in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    registry = BudgetRegistry(RedisBudgetBackend.from_url(redis_server, timeout_s=2.0))
    registry.add(Budget("exit", 10, "day"))
    status = registry.status("exit")
    registry.close()
    assert (status.spent_usd, status.holds) == (Decimal("0.30"), 0)


def test_a_forked_child_settles_with_its_own_thread_and_connections(
    make_registry: Callable[..., BudgetRegistry],
) -> None:
    registry = make_registry()
    registry.add(Budget("forked", 10, "day"))
    spend(registry, "0.01")  # the parent's thread and connections exist
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            spend(registry, "0.02")
            code = 0 if registry.worker._thread_pid == os.getpid() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    spend(registry, "0.04")
    assert registry.status("forked").spent_usd == Decimal("0.07")


# --------------------------------------------------------------------------- callbacks


def test_a_hanging_on_alert_never_delays_settlement_and_is_counted(
    make_registry: Callable[..., BudgetRegistry], sink: CaptureSink
) -> None:
    stuck = threading.Event()
    registry = make_registry(callback_timeout_s=0.2)
    registry.add(
        Budget("alerting", "0.1", "day", action="block", thresholds=(0.01, 0.02, 0.03),
               on_alert=lambda alert: stuck.wait())
    )  # fmt: skip
    allowed = 0
    t0 = time.monotonic()
    for _ in range(30):
        reservation = registry.reserve(call())
        assert reservation is not None
        reservation.settle(Decimal("0.003"))
        allowed += 1
    assert registry.flush(timeout_s=5)
    assert allowed == 30 and time.monotonic() - t0 < 5
    assert registry.status("alerting").spent_usd == Decimal("0.090")
    assert registry.worker.callbacks.timed_out == 3
    assert sink.internal_errors.count("budget_callback") == 3
    stuck.set()


def test_a_callback_that_never_returns_does_not_keep_the_process_from_exiting(
    redis_server: str,
) -> None:
    script = f"""
import threading, time
from decimal import Decimal
from costwatch.budgets._budget import Budget, BudgetCall, BudgetRegistry
from costwatch.budgets._redis_backend import RedisBudgetBackend
registry = BudgetRegistry(RedisBudgetBackend.from_url({redis_server!r}), callback_timeout_s=0.1)
registry.add(Budget("b", "0.001", "day", thresholds=(0.5,),
                    on_alert=lambda a: threading.Event().wait()))
registry.charge(BudgetCall("openai", "m", "generation", "base", {{}}, None, 0, 0), Decimal("0.001"))
registry.flush()
print("done")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"


# --------------------------------------------------------------------------- injected client


def test_an_injected_client_carries_budgets_for_sync_and_async_calls(
    redis_server: str, capture: CaptureSink
) -> None:
    import asyncio

    import costwatch

    client = redis.Redis.from_url(redis_server, socket_timeout=1.0)
    costwatch.configure(
        service="t", strict=True, prometheus=False, otel=False, warm_up=False,
        redis_client=client, sinks=[capture],
    )  # fmt: skip
    try:
        costwatch.budget("injected", "0.0002", "day", action="block")

        @costwatch.generation(provider="openai", model="gpt-4o-mini")
        async def answer(prompt: str, max_tokens: int = 100) -> dict[str, Any]:
            return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 10, "completion_tokens": 5}}

        asyncio.run(answer("hi", max_tokens=100))
        budgets = costwatch.runtime().budgets
        assert isinstance(budgets.backend, RedisBudgetBackend)
        assert budgets.backend.client is client
        assert budgets.flush()
        with pytest.raises(BudgetExceeded):
            for _ in range(50):
                asyncio.run(answer("again", max_tokens=100))
                budgets.flush()
        assert budget_status(redis_server).count("injected") == 1
    finally:
        costwatch._configure.shutdown()
