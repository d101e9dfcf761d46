"""50 concurrent async calls under a budget with Redis 30 ms away, against one bare round trip.

Redis (a private ``redis-server``) is reached through a loopback TCP proxy that delays what it
forwards by ``--delay-ms``, so one request-reply round trip costs that much.  Prints, from one
run:

* the wall time of one bare ``redis.asyncio`` ``PING`` through the proxy (one round trip);
* the wall time of ``--calls`` concurrent calls under a ``block`` budget shared through that
  Redis (each reserves before it runs), and what they wrote to Redis;
* their ratio, in round trips.  Goal: at most 2 (the reservations of concurrent calls share
  round trips and never block the event loop).

``--kind`` says which calls: ``decorated`` (``@costwatch.generation`` coroutines, the default),
``anthropic-stream`` (``async with`` an instrumented ``AsyncAnthropic().messages.stream(...)``)
or ``litellm`` (``litellm.acompletion`` with the ``CostwatchLogger``), the last two over HTTP to
the tests' local fake provider.

    python bench/async_budget.py [--calls 50] [--delay-ms 30] [--repeat 5] [--kind decorated]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio
from _shared import RESPONSE, redis_url

import costwatch
from tests._fixtures.fake_providers import running_fake_provider
from tests._fixtures.latency_proxy import LatencyProxy


def call_of(kind: str, fake: Any) -> Callable[[str], Awaitable[Any]]:
    """One budgeted async call of ``kind`` (``fake``: the local fake provider)."""
    if kind == "anthropic-stream":
        import anthropic

        client = costwatch.instrument(
            anthropic.AsyncAnthropic(base_url=fake.anthropic_base_url, api_key="t", max_retries=0)
        )

        async def stream(prompt: str) -> Any:
            messages = [{"role": "user", "content": prompt}]
            manager = client.messages.stream(
                model="claude-sonnet-4-0", max_tokens=256, messages=messages
            )
            async with manager as events:
                return await events.get_final_text()

        return stream
    if kind == "litellm":
        import litellm

        from costwatch.integrations.litellm import CostwatchLogger

        litellm.callbacks = [CostwatchLogger()]
        target = {"api_base": fake.openai_base_url, "api_key": "t", "max_tokens": 256}

        async def complete(prompt: str) -> Any:
            messages = [{"role": "user", "content": prompt}]
            return await litellm.acompletion(
                model="openai/gpt-4o-mini", messages=messages, **target
            )

        return complete

    @costwatch.generation(provider="openai", model="gpt-4o-mini")
    async def answer(prompt: str, max_tokens: int = 256) -> Any:
        return RESPONSE

    return answer


async def measure(
    proxy: LatencyProxy, call: Callable[[str], Awaitable[Any]], calls: int, repeat: int
) -> tuple[float, float, float]:
    """Medians of ``(one bare round trip, the concurrent calls, their writes to Redis)``."""
    bare_client = redis.asyncio.Redis.from_url(proxy.url)
    await bare_client.ping()
    await asyncio.gather(*(call("warm up") for _ in range(calls)))  # connections, scripts
    bare: list[float] = []
    batch: list[float] = []
    writes: list[int] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await bare_client.ping()
        bare.append(time.perf_counter() - t0)
        before = proxy.writes
        t0 = time.perf_counter()
        await asyncio.gather(*(call(f"question {i}") for i in range(calls)))
        batch.append(time.perf_counter() - t0)
        writes.append(proxy.writes - before)
        await asyncio.to_thread(costwatch.runtime().budgets.flush)  # settle before the next
    await bare_client.aclose()
    return statistics.median(bare), statistics.median(batch), statistics.median(writes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--delay-ms", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--kind", choices=("decorated", "anthropic-stream", "litellm"), default="decorated"
    )
    args = parser.parse_args()

    with redis_url() as url, running_fake_provider() as fake:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        proxy = LatencyProxy(port, args.delay_ms / 1000).start()
        try:
            costwatch.configure(service="bench", prometheus=False, otel=False, redis_url=proxy.url)
            costwatch.budget("bench", limit_usd=1_000_000, window="month", action="block")
            call = call_of(args.kind, fake)
            bare, batch, writes = asyncio.run(measure(proxy, call, args.calls, args.repeat))
            costwatch.runtime().budgets.flush()
            costwatch._configure.shutdown()
        finally:
            proxy.close()
    print(f"costwatch async budget ({args.kind}), Redis {args.delay_ms:g} ms away (loopback proxy)")
    print(f"  one bare async round trip          {bare * 1000:8.1f} ms")
    print(f"  {args.calls} concurrent budgeted calls     {batch * 1000:8.1f} ms")
    print(f"  their writes to Redis              {writes:8.0f}")
    goal = "goal <= 2" if args.kind == "decorated" else "and the HTTP calls to the fake"
    print(f"  in round trips                     {batch / bare:8.2f}   ({goal})")


if __name__ == "__main__":
    main()
