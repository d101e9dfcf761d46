"""costwatch's own failures never reach the host, except in strict mode (the test suite)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import costwatch
from costwatch._core.failopen import errors
from costwatch._core.record import CostRecord
from costwatch._core.sink import BaseSink
from tests._fixtures.capture import CaptureSink


class BrokenSink(BaseSink):
    def on_record(self, record: CostRecord) -> None:
        raise RuntimeError("sink bug")


@pytest.fixture
def lenient(capture: CaptureSink) -> Iterator[Any]:
    costwatch.configure(service="t", strict=False, prometheus=False, sinks=[capture, BrokenSink()])
    yield costwatch
    costwatch._configure.shutdown()


def response() -> dict[str, Any]:
    return {"usage": {"prompt_tokens": 10, "completion_tokens": 5}}


def test_broken_sink_does_not_change_the_host_result_and_is_counted(
    lenient: Any, capture: CaptureSink, caplog: pytest.LogCaptureFixture
) -> None:
    value = response()

    @lenient.generation(provider="openai", model="gpt-4o-mini")
    def answer(prompt: str) -> dict[str, Any]:
        return value

    with caplog.at_level(logging.WARNING, logger="costwatch"):
        for _ in range(5):
            assert answer("hi") is value
    assert capture.internal_errors == ["decorator"] * 5
    # rate-limited: one log line for five failures of the same component
    assert len([r for r in caplog.records if "internal error" in r.getMessage()]) == 1
    assert lenient.summary().internal_errors == {"decorator": 5}


async def test_broken_sink_does_not_change_an_async_host_result(
    lenient: Any, capture: CaptureSink
) -> None:
    value = response()

    @lenient.generation(provider="openai", model="gpt-4o-mini")
    async def answer(prompt: str) -> dict[str, Any]:
        return value

    for _ in range(5):
        assert await answer("hi") is value
    assert capture.internal_errors == ["decorator"] * 5
    assert lenient.summary().total.calls == 5


def test_strict_mode_raises_costwatch_own_errors(capture: CaptureSink) -> None:
    costwatch.configure(service="t", strict=True, prometheus=False, sinks=[BrokenSink()])
    try:

        @costwatch.generation(provider="openai", model="gpt-4o-mini")
        def answer(prompt: str) -> dict[str, Any]:
            return response()

        with pytest.raises(RuntimeError, match="sink bug"):
            answer("hi")
    finally:
        costwatch._configure.shutdown()
        errors.strict = False


def test_unreadable_usage_never_breaks_the_host(lenient: Any, capture: CaptureSink) -> None:
    class Weird:
        @property
        def usage(self) -> Any:
            raise AttributeError("no usage here")

    weird = Weird()

    @lenient.generation(provider="openai", model="gpt-4o-mini")
    def answer(prompt: str) -> Any:
        return weird

    assert answer("hi") is weird
