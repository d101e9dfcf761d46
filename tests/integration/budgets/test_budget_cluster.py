"""Budgets on a real 3-master Redis Cluster (``redis_cluster``: three ``redis-server
--cluster-enabled yes`` processes joined by ``redis-cli --cluster create``).

Each budget's keys share one hash tag, so each script runs in one slot; a call matching budgets
on different nodes reserves on each (in parallel) and is still refused as a whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import costwatch
from costwatch._core.errors import BudgetExceeded
from costwatch.budgets import Budget, BudgetAlert
from costwatch.budgets._budget import BudgetCall, BudgetRegistry, budget_status
from costwatch.budgets._redis_backend import RedisBudgetBackend
from costwatch.pricing._catalog import Price
from tests._fixtures.capture import CaptureSink
from tests._fixtures.redis_cluster import RedisCluster

PRICE = Price(input=Decimal("0.000001"), output=Decimal("0.000004"))
WORST = Decimal("0.003")  # 1000 prompt tokens + 500 output tokens at PRICE


def call(tags: dict[str, str] | None = None) -> BudgetCall:
    return BudgetCall("openai", "gpt-4o-mini", "generation", "base", tags or {}, PRICE, 1000, 500)


def node_of(cluster: RedisCluster, backend: RedisBudgetBackend, name: str) -> int:
    node = backend.client.get_node_from_key("{cw:b:" + name + "}:spent")
    return cluster.index_of(int(node.port))


def names_on_nodes(cluster: RedisCluster, backend: RedisBudgetBackend) -> dict[int, str]:
    """One budget name per node."""
    found: dict[int, str] = {}
    for i in range(200):
        name = f"budget-{i}"
        found.setdefault(node_of(cluster, backend, name), name)
        if len(found) == len(cluster.nodes):
            return found
    raise AssertionError("no budget names on every node")


@pytest.fixture
def sink() -> CaptureSink:
    return CaptureSink()


@pytest.fixture
def registry(redis_cluster: RedisCluster, sink: CaptureSink) -> Iterator[BudgetRegistry]:
    backend = RedisBudgetBackend.from_url(redis_cluster.url, timeout_s=1.0)
    reg = BudgetRegistry(backend, time.time, lambda: (sink,))
    yield reg
    reg.close()


@pytest.fixture
def backend(registry: BudgetRegistry) -> RedisBudgetBackend:
    assert isinstance(registry.backend, RedisBudgetBackend)
    return registry.backend


def test_a_cluster_url_gives_a_cluster_client_and_every_node_serves_budgets(
    redis_cluster: RedisCluster, registry: BudgetRegistry, backend: RedisBudgetBackend
) -> None:
    assert backend.cluster
    names = names_on_nodes(redis_cluster, backend)
    for name in names.values():
        registry.add(Budget(name, "0.01", "day", action="block"))
    allowed = 0
    for _ in range(5):
        try:
            reservation = registry.reserve(call())
        except BudgetExceeded:
            continue
        assert reservation is not None
        reservation.settle(WORST)
        allowed += 1
        assert registry.flush()
    assert allowed == 3  # $0.003 each: the fourth would pass $0.01 on every node
    for name in names.values():
        assert registry.status(name).spent_usd == Decimal("0.009")


def test_a_call_matching_budgets_on_different_nodes_is_refused_as_a_whole(
    redis_cluster: RedisCluster, registry: BudgetRegistry, backend: RedisBudgetBackend
) -> None:
    names = names_on_nodes(redis_cluster, backend)
    roomy, tight = names[0], names[1]
    registry.add(Budget(roomy, 10, "day", action="block"))
    registry.add(Budget(tight, "0.001", "day", action="block"))
    with pytest.raises(BudgetExceeded) as caught:
        registry.reserve(call())
    assert caught.value.budget == tight
    assert registry.flush()
    # the hold the other node granted was released
    assert registry.status(roomy).reserved_usd == 0
    assert registry.status(roomy).holds == 0


def test_async_reservations_on_a_cluster_are_exact(
    redis_cluster: RedisCluster, registry: BudgetRegistry, backend: RedisBudgetBackend
) -> None:
    names = names_on_nodes(redis_cluster, backend)
    for name in names.values():
        registry.add(Budget(name, "0.03", "day", action="block"))

    async def run() -> int:
        async def one() -> bool:
            try:
                reservation = await registry.areserve(call())
            except BudgetExceeded:
                return False
            assert reservation is not None
            reservation.settle(WORST)
            return True

        return sum(await asyncio.gather(*(one() for _ in range(20))))

    assert asyncio.run(run()) == 10
    assert registry.flush()
    for name in names.values():
        assert registry.status(name).spent_usd == Decimal("0.030")


def test_a_node_down_applies_on_backend_error_deny(
    redis_cluster: RedisCluster, registry: BudgetRegistry, backend: RedisBudgetBackend
) -> None:
    names = names_on_nodes(redis_cluster, backend)
    registry.add(Budget(names[2], 10, "day", action="block", on_backend_error="deny"))
    assert registry.reserve(call()) is not None
    redis_cluster.nodes[2].stop()
    try:
        with pytest.raises(BudgetExceeded, match="on_backend_error='deny'"):
            registry.reserve(call())
    finally:
        redis_cluster.nodes[2].start()
        redis_cluster.wait_ok()


def test_a_master_restarted_empty_is_detected_counted_alerted_and_denied(
    redis_cluster: RedisCluster, registry: BudgetRegistry, backend: RedisBudgetBackend,
    sink: CaptureSink,
) -> None:  # fmt: skip
    names = names_on_nodes(redis_cluster, backend)
    alerts: list[BudgetAlert] = []
    lost_name, kept_name = names[1], names[0]
    registry.add(
        Budget(lost_name, "0.01", "day", action="block", on_state_lost="deny",
               on_alert=alerts.append)
    )  # fmt: skip
    registry.add(Budget(kept_name, "0.01", "day", action="block"))
    for _ in range(2):
        reservation = registry.reserve(call())
        assert reservation is not None
        reservation.settle(WORST)
    assert registry.flush()

    redis_cluster.restart(1)  # no persistence: the node comes back empty
    with pytest.raises(BudgetExceeded, match="on_state_lost='deny'") as caught:
        for _ in range(5):  # the breaker may see the restart first
            try:
                registry.reserve(call())
            except BudgetExceeded as exc:
                if "unavailable" not in str(exc):
                    raise
    assert caught.value.budget == lost_name
    assert registry.flush()
    assert sink.state_lost == [lost_name]
    assert [a.kind for a in alerts if a.kind == "state_lost"] == ["state_lost"]
    # the budget on the node that kept its data still counts its spend
    assert registry.status(kept_name).spent_usd == Decimal("0.006")


def test_configure_with_a_cluster_url_shares_a_block_budget(
    redis_cluster: RedisCluster, capture: CaptureSink
) -> None:
    costwatch.configure(
        service="t", strict=True, prometheus=False, otel=False, warm_up=False,
        redis_url=redis_cluster.node_url, redis_cluster=True, sinks=[capture],
    )  # fmt: skip
    try:
        costwatch.budget("cfg", "0.005", "day", action="block")

        @costwatch.generation(provider="openai", model="gpt-4o-mini")
        def answer(prompt: str, max_tokens: int = 500) -> dict[str, Any]:
            return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 10, "completion_tokens": 5}}

        answer("hi")
        rt = costwatch.runtime()
        assert isinstance(rt.budgets.backend, RedisBudgetBackend) and rt.budgets.backend.cluster
        assert rt.budgets.flush()
        assert rt.budgets.status("cfg").spent_usd > 0
        assert "cfg" in budget_status(redis_cluster.url)
    finally:
        costwatch._configure.shutdown()


def test_a_plain_url_to_one_cluster_node_applies_deny_and_keeps_settlements(
    redis_cluster: RedisCluster, sink: CaptureSink
) -> None:
    """Pointed at one node without saying "cluster", a budget whose slot lives elsewhere
    meets MOVED: that is an unknown budget state, so on_backend_error applies (it was
    silently allowed) and settlements stay queued (they were dropped)."""
    seed = RedisBudgetBackend.from_url(redis_cluster.url, timeout_s=1.0)
    elsewhere = next(n for i, n in names_on_nodes(redis_cluster, seed).items() if i != 0)
    seed.close()
    plain = RedisBudgetBackend.from_url(redis_cluster.node_url, timeout_s=1.0)
    assert not plain.cluster
    registry = BudgetRegistry(plain, time.time, lambda: (sink,))
    try:
        registry.add(Budget(elsewhere, 10, "day", action="block", on_backend_error="deny"))
        for _ in range(5):
            with pytest.raises(BudgetExceeded, match="redis\\+cluster://"):
                registry.reserve(call())
        registry.charge(call(), Decimal("0.5"))
        assert not registry.flush(timeout_s=1)
        assert len(registry.pending) >= 1  # kept for retry, not dropped
        assert "budget_backend" in sink.internal_errors
    finally:
        registry.worker.pending.clear()
        registry.close()


def test_a_cluster_with_no_reachable_node_denies_every_call_under_deny(
    redis_cluster: RedisCluster, registry: BudgetRegistry, backend: RedisBudgetBackend
) -> None:
    names = names_on_nodes(redis_cluster, backend)
    registry.add(Budget(names[0], 10, "day", action="block", on_backend_error="deny"))
    assert registry.reserve(call()) is not None
    for node in redis_cluster.nodes:
        node.stop()
    try:
        # redis-py's topology refresh then reaches no node and raises its own cluster errors
        # (not ConnectionError): each is an unreachable backend, never a call let through
        for _ in range(5):
            with pytest.raises(BudgetExceeded, match="on_backend_error='deny'"):
                registry.reserve(call())
            time.sleep(0.3)
    finally:
        for node in redis_cluster.nodes:
            node.start()
        redis_cluster.wait_ok()


def test_a_release_queued_while_a_node_is_down_never_drops_the_hold_of_the_call_asking_again(
    redis_cluster: RedisCluster, sink: CaptureSink
) -> None:
    """A call refused while its process has settlements queued releases what it was granted,
    flushes and asks again.  With a node down the flush cannot apply that release; if another
    process frees room meanwhile, the second attempt is granted, and the release applied
    later must not take the hold of the call now in flight."""
    url = redis_cluster.url
    registry = BudgetRegistry(
        RedisBudgetBackend.from_url(url, timeout_s=1.0), time.time, lambda: (sink,),
        retry_interval_s=60,
    )  # fmt: skip
    other = BudgetRegistry(RedisBudgetBackend.from_url(url, timeout_s=1.0), time.time)
    try:
        names = names_on_nodes(redis_cluster, registry.backend)  # type: ignore[arg-type]
        held, gate, elsewhere = names[0], names[1], names[2]
        hot, cold = {"team": "hot"}, {"team": "cold"}
        deny: dict[str, Any] = {"action": "block", "match": hot, "on_backend_error": "deny"}
        registry.add(Budget(held, 10, "day", **deny))
        registry.add(Budget(gate, "0.004", "day", **deny))
        registry.add(Budget(elsewhere, 10, "day", match=cold))
        other.add(Budget(gate, "0.004", "day", action="block", match=hot))
        assert registry.flush() and other.flush()
        rival = other.reserve(call(hot))  # another process holds $0.003 of the gate's $0.004
        assert rival is not None

        redis_cluster.nodes[2].stop()
        registry.charge(call(cold), Decimal("0.001"))  # queued for the node that is down

        real_flush = registry.worker.flush

        def flush_then_the_rival_settles(timeout_s: float = 5.0) -> bool:
            done = real_flush(timeout_s)
            rival.settle(Decimal(0))
            # its worker retries until redis-py has routed around the stopped node
            assert any(other.flush() for _ in range(5))
            return done

        registry.worker.flush = flush_then_the_rival_settles  # type: ignore[method-assign]
        reservation = registry.reserve(call(hot))  # refused by the gate, then granted
        registry.worker.flush = real_flush  # type: ignore[method-assign]
        assert reservation is not None

        redis_cluster.nodes[2].start()
        redis_cluster.wait_ok()
        assert registry.flush()  # the first attempt's release reaches Redis now
        assert registry.status(held).reserved_usd == WORST  # the call in flight is still held
        assert registry.status(gate).reserved_usd == WORST

        reservation.settle(WORST)
        assert registry.flush()
        assert registry.status(held).spent_usd == WORST
        assert registry.status(held).reserved_usd == 0
    finally:
        if redis_cluster.nodes[2].proc is None or redis_cluster.nodes[2].proc.poll() is not None:
            redis_cluster.nodes[2].start()
            redis_cluster.wait_ok()
        registry.close()
        other.close()


def test_a_cluster_down_as_the_host_starts_applies_deny_then_serves_budgets_once_up(
    redis_cluster: RedisCluster, capture: CaptureSink
) -> None:
    """redis-py builds its cluster client by reaching a node: with none reachable while the
    host configures costwatch and registers its budgets, that is an unreachable backend, not
    an exception in the host's start-up; the budget applies once a node answers."""
    for node in redis_cluster.nodes:
        node.stop()
    try:
        costwatch.configure(
            service="t", prometheus=False, otel=False, warm_up=False,
            redis_url=redis_cluster.url, sinks=[capture],
        )  # fmt: skip
        costwatch.budget("boot", "0.005", "day", action="block", on_backend_error="deny")

        @costwatch.generation(provider="openai", model="gpt-4o-mini")
        def answer(prompt: str, max_tokens: int = 500) -> dict[str, Any]:
            return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 10, "completion_tokens": 5}}

        with pytest.raises(BudgetExceeded, match="on_backend_error='deny'"):
            answer("hi")
        assert "budget_backend" in capture.internal_errors
    finally:
        for node in redis_cluster.nodes:
            node.start()
        redis_cluster.wait_ok()
    try:
        rt = costwatch.runtime()
        deadline = time.monotonic() + 10
        while True:  # the breaker lets a probe through after its cool-down
            try:
                answer("hi")
                break
            except BudgetExceeded:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert rt.budgets.flush()
        assert rt.budgets.status("boot").spent_usd > 0
    finally:
        costwatch._configure.shutdown()
