"""RetrievalCache against a real redis-server: hits, expiry, isolation, stampedes, planted data."""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

import costwatch
from costwatch.cache._backend import RedisBackend
from costwatch.cache._codec import decode_entry
from costwatch.cache._retrieval_cache import RetrievalCache, last_lookup_var
from costwatch.cache._tracking import GenerationTracker
from tests._fixtures.cache_redis import configure_on, entry_keys
from tests._fixtures.cache_worker import run_workers
from tests._fixtures.capture import CaptureSink as Capture
from tests._fixtures.threads import all_at_once

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def sink(cw: Any, redis_server: str) -> Capture:
    # test_cache_redis_faults.py covers short timeouts.
    return configure_on(cw, redis_server)


@pytest.fixture
def client(redis_server: str) -> Iterator[redis.Redis[bytes]]:
    c: redis.Redis[bytes] = redis.Redis.from_url(redis_server)
    yield c
    c.close()


class AsyncEcho:
    """An asyncio retriever that returns its query as the one document."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def search(self, query: str) -> list[str]:
        self.calls.append(query)
        return [query]


def _kb_cache() -> tuple[Retriever, RetrievalCache, Callable[..., list[dict[str, Any]]]]:
    """A retriever, a 60 s cache, and the retriever of source ``kb`` served through it."""
    r, cache = Retriever(), RetrievalCache(ttl=60)
    return r, cache, cache.wrap(r.search, source="kb")


def _async_kb_cache() -> tuple[AsyncEcho, RetrievalCache, Callable[[str], Awaitable[list[str]]]]:
    """An asyncio retriever, a 60 s cache, and the retriever of source ``kb`` served through it."""
    echo, cache = AsyncEcho(), RetrievalCache(ttl=60)
    return echo, cache, cache.wrap(echo.search, source="kb")


class Retriever:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.cost = Decimal(0)
        self._lock = threading.Lock()

    def search(self, query: str, k: int = 3) -> list[dict[str, Any]]:
        with self._lock:
            self.calls.append(query)
        rec = costwatch.record(
            provider="openai", model="text-embedding-3-small", input_tokens=1200, stage="embedding"
        )
        assert rec is not None and rec.cost_usd is not None
        self.cost = rec.cost_usd
        return [{"text": f"doc {i} about {query}", "score": 0.9 - i / 10} for i in range(k)]


def test_hit_miss_and_saved_dollars_are_exact_through_redis(
    sink: Capture, client: redis.Redis[bytes]
) -> None:
    r = Retriever()
    search = RetrievalCache(ttl=60).wrap(r.search, source="kb")
    first = search("how do refunds work")
    for _ in range(4):
        assert search(query="how do refunds work") == first
    assert r.calls == ["how do refunds work"]
    assert sink.results() == ["miss"] + ["hit"] * 4
    totals = costwatch.summary().cache["kb"]
    assert (totals.hits, totals.misses, totals.errors, totals.skips) == (4, 1, 0, 0)
    assert totals.saved_usd == 4 * r.cost
    assert r.cost == Decimal("1200") * Decimal("0.02") / Decimal(1_000_000)
    [key] = entry_keys(client)
    assert key.startswith(b"cw:c:{test::kb}:")
    raw = client.get(key)
    assert raw is not None and decode_entry(raw, 0) is not None
    assert b"refunds" not in key


def test_a_second_configuration_shares_the_entries_of_the_same_function(
    cw: Any, redis_server: str
) -> None:
    """Two caches over the same Redis (as after a reconfiguration) see each other's entries of
    one function; another retriever object's method is another function unless both caches
    name it with the same key_namespace."""
    r1, r2 = Retriever(), Retriever()
    cw.configure(
        service="test", strict=True, prometheus=False, redis_url=redis_server, redis_timeout_s=2.0
    )
    RetrievalCache(ttl=60).wrap(r1.search, source="kb")("q")
    RetrievalCache(ttl=60, key_namespace="kb-search").wrap(r1.search, source="kb")("q")
    cw.configure(
        service="test", strict=True, prometheus=False, redis_url=redis_server, redis_timeout_s=2.0
    )
    RetrievalCache(ttl=60).wrap(r1.search, source="kb")("q")
    assert len(r1.calls) == 2
    RetrievalCache(ttl=60).wrap(r2.search, source="kb")("q")
    assert len(r2.calls) == 1
    RetrievalCache(ttl=60, key_namespace="kb-search").wrap(r2.search, source="kb")("q")
    assert len(r2.calls) == 1


def test_entries_expire_with_their_jittered_ttl(sink: Capture, client: redis.Redis[bytes]) -> None:
    r = Retriever()
    search = RetrievalCache(ttl=0.3).wrap(r.search, source="kb")
    t0 = time.monotonic()
    search("q")
    [key] = entry_keys(client)
    left = client.pttl(key)
    elapsed_ms = (time.monotonic() - t0) * 1000
    assert 270 - elapsed_ms - 1 <= left <= 300  # up to 10 % jitter taken off the TTL
    search("q")
    time.sleep(0.35)
    search("q")
    assert sink.results() == ["miss", "hit", "miss"]
    assert len(r.calls) == 2


def test_skip_for_unkeyable_arguments_and_unstorable_values(
    sink: Capture, client: redis.Redis[bytes]
) -> None:
    def search(query: object) -> object:
        return query if isinstance(query, str) else ["doc"]

    cached = RetrievalCache(ttl=60, max_value_bytes=100).wrap(search, source="kb")
    cached(object())
    cached("x" * 200)
    assert sink.results() == ["skip", "skip"]
    assert entry_keys(client) == []


def test_invalidate_is_one_generation_bump_not_a_key_scan(
    sink: Capture, client: redis.Redis[bytes]
) -> None:
    r, cache, search = _kb_cache()
    for q in ("a", "b", "c"):
        search(q)
    assert client.get(b"cw:c:{test::kb}:gen") is None
    cache.invalidate()
    assert client.get(b"cw:c:{test::kb}:gen") == b"1"
    assert len(entry_keys(client)) == 3  # old entries stay until their TTL, never served
    for q in ("a", "b", "c"):
        search(q)
    assert len(r.calls) == 6
    for q in ("a", "b", "c"):
        search(q)
    assert len(r.calls) == 6
    assert sink.results() == ["miss"] * 6 + ["hit"] * 3


async def test_async_invalidate_goes_through_redis_asyncio(
    sink: Capture, client: redis.Redis[bytes]
) -> None:
    echo, cache, cached = _async_kb_cache()
    await cached("q")
    await cached("q")
    await cache.ainvalidate()
    await cached("q")
    assert echo.calls == ["q", "q"]
    assert client.get(b"cw:c:{test::kb}:gen") == b"1"


def test_tenants_are_isolated_in_separate_namespaces(
    sink: Capture, client: redis.Redis[bytes]
) -> None:
    r, cache, search = _kb_cache()
    for tenant in ("acme", "globex", "acme", "globex"):
        with costwatch.tags(tenant=tenant):
            search("same question")
    assert len(r.calls) == 2
    keys = sorted(entry_keys(client))
    assert [k.split(b"}")[0] for k in keys] == [b"cw:c:{test:acme:kb", b"cw:c:{test:globex:kb"]
    with costwatch.tags(tenant="acme"):
        cache.invalidate()
        search("same question")
    with costwatch.tags(tenant="globex"):
        search("same question")
    assert len(r.calls) == 3
    tenants = [(e.tenant, e.result) for e in sink.events]
    assert tenants[-2:] == [("acme", "miss"), ("globex", "hit")]


class Exploit:
    """Unpickling this would create a file: it must never happen."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("kind", ["pickle", "garbage", "json-of-wrong-shape", "truncated"])
