"""costwatch's own failures around a stream never reach the caller (outside strict mode).

A chunk costwatch cannot read is still delivered; an SDK stream costwatch cannot hook is
left alone and not recorded twice.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from time import perf_counter
from types import SimpleNamespace
from typing import Any

import pytest

import costwatch
from costwatch.accounting._recorder import CallSpec
from costwatch.capture._streams import drain, wrap_stream
from tests._fixtures.capture import CaptureSink

SPEC = CallSpec("openai", "gpt-4o-mini", "generation", "chat")


@pytest.fixture
def lenient(capture: CaptureSink) -> Iterator[CaptureSink]:
    """costwatch configured as in production: internal errors are counted, not raised."""
    costwatch.configure(service="test", strict=False, prometheus=False, otel=False, sinks=[capture])
    yield capture
    costwatch._configure.shutdown()


class Stream:
    """Shaped like the SDKs' ``Stream``: an ``_iterator`` of items and a ``close()``."""

    __module__ = "openai._streaming"

    def __init__(self, items: list[Any]) -> None:
        self._iterator = iter(items)
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        yield from self._iterator

    def close(self) -> None:
        self.closed = True


BrokenStream = type("Stream", (), {"__module__": "openai._streaming"})
"""An SDK stream of a future version, without the ``_iterator`` costwatch hooks."""


def _chunk(usage: object, content: str) -> SimpleNamespace:
    delta = SimpleNamespace(content=content, tool_calls=None)
    return SimpleNamespace(
        object="chat.completion.chunk",
        model="gpt-4o-mini",
        usage=usage,
        choices=[SimpleNamespace(delta=delta)],
    )


def test_an_unreadable_chunk_is_still_delivered(lenient: CaptureSink) -> None:
    chunks = [_chunk(None, "Hello"), _chunk(object(), " world")]  # usage of no known shape
    stream = wrap_stream(Stream(chunks), SPEC, "gpt-4o-mini", perf_counter())

    assert list(stream) == chunks
    assert lenient.internal_errors == ["streams"]
    assert len(lenient.records) == 1  # recorded once, with the estimate from the text
    assert lenient.records[0].usage_source == "estimated"


def test_close_is_passed_to_the_stream_and_recorded_once(lenient: CaptureSink) -> None:
    inner = Stream([_chunk(None, "Hello"), _chunk(None, " world")])
    stream = wrap_stream(inner, SPEC, "gpt-4o-mini", perf_counter())

    next(iter(stream))
    stream.close()
    stream.close()

    assert inner.closed
    assert len(lenient.records) == 1 and lenient.records[0].incomplete


def test_a_stream_that_cannot_be_hooked_is_not_recorded_behind_the_callers_back(
    lenient: CaptureSink,
) -> None:
    broken = BrokenStream()

    with pytest.raises(AttributeError):  # the decorator reports this and records plainly
        wrap_stream(broken, SPEC, "gpt-4o-mini", perf_counter())
    gc.collect()
    drain()  # records of collected streams are made outside the collector

    assert lenient.records == []


def test_a_value_that_is_not_a_stream_is_left_alone(lenient: CaptureSink) -> None:
    assert wrap_stream(["a", "b"], SPEC, "gpt-4o-mini", perf_counter()) is None
    assert wrap_stream(SimpleNamespace(), SPEC, "gpt-4o-mini", perf_counter()) is None


def test_drain_returns_only_once_a_record_another_thread_is_making_is_made() -> None:
    """The poller thread may have taken a dropped stream's record off the queue: a caller's
    ``drain()`` (a test, ``configure()``, exit) must not return before that record is made."""
    import threading

    from costwatch.capture import _streams

    started, release = threading.Event(), threading.Event()
    made: list[str] = []

    class SlowRecording:
        def finish(self, how: int) -> None:
            started.set()
            release.wait(5)
            made.append("record")

    _streams._deferred.put((SlowRecording(), 0))  # type: ignore[arg-type]
    poller = threading.Thread(target=drain)
    poller.start()
    assert started.wait(5)
    caller = threading.Thread(target=drain)
    caller.start()
    caller.join(0.2)
    assert caller.is_alive()  # still waiting for the poller's record
    release.set()
    caller.join(5)
    poller.join(5)
    assert made == ["record"]
