"""Memory and read time when every call carries tags the host never repeats.

One bug in a host (a request id passed as the tenant) or a caller that sets the model per request
gives costwatch a new label value on every call.  This bench makes ``--calls`` decorated calls
(the ledger and the single-process Prometheus exporter both reading them), each with a random
tenant, feature and model, and prints, from one run:

* the growth of the resident set per million calls (goal: at most 50 MB);
* the time of one ``/metrics`` render and of one ``costwatch.summary()`` afterwards, wall and
  CPU (a scrape must stay well inside Prometheus' default 10 s timeout; on a shared machine the
  CPU time is the steadier figure).

    python bench/memory.py [--calls 1000000]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import time
from typing import Any

from _shared import bare
from prometheus_client import CollectorRegistry, generate_latest

import costwatch

GOAL_MB_PER_MILLION = 50.0


def rss_mb() -> float:
    """The resident set of this process now, in MB (from /proc: the current value, not a peak)."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run(calls: int, seed: int = 7) -> dict[str, float]:
    """Make ``calls`` calls with random tags; returns the RSS growth and the read times."""
    registry = CollectorRegistry()
    costwatch.configure(
        service="bench", prometheus=True, otel=False, warm_up=False, registry=registry
    )
    generate = costwatch.generation(provider="openai")(lambda prompt, model: bare(prompt))
    rng = random.Random(seed)
    models = ("gpt-4o-mini", "gpt-4o")
    for _ in range(2000):  # warm up: imports, prices, the first rows
        with costwatch.tags(tenant="warm", feature="warm"):
            generate("hello", model=models[0])
    generate_latest(registry)
    costwatch.summary()
    gc.collect()
    before = rss_mb()
    t0 = time.perf_counter()
    for i in range(calls):
        tag = f"{rng.getrandbits(64):016x}"
        with costwatch.tags(tenant="t-" + tag, feature="f-" + tag[:10]):
            # One call in four names a model never seen before (a deployment id per request).
            generate("hello", model=models[i & 1] if i & 3 else "m-" + tag[:12])
    record_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    body: Any = generate_latest(registry)
    scrape_s, scrape_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    summary = costwatch.summary()
    summary_s, summary_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    gc.collect()
    growth = rss_mb() - before
    assert summary.total.calls == calls + 2000, summary.total.calls
    return {
        "growth_mb": growth,
        "per_million_mb": growth * 1_000_000 / calls,
        "record_us": record_s / calls * 1e6,
        "scrape_s": scrape_s,
        "scrape_cpu_s": scrape_cpu_s,
        "scrape_mb": len(body) / 2**20,
        "summary_s": summary_s,
        "summary_cpu_s": summary_cpu_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1_000_000)
    args = parser.parse_args()
    result = run(args.calls)
    print(f"{args.calls} calls, each with a random tenant and feature, one in four a new model")
    print(f"  per call (tags block included) {result['record_us']:8.2f} µs")
    print(
        f"  RSS growth                      {result['growth_mb']:8.1f} MB   "
        f"= {result['per_million_mb']:.1f} MB per million calls "
        f"(goal <= {GOAL_MB_PER_MILLION:.0f})"
    )
    print(
        f"  one /metrics render             {result['scrape_s'] * 1e3:8.1f} ms "
        f"({result['scrape_cpu_s'] * 1e3:.1f} ms CPU, {result['scrape_mb']:.2f} MB)"
    )
    print(
        f"  one summary()                   {result['summary_s'] * 1e3:8.1f} ms "
        f"({result['summary_cpu_s'] * 1e3:.1f} ms CPU)"
    )


if __name__ == "__main__":
    main()
