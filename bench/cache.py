"""RetrievalCache latency against the floor: bare redis-py commands on the same bytes.

Prints, from one run, median per-call times of:

- a cache hit through Redis (sync and asyncio; one ``GET`` of the entry while Redis tracks the
  namespace generation for the process) against a bare ``GET`` of the same entry bytes,
  on a default redis-py client and on one with the cache's fail-fast options (socket timeouts,
  no retries): any socket timeout makes CPython poll() before every send and recv, and
  redis.asyncio arm a timer per read, which is part of the price of never hanging on Redis.
  The bench uses 1 s timeouts (the cost does not depend on the value) so that a loaded machine
  does not turn a slow reply into a fail-open error;
- the same hits with ``generation_ttl=1`` (the generation trusted for a second instead of
  tracked: the setting for servers without ``CLIENT TRACKING``);
- a cache miss (lookup, cross-process lock, store) against a bare ``GET`` + ``SET``;
- a hit in the in-process LRU (``local_size``), in microseconds, for the same 5-document value
  and for a small one (5 ids and scores), with the two costs of a local hit that are not the
  lookup: a fresh copy of the value (new lists and dicts, shared immutable leaves; decoding
  it again with ``orjson.loads``, printed beside it, costs more) and counting the lookup (one
  row of the runtime's per-thread tally, read by the ledger and Prometheus).

Each variant runs in batches; batches of all variants are interleaved so machine noise hits
them alike; the figure is the median over rounds of the per-call mean of a batch.  Variants
that talk to Redis are timed on the wall clock; the in-process ones (local LRU) on the
process's CPU clock, ten times as many calls per batch, so a busy machine that deschedules the
bench does not inflate microsecond figures.  The cache
runs with the default sinks of a deployment (ledger + Prometheus on a private registry).
A redis-server is started on a free loopback port (and killed by pid) unless REDIS_URL is set.

    python bench/cache.py [--calls 2000] [--rounds 9]

``--cluster`` runs on a real 3-master Redis Cluster instead (three ``redis-server
--cluster-enabled yes`` on free loopback ports, killed by pid): hits (one script call on the
entry's node: no ``CLIENT TRACKING`` on a cluster; and with ``generation_ttl=1``, one
``GETRANGE``) and misses against bare ``GET`` / ``GET`` + ``SET`` on a fail-fast cluster
client, then ``--threads`` threads making cached calls for ``--seconds`` seconds over tenants on
every node while one master is restarted empty.  It prints the results by kind, the host calls
that failed (0), the values served to the wrong tenant (0) and the slowest call.

    python bench/cache.py --cluster [--threads 8] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
import redis
import redis.asyncio as aredis
from _shared import redis_url
from prometheus_client import CollectorRegistry

import costwatch
from costwatch._core.redis import connect, connect_async
from costwatch._core.sink import CacheEvent
from costwatch.accounting._tally import cache_key
from costwatch.cache._copy import copier
from costwatch.cache._retrieval_cache import RetrievalCache

DOCS = [
    {
        "id": f"kb-{i}",
        "text": "To reset your password open Settings, choose Security and follow the link "
        "we e-mail you; the link expires after 30 minutes. " * 2,
        "score": 0.91 - i / 50,
        "metadata": {"source": "kb", "section": "account", "updated": "2025-01-0" + str(i + 1)},
    }
    for i in range(5)
]

IDS = [{"id": f"kb-{i}", "score": 0.91 - i / 50} for i in range(5)]


def batch(
    fn: Callable[[int], Any],
    calls: int,
    offset: int,
    timer: Callable[[], float] = time.perf_counter,
) -> float:
    t0 = timer()
    for i in range(offset, offset + calls):
        fn(i)
    return (timer() - t0) / calls


async def abatch(fn: Callable[[int], Awaitable[Any]], calls: int, offset: int) -> float:
    t0 = time.perf_counter()
    for i in range(offset, offset + calls):
        await fn(i)
    return (time.perf_counter() - t0) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--cluster", action="store_true")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    opts = parser.parse_args()
    if opts.cluster:
        cluster_main(opts)
        return

    with redis_url() as url:
        costwatch.configure(
            service="bench", redis_url=url, registry=CollectorRegistry(), redis_timeout_s=1.0
        )
        client = redis.Redis.from_url(url)
        fast = connect(url, timeout_s=1.0)
        client.flushdb()

        def search(query: str, k: int = 5) -> list[dict[str, Any]]:
            return DOCS[:k]

        def search_ids(query: str, k: int = 5) -> list[dict[str, Any]]:
            return IDS[:k]

        cached = RetrievalCache(ttl=3600).wrap(search, source="kb")
        trusting = RetrievalCache(ttl=3600, generation_ttl=1.0).wrap(search, source="kb")
        local = RetrievalCache(ttl=3600, local_size=1024).wrap(search, source="kb-local")
        local_small = RetrievalCache(ttl=3600, local_size=1024).wrap(search_ids, source="ids")
        cached("how do I reset my password")
        trusting("how do I reset my password")
        local("how do I reset my password")
        local_small("how do I reset my password")
        body = orjson.dumps(DOCS)
        private = orjson.loads(body)
        copy = copier(private)
        assert copy is not None
        rt = costwatch.runtime()
        event = CacheEvent("kb", "hit", Decimal("0.000024"), "bench", "faq", "support", "")
        key = cache_key(event)
        [entry_key] = [k for k in client.scan_iter(b"cw:c:{bench::kb}:*") if not k.endswith(b"gen")]
        entry = client.get(entry_key)
        assert entry is not None
        client.set(b"bench:bare", entry)

        results: dict[str, list[float]] = {}
        sync_variants: dict[str, Callable[[int], Any]] = {
            "bare GET": lambda i: client.get(b"bench:bare"),
            "bare GET, fail-fast client": lambda i: fast.get(b"bench:bare"),
            "cache hit (sync)": lambda i: cached("how do I reset my password"),
            "cache hit, generation_ttl=1": lambda i: trusting("how do I reset my password"),
            "bare GET+SET": lambda i: (
                client.get(b"bench:miss:%d" % i),
                client.set(b"bench:miss:%d" % i, entry, px=600_000),
            ),
            "cache miss (sync)": lambda i: cached(f"question {i}"),
        }
        cpu_variants: dict[str, Callable[[int], Any]] = {
            "local LRU hit": lambda i: local("how do I reset my password"),
            "local LRU hit, small value": lambda i: local_small("how do I reset my password"),
            "  fresh copy of the value": lambda i: copy(private),
            "  (orjson.loads of the value)": lambda i: orjson.loads(body),
            "  count one lookup (tally)": lambda i: rt.tally.add_cache(key, event.saved_usd),
        }
        offsets = dict.fromkeys(sync_variants, 0)
        for _ in range(opts.rounds):
            for name, fn in sync_variants.items():
                results.setdefault(name, []).append(batch(fn, opts.calls, offsets[name]))
                offsets[name] += opts.calls
            for name, fn in cpu_variants.items():
                results.setdefault(name, []).append(
                    batch(fn, opts.calls * 10, 0, time.process_time)
                )

        async def run_async() -> None:
            aclient = aredis.Redis.from_url(url)
            afast = connect_async(url, timeout_s=1.0)
            acached = RetrievalCache(ttl=3600).wrap(_async_search, source="kb-async")
            atrusting = RetrievalCache(ttl=3600, generation_ttl=1.0).wrap(
                _async_search, source="kb-async"
            )
            await acached("how do I reset my password")
            await atrusting("how do I reset my password")
            variants: dict[str, Callable[[int], Awaitable[Any]]] = {
                "bare GET (asyncio)": lambda i: aclient.get(b"bench:bare"),
                "bare GET (asyncio), fail-fast": lambda i: afast.get(b"bench:bare"),
                "cache hit (asyncio)": lambda i: acached("how do I reset my password"),
                "cache hit (asyncio), gen_ttl=1": lambda i: atrusting("how do I reset my password"),
            }
            for _ in range(opts.rounds):
                for name, fn in variants.items():
                    results.setdefault(name, []).append(await abatch(fn, opts.calls, 0))
            await aclient.aclose()
            await afast.aclose()

        asyncio.run(run_async())
        client.close()
        fast.close()

    med = {name: statistics.median(times) for name, times in results.items()}
    med["  vs fail-fast GET"] = med["cache hit (sync)"]
    med["  vs fail-fast GET "] = med["cache hit (asyncio)"]
    us = {name: t * 1e6 for name, t in med.items()}
    print(
        f"RetrievalCache vs bare redis-py, {len(entry)} B entry ({len(body)} B value, small "
        f"value {len(orjson.dumps(IDS))} B), median of {opts.rounds} rounds "
        f"x {opts.calls} calls (Python {sys.version.split()[0]}, redis-py {redis.__version__})"
    )
    print(f"{'variant':<32}{'median µs/call':>16}{'ratio':>10}{'goal':>10}")
    rows = [
        ("bare GET", None, ""),
        ("bare GET, fail-fast client", None, ""),
        ("cache hit (sync)", "bare GET", "<= 1.3x"),
        ("  vs fail-fast GET", "bare GET, fail-fast client", ""),
        ("cache hit, generation_ttl=1", "bare GET", "<= 1.3x"),
        ("bare GET (asyncio)", None, ""),
        ("bare GET (asyncio), fail-fast", None, ""),
        ("cache hit (asyncio)", "bare GET (asyncio)", "<= 1.3x"),
        ("  vs fail-fast GET ", "bare GET (asyncio), fail-fast", ""),
        ("cache hit (asyncio), gen_ttl=1", "bare GET (asyncio)", "<= 1.3x"),
        ("bare GET+SET", None, ""),
        ("cache miss (sync)", "bare GET+SET", ""),
        ("local LRU hit", None, "< 3 µs"),
        ("  fresh copy of the value", None, ""),
        ("  (orjson.loads of the value)", None, ""),
        ("  count one lookup (tally)", None, ""),
        ("local LRU hit, small value", None, "< 3 µs"),
    ]
    for name, floor, goal in rows:
        ratio = f"{med[name] / med[floor]:.2f}x" if floor else ""
        print(f"{name:<32}{us[name]:>16.2f}{ratio:>10}{goal:>10}")
    overhead = us["cache miss (sync)"] - us["bare GET+SET"]
    print(f"miss overhead over the bare GET+SET: {overhead:.1f} µs")


async def _async_search(query: str, k: int = 5) -> list[dict[str, Any]]:
    return DOCS[:k]


def _tenant_search(query: str) -> list[dict[str, Any]]:
    """Each tenant's own document: a value served to another tenant would show its name."""
    tenant = costwatch._core.context.current_tags().get("tenant", "")
    return [{"tenant": tenant, "text": f"{tenant} document about {query}"}]


