"""RetrievalCache over the in-memory twin: what a hit, a miss, a skip and an error mean."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest

import costwatch
from costwatch._core.errors import ConfigError
from costwatch.cache._backend import MemoryBackend
from costwatch.cache._calls import _from_leader
from costwatch.cache._codec import decode_entry, entry_body
from costwatch.cache._flight import Flight
from costwatch.cache._local import LocalLRU
from costwatch.cache._lookup import Lookup, Site
from costwatch.cache._retrieval_cache import RetrievalCache, last_lookup_var
from tests._fixtures.capture import CaptureSink as Capture
from tests._fixtures.threads import all_at_once

EMBED_MODEL = "text-embedding-3-small"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sink(cw: Any) -> Iterator[Capture]:
    capture = Capture()
    cw.configure(service="test", strict=True, prometheus=False, otel=False, sinks=[capture])
    yield capture


def embed_cost() -> Decimal:
    """Price 1000 embedding tokens inside the cached function, as a real retriever would."""
    rec = costwatch.record(
        provider="openai", model=EMBED_MODEL, input_tokens=1000, stage="embedding"
    )
    assert rec is not None and rec.cost_usd is not None
    return rec.cost_usd


class Retriever:
    """A fake retriever that counts its calls and pays for an embedding on each one."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.cost = Decimal(0)

    def search(self, query: str, k: int = 3) -> list[dict[str, Any]]:
        self.calls.append(query)
        self.cost = embed_cost()
        return [{"text": f"doc {i} for {query}", "score": 1.0 / (i + 1)} for i in range(k)]


def test_the_first_call_misses_and_the_repeat_is_served_from_the_cache(sink: Capture) -> None:
    r = Retriever()
    search = RetrievalCache(ttl=60).wrap(r.search, source="kb")
    first = search("reset password")
    assert last_lookup_var.get() == "miss"
    second = search("reset password")
    assert last_lookup_var.get() == "hit"
    assert second == first
    assert second is not first
    assert r.calls == ["reset password"]
    assert sink.results() == ["miss", "hit"]


def test_positional_and_keyword_calls_share_one_key(sink: Capture) -> None:
    r = Retriever()
    search = RetrievalCache(ttl=60).wrap(r.search, source="kb")
    search("q")
    search(query="q")
    search("q", 3)
    search("q", k=3)
    assert r.calls == ["q"]
    search("q", 2)
    assert r.calls == ["q", "q"]


def test_a_hit_reports_the_cost_the_miss_paid_as_saved_dollars(sink: Capture) -> None:
    r = Retriever()
    search = RetrievalCache(ttl=60).wrap(r.search, source="kb")
    search("q")
    for _ in range(3):
        search("q")
    hits = [e for e in sink.events if e.result == "hit"]
    assert [e.saved_usd for e in hits] == [r.cost] * 3
    assert r.cost > 0
    totals = costwatch.summary().cache["kb"]
    assert (totals.hits, totals.misses, totals.errors, totals.skips) == (3, 1, 0, 0)
    assert totals.saved_usd == 3 * r.cost
    assert all(e.saved_usd == 0 for e in sink.events if e.result != "hit")


def test_events_carry_service_and_the_callers_tags(sink: Capture) -> None:
    search = RetrievalCache(ttl=60).wrap(Retriever().search, source="kb")
    with costwatch.tags(feature="faq", team="support", tenant="acme"):
        search("q")
        search("q")
    event = sink.events[-1]
    assert (event.cache, event.service, event.feature, event.team, event.tenant) == (
        "kb",
        "test",
        "faq",
        "support",
        "acme",
    )


def test_an_explicit_name_names_the_cache_in_metrics(sink: Capture) -> None:
    search = RetrievalCache(ttl=60, name="kb-v2").wrap(Retriever().search, source="kb")
    search("q")
    assert sink.events[0].cache == "kb-v2"


