"""Keys that identify the function, against a real redis-server: factories, lambdas, methods
and partials never share entries unless given the same explicit ``key_namespace``."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import costwatch
from costwatch.cache._retrieval_cache import RetrievalCache
from tests._fixtures.cache_redis import configure_on
from tests._fixtures.capture import CaptureSink as Capture

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def sink(cw: Any, redis_server: str) -> Capture:
    return configure_on(cw, redis_server)


class Index:
    def __init__(self, name: str) -> None:
        self.name = name

    def search(self, query: str) -> list[str]:
        return [f"{self.name} document about {query}"]


def retriever_over(index: Index, cache: RetrievalCache) -> Callable[[str], list[str]]:
    """A factory: every retriever it builds has the same ``__qualname__``."""

    @costwatch.retrieval(source="kb", cache=cache)
    def search(query: str) -> list[str]:
        return index.search(query)

    return search


def retriever_named(name: str, cache: RetrievalCache) -> Callable[[str], list[str]]:
    """A factory that captures only the index's name."""

    @costwatch.retrieval(source="kb", cache=cache)
    def search(query: str) -> list[str]:
        return [f"{name} document about {query}"]

    return search


def search_index(query: str, index: str = "contracts") -> list[str]:
    return [f"{index} document about {query}"]


def test_retrievers_built_by_one_factory_never_share_entries(sink: Capture) -> None:
    cache = RetrievalCache(ttl=60)
    contracts = retriever_over(Index("contracts"), cache)
    marketing = retriever_over(Index("marketing"), cache)
    assert contracts.__qualname__ == marketing.__qualname__
    assert contracts("pricing") == ["contracts document about pricing"]
    assert marketing("pricing") == ["marketing document about pricing"]
    by_name = [retriever_named(n, cache) for n in ("contracts", "marketing")]
    assert [f("pricing") for f in by_name] == [
        ["contracts document about pricing"],
        ["marketing document about pricing"],
    ]
    assert sink.results() == ["miss"] * 4
    # The same retriever, or one built over the same name, is the same function: hits.
    assert contracts("pricing") == ["contracts document about pricing"]
    assert retriever_named("marketing", cache)("pricing") == ["marketing document about pricing"]
    assert sink.results()[-2:] == ["hit", "hit"]


def test_lambdas_of_one_module_never_share_entries(sink: Capture) -> None:
    cache = RetrievalCache(ttl=60)
    upper = cache.wrap(lambda q: [q.upper()], source="kb")
    lower = cache.wrap(lambda q: [q.lower()], source="kb")
    assert upper("Refunds") == ["REFUNDS"]
    assert lower("Refunds") == ["refunds"]
    assert upper("Refunds") == ["REFUNDS"]
    assert sink.results() == ["miss", "miss", "hit"]


def test_methods_of_two_objects_never_share_entries_and_one_objects_do(sink: Capture) -> None:
    contracts, marketing = Index("contracts"), Index("marketing")
    assert RetrievalCache(ttl=60).wrap(contracts.search, source="kb")("q") == [
        "contracts document about q"
    ]
    assert RetrievalCache(ttl=60).wrap(marketing.search, source="kb")("q") == [
        "marketing document about q"
    ]
    assert RetrievalCache(ttl=60).wrap(contracts.search, source="kb")("q") == [
        "contracts document about q"
    ]
    assert sink.results() == ["miss", "miss", "hit"]


def test_partials_that_bind_other_arguments_never_share_entries(sink: Capture) -> None:
    cache = RetrievalCache(ttl=60)
    contracts = cache.wrap(functools.partial(search_index, index="contracts"), source="kb")
    marketing = cache.wrap(functools.partial(search_index, index="marketing"), source="kb")
    again = cache.wrap(functools.partial(search_index, index="contracts"), source="kb")
    assert contracts("q") == ["contracts document about q"]
    assert marketing("q") == ["marketing document about q"]
    assert again("q") == ["contracts document about q"]
    assert sink.results() == ["miss", "miss", "hit"]


def test_functions_given_the_same_key_namespace_share_entries_deliberately(
    sink: Capture,
) -> None:
    contracts = RetrievalCache(ttl=60, key_namespace="kb-search").wrap(
        Index("contracts").search, source="kb"
    )
    mirror = RetrievalCache(ttl=60, key_namespace="kb-search").wrap(
        Index("contracts-mirror").search, source="kb"
    )
    assert contracts("q") == ["contracts document about q"]
    assert mirror("q") == ["contracts document about q"]
    assert sink.results() == ["miss", "hit"]


def test_a_function_that_captures_an_object_warns_once_that_its_entries_stay_in_process(
    sink: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    def make(index: Index) -> Callable[[str], list[str]]:
        def lookup(query: str) -> list[str]:
            return index.search(query)

        return RetrievalCache(ttl=60).wrap(lookup, source="kb")

    with caplog.at_level("WARNING", logger="costwatch.cache"):
        for name in ("contracts", "marketing", "legal"):
            make(Index(name))
    [warning] = [r.getMessage() for r in caplog.records]
    assert "make.<locals>.lookup captures 'index' as a Index object" in warning
    assert "key_namespace" in warning


_PROCESS = textwrap.dedent(
    """
    import sys
    import costwatch
    from costwatch.cache._retrieval_cache import last_lookup_var

    url, name, shape = sys.argv[1:4]
    costwatch.configure(service="test", redis_url=url, prometheus=False, strict=True,
                        redis_timeout_s=2.0, warm_up=False)

    class Index:
        def __init__(self, name):
            self.name = name

    def build(name, shape):
        captured = Index(name) if shape == "object" else name
        def search(query):
            label = captured.name if shape == "object" else captured
            return [label + " document about " + query]
        kwargs = {"key_namespace": "kb-" + name} if shape == "object+key_namespace" else {}
        return costwatch.RetrievalCache(ttl=60, **kwargs).wrap(search, source="kb")

    print(build(name, shape)("pricing")[0], last_lookup_var.get(), sep="|")
    """
)


def _in_a_new_process(redis_url: str, name: str, shape: str) -> tuple[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", _PROCESS, redis_url, name, shape],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    value, result = out.stdout.strip().split("|")
    return value, result


def test_across_processes_factory_products_share_only_what_names_them_alike(
    redis_server: str,
) -> None:
    run = functools.partial(_in_a_new_process, redis_server)
    assert run("contracts", "name") == ("contracts document about pricing", "miss")
    assert run("marketing", "name") == ("marketing document about pricing", "miss")
    assert run("contracts", "name") == ("contracts document about pricing", "hit")
    # Captured objects are named per process: never served to another process's function...
    assert run("contracts", "object") == ("contracts document about pricing", "miss")
    assert run("contracts", "object") == ("contracts document about pricing", "miss")
    # ...unless the function is named explicitly.
    assert run("contracts", "object+key_namespace") == ("contracts document about pricing", "miss")
    assert run("contracts", "object+key_namespace") == ("contracts document about pricing", "hit")
