"""Async calls under a budget reserve through ``redis.asyncio``: the event loop never blocks,
concurrent calls share round trips, ``asyncio.run()`` per call leaks no connection, and no
redis-py warning reaches the host's stderr.  Redis is 30 ms away behind a latency proxy.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import redis.asyncio

import costwatch
from costwatch._core.errors import BudgetExceeded
from tests._fixtures.capture import CaptureSink
from tests._fixtures.fake_providers import (  # noqa: F401 - the fixture
    FakeProvider,
    OpenAIUsage,
    fake_provider_fixture,
)
from tests._fixtures.latency_proxy import LatencyProxy
from tests._fixtures.redis_proc import RedisProcess

REPO = Path(__file__).resolve().parents[3]
DELAY_S = 0.03
CLAUDE_MESSAGES: list[Any] = [{"role": "user", "content": "What is the refund policy?"}]
RESPONSE = {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 20, "completion_tokens": 10}}


class LoopStalls:
    """Counts the times the event loop could not run a 2 ms ticker for a round trip or more
    (what a blocking reservation through the proxy does, once per call)."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopStalls:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._done.set()
        assert self._task is not None
        await self._task

    async def _tick(self) -> None:
        last = time.perf_counter()
        while not self._done.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now

    @property
    def count(self) -> int:
        return sum(gap >= DELAY_S for gap in self.gaps)


@pytest.fixture
def proxy(redis_server: str, redis_process: RedisProcess) -> Iterator[LatencyProxy]:
    latency = LatencyProxy(redis_process.port, DELAY_S).start()
    yield latency
    latency.close()


@pytest.fixture
def configured(proxy: LatencyProxy, capture: CaptureSink) -> Iterator[Any]:
    costwatch.configure(
        service="t", strict=True, prometheus=False, otel=False, warm_up=False,
        redis_url=proxy.url, redis_timeout_s=2.0, sinks=[capture],
    )  # fmt: skip
    costwatch.budget("async", 1000, "day", action="block")
    yield costwatch
    costwatch._configure.shutdown()


def test_fifty_concurrent_async_calls_take_about_two_round_trips_and_never_block_the_loop(
    configured: Any, proxy: LatencyProxy, capture: CaptureSink
) -> None:
    @costwatch.generation(provider="openai", model="gpt-4o-mini")
    async def answer(prompt: str, max_tokens: int = 100) -> dict[str, Any]:
        return RESPONSE

    async def run() -> tuple[float, float, int, int]:
        bare = redis.asyncio.Redis.from_url(proxy.url)
        await bare.ping()
        await answer("warm up")  # connection and script load
        t0 = time.perf_counter()
        await bare.ping()
        rtt = time.perf_counter() - t0
        await bare.aclose()

        writes = proxy.writes
        async with LoopStalls() as stalls:
            t0 = time.perf_counter()
            await asyncio.gather(*(answer(f"question {i}") for i in range(50)))
            elapsed = time.perf_counter() - t0
        return rtt, elapsed, stalls.count, proxy.writes - writes

    rtt, elapsed, stalls, writes = asyncio.run(run())
    assert rtt >= DELAY_S
    # the 50 reservations share round trips: a pipeline or two (and the settlement thread's
    # own); one reservation per call would send 50
    assert writes <= 8, writes
    # ~1.5 round trips on a quiet machine (bench/async_budget.py); the bound leaves room for
    # 50 calls' CPU work on a loaded one and is still a fifth of blocking reservations (~50)
    assert elapsed <= 10 * rtt, (elapsed, rtt)
    # a blocking reservation stalls the loop a round trip per call (50); a loaded machine a few
    assert stalls <= 10, stalls
    rt = costwatch.runtime()
    assert rt.budgets.flush()
    assert rt.budgets.status("async").holds == 0
    assert len(capture.records) == 51


def test_asyncio_run_per_call_leaks_no_connection_and_warns_nothing(
    redis_server: str,
) -> None:
    script = f"""
import asyncio, os
import costwatch
costwatch.configure(service="cli", prometheus=False, warm_up=False, redis_url={redis_server!r})
costwatch.budget("per-run", 1000, "day", action="block")

@costwatch.generation(provider="openai", model="gpt-4o-mini")
async def answer(prompt, max_tokens=50):
    return {RESPONSE!r}

def fds():
    return len(os.listdir("/proc/self/fd"))

asyncio.run(answer("first"))
before = fds()
for i in range(300):
    asyncio.run(answer(f"call {{i}}"))
print(before, fds())
costwatch.runtime().budgets.flush()
print(costwatch.runtime().budgets.status("per-run").spent_usd > 0)
"""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no UserWarning (sync Retry), no ResourceWarning
    counts, spent = result.stdout.split("\n")[:2]
    before, after = map(int, counts.split())
    assert after <= before + 2, (before, after)  # today: one more socket per asyncio.run()
    assert spent == "True"


