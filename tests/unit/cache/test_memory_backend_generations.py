"""The in-memory backend's generation counters (what ``invalidate`` bumps) are never evicted.

Entries are bounded by ``max_entries`` and the oldest written go first; a generation counter
dropped the same way would read as 0 again and make entries older than an ``invalidate``
current again.
"""

from __future__ import annotations

from typing import Any

from costwatch.cache._backend import MemoryBackend
from costwatch.cache._retrieval_cache import RetrievalCache
from tests._fixtures.capture import CaptureSink


def test_a_generation_survives_any_number_of_entries_written_after_it() -> None:
    backend = MemoryBackend(max_entries=3)
    assert backend.bump("ns:gen") == 1
    assert backend.bump("ns:gen") == 2

    for i in range(50):
        backend.write(f"ns:entry-{i}", b"x", ttl_ms=60_000)

    assert len(backend) == 3  # entries stay bounded
    generation, entry = backend.read("ns:gen", "ns:entry-49", max_bytes=100)
    assert (generation, entry) == (2, b"x")
    assert backend.bump("ns:gen") == 3


def test_a_fill_that_raced_an_invalidate_stays_invalid_when_the_backend_is_full(
    cw: Any, capture: CaptureSink
) -> None:
    backend = MemoryBackend(max_entries=4)  # a generation, two entries and a fill's lock
    cache = RetrievalCache(ttl=60, jitter=0.0, backend=backend)
    calls: list[str] = []

    def search(query: str) -> list[str]:
        calls.append(query)
        if query == "q" and len(calls) == 1:
            cache.invalidate()  # the index changed while this fill was computing
        return [f"doc for {query}"]

    cached = cache.wrap(search, source="kb")
    cached("q")  # written under the generation it started with: already stale
    cached("a")
    cached("b")  # the backend is full: the oldest written (not the stale entry) go
    cached("q")

    assert calls == ["q", "a", "b", "q"]
    assert capture.results() == ["miss", "miss", "miss", "miss"]