def test_tenants_never_read_each_others_entries(sink: Capture) -> None:
    r = Retriever()
    search = RetrievalCache(ttl=60).wrap(r.search, source="kb")
    with costwatch.tags(tenant="acme"):
        search("q")
    with costwatch.tags(tenant="globex"):
        search("q")
    with costwatch.tags(tenant="acme"):
        search("q")
    assert r.calls == ["q", "q"]
    assert sink.results() == ["miss", "miss", "hit"]


def test_invalidate_drops_the_namespace_of_the_current_tenant_only(sink: Capture) -> None:
    r = Retriever()
    cache = RetrievalCache(ttl=60)
    search = cache.wrap(r.search, source="kb")
    for tenant in ("acme", "globex"):
        with costwatch.tags(tenant=tenant):
            search("q")
    with costwatch.tags(tenant="acme"):
        cache.invalidate()
        search("q")
    with costwatch.tags(tenant="globex"):
        search("q")
    cache.invalidate(tenant="globex")
    with costwatch.tags(tenant="globex"):
        search("q")
    assert sink.results() == ["miss", "miss", "miss", "hit", "miss"]


def test_entries_expire_after_their_ttl(sink: Capture) -> None:
    clock = FakeClock()
    r = Retriever()
    cache = RetrievalCache(ttl=10, jitter=0.0, backend=MemoryBackend(clock=clock))
    search = cache.wrap(r.search, source="kb")
    search("q")
    clock.now += 9.9
    search("q")
    clock.now += 0.2
    search("q")
    assert sink.results() == ["miss", "hit", "miss"]


def test_ttl_jitter_takes_off_at_most_the_jitter_share() -> None:
    cache = RetrievalCache(ttl=100, jitter=0.1)
    ttls = {cache.policy.entry_ttl_ms() for _ in range(500)}
    assert min(ttls) >= 90_000
    assert max(ttls) <= 100_000
    assert len(ttls) > 50


def test_exceptions_are_never_cached_and_pass_through_unchanged(sink: Capture) -> None:
    calls = []
    boom = ValueError("index offline")

    def search(query: str) -> list[str]:
        calls.append(query)
        if len(calls) == 1:
            raise boom
        return ["doc"]

    cached = RetrievalCache(ttl=60).wrap(search, source="kb")
    with pytest.raises(ValueError) as info:
        cached("q")
    assert info.value is boom
    assert info.value.__context__ is None
    assert cached("q") == ["doc"]
    assert cached("q") == ["doc"]
    assert calls == ["q", "q"]


@pytest.mark.parametrize("empty", [[], {}, "", None])
def test_empty_results_are_not_cached_by_default(sink: Capture, empty: object) -> None:
    calls = []

    def search(query: str) -> object:
        calls.append(query)
        return empty

    cached = RetrievalCache(ttl=60).wrap(search, source="kb")
    assert cached("q") == empty
    assert cached("q") == empty
    assert len(calls) == 2
    assert sink.results() == ["miss", "miss"]


def test_empty_results_are_cached_with_cache_empty(sink: Capture) -> None:
    calls = []

    def search(query: str) -> list[str]:
        calls.append(query)
        return []

    cached = RetrievalCache(ttl=60, cache_empty=True).wrap(search, source="kb")
    assert cached("q") == []
    assert cached("q") == []
    assert calls == ["q"]


@dataclasses.dataclass
class Doc:
    text: str


@pytest.mark.parametrize(
    "value",
    [
        [Doc("a")],
        ("a", "b"),
        [("doc", 0.5)],
        {1: "int keys"},
        [float("nan")],
        {"when": time},
    ],
    ids=["dataclass", "tuple", "tuple-in-list", "int-keys", "nan", "module"],
)
def test_values_that_would_not_come_back_identical_are_skipped(
    sink: Capture, value: object
) -> None:
    calls = []

    def search(query: str) -> object:
        calls.append(query)
        return value

    cached = RetrievalCache(ttl=60).wrap(search, source="kb")
    assert cached("q") is value
    assert cached("q") is value
    assert len(calls) == 2
    assert sink.results() == ["skip", "skip"]


