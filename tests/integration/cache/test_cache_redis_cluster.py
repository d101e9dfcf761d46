"""RetrievalCache on a real 3-master Redis Cluster (``redis_cluster``: three ``redis-server
--cluster-enabled yes`` processes joined by ``redis-cli --cluster create``).

Every key of one entry (entry, namespace generation, stampede lock) shares one hash tag, so
each script runs in one slot; tenants and sources spread over the nodes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.cluster

import costwatch
from costwatch._core.breaker import CircuitBreaker
from costwatch.cache import RedisBackend, RetrievalCache
from costwatch.cache._codec import decode_entry
from tests._fixtures.cache_redis import configure_on, is_entry_key
from tests._fixtures.cache_worker import run_workers
from tests._fixtures.capture import CaptureSink as Capture
from tests._fixtures.redis_cluster import RedisCluster


@pytest.fixture
def sink(cw: Any, redis_cluster: RedisCluster) -> Capture:
    return configure_on(cw, redis_cluster.url)


@pytest.fixture
def client(redis_cluster: RedisCluster) -> Iterator[redis.cluster.RedisCluster]:
    c = redis.cluster.RedisCluster.from_url(redis_cluster.node_url)
    yield c
    c.close()


def entry_keys(client: redis.cluster.RedisCluster) -> list[bytes]:
    keys = client.keys(b"cw:c:*", target_nodes=redis.cluster.RedisCluster.ALL_NODES)
    return [k for k in keys if is_entry_key(k)]


def node_of(cluster: RedisCluster, client: redis.cluster.RedisCluster, key: bytes | str) -> int:
    return cluster.index_of(int(client.get_node_from_key(key).port))


def tenant_per_node(cluster: RedisCluster, client: redis.cluster.RedisCluster) -> dict[int, str]:
    """One tenant whose ``kb`` entries live on each node."""
    found: dict[int, str] = {}
    for i in range(500):
        tenant = f"tenant-{i}"
        found.setdefault(node_of(cluster, client, "cw:c:{test:" + tenant + ":kb}:gen"), tenant)
        if len(found) == len(cluster.nodes):
            return found
    raise AssertionError("no tenant on every node")


calls: list[str] = []


def search(query: str) -> list[str]:
    calls.append(query)
    return [f"doc about {query}"]


@pytest.fixture(autouse=True)
def _no_calls() -> None:
    calls.clear()


def test_entries_of_tenants_on_every_node_hit_miss_and_keep_their_keys_in_one_slot(
    sink: Capture, redis_cluster: RedisCluster, client: redis.cluster.RedisCluster
) -> None:
    cache = RetrievalCache(ttl=60)
    cached = cache.wrap(search, source="kb")
    tenants = tenant_per_node(redis_cluster, client)
    for tenant in tenants.values():
        with costwatch.tags(tenant=tenant):
            assert cached("q") == ["doc about q"]
            assert cached("q") == ["doc about q"]
    assert calls == ["q"] * 3
    assert sink.results() == ["miss", "hit"] * 3
    backend = cache._resolver.current().backend
    assert isinstance(backend, RedisBackend) and backend.cluster and backend.tracker is None
    keys = entry_keys(client)
    assert sorted(node_of(redis_cluster, client, k) for k in keys) == [0, 1, 2]
    for key in keys:
        tag = key[: key.index(b"}") + 2]
        slots = {client.keyslot(k) for k in (key, tag + b"gen", tag + b"lock:x")}
        assert len(slots) == 1
        raw = client.get(key)
        assert raw is not None and decode_entry(raw, 0) is not None
    for tenant in tenants.values():  # O(1) invalidation, on whichever node holds the tenant
        cache.invalidate(tenant)
    with costwatch.tags(tenant=tenants[1]):
        assert cached("q") == ["doc about q"]
    assert calls == ["q"] * 4
    assert sink.results()[-1] == "miss"


async def test_asyncio_functions_hit_through_the_asyncio_cluster_client(
    sink: Capture, redis_cluster: RedisCluster, client: redis.cluster.RedisCluster
) -> None:
    async def asearch(query: str) -> list[str]:
        calls.append(query)
        return [f"doc about {query}"]

    cached = RetrievalCache(ttl=60).wrap(asearch, source="kb")
    for tenant in tenant_per_node(redis_cluster, client).values():
        with costwatch.tags(tenant=tenant):
            assert await cached("q") == ["doc about q"]
            assert await cached("q") == ["doc about q"]
    assert calls == ["q"] * 3
    assert sink.results() == ["miss", "hit"] * 3


def test_a_standalone_client_on_one_node_gets_moved_and_never_opens_the_breaker(
    cw: Any,
    redis_cluster: RedisCluster,
    client: redis.cluster.RedisCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The URL of one node without the cluster form: keys on that node are served, keys on
    the others are answered MOVED — an error for those calls, never an open breaker that
    would stop serving everyone."""
    capture = configure_on(cw, redis_cluster.node_url)
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=60)
    cached = RetrievalCache(ttl=60, breaker=breaker).wrap(search, source="kb")
    tenants = tenant_per_node(redis_cluster, client)
    with caplog.at_level(logging.WARNING, logger="costwatch.cache"):
        for _ in range(3):
            for index in (1, 2):
                with costwatch.tags(tenant=tenants[index]):
                    assert cached("q") == ["doc about q"]
    assert capture.results() == ["error"] * 6
    assert breaker.state == "closed" and breaker.opened_count == 0
    assert "redis+cluster://" in caplog.text
    with costwatch.tags(tenant=tenants[0]):  # the node the URL names still serves its keys
        cached("q")
        cached("q")
    assert capture.results()[-2:] == ["miss", "hit"]


