"""Cache and budgets on one Redis that is full: under ``maxmemory-policy volatile-lru`` Redis
evicts only keys with a TTL.  Cache entries always have one; budget state and the cache's
generation keys (what ``invalidate`` bumps) never do, so they survive any amount of cache
traffic, and an entry older than an ``invalidate`` never becomes current again."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis

from costwatch.cache._retrieval_cache import RetrievalCache
from tests._fixtures.cache_redis import configure_on, is_entry_key
from tests._fixtures.redis_proc import RedisProcess

BIG = "x" * 20_000
"""One retrieved document: 20 kB, so a few hundred entries fill the 4 MB Redis many times."""

USAGE = {"usage": {"prompt_tokens": 1000, "completion_tokens": 200}}
"""gpt-4o-mini at $0.15/M in, $0.60/M out: $0.00027 a call."""


@pytest.fixture
def small_redis() -> Iterator[str]:
    proc = RedisProcess(extra_args=("--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru"))
    proc.start()
    try:
        yield proc.url
    finally:
        proc.cleanup()


def test_a_full_redis_evicts_cache_entries_never_budget_state_or_generations(
    cw: Any, small_redis: str
) -> None:
    capture = configure_on(cw, small_redis)
    cw.budget("daily", limit_usd=10, window="day", action="block")

    @cw.generation(provider="openai", model="gpt-4o-mini")
    def answer(prompt: str) -> dict[str, Any]:
        return USAGE

    calls: list[str] = []

    def search(query: str) -> list[dict[str, str]]:
        calls.append(query)
        return [{"text": BIG, "query": query}]

    cache = RetrievalCache(ttl=600, jitter=0.0)
    cached = cache.wrap(search, source="kb")
    with cw.tags(tenant="acme"):
        cached("old question")
        cache.invalidate()
        cache.invalidate()
        for i in range(600):  # ~12 MB of entries into 4 MB
            cached(f"question {i}")
            answer("hello")
    budgets = cw._configure.runtime().budgets
    assert budgets.flush()

    client = redis.Redis.from_url(small_redis)
    try:
        assert client.info("stats")["evicted_keys"] > 0
        keys = list(client.scan_iter(count=1000))
        ttls = {key: client.pttl(key) for key in keys}
        generations = {
            k: client.get(k) for k in keys if k.startswith(b"cw:c:") and k.endswith(b":gen")
        }
    finally:
        client.close()

    # every cache entry has a TTL; budget state and generations have none and are all there
    assert all(ttls[k] != -1 for k in keys if is_entry_key(k))  # -2: evicted since the scan
    state = {b"{cw:b:daily}:spent", b"{cw:b:daily}:holds", b"{cw:b:daily}:holdamt"}
    assert b"{cw:b:daily}:spent" in keys  # (no hold is left: the holds set is gone, empty)
    assert all(ttls[k] == -1 for k in state & set(keys))
    assert generations == {b"cw:c:{test:acme:kb}:gen": b"2"}
    assert ttls[b"cw:c:{test:acme:kb}:gen"] == -1
    assert len([k for k in keys if is_entry_key(k)]) < 600  # the cache did lose entries

    status = budgets.status("daily")
    assert (status.spent_usd, status.reserved_usd) == (600 * Decimal("0.00027"), 0)

    # the cache keeps working: a fresh entry is a miss then a hit; the old one stays invalid
    with cw.tags(tenant="acme"):
        before = len(calls)
        cached("new question")
        cached("new question")
        cached("old question")
    assert calls[before:] == ["new question", "old question"]
    assert capture.results()[-3:] == ["miss", "hit", "miss"]
    assert "error" not in capture.results()