def test_values_larger_than_max_value_bytes_are_skipped(sink: Capture) -> None:
    calls = []

    def search(query: str) -> list[str]:
        calls.append(query)
        return ["x" * 2000]

    cached = RetrievalCache(ttl=60, max_value_bytes=1000).wrap(search, source="kb")
    cached("q")
    cached("q")
    assert len(calls) == 2
    assert sink.results() == ["skip", "skip"]


class Opaque:
    pass


@pytest.mark.parametrize(
    "arg",
    [Opaque(), {1, 2}, b"bytes", {"nested": [Opaque()]}, float("inf")],
    ids=["object", "set", "bytes", "nested-object", "inf"],
)
def test_arguments_that_cannot_be_canonicalised_skip_the_cache(sink: Capture, arg: object) -> None:
    calls = []

    def search(query: object) -> list[str]:
        calls.append(query)
        return ["doc"]

    cached = RetrievalCache(ttl=60).wrap(search, source="kb")
    assert cached(arg) == ["doc"]
    assert cached(arg) == ["doc"]
    assert calls == [arg, arg]
    assert sink.results() == ["skip", "skip"]
    assert last_lookup_var.get() == "skip"


def test_a_call_that_does_not_bind_raises_the_functions_own_type_error(sink: Capture) -> None:
    def search(query: str) -> list[str]:
        return ["doc"]

    cached = RetrievalCache(ttl=60).wrap(search, source="kb")
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        cached(query="q", nope=1)  # type: ignore[call-arg]
    assert sink.results() == ["skip"]


def test_keyword_only_and_var_keyword_signatures_are_normalised(sink: Capture) -> None:
    calls = []

    def search(query: str, *, k: int = 3, **filters: str) -> list[str]:
        calls.append(query)
        return [query]

    cached = RetrievalCache(ttl=60).wrap(search, source="kb")
    cached("q", lang="en", site="docs")
    cached("q", k=3, site="docs", lang="en")
    assert calls == ["q"]
    cached("q", lang="fr", site="docs")
    assert calls == ["q", "q"]


def test_methods_are_keyed_by_a_key_function(sink: Capture) -> None:
    class Store:
        def __init__(self, index: str) -> None:
            self.index = index
            self.calls = 0

        def search(self, query: str) -> list[str]:
            self.calls += 1
            return [self.index + ":" + query]

    cache = RetrievalCache(ttl=60, key=lambda self, query: [self.index, query])
    Store.search = cache.wrap(Store.search, source="kb")  # type: ignore[method-assign]
    a, a2, b = Store("a"), Store("a"), Store("b")
    assert a.search("q") == ["a:q"]
    assert a2.search("q") == ["a:q"]
    assert b.search("q") == ["b:q"]
    assert (a.calls, a2.calls, b.calls) == (1, 0, 1)


def test_without_a_key_function_a_method_skips_the_cache(sink: Capture) -> None:
    class Store:
        def search(self, query: str) -> list[str]:
            return [query]

    Store.search = RetrievalCache(ttl=60).wrap(Store.search, source="kb")  # type: ignore[method-assign]
    Store().search("q")
    assert sink.results() == ["skip"]


def test_version_and_function_are_part_of_the_key(sink: Capture) -> None:
    backend = MemoryBackend()
    r1, r2, r3 = Retriever(), Retriever(), Retriever()
    v1 = RetrievalCache(ttl=60, version=1, backend=backend).wrap(r1.search, source="kb")
    v2 = RetrievalCache(ttl=60, version=2, backend=backend).wrap(r2.search, source="kb")

    def other(query: str, k: int = 3) -> list[dict[str, Any]]:
        return r3.search(query, k)

    v1b = RetrievalCache(ttl=60, version=1, backend=backend).wrap(other, source="kb")
    for fn in (v1, v2, v1b, v1, v2, v1b):
        fn("q")
    assert (len(r1.calls), len(r2.calls), len(r3.calls)) == (1, 1, 1)


