"""Per-call overhead of costwatch on a sync call that returns a usage object, two shapes.

Prints, from one run, the median per-call time of: the bare call, a minimal hand-written wrapper
(times the call, reads usage, looks the price up in a dict), the ``@costwatch.generation``
call (ledger only: the Prometheus/OTel sinks are measured by bench/exporters.py), with a
``summary()`` every 2000 calls timed too, since plain calls are priced when read, and the README
quickstart shape: one ``costwatch.request(...)`` inside ``costwatch.tags(...)`` holding one call
of an instrumented ``openai.OpenAI`` client (its ``create`` returns the prebuilt response, so no
HTTP noise hides the overhead; the bare call of that shape is the same ``create``, uninstrumented).
The quickstart shape is also written by hand, as small as it can be (two context managers on
contextvars, a wrapper that prices the call in ``Decimal`` and adds it to per-tag totals and to
its request): the floor of what that shape costs in Python, whoever writes it, measured beside it.
Rounds are interleaved so that machine noise hits all variants alike; medians, never a single run.

    python bench/overhead.py [--calls 20000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextvars import ContextVar
from decimal import Decimal
from typing import Any

from _shared import bare, make_response, per_call

import costwatch

PRICES = {"gpt-4o-mini": (Decimal("0.15") / 10**6, Decimal("0.60") / 10**6)}


def hand_written(fn: Callable[[str], Any]) -> Callable[[str], Any]:
    totals = [Decimal(0)]

    def wrapper(prompt: str) -> Any:
        t0 = time.perf_counter()
        result = fn(prompt)
        latency = time.perf_counter() - t0  # noqa: F841 - a real wrapper would keep it
        usage = result.usage
        price_in, price_out = PRICES["gpt-4o-mini"]
        totals[0] += usage.prompt_tokens * price_in + usage.completion_tokens * price_out
        return result

    return wrapper


READ_EVERY = 2000


def with_reads(fn: Callable[[str], Any], calls: int) -> float:
    """Mean seconds per call of ``fn``, a ``costwatch.summary()`` every READ_EVERY calls
    included: plain calls are priced when the totals are read, so the reads count."""
    t0 = time.perf_counter()
    done = 0
    while done < calls:
        n = min(READ_EVERY, calls - done)
        for _ in range(n):
            fn("hello")
        costwatch.summary()
        done += n
    return (time.perf_counter() - t0) / calls


def quickstart_client() -> Any:
    """An ``openai.OpenAI`` client whose ``chat.completions.create`` returns a prebuilt
    response: what ``instrument()`` wraps is the SDK method's place, not the network.

    Each client returns its own response object: an instrumented client notes the response it
    recorded, and a decorated function returning that same object does not record it again,
    so sharing ``bare``'s response would let the ``@generation`` variant skip its work."""
    import openai

    response = make_response()
    client = openai.OpenAI(api_key="bench", base_url="http://127.0.0.1:9/v1")
    client.chat.completions.create = lambda **kwargs: response  # type: ignore[method-assign]
    return client


MESSAGES = [{"role": "user", "content": "hello"}]


def quickstart(client: Any) -> Callable[[str], Any]:
    """The README quickstart: tags, a request, one instrumented call inside."""

    def call(prompt: str) -> Any:
        with (
            costwatch.tags(feature="faq", team="support"),
            costwatch.request("answer_question", strategy="rag"),
        ):
            return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    return call


_hand_tags: ContextVar[dict[str, str]] = ContextVar("hand_tags", default={})  # noqa: B039
_hand_request: ContextVar[list[Any] | None] = ContextVar("hand_request", default=None)


class hand_tags:  # noqa: N801 - used like costwatch.tags
    """Tags for the calls inside, merged over the outer ones (a class: cheaper than
    ``@contextmanager``)."""

    __slots__ = ("values", "token")

    def __init__(self, **values: str) -> None:
        self.values = values

    def __enter__(self) -> None:
        self.token = _hand_tags.set({**_hand_tags.get(), **self.values})

    def __exit__(self, *exc: object) -> None:
        _hand_tags.reset(self.token)