def test_planted_payloads_are_a_miss_never_unpickled_and_get_overwritten(
    sink: Capture, client: redis.Redis[bytes], tmp_path: Path, kind: str
) -> None:
    marker = tmp_path / "unpickled"
    r = Retriever()
    search = RetrievalCache(ttl=60).wrap(r.search, source="kb")
    expected = search("q")
    [key] = entry_keys(client)
    planted = {
        "pickle": pickle.dumps(Exploit(marker)),
        "garbage": os.urandom(64),
        "json-of-wrong-shape": b'{"__class__": "os.system", "args": ["true"]}',
        "truncated": (client.get(key) or b"")[:-5],
    }[kind]
    client.set(key, planted)
    assert search("q") == expected
    assert not marker.exists()
    assert len(r.calls) == 2
    assert sink.results() == ["miss", "miss"]
    stored = client.get(key)
    assert stored is not None and decode_entry(stored, 0) is not None
    assert search("q") == expected
    assert len(r.calls) == 2


def test_sixteen_threads_on_one_cold_key_run_the_function_once(sink: Capture) -> None:
    calls = []

    def search(query: str) -> list[str]:
        calls.append(query)
        time.sleep(0.2)
        return ["doc"]

    cached = RetrievalCache(ttl=60).wrap(search, source="kb")
    results = all_at_once(lambda: cached("q"), 16)
    assert calls == ["q"]
    assert results == [["doc"]] * 16
    assert sorted(sink.results()) == ["hit"] * 15 + ["miss"]