def test_garbage_under_a_key_is_a_miss_and_gets_overwritten(sink: Capture) -> None:
    backend = MemoryBackend()
    r = Retriever()
    search = RetrievalCache(ttl=60, backend=backend).wrap(r.search, source="kb")
    search("q")
    entry_keys = [k for k in backend._data if ":gen" not in k and ":lock:" not in k]
    assert len(entry_keys) == 1
    for garbage in (
        b"\x80\x04K\x01.",
        b"not json",
        b'[1,0,"0.1",',
        b'[1,0,"NaN",[]]',
        b'[1,0,"-1",[]]',
        b'{"v": 1}',
        b'[2,0,"0",[]]',
        b"[1,0,0,[]]",
    ):
        backend.write(entry_keys[0], garbage, 60_000)
        calls = len(r.calls)
        search("q")
        assert len(r.calls) == calls + 1, garbage
        assert decode_entry(backend._data[entry_keys[0]][0], 0) is not None
        search("q")
        assert len(r.calls) == calls + 1


def test_generator_functions_are_returned_unchanged() -> None:
    def stream(query: str) -> Iterator[str]:
        yield query

    async def astream(query: str) -> Any:
        yield query

    cache = RetrievalCache(ttl=60)
    assert cache.wrap(stream, source="kb") is stream
    assert cache.wrap(astream, source="kb") is astream


def test_wrap_keeps_the_kind_and_metadata_of_the_function() -> None:
    async def search(query: str) -> list[str]:
        """Search the knowledge base."""
        return [query]

    wrapped = RetrievalCache(ttl=60).wrap(search, source="kb")
    assert asyncio.iscoroutinefunction(wrapped)
    assert wrapped.__name__ == "search"
    assert wrapped.__doc__ == "Search the knowledge base."


async def test_async_functions_hit_and_miss_like_sync_ones(sink: Capture) -> None:
    calls = []

    async def search(query: str, k: int = 2) -> list[str]:
        calls.append(query)
        embed_cost()
        await asyncio.sleep(0)
        return [query] * k

    cached = RetrievalCache(ttl=60).wrap(search, source="kb")
    assert await cached("q") == ["q", "q"]
    assert last_lookup_var.get() == "miss"
    assert await cached(query="q") == ["q", "q"]
    assert last_lookup_var.get() == "hit"
    assert calls == ["q"]
    assert costwatch.summary().cache["kb"].saved_usd > 0


def test_sixteen_threads_missing_one_cold_key_run_the_function_once(sink: Capture) -> None:
    calls = []

    def search(query: str) -> list[str]:
        calls.append(query)
        time.sleep(0.2)
        return ["doc for " + query]

    cached = RetrievalCache(ttl=60).wrap(search, source="kb")
    results = all_at_once(lambda: cached("q"), 16)
    assert calls == ["q"]
    assert results == [["doc for q"]] * 16
    assert len({id(r) for r in results}) == 16
    assert sorted(sink.results()) == ["hit"] * 15 + ["miss"]


async def test_two_hundred_tasks_missing_one_cold_key_run_the_function_once(
    sink: Capture,
) -> None:
    calls = []

    async def search(query: str) -> list[str]:
        calls.append(query)
        await asyncio.sleep(0.1)
        return ["doc for " + query]

    cached = RetrievalCache(ttl=60).wrap(search, source="kb")
    results = await asyncio.gather(*(cached("q") for _ in range(200)))
    assert calls == ["q"]
    assert all(r == ["doc for q"] for r in results)
    assert sorted(sink.results()) == ["hit"] * 199 + ["miss"]