class hand_request:  # noqa: N801 - used like costwatch.request
    """A request: its calls add their cost to it; its end is kept with its cost and latency."""

    __slots__ = ("name", "ends", "cost", "started", "token")

    def __init__(self, name: str, ends: list[tuple[str, Decimal, float]]) -> None:
        self.name = name
        self.ends = ends

    def __enter__(self) -> None:
        self.cost = [Decimal(0)]
        self.started = time.perf_counter()
        self.token = _hand_request.set(self.cost)

    def __exit__(self, *exc: object) -> None:
        _hand_request.reset(self.token)
        self.ends.append((self.name, self.cost[0], time.perf_counter() - self.started))


def hand_quickstart(client: Any) -> Callable[[str], Any]:
    """The quickstart shape written by hand, as small as it can be: the floor of its cost."""
    create = client.chat.completions.create
    totals: dict[tuple[tuple[str, str], ...], Decimal] = {}
    ends: list[tuple[str, Decimal, float]] = []

    def instrumented(**kwargs: Any) -> Any:
        t0 = time.perf_counter()
        result = create(**kwargs)
        latency = time.perf_counter() - t0  # noqa: F841 - a real wrapper would keep it
        usage = result.usage
        price_in, price_out = PRICES[kwargs["model"]]
        cost = usage.prompt_tokens * price_in + usage.completion_tokens * price_out
        key = tuple(_hand_tags.get().items())
        totals[key] = totals.get(key, Decimal(0)) + cost
        state = _hand_request.get()
        if state is not None:
            state[0] += cost
        return result

    def call(prompt: str) -> Any:
        with hand_tags(feature="faq", team="support"), hand_request("answer_question", ends):
            return instrumented(model="gpt-4o-mini", messages=MESSAGES)

    return call


def bare_create(client: Any) -> Callable[[str], Any]:
    def call(prompt: str) -> Any:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    return call


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    costwatch.configure(service="bench", prometheus=False, otel=False, warm_up=False)
    variants = {
        "bare call": bare,
        "hand-written wrapper": hand_written(bare),
        "@costwatch.generation": costwatch.generation(provider="openai", model="gpt-4o-mini")(bare),
        "bare SDK create": bare_create(quickstart_client()),
        "quickstart shape": quickstart(costwatch.instrument(quickstart_client())),
        "quickstart by hand": hand_quickstart(quickstart_client()),
    }
    for fn in variants.values():  # warm up: price resolution, caches
        per_call(fn, 1000)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            if name == "@costwatch.generation":
                samples[name].append(with_reads(fn, args.calls))
            else:
                samples[name].append(per_call(fn, args.calls))
    med = {name: statistics.median(s) for name, s in samples.items()}
    floor = med["bare call"]
    hand = med["hand-written wrapper"] - floor
    ours = med["@costwatch.generation"] - floor
    print(f"median per call over {args.rounds} interleaved rounds of {args.calls} calls")
    floors = {
        "quickstart shape": med["bare SDK create"],
        "quickstart by hand": med["bare SDK create"],
    }
    for name, value in med.items():
        base = floors.get(name, floor)
        print(f"  {name:<24} {value * 1e6:8.3f} µs   overhead {(value - base) * 1e6:7.3f} µs")
    quick = med["quickstart shape"] - med["bare SDK create"]
    print(f"@generation overhead / hand-written overhead = {ours / hand:.2f}x  (goal <= 2.5x)")
    by_hand = med["quickstart by hand"] - med["bare SDK create"]
    print(f"quickstart overhead / hand-written overhead = {quick / hand:.2f}x  (goal <= 3x)")
    print(
        f"  the shape written by hand: {by_hand / hand:.2f}x the hand-written wrapper "
        f"(the floor of the shape); costwatch's quickstart = {quick / by_hand:.2f}x that floor"
    )
    calls = costwatch.summary().total.calls
    print(f"(recorded {calls} calls; total ${costwatch.summary().total_usd:.2f})")


if __name__ == "__main__":
    main()