def test_a_master_down_stops_the_cache_only_for_its_keys_and_comes_back_empty(
    sink: Capture, redis_cluster: RedisCluster, client: redis.cluster.RedisCluster
) -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=0.2)
    cached = RetrievalCache(ttl=60, breaker=breaker).wrap(search, source="kb")
    tenants = tenant_per_node(redis_cluster, client)
    for tenant in tenants.values():
        with costwatch.tags(tenant=tenant):
            cached("q")
    assert sink.results() == ["miss"] * 3

    node = redis_cluster.nodes[1]
    node.stop()
    for _ in range(4):
        with costwatch.tags(tenant=tenants[1]):  # its node is down: the call goes through
            assert cached("q") == ["doc about q"]
        for index in (0, 2):  # the other masters' breakers stay closed: still served
            with costwatch.tags(tenant=tenants[index]):
                assert cached("q") == ["doc about q"]
    assert sink.results()[3:] == ["error", "hit", "hit"] * 4
    node.start()  # empty: no persistence; it rejoins with its slots
    redis_cluster.wait_ok()

    deadline = time.monotonic() + 20
    results: list[str] = []
    while time.monotonic() < deadline:
        with costwatch.tags(tenant=tenants[1]):
            assert cached("q") == ["doc about q"]
        results.append(sink.results()[-1])
        if results[-2:] == ["miss", "hit"]:
            break
        time.sleep(0.05)
    assert results[-2:] == ["miss", "hit"]  # its entry went with the restart, then is back
    assert set(results[:-2]) <= {"error"}
    for index in (0, 2):  # the other masters kept their entries
        with costwatch.tags(tenant=tenants[index]):
            cached("q")
        assert sink.results()[-1] == "hit"
    assert calls == ["q"] * (3 + 4 + 1)


def test_processes_racing_over_many_keys_on_the_cluster_run_each_once(
    redis_cluster: RedisCluster,
) -> None:
    outputs = run_workers(redis_cluster.url, 3, keys=60, threads=3)
    assert sum(o["runs"] for o in outputs) == 60
    assert sum(o["results"].get("hit", 0) for o in outputs) == 3 * 3 * 60 - 60


def test_a_planted_oversized_value_on_a_cluster_node_is_never_read_whole(
    sink: Capture, redis_cluster: RedisCluster, client: redis.cluster.RedisCluster
) -> None:
    cached = RetrievalCache(ttl=60, max_value_bytes=4096).wrap(search, source="kb")
    cached("q")
    [key] = entry_keys(client)
    client.set(key, b'[1,0,"0.5",["' + b"x" * 20_000_000 + b'"]]')
    node = client.get_node_from_key(key)
    stats: Any = client.info("stats", target_nodes=node)
    before = int(stats["total_net_output_bytes"])
    assert cached("q") == ["doc about q"]
    stats = client.info("stats", target_nodes=node)
    assert int(stats["total_net_output_bytes"]) - before < 100_000
    assert sink.results() == ["miss", "miss"]
    stored = client.get(key)
    assert stored is not None and len(stored) < 100
    cached("q")
    assert sink.results()[-1] == "hit"