def test_waiters_compute_themselves_when_the_leader_fails(sink: Capture) -> None:
    calls = []
    barrier = threading.Barrier(4)

    def search(query: str) -> list[str]:
        calls.append(query)
        if len(calls) == 1:
            time.sleep(0.1)
            raise RuntimeError("first call fails")
        return ["doc"]

    cached = RetrievalCache(ttl=60).wrap(search, source="kb")
    outcomes: list[object] = []

    def worker() -> None:
        barrier.wait()
        try:
            outcomes.append(cached("q"))
        except RuntimeError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(o, RuntimeError) for o in outcomes) == 1
    assert outcomes.count(["doc"]) == 3


def test_a_waiter_takes_a_copy_of_what_its_leader_shared_or_calls_through_after_a_failure(
    sink: Capture,
) -> None:
    cache = RetrievalCache(ttl=60)
    site = Site(cache.policy, cache._resolver, lambda query: [query], "kb", "retrieval", None)
    lookup = site.begin(("q",), {})
    assert isinstance(lookup, Lookup)
    flight = Flight(threads=True)
    assert _from_leader(lookup, flight) is None  # nothing shared: the waiter computes itself
    flight.shared = (orjson.dumps(["doc"]), Decimal("0.002"))
    first, second = _from_leader(lookup, flight), _from_leader(lookup, flight)
    assert first == second == (["doc"], "hit")
    assert first is not None and second is not None and first[0] is not second[0]
    flight.through = True  # the backend failed the leader: its waiters call through
    assert _from_leader(lookup, flight) == (None, "error")
    assert sink.results() == ["hit", "hit", "error"]


async def test_a_cancelled_leader_lets_waiting_tasks_compute(sink: Capture) -> None:
    calls = []

    async def search(query: str) -> list[str]:
        calls.append(query)
        await asyncio.sleep(0.2 if len(calls) == 1 else 0)
        return ["doc"]

    cached = RetrievalCache(ttl=60).wrap(search, source="kb")
    leader = asyncio.ensure_future(cached("q"))
    await asyncio.sleep(0.01)
    follower = asyncio.ensure_future(cached("q"))
    await asyncio.sleep(0.01)
    leader.cancel()
    assert await follower == ["doc"]
    with pytest.raises(asyncio.CancelledError):
        await leader


def test_the_local_lru_serves_repeats_without_the_backend(sink: Capture) -> None:
    backend = MemoryBackend()
    r = Retriever()
    clock = FakeClock()
    search = RetrievalCache(ttl=60, local_size=2, local_ttl=5, backend=backend, clock=clock).wrap(
        r.search, source="kb"
    )
    search("a")
    backend._data.clear()  # the backend lost everything: the local copy still serves
    assert search("a")[0]["text"] == "doc 0 for a"
    assert sink.events[-1].result == "hit"
    assert sink.events[-1].saved_usd == r.cost
    clock.now += 5.1  # past the local TTL: back to the backend, which is empty
    search("a")
    assert len(r.calls) == 2


def test_the_local_lru_keeps_only_local_size_entries(sink: Capture) -> None:
    backend = MemoryBackend()
    r = Retriever()
    search = RetrievalCache(ttl=60, local_size=2, backend=backend).wrap(r.search, source="kb")
    for q in ("a", "b", "c"):
        search(q)
    backend._data.clear()
    search("c")
    search("b")
    assert len(r.calls) == 3
    search("a")
    assert len(r.calls) == 4


def test_local_hits_return_a_fresh_copy_each_time(sink: Capture) -> None:
    search = RetrievalCache(ttl=60, local_size=8).wrap(Retriever().search, source="kb")
    expected = search("q")
    first = search("q")  # from the local LRU
    assert sink.events[-1].result == "hit"
    first[0]["text"] = "reranked"
    first[0]["extra"] = 1
    first.clear()
    assert search("q") == expected