async def test_two_hundred_tasks_on_one_cold_key_run_the_function_once(sink: Capture) -> None:
    calls = []

    async def search(query: str) -> list[str]:
        calls.append(query)
        await asyncio.sleep(0.1)
        return ["doc"]

    cached = RetrievalCache(ttl=60).wrap(search, source="kb")
    results = await asyncio.gather(*(cached("q") for _ in range(200)))
    assert calls == ["q"]
    assert all(r == ["doc"] for r in results)
    assert sorted(sink.results()) == ["hit"] * 199 + ["miss"]
    assert await cached("q") == ["doc"]
    assert sink.results()[-1] == "hit"


_PROCESS_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import redis
    import costwatch
    from costwatch.cache._retrieval_cache import RetrievalCache, last_lookup_var

    url = sys.argv[1]
    start_at, work_s, lock_timeout = (float(a) for a in sys.argv[2:5])
    costwatch.configure(service="test", redis_url=url, prometheus=False, strict=True,
                        redis_timeout_s=2.0, warm_up=False)
    counter = redis.Redis.from_url(url)

    def search(query):
        counter.incr("test:runs")
        time.sleep(work_s)
        return ["doc about " + query]

    search.__module__ = "stampede"
    cached = RetrievalCache(ttl=60, lock_timeout=lock_timeout).wrap(search, source="kb")
    while time.time() < start_at:
        time.sleep(0.001)
    value = cached("cold question")
    assert value == ["doc about cold question"], value
    print(last_lookup_var.get())
    """
)


def run_two_processes(redis_url: str, work_s: float, lock_timeout: float) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start_at = time.time() + 3.0  # both interpreters are up and waiting by then, even under load
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _PROCESS_SCRIPT,
                redis_url,
                str(start_at),
                str(work_s),
                str(lock_timeout),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        outputs.append(out.strip())
    return outputs


def test_two_processes_on_one_cold_key_run_the_function_exactly_once(
    redis_server: str, client: redis.Redis[bytes]
) -> None:
    results = run_two_processes(redis_server, work_s=0.3, lock_timeout=5.0)
    assert client.get("test:runs") == b"1"
    assert sorted(results) == ["hit", "miss"]


def test_two_processes_run_it_at_most_once_each_side_of_the_lock_timeout(
    redis_server: str, client: redis.Redis[bytes]
) -> None:
    results = run_two_processes(redis_server, work_s=0.8, lock_timeout=0.2)
    assert client.get("test:runs") == b"2"
    assert sorted(results) == ["miss", "miss"]
    assert entry_keys(client)


def test_a_function_that_raises_releases_the_lock_at_once(
    sink: Capture, client: redis.Redis[bytes]
) -> None:
    def search(query: str) -> list[str]:
        raise LookupError("index offline")

    cached = RetrievalCache(ttl=60, lock_timeout=30).wrap(search, source="kb")
    with pytest.raises(LookupError):
        cached("q")
    assert [k for k in client.scan_iter(b"*:lock:*")] == []
    assert entry_keys(client) == []


def test_the_local_lru_sits_in_front_of_redis(sink: Capture, client: redis.Redis[bytes]) -> None:
    r = Retriever()
    search = RetrievalCache(ttl=60, local_size=16, local_ttl=0.2).wrap(r.search, source="kb")
    search("q")
    client.flushdb()
    search("q")  # local hit: Redis is not asked
    assert len(r.calls) == 1
    time.sleep(0.25)
    search("q")
    assert len(r.calls) == 2
    assert sink.results() == ["miss", "hit", "miss"]


def test_local_lru_is_filled_by_redis_hits(sink: Capture, client: redis.Redis[bytes]) -> None:
    r = Retriever()
    shared = RetrievalCache(ttl=60).wrap(r.search, source="kb")
    shared("q")
    local = RetrievalCache(ttl=60, local_size=4).wrap(r.search, source="kb")
    local("q")  # a Redis hit, copied into the LRU
    client.flushdb()
    assert local("q")[0]["text"] == "doc 0 about q"
    assert len(r.calls) == 1
    assert sink.events[-1].saved_usd == r.cost


def test_the_retrieval_decorator_counts_hits_and_savings_in_summary(sink: Capture) -> None:
    calls = []

    @costwatch.retrieval(source="kb", cache=costwatch.RetrievalCache(ttl=60))
    def search(query: str, k: int = 2) -> list[dict[str, str]]:
        calls.append(query)
        costwatch.record(
            provider="openai", model="text-embedding-3-small", input_tokens=500, stage="embedding"
        )
        return [{"text": f"doc {i}"} for i in range(k)]

    for _ in range(5):
        search("q")
    summary = costwatch.summary()
    assert calls == ["q"]
    cache = summary.cache["kb"]
    assert (cache.hits, cache.misses) == (4, 1)
    assert cache.saved_usd == 4 * Decimal(500) * Decimal("0.02") / Decimal(1_000_000)
    assert summary.cache_saved_usd == cache.saved_usd
    assert last_lookup_var.get() == "hit"


def _commands(client: redis.Redis[bytes]) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name: int(v["calls"]) for name, v in stats.items()}


def _tracker(cache: RetrievalCache) -> GenerationTracker:
    backend = cache._resolver.current().backend
    assert isinstance(backend, RedisBackend) and backend.tracker is not None
    return backend.tracker


def test_a_hit_is_one_bounded_read_while_redis_tracks_the_generation(
    sink: Capture, client: redis.Redis[bytes]
) -> None:
    cache = RetrievalCache(ttl=60)
    search = cache.wrap(Retriever().search, source="kb")
    search("q")  # a miss: its read asks the tracker to read the generation
    assert _tracker(cache).wait()
    client.config_resetstat()
    for _ in range(5):
        search("q")
    calls = _commands(client)
    assert calls.get("cmdstat_getrange") == 5
    assert "cmdstat_evalsha" not in calls
    assert sink.results() == ["miss"] + ["hit"] * 5


async def test_an_asyncio_hit_is_one_bounded_read_and_hears_other_processes_via_the_tracker(
    sink: Capture, client: redis.Redis[bytes]
) -> None:
    echo, cache, cached = _async_kb_cache()
    await cached("q")
    assert _tracker(cache).wait()
    client.config_resetstat()
    for _ in range(3):
        assert await cached("q") == ["q"]
    stats = _commands(client)
    assert stats.get("cmdstat_getrange") == 3
    assert "cmdstat_evalsha" not in stats
    client.incr(b"cw:c:{test::kb}:gen")
    assert _tracker(cache).sync()
    await cached("q")
    assert echo.calls == ["q", "q"]
    assert sink.results() == ["miss", "hit", "hit", "hit", "miss"]


def test_another_process_invalidation_reaches_this_one_through_redis(
    sink: Capture, client: redis.Redis[bytes]
) -> None:
    r, cache, search = _kb_cache()
    search("q")
    assert _tracker(cache).wait()
    search("q")
    client.incr(b"cw:c:{test::kb}:gen")  # what another process's invalidate() does
    assert _tracker(cache).sync()
    search("q")
    assert len(r.calls) == 2
    assert sink.results() == ["miss", "hit", "miss"]
    raw = client.get(entry_keys(client)[0])
    assert raw is not None and decode_entry(raw, 1) is not None


def test_a_flush_or_a_lost_tracking_connection_forgets_every_generation(
    sink: Capture, client: redis.Redis[bytes]
) -> None:
    r, cache, search = _kb_cache()
    search("q")
    tracker = _tracker(cache)
    assert tracker.wait() and tracker.known == {"cw:c:{test::kb}:gen": 0}

    client.flushall()
    assert tracker.sync()
    assert tracker.known == {}
    search("q")  # the entry went with the flush
    assert len(r.calls) == 2

    assert tracker.wait() and tracker.known
    client.client_kill_filter(_type="pubsub")  # Redis can no longer tell us about writes
    deadline = time.monotonic() + 5
    while tracker.known and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tracker.known == {}
    client.config_resetstat()
    search("q")  # read with its generation again, and tracked anew
    assert _commands(client).get("cmdstat_evalsha") == 1
    assert tracker.wait() and tracker.known == {"cw:c:{test::kb}:gen": 0}
    assert len(r.calls) == 2


def test_a_bug_in_the_tracking_thread_is_counted_and_hits_keep_working(
    cw: Any, redis_server: str, client: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = Capture()
    cw.configure(
        service="test",
        strict=False,
        prometheus=False,
        redis_url=redis_server,
        redis_timeout_s=2.0,
        sinks=[capture],
    )

    def broken(self: GenerationTracker) -> None:
        raise RuntimeError("a costwatch bug")

    monkeypatch.setattr(GenerationTracker, "_connect", broken)
    backend = RedisBackend(redis_server, timeout_s=2.0)  # its own tracker, not yet started
    r = Retriever()
    cache = RetrievalCache(ttl=60, backend=backend)
    search = cache.wrap(r.search, source="kb")
    try:
        search("q")
        tracker = _tracker(cache)
        assert tracker.wait()
        assert capture.internal_errors == ["cache"]
        assert tracker.enabled and tracker.known == {}
        assert search("q") == search("q")  # hits, through the read script
        assert len(r.calls) == 1
    finally:
        backend.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_knows_no_generation_until_it_tracks_its_own(
    sink: Capture, client: redis.Redis[bytes]
) -> None:
    cache = RetrievalCache(ttl=60)
    search = cache.wrap(Retriever().search, source="kb")
    search("q")
    tracker = _tracker(cache)
    assert tracker.wait() and tracker.known
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread is gone, so what it knew is not kept
        ok = not tracker.known and tracker._thread is None
        search("q")
        ok = ok and tracker.wait() and bool(tracker.known)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert tracker.known  # the parent's tracker is untouched


def test_a_server_that_refuses_tracking_leaves_hits_on_mget(
    cw: Any, redis_server: str, client: redis.Redis[bytes]
) -> None:
    client.acl_setuser(
        "cw-no-client",
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-client"],
    )
    try:
        url = redis_server.replace("redis://", "redis://cw-no-client:pw@")
        cw.configure(
            service="test", strict=True, prometheus=False, redis_url=url, redis_timeout_s=2.0
        )
        r = Retriever()
        cache = RetrievalCache(ttl=60)
        search = cache.wrap(r.search, source="kb")
        search("q")
        tracker = _tracker(cache)
        assert tracker.wait()
        assert not tracker.enabled
        client.config_resetstat()
        search("q")
        assert _commands(client).get("cmdstat_evalsha") == 1
        assert len(r.calls) == 1
    finally:
        client.acl_deluser("cw-no-client")


def _two_processes(
    cw: Any, redis_url: str, generation_ttl: float
) -> tuple[Retriever, RetrievalCache, Any, Any]:
    """Two caches over one Redis, each trusting a generation ``generation_ttl`` seconds, stand
    for two processes: ``(retriever, here, search through here, search through there)``."""
    cw.configure(
        service="test", strict=True, prometheus=False, redis_url=redis_url, redis_timeout_s=2.0
    )
    r = Retriever()
    here = RetrievalCache(ttl=60, generation_ttl=generation_ttl)
    there = RetrievalCache(ttl=60, generation_ttl=generation_ttl)
    return r, here, here.wrap(r.search, source="kb"), there.wrap(r.search, source="kb")


def test_generation_ttl_makes_hits_one_bounded_read_and_delays_foreign_invalidation(
    cw: Any, redis_server: str, client: redis.Redis[bytes]
) -> None:
    """Two caches over one Redis stand for two processes."""
    r, here, search_here, search_there = _two_processes(cw, redis_server, 0.4)
    search_here("q")
    search_there("q")
    assert len(r.calls) == 1
    assert _tracker(here).wait()
    client.config_resetstat()
    for _ in range(5):
        search_there("q")
    calls = _commands(client)
    assert calls.get("cmdstat_getrange") == 5
    assert "cmdstat_evalsha" not in calls

    here.invalidate()
    search_there("q")  # the other process trusts generation 0 a little longer: a stale hit
    assert len(r.calls) == 1
    time.sleep(0.45)
    search_there("q")  # past generation_ttl it reads generation 1: a miss, stored as gen 1
    assert len(r.calls) == 2
    search_here("q")  # this process knew generation 1 since its own invalidate(): a hit
    assert len(r.calls) == 2
    raw = client.get(entry_keys(client)[0])
    assert raw is not None and decode_entry(raw, 1) is not None


def test_an_entry_claiming_a_newer_generation_makes_the_reader_refresh(
    cw: Any, redis_server: str, client: redis.Redis[bytes]
) -> None:
    r, here, search_here, search_there = _two_processes(cw, redis_server, 60)
    search_there("q")  # "there" trusts generation 0 for a minute
    here.invalidate()
    search_here("q")  # writes an entry of generation 1
    search_there("q")  # sees an entry newer than its generation: re-reads, and hits
    assert len(r.calls) == 2


def test_processes_racing_over_many_keys_run_a_fast_function_exactly_once_per_key(
    redis_server: str,
) -> None:
    """Four processes of four threads look up the same 60 keys in the same order: the function
    (which returns at once) runs once per key in all, the other lookups are hits."""
    outputs = run_workers(redis_server, 4, keys=60, threads=4)
    assert sum(o["runs"] for o in outputs) == 60
    results: dict[str, int] = {}
    for o in outputs:
        for result, n in o["results"].items():
            results[result] = results.get(result, 0) + n
    assert results == {"miss": 60, "hit": 4 * 4 * 60 - 60}


def _plant(client: redis.Redis[bytes], key: bytes, megabytes: int) -> None:
    """A well-formed entry of generation 0 holding one string of ``megabytes`` MB."""
    chunk = b"x" * 2**20
    client.set(key, b'[1,0,"0.5",["')
    for _ in range(megabytes):
        client.append(key, chunk)
    client.append(key, b'"]]')


@pytest.mark.parametrize("tracked", [True, False], ids=["tracked-generation", "read-script"])
def test_a_planted_200_mb_value_is_never_read_whole_and_is_overwritten(
    sink: Capture, client: redis.Redis[bytes], redis_server: str, tracked: bool
) -> None:
    backend = RedisBackend(redis_server, timeout_s=2.0, track_generations=tracked)
    r = Retriever()
    cache = RetrievalCache(ttl=60, backend=backend)
    search = cache.wrap(r.search, source="kb")
    try:
        expected = search("q")
        if tracked:
            assert _tracker(cache).wait() and _tracker(cache).known
        [key] = entry_keys(client)
        _plant(client, key, 200)
        assert client.strlen(key) > 200 * 2**20
        sent_before = int(client.info("stats")["total_net_output_bytes"])
        t0 = time.monotonic()
        assert search("q") == expected
        elapsed = time.monotonic() - t0
        sent = int(client.info("stats")["total_net_output_bytes"]) - sent_before
        assert sent < 2 * 1_000_000  # at most max_value_bytes (+1) of it, never 200 MB
        assert elapsed < 0.5
        assert len(r.calls) == 2
        assert sink.results() == ["miss", "miss"]
        stored = client.get(key)
        assert stored is not None and len(stored) < 1000 and decode_entry(stored, 0) is not None
        assert search("q") == expected
        assert len(r.calls) == 2
        assert sink.results()[-1] == "hit"
    finally:
        backend.close()