def cluster_main(opts: argparse.Namespace) -> None:
    from tests._fixtures.redis_cluster import RedisCluster

    cluster = RedisCluster()
    try:
        cluster.start()
        costwatch.configure(
            service="bench",
            redis_url=cluster.url,
            registry=CollectorRegistry(),
            redis_timeout_s=1.0,
        )
        fast = connect(cluster.url, timeout_s=1.0)

        def search(query: str, k: int = 5) -> list[dict[str, Any]]:
            return DOCS[:k]

        cached = RetrievalCache(ttl=3600).wrap(search, source="kb")
        trusting = RetrievalCache(ttl=3600, generation_ttl=1.0).wrap(search, source="kb")
        cached("how do I reset my password")
        [entry_key] = [
            k
            for k in fast.keys(b"cw:c:{bench::kb}:*", target_nodes=fast.ALL_NODES)
            if not k.endswith(b"gen")
        ]
        entry = fast.get(entry_key)
        fast.set(b"{cw:c:bench::kb}:bare", entry)  # on the entry's node
        variants: dict[str, Callable[[int], Any]] = {
            "bare GET (cluster)": lambda i: fast.get(b"{cw:c:bench::kb}:bare"),
            "cache hit (cluster)": lambda i: cached("how do I reset my password"),
            "cache hit, generation_ttl=1": lambda i: trusting("how do I reset my password"),
            "bare GET+SET (cluster)": lambda i: (
                fast.get(b"{cw:c:bench::kb}:miss:%d" % i),
                fast.set(b"{cw:c:bench::kb}:miss:%d" % i, entry, px=600_000),
            ),
            "cache miss (cluster)": lambda i: cached(f"question {i}"),
        }
        results: dict[str, list[float]] = {}
        offsets = dict.fromkeys(variants, 0)
        for _ in range(opts.rounds):
            for name, fn in variants.items():
                results.setdefault(name, []).append(batch(fn, opts.calls, offsets[name]))
                offsets[name] += opts.calls
        med = {name: statistics.median(times) * 1e6 for name, times in results.items()}
        print(
            f"RetrievalCache on a 3-master Redis Cluster, median of {opts.rounds} rounds "
            f"x {opts.calls} calls (Python {sys.version.split()[0]}, redis-py {redis.__version__})"
        )
        print(f"{'variant':<32}{'median µs/call':>16}{'ratio':>10}")
        for name, floor in [
            ("bare GET (cluster)", None),
            ("cache hit (cluster)", "bare GET (cluster)"),
            ("cache hit, generation_ttl=1", "bare GET (cluster)"),
            ("bare GET+SET (cluster)", None),
            ("cache miss (cluster)", "bare GET+SET (cluster)"),
        ]:
            ratio = f"{med[name] / med[floor]:.2f}x" if floor else ""
            print(f"{name:<32}{med[name]:>16.2f}{ratio:>10}")
        _restart_run(cluster, fast, opts)
        fast.close()
    finally:
        costwatch._configure.shutdown()
        cluster.cleanup()


