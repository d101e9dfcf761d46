"""Tenant isolation that does not depend on remembering context, against a real redis-server:
``RetrievalCache(tenant_required=True)`` and carrying the context into pools."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

import costwatch
from costwatch._core.context import current_tags
from tests._fixtures.cache_redis import configure_on, entry_keys
from tests._fixtures.capture import CaptureSink as Capture


@pytest.fixture
def sink(cw: Any, redis_server: str) -> Capture:
    return configure_on(cw, redis_server)


@pytest.fixture
def client(redis_server: str) -> Iterator[redis.Redis[bytes]]:
    c: redis.Redis[bytes] = redis.Redis.from_url(redis_server)
    yield c
    c.close()


calls: list[str] = []
_calls_lock = threading.Lock()


def price_list(query: str) -> list[str]:
    """Each tenant's own document: whoever runs it reads the tenant in force."""
    tenant = current_tags().get("tenant", "")
    with _calls_lock:
        calls.append(tenant)
    return [f"{tenant or 'nobody'} internal {query}"]


@pytest.fixture(autouse=True)
def _no_calls() -> None:
    calls.clear()


def test_work_in_a_plain_pool_loses_the_tenant_and_tenant_required_refuses_to_serve_or_store(
    sink: Capture, client: redis.Redis[bytes]
) -> None:
    search = costwatch.RetrievalCache(ttl=60, tenant_required=True).wrap(price_list, source="kb")
    with ThreadPoolExecutor(2) as pool:
        for tenant in ("acme", "globex", "acme"):
            with costwatch.tags(tenant=tenant):
                # The pool's thread has no tags: without the rule, acme's and globex's work
                # would share the no-tenant namespace (globex served "acme internal ...").
                assert pool.submit(search, "price list").result() == ["nobody internal price list"]
    assert calls == ["", "", ""]
    assert sink.results() == ["skip", "skip", "skip"]
    assert entry_keys(client) == []
    with costwatch.tags(tenant="acme"):
        assert search("price list") == ["acme internal price list"]
        assert search("price list") == ["acme internal price list"]
    assert sink.results()[-2:] == ["miss", "hit"]


def test_without_the_rule_a_plain_pool_shares_one_no_tenant_entry(
    sink: Capture, client: redis.Redis[bytes]
) -> None:
    """The hazard ``tenant_required`` and ``costwatch.wrap`` exist for, shown once."""
    search = costwatch.RetrievalCache(ttl=60).wrap(price_list, source="kb")
    with ThreadPoolExecutor(2) as pool:
        with costwatch.tags(tenant="acme"):
            pool.submit(search, "price list").result()
        with costwatch.tags(tenant="globex"):
            pool.submit(search, "price list").result()
    assert sink.results() == ["miss", "hit"]
    assert [k.split(b"}")[0] for k in entry_keys(client)] == [b"cw:c:{test::kb"]


@pytest.mark.parametrize("carry", ["context_executor", "wrap"])
def test_a_pool_that_carries_the_context_serves_each_tenant_its_own_entries(
    sink: Capture, client: redis.Redis[bytes], carry: str
) -> None:
    search = costwatch.RetrievalCache(ttl=60, tenant_required=True).wrap(price_list, source="kb")
    tenants = ["acme", "globex"] * 8
    with ThreadPoolExecutor(4) as plain:
        pool = costwatch.context_executor(plain) if carry == "context_executor" else plain
        futures = []
        for tenant in tenants:
            with costwatch.tags(tenant=tenant):
                task = search if carry == "context_executor" else costwatch.wrap(search)
                futures.append((tenant, pool.submit(task, "price list")))
        for tenant, future in futures:
            assert future.result() == [f"{tenant} internal price list"]
    assert sorted(calls) == ["acme", "globex"]
    events = [(e.tenant, e.result) for e in sink.events]
    assert sorted(events) == sorted(
        [("acme", "miss"), ("globex", "miss")] + [("acme", "hit"), ("globex", "hit")] * 7
    )
    assert sorted(k.split(b"}")[0] for k in entry_keys(client)) == [
        b"cw:c:{test:acme:kb",
        b"cw:c:{test:globex:kb",
    ]


async def test_run_in_executor_carries_the_tenant_through_wrap_and_the_default_executor(
    sink: Capture, client: redis.Redis[bytes]
) -> None:
    search = costwatch.RetrievalCache(ttl=60, tenant_required=True).wrap(price_list, source="kb")
    loop = asyncio.get_running_loop()
    with costwatch.tags(tenant="acme"):
        first = await loop.run_in_executor(None, costwatch.wrap(search), "price list")
    pool = costwatch.context_executor(max_workers=2)
    loop.set_default_executor(pool)
    try:
        with costwatch.tags(tenant="globex"):
            second = await loop.run_in_executor(None, search, "price list")
        with costwatch.tags(tenant="acme"):
            third = await loop.run_in_executor(None, search, "price list")
    finally:
        pool.shutdown()
    assert first == third == ["acme internal price list"]
    assert second == ["globex internal price list"]
    assert [(e.tenant, e.result) for e in sink.events] == [
        ("acme", "miss"),
        ("globex", "miss"),
        ("acme", "hit"),
    ]