def test_an_instrumented_async_client_reserves_without_blocking_and_is_refused_when_spent(
    configured: Any, fake_provider: FakeProvider, capture: CaptureSink
) -> None:
    fake_provider.openai_usage = OpenAIUsage(prompt_tokens=15, completion_tokens=100)
    costwatch.budget("tight", "0.0006", "day", action="block", match={"model": "gpt-4o-mini"})
    client = costwatch.instrument(
        openai.AsyncOpenAI(base_url=fake_provider.openai_base_url, api_key="t", max_retries=0)
    )
    messages = [{"role": "user", "content": "What is the refund policy?"}]

    async def run() -> tuple[int, int, int]:
        flush = costwatch.runtime().budgets.flush
        await client.chat.completions.create(  # warm up: tokenizer, connections, scripts
            model="gpt-4o-mini", messages=messages, max_tokens=200
        )
        answered, refused = 1, 0
        async with LoopStalls() as stalls:
            for _ in range(12):
                try:
                    await client.chat.completions.create(
                        model="gpt-4o-mini", messages=messages, max_tokens=200
                    )
                    answered += 1
                except BudgetExceeded:
                    refused += 1
                await asyncio.to_thread(flush)  # the test's own wait, off the loop
        await client.close()
        return answered, refused, stalls.count

    answered, refused, stalls = asyncio.run(run())
    assert answered > 0 and refused > 0
    # a blocking reservation stalls the loop a round trip per call (12); a loaded machine a few
    assert stalls <= 6, stalls
    status = costwatch.runtime().budgets.status("tight")
    assert status.spent_usd <= Decimal("0.0006")
    assert status.spent_usd == sum(r.cost_usd for r in capture.records if r.cost_usd)


def test_an_async_call_cancelled_while_reserving_leaves_no_hold(configured: Any) -> None:
    @costwatch.generation(provider="openai", model="gpt-4o-mini")
    async def answer(prompt: str, max_tokens: int = 100) -> dict[str, Any]:
        return RESPONSE

    async def run() -> None:
        await answer("warm up", max_tokens=100)
        tasks = [asyncio.create_task(answer(f"q{i}", max_tokens=100)) for i in range(10)]
        await asyncio.sleep(DELAY_S / 3)  # the reservations are on their way to Redis
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(2 * DELAY_S)  # their replies arrive: the holds were granted

    asyncio.run(run())
    budgets = costwatch.runtime().budgets
    assert budgets.flush()
    status = budgets.status("async")
    assert (status.holds, status.reserved_usd) == (0, 0)


def _anthropic(fake: FakeProvider) -> anthropic.AsyncAnthropic:
    return costwatch.instrument(
        anthropic.AsyncAnthropic(base_url=fake.anthropic_base_url, api_key="t", max_retries=0)
    )


async def _stream_text(client: anthropic.AsyncAnthropic, max_tokens: int = 200) -> str:
    manager = client.messages.stream(
        model="claude-sonnet-4-0", max_tokens=max_tokens, messages=CLAUDE_MESSAGES
    )
    async with manager as stream:
        return "".join([text async for text in stream.text_stream])


def test_concurrent_async_anthropic_streams_reserve_when_entered_without_serialising_on_redis(
    configured: Any, proxy: LatencyProxy, fake_provider: FakeProvider, capture: CaptureSink
) -> None:
    """``messages.stream(...)`` reserves at ``async with``, through ``redis.asyncio``: the
    reservations of streams entered together share round trips.  A blocking reservation when
    ``.stream()`` is called takes a round trip per stream, one after the other (about 0.7 s and
    22 writes for 20 streams; about 0.08 s and 3 writes reserved at ``async with``)."""
    client = _anthropic(fake_provider)

    async def run() -> tuple[float, float, int, int, list[str]]:
        await _stream_text(client)  # warm up: tokenizer, connections, scripts
        bare = redis.asyncio.Redis.from_url(proxy.url)
        await bare.ping()
        t0 = time.perf_counter()
        await bare.ping()
        rtt = time.perf_counter() - t0
        await bare.aclose()

        writes = proxy.writes
        async with LoopStalls() as stalls:
            t0 = time.perf_counter()
            texts = await asyncio.gather(*(_stream_text(client) for _ in range(20)))
            elapsed = time.perf_counter() - t0
        await client.close()
        return rtt, elapsed, stalls.count, proxy.writes - writes, texts

    rtt, elapsed, stalls, writes, texts = asyncio.run(run())
    assert texts == [fake_provider.reply_text] * 20
    assert rtt >= DELAY_S
    assert writes <= 8, writes  # one reservation per stream would send 20
    assert elapsed <= 10 * rtt, (elapsed, rtt)  # serialised: 20 round trips and more
    assert stalls <= 6, stalls  # a blocking reservation stalls the loop once per stream
    budgets = costwatch.runtime().budgets
    assert budgets.flush()
    status = budgets.status("async")
    assert (status.holds, status.reserved_usd) == (0, 0)
    assert len(capture.records) == 21
    assert status.spent_usd == sum(r.cost_usd for r in capture.records)


def test_a_refused_async_anthropic_stream_raises_at_async_with_and_sends_nothing(
    configured: Any, proxy: LatencyProxy, fake_provider: FakeProvider, capture: CaptureSink
) -> None:
    costwatch.budget("tiny", "0.000001", "day", action="block")
    client = _anthropic(fake_provider)

    async def run() -> tuple[int, int]:
        writes = proxy.writes
        manager = client.messages.stream(
            model="claude-sonnet-4-0", max_tokens=4096, messages=CLAUDE_MESSAGES
        )
        before_enter = proxy.writes - writes
        with pytest.raises(BudgetExceeded) as info:
            async with manager:
                pass
        assert info.value.budget == "tiny"
        await client.close()
        return before_enter, proxy.writes - writes

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before_enter, writes = asyncio.run(run())
        gc.collect()

    assert before_enter == 0  # ``.stream()`` itself reserves nothing
    assert writes >= 1  # ``async with`` did: refused
    assert fake_provider.requests == []
    assert capture.records == [] and capture.blocked == ["tiny"]
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