def _restart_run(cluster: Any, fast: Any, opts: argparse.Namespace) -> None:
    """Threads making cached calls over tenants on every node while one master restarts."""
    import threading
    from collections import Counter

    from costwatch.cache._retrieval_cache import last_lookup_var

    tenants: dict[int, str] = {}
    for i in range(500):
        tenant = f"tenant-{i}"
        port = int(fast.get_node_from_key("cw:c:{bench:" + tenant + ":tenants}:gen").port)
        tenants.setdefault(cluster.index_of(port), tenant)
    cached = RetrievalCache(ttl=3600, tenant_required=True).wrap(_tenant_search, source="tenants")
    results: Counter[str] = Counter()
    failed = wrong = 0
    slowest = 0.0
    lock = threading.Lock()
    stop = time.monotonic() + opts.seconds

    def worker(n: int) -> None:
        nonlocal failed, wrong, slowest
        names = list(tenants.values())
        i = n
        while time.monotonic() < stop:
            tenant = names[i % len(names)]
            i += 1
            with costwatch.tags(tenant=tenant):
                t0 = time.perf_counter()
                try:
                    value = cached(f"question {i % 50}")
                except Exception:
                    with lock:
                        failed += 1
                    continue
                took = time.perf_counter() - t0
                result = last_lookup_var.get()
            with lock:
                results[result] += 1
                slowest = max(slowest, took)
                if value[0]["tenant"] != tenant:
                    wrong += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(opts.threads)]
    for t in threads:
        t.start()
    time.sleep(opts.seconds / 3)
    t0 = time.monotonic()
    cluster.restart(1)  # killed, started again empty on its port, back to cluster_state:ok
    restart_s = time.monotonic() - t0
    for t in threads:
        t.join()
    print(
        f"{opts.threads} threads x {opts.seconds:.0f} s over {len(tenants)} tenants (one per "
        f"master), master 1 restarted empty ({restart_s:.1f} s until cluster_state:ok):"
    )
    print(f"  lookups by result: {dict(sorted(results.items()))}")
    print(f"  host calls failed: {failed}; values served to the wrong tenant: {wrong}")
    print(f"  slowest call: {slowest * 1000:.1f} ms")


if __name__ == "__main__":
    main()
