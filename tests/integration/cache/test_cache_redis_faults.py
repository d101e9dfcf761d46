"""Redis killed, hung or restarted under a RetrievalCache: the host never notices but in metrics.

These tests own their redis-server process (started on a free loopback port, killed by pid).
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from costwatch._core.breaker import CircuitBreaker
from costwatch.cache._retrieval_cache import RetrievalCache, last_lookup_var
from tests._fixtures.cache_redis import configure_on
from tests._fixtures.capture import CaptureSink as Capture
from tests._fixtures.redis_proc import RedisProcess, free_port

COOLDOWN_S = 0.3


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    proc = RedisProcess()
    proc.start()
    yield proc
    proc.cleanup()


@pytest.fixture
def sink(cw: Any, own_redis: RedisProcess) -> Capture:
    return configure_on(cw, own_redis.url, timeout_s=0.05)


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def search(self, query: str) -> list[str]:
        self.calls += 1
        return [f"answer {self.calls} to {query}"]


def median_overhead_s(cached: Callable[[str], Any], bare: Callable[[str], Any]) -> float:
    cached_times, bare_times = [], []
    for i in range(300):
        t0 = time.perf_counter()
        cached(f"q{i}")
        t1 = time.perf_counter()
        bare(f"q{i}")
        t2 = time.perf_counter()
        cached_times.append(t1 - t0)
        bare_times.append(t2 - t1)
    return statistics.median(cached_times) - statistics.median(bare_times)


def test_redis_killed_mid_run_then_restarted(sink: Capture, own_redis: RedisProcess) -> None:
    counter = Counter()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=COOLDOWN_S)
    search = RetrievalCache(ttl=60, breaker=breaker).wrap(counter.search, source="kb")
    assert search("warm") == ["answer 1 to warm"]
    assert search("warm") == ["answer 1 to warm"]
    assert sink.results() == ["miss", "hit"]

    own_redis.stop()
    # Every call returns the function's own result while Redis is gone: nothing raises, even
    # in strict mode, because Redis being down is not a costwatch bug.
    for i in range(2, 8):
        assert search("warm") == [f"answer {i} to warm"]
        assert last_lookup_var.get() == "error"
    assert breaker.state == "open"
    assert sink.results()[2:] == ["error"] * 6

    # With the breaker open a call costs microseconds more than the bare function.
    assert median_overhead_s(search, counter.search) < 0.001
    worst = max(_timed(search, f"w{i}") - _timed(counter.search, f"w{i}") for i in range(50))
    assert worst < 0.005

    own_redis.start()
    time.sleep(COOLDOWN_S + 0.05)
    first = search("after restart")  # the half-open probe: Redis answers, the cache misses
    assert search("after restart") == first
    assert sink.results()[-2:] == ["miss", "hit"]
    assert breaker.state == "closed"


def _timed(fn: Callable[[str], Any], arg: str) -> float:
    t0 = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t0


def test_a_probe_that_finds_redis_still_down_keeps_the_breaker_open(
    sink: Capture, own_redis: RedisProcess
) -> None:
    counter = Counter()
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=COOLDOWN_S)
    search = RetrievalCache(ttl=60, breaker=breaker).wrap(counter.search, source="kb")
    own_redis.stop()
    search("a")
    search("a")
    assert breaker.state == "open"
    time.sleep(COOLDOWN_S + 0.05)
    search("a")
    assert breaker.state == "open"
    assert breaker.opened_count == 2
    assert counter.calls == 3


async def test_async_calls_fail_open_and_recover_too(
    sink: Capture, own_redis: RedisProcess
) -> None:
    calls = []

    async def search(query: str) -> list[str]:
        calls.append(query)
        n = len(calls)
        await asyncio.sleep(0)
        return [f"answer {n}"]

    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=COOLDOWN_S)
    cached = RetrievalCache(ttl=60, breaker=breaker).wrap(search, source="kb")
    assert await cached("q") == ["answer 1"]
    assert await cached("q") == ["answer 1"]
    own_redis.stop()
    results = [await cached("q") for _ in range(5)]
    assert results == [[f"answer {i}"] for i in range(2, 7)]
    assert breaker.state == "open"
    together = await asyncio.gather(*(cached("q") for _ in range(20)))
    assert len(calls) == 26
    assert sorted(a[0] for a in together) == sorted(f"answer {i}" for i in range(7, 27))
    own_redis.start()
    await asyncio.sleep(COOLDOWN_S + 0.05)
    fresh = await cached("q")
    assert await cached("q") == fresh
    assert sink.results()[-2:] == ["miss", "hit"]


def test_redis_dying_between_lookup_and_store_still_returns_the_value(
    sink: Capture, own_redis: RedisProcess
) -> None:
    def search(query: str) -> list[str]:
        own_redis.stop()  # Redis goes away while the function runs
        return ["computed"]

    cached = RetrievalCache(ttl=60).wrap(search, source="kb")
    assert cached("q") == ["computed"]
    assert sink.results() == ["error"]


def test_waiting_threads_call_through_when_the_leader_loses_redis(
    sink: Capture, own_redis: RedisProcess
) -> None:
    calls = []
    barrier = threading.Barrier(8)

    def search(query: str) -> list[str]:
        calls.append(query)
        time.sleep(0.1)
        return ["doc"]

    cached = RetrievalCache(ttl=60).wrap(search, source="kb")
    own_redis.stop()
    results: list[list[str]] = []

    def worker() -> None:
        barrier.wait()
        results.append(cached("q"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [["doc"]] * 8
    assert set(sink.results()) == {"error"}


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback TCP port that accepts connections and never answers (a hung Redis)."""
    port = free_port()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{port}/0"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_hung_redis_costs_one_short_timeout_per_call_until_the_breaker_opens(
    cw: Any, silent_server: str
) -> None:
    capture = Capture()
    cw.configure(
        service="test",
        strict=True,
        prometheus=False,
        redis_url=silent_server,
        redis_timeout_s=0.05,
        sinks=[capture],
    )
    counter = Counter()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=30)
    search = RetrievalCache(ttl=60, breaker=breaker).wrap(counter.search, source="kb")
    slow = [_timed(search, "q") for _ in range(3)]
    assert all(0.04 <= t < 0.5 for t in slow), slow  # one timeout, no retries with backoff
    assert breaker.state == "open"
    assert median_overhead_s(search, counter.search) < 0.001
    assert counter.calls == 3 + 2 * 300  # every call ran the function itself
    assert set(capture.results()) == {"error"}


def test_invalidate_raises_when_redis_is_unreachable(
    sink: Capture, own_redis: RedisProcess
) -> None:
    cache = RetrievalCache(ttl=60)
    cache.wrap(Counter().search, source="kb")("q")
    own_redis.stop()
    with pytest.raises(ConnectionError):
        cache.invalidate()
