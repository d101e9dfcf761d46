"""50 concurrent async calls under a budget with Redis 30 ms away, against one bare round trip.

Redis (a private ``redis-server``) is reached through a loopback TCP proxy that delays what it
forwards by ``--delay-ms``, so one request-reply round trip costs that much.  Prints, from one
run:

* the wall time of one bare ``redis.asyncio`` ``PING`` through the proxy (one round trip);
* the wall time of ``--calls`` concurrent ``@costwatch.generation`` coroutines under a
  ``block`` budget shared through that Redis (each reserves before it runs);
* their ratio, in round trips.  Goal: at most 2 (the reservations of concurrent calls share
  round trips and never block the event loop).

    python bench/async_budget.py [--calls 50] [--delay-ms 30] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio
from _shared import RESPONSE, redis_url

import costwatch
from tests._fixtures.latency_proxy import LatencyProxy


async def measure(proxy_url: str, calls: int, repeat: int) -> tuple[float, float]:
    @costwatch.generation(provider="openai", model="gpt-4o-mini")
    async def answer(prompt: str, max_tokens: int = 256) -> Any:
        return RESPONSE

    bare_client = redis.asyncio.Redis.from_url(proxy_url)
    await bare_client.ping()
    await answer("warm up", max_tokens=256)  # connections, scripts, tokenizer
    bare: list[float] = []
    batch: list[float] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await bare_client.ping()
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.gather(*(answer(f"question {i}", max_tokens=256) for i in range(calls)))
        batch.append(time.perf_counter() - t0)
    await bare_client.aclose()
    return statistics.median(bare), statistics.median(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--delay-ms", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with redis_url() as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        proxy = LatencyProxy(port, args.delay_ms / 1000).start()
        try:
            costwatch.configure(service="bench", prometheus=False, otel=False, redis_url=proxy.url)
            costwatch.budget("bench", limit_usd=1_000_000, window="month", action="block")
            bare, batch = asyncio.run(measure(proxy.url, args.calls, args.repeat))
            costwatch.runtime().budgets.flush()
            costwatch._configure.shutdown()
        finally:
            proxy.close()
    print(f"costwatch async budget, Redis {args.delay_ms:g} ms away (loopback proxy)")
    print(f"  one bare async round trip          {bare * 1000:8.1f} ms")
    print(f"  {args.calls} concurrent budgeted calls     {batch * 1000:8.1f} ms")
    print(f"  in round trips                     {batch / bare:8.2f}   (goal <= 2)")


if __name__ == "__main__":
    main()