def test_the_local_lru_decodes_values_too_deep_to_copy_by_shape() -> None:
    """Entries other writers stored can nest deeper than costwatch stores: each hit decodes."""
    deep: list[Any] = ["leaf"]
    for _ in range(70):
        deep = [deep]
    lru = LocalLRU(4, 60, FakeClock())
    lru.put("k", orjson.dumps(deep), Decimal(0))
    entry = lru.get("k")
    assert entry is not None
    first = entry.copy(entry.value)
    first.clear()
    assert entry.copy(entry.value) == deep


def test_invalidate_clears_the_local_lru(sink: Capture) -> None:
    r = Retriever()
    cache = RetrievalCache(ttl=60, local_size=8)
    search = cache.wrap(r.search, source="kb")
    search("q")
    search("q")
    cache.invalidate()
    search("q")
    assert len(r.calls) == 2


def test_a_reconfigured_runtime_gets_a_fresh_in_memory_backend(cw: Any) -> None:
    r = Retriever()
    search = RetrievalCache(ttl=60).wrap(r.search, source="kb")
    search("q")
    search("q")
    cw.configure(service="test", strict=True, prometheus=False, otel=False)
    search("q")
    assert len(r.calls) == 2


def test_namespace_replaces_the_service_in_keys(cw: Any) -> None:
    backend = MemoryBackend()
    r = Retriever()
    search = RetrievalCache(ttl=60, namespace="shared", backend=backend).wrap(r.search, source="kb")
    search("q")
    cw.configure(service="other-service", strict=True, prometheus=False, otel=False)
    search("q")
    assert len(r.calls) == 1
    assert any(k.startswith("cw:c:{shared::kb}:") for k in backend._data)


def test_keys_hold_no_argument_text_and_escape_the_hash_tag(sink: Capture) -> None:
    backend = MemoryBackend()
    search = RetrievalCache(ttl=60, backend=backend).wrap(Retriever().search, source="kb")
    with costwatch.tags(tenant="we{ird}: tenant"):
        search("my secret question")
    keys = list(backend._data)
    assert keys
    for key in keys:
        assert "secret" not in key
        assert key.count("{") == 1 and key.count("}") == 1
        assert key.startswith("cw:c:{test:we%7Bird%7D%3A%20tenant:kb}:")


def test_decode_entry_reads_only_well_formed_entries_of_the_generation() -> None:
    good = b'[1,3,"0.25",{"a":[1,2]}]'
    assert decode_entry(good, 3) == ({"a": [1, 2]}, Decimal("0.25"), "0.25")
    assert entry_body(good, 3, "0.25") == b'{"a":[1,2]}'
    assert entry_body(b'[1,3, "0.25",{"a":[1,2]}]', 3, "0.25") is None
    assert decode_entry(good, 4) is None
    assert decode_entry(good, None) is not None
    assert decode_entry(b"\x80\x04\x95", 3) is None


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("ttl", {"ttl": 0}),
        ("ttl", {"ttl": float("inf")}),
        ("local_ttl", {"local_ttl": -1}),
        ("lock_timeout", {"lock_timeout": 0}),
        ("max_value_bytes", {"max_value_bytes": 10}),
        ("local_size", {"local_size": -1}),
        ("jitter", {"jitter": 0.9}),
        ("backend", {"backend": "http://localhost"}),
        ("backend", {"backend": 42}),
        ("namespace", {"namespace": ""}),
    ],
)
def test_invalid_settings_raise_a_config_error_naming_the_field(
    field: str, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError) as info:
        RetrievalCache(**kwargs)
    assert info.value.field == field


