"""Added latency of a blocking budget check on a wrapped call, against a bare redis-py EVALSHA.

Prints, from one run, medians of:

* a ``@costwatch.generation``-wrapped call with no budget registered;
* the same call with a ``block`` budget shared through Redis (pre-flight: prompt tokens
  counted, worst case priced, one EVALSHA of the reservation script; after the call the
  settlement is queued for the background thread);
* a bare redis-py ``EVALSHA`` of the same reservation script with the same arguments;

and the ratio (added latency) / (bare EVALSHA).  Goal: at most 1.3x.  Rounds are interleaved
so machine noise hits every variant alike.

    python bench/budget.py [--calls 50] [--rounds 200]

Redis: ``$REDIS_URL`` when set, else a ``redis-server`` started on a free loopback port.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from _shared import redis_url

import costwatch
from costwatch.budgets._backend import BudgetKeys
from costwatch.budgets._scripts import RESERVE_LUA, RESERVE_SHA

PROMPT = "What is the refund policy for annual plans bought through a reseller?"
RESPONSE = {
    "model": "gpt-4o-mini-2024-07-18",
    "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500},
}


def timed(fn: Callable[[], object], calls: int) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        t0 = clock()
        fn()
        out.append((clock() - t0) / 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()

    with redis_url() as url:
        costwatch.configure(service="bench", prometheus=False, otel=False, redis_url=url)

        @costwatch.generation(provider="openai", model="gpt-4o-mini")
        def answer(prompt: str, max_tokens: int = 256) -> dict[str, Any]:
            return RESPONSE

        registry = costwatch.runtime().budgets
        budget = costwatch.budget("bench", limit_usd=1_000_000, window="month", action="block")

        # the bare client: same socket options, same script, same arguments
        client = redis.Redis.from_url(url, socket_timeout=0.1, socket_connect_timeout=0.1)
        client.script_load(RESERVE_LUA)
        keys = BudgetKeys("bare")
        kind, size, count = budget.window.script_args
        limit = budget.limit_nano
        worst = 194_400  # 1 + ~14 prompt tokens and 256 output tokens of gpt-4o-mini, nano-$
        hold_ids = iter(range(10**12))

        def bare_evalsha() -> object:
            return client.evalsha(
                RESERVE_SHA,
                3,
                keys.spent,
                keys.holds,
                keys.amounts,
                "",  # Redis's own TIME
                kind,
                size,
                count,
                limit,
                worst,
                f"bare.{next(hold_ids)}",
                600_000,
                1,
                "e",
                "e",
                0,
            )

        def with_budget() -> object:
            return answer(PROMPT, max_tokens=256)

        def without_budget() -> object:
            return answer(PROMPT, max_tokens=256)

        # warm up: tokenizer, price memo, scripts, connections
        for _ in range(300):
            with_budget()
            bare_evalsha()
        registry.flush()

        results: dict[str, list[float]] = {"none": [], "budget": [], "bare": []}
        for _ in range(args.rounds):
            registry.active = False  # exactly the recorder's no-budget fast path
            results["none"] += timed(without_budget, args.calls)
            registry.active = True
            results["budget"] += timed(with_budget, args.calls)
            results["bare"] += timed(bare_evalsha, args.calls)
        registry.flush()

        none = statistics.median(results["none"])
        with_check = statistics.median(results["budget"])
        bare = statistics.median(results["bare"])
        added = with_check - none
        status = budget.status()
        print(f"costwatch budget check, Redis {url}, {args.rounds} rounds x {args.calls} calls")
        print(f"  wrapped call, no budget              median {none:8.1f} us")
        print(f"  wrapped call, block budget           median {with_check:8.1f} us")
        print(f"  added by the budget check            median {added:8.1f} us")
        print(f"  bare redis-py EVALSHA, same script   median {bare:8.1f} us")
        print(f"  ratio added / bare EVALSHA           {added / bare:8.2f}x   (goal <= 1.30x)")
        print(f"  (settled: {status.spent_usd} USD spent, {status.holds} holds left)")
        client.close()
        costwatch._configure.shutdown()


if __name__ == "__main__":
    main()