def test_the_retrieval_decorator_marks_hits_on_its_records(sink: Capture) -> None:
    calls = []

    @costwatch.retrieval(source="kb", cache=RetrievalCache(ttl=60))
    def search(query: str) -> list[dict[str, str]]:
        calls.append(query)
        embed_cost()
        return [{"text": "doc"}]

    search("q")
    search(query="q")
    retrievals = [rec for rec in sink.records if rec.stage == "retrieval"]
    assert [rec.cache_hit for rec in retrievals] == [False, True]
    assert calls == ["q"]
    totals = costwatch.summary().cache["kb"]
    assert (totals.hits, totals.misses) == (1, 1)
    assert totals.saved_usd > 0


async def test_the_retrieval_decorator_marks_hits_of_coroutines(sink: Capture) -> None:
    @costwatch.retrieval(source="kb", cache=RetrievalCache(ttl=60))
    async def search(query: str) -> list[dict[str, str]]:
        return [{"text": "doc"}]

    await search("q")
    await search("q")
    retrievals = [rec for rec in sink.records if rec.stage == "retrieval"]
    assert [rec.cache_hit for rec in retrievals] == [False, True]


def test_own_cost_adds_the_wrapping_decorators_cost_to_what_a_hit_saves(sink: Capture) -> None:
    def search(query: str) -> list[str]:
        return ["doc"]

    cached = RetrievalCache(ttl=60).wrap(
        search, source="kb", own_cost=lambda value: Decimal("0.0001") * len(value)
    )
    cached("q")
    cached("q")
    assert sink.events[-1].saved_usd == Decimal("0.0001")


def test_a_waiter_computes_itself_after_lock_timeout(sink: Capture) -> None:
    calls = []
    started = threading.Event()
    release = threading.Event()

    def search(query: str) -> list[str]:
        calls.append(query)
        if len(calls) == 1:
            started.set()
            release.wait(5)  # the leader is slow until the waiter is done
        return ["doc"]

    cached = RetrievalCache(ttl=60, lock_timeout=0.1).wrap(search, source="kb")
    leader = threading.Thread(target=cached, args=("q",))
    leader.start()
    started.wait()
    t0 = time.monotonic()
    assert cached("q") == ["doc"]
    waited = time.monotonic() - t0
    release.set()
    leader.join()
    assert len(calls) == 2
    assert 0.1 <= waited < 2.5  # bounded by lock_timeout: it did not wait for the slow leader


def test_the_lookup_result_is_restored_after_nested_cached_calls(sink: Capture) -> None:
    inner = RetrievalCache(ttl=60).wrap(lambda q: [q], source="inner")
    inner("x")

    def outer(query: object) -> list[object]:
        inner("x")  # a hit, which sets the lookup result to "hit"
        return [query]

    cached_outer = RetrievalCache(ttl=60).wrap(outer, source="outer")
    cached_outer(object())  # not keyable: skip
    assert last_lookup_var.get() == "skip"
    cached_outer("q")
    assert last_lookup_var.get() == "miss"


def test_entry_generation_reads_only_the_prefix_costwatch_writes() -> None:
    from costwatch.cache._backend import entry_generation

    assert entry_generation(b'[1,42,"0",[]]') == 42
    assert entry_generation(b'[1,,"0",[]]') is None
    assert entry_generation(b'[1,-3,"0",[]]') is None
    assert entry_generation(b"\x80\x04garbage") is None


async def test_tenant_required_skips_async_calls_without_a_tenant_and_serves_each_tenant(
    sink: Capture,
) -> None:
    calls: list[str] = []

    async def search(query: str) -> list[str]:
        tenant = costwatch._core.context.current_tags().get("tenant", "")
        calls.append(tenant)
        return [f"{tenant} {query}"]

    cached = RetrievalCache(ttl=60, tenant_required=True, key_namespace="kb").wrap(
        search, source="kb"
    )
    assert await cached("q") == [" q"]
    assert await cached("q") == [" q"]
    with costwatch.tags(tenant="acme"):
        assert await cached("q") == ["acme q"]
        assert await cached("q") == ["acme q"]
    assert calls == ["", "", "acme"]
    assert sink.results() == ["skip", "skip", "miss", "hit"]
