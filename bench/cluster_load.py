"""Budgeted, cached calls under load on a real 3-master Redis Cluster while one master restarts.

4 processes x ``--threads`` threads, for ``--seconds``, each make calls through the public API:
a cached retrieval (``@costwatch.retrieval`` with a ``RetrievalCache`` on the cluster) for one of
several tenants, then a budgeted generation (``@costwatch.generation``: reserve the worst case
of 1000 prompt tokens + ``max_tokens=500``, settle the cost of the usage it returns).  Three
``block`` budgets, one per master, match every call (``on_backend_error="deny"``).  The masters
run with the budget-safe settings of docs/scaling.md (``appendonly yes``, ``appendfsync
everysec``, ``maxmemory-policy volatile-lru``); after ``--restart-at`` seconds one of them is
killed (``SIGKILL``) and started again on its port with its data dir.  Each tenant's cached
value carries the tenant it was computed for, checked on every lookup.  Each process ends with
``costwatch.shutdown()`` (what exit does: the queued settlements are applied).

Printed (``--json``: one JSON object), with the goals:

* per budget: the master it lives on, what Redis holds against the sum of the costs settled by
  the processes (equal, exactly), and its overshoot over the limit (at most one call's estimate
  error: the largest amount by which a call cost more than it reserved, 0 here);
* state losses detected (0: the restarted master reloaded its append-only file);
* cache hits, misses and errors (errors while the master is down are fail-open and counted),
  and reads that returned another tenant's value (0);
* calls granted, refused by a budget, refused while a master was unreachable, and host calls
  failed (anything else raised into the caller: 0).

    python bench/cluster_load.py [--threads 8] [--seconds 8] [--restart-at 3] [--limit 2] [--json]
"""

from __future__ import annotations

import argparse
import contextvars
import json
import multiprocessing
import random
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import costwatch
from costwatch._core.record import TokenUsage
from costwatch.budgets._budget import BudgetRegistry
from costwatch.budgets._definition import Budget
from costwatch.budgets._redis_backend import RedisBudgetBackend
from tests._fixtures.redis_cluster import BUDGET_SAFE, RedisCluster

PROCESSES = 4
TENANTS = 8
QUERIES = 40
"""Distinct questions per tenant: most lookups are hits once each has been asked."""
MODEL = "gpt-4o-mini"
PROMPT = [1] * 1000
"""Pre-tokenised: the reservation counts exactly 1000 prompt tokens (no tokenizer run)."""
MAX_OUT = 500
TENANT: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="")
"""The tenant a thread is working for, read by the retriever (the cache key never sees it)."""


class Totals(costwatch.BaseSink):
    """What one process saw: settled generation costs, estimate errors, cache results,
    state losses and costwatch's own errors."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.worst_usd = Decimal(0)
        """What a call reserves: its worst case (1000 prompt tokens, ``MAX_OUT`` out)."""
        self.settled = Decimal(0)
        self.estimate_error = Decimal(0)
        self.cache: Counter[str] = Counter()
        self.state_lost = 0
        self.internal_errors: Counter[str] = Counter()

    def on_record(self, record: costwatch.CostRecord) -> None:
        if record.stage == "generation" and record.cost_usd is not None:
            with self.lock:
                self.settled += record.cost_usd
                self.estimate_error = max(self.estimate_error, record.cost_usd - self.worst_usd)

    def on_cache(self, event: costwatch.CacheEvent) -> None:
        with self.lock:
            self.cache[event.result] += 1

    def on_budget_state_lost(self, budget: str) -> None:
        with self.lock:
            self.state_lost += 1

    def on_internal_error(self, component: str) -> None:
        with self.lock:
            self.internal_errors[component] += 1


def budget_names(url: str) -> list[str]:
    """One budget name per master, in the order of the masters' ports."""
    backend = RedisBudgetBackend.from_url(url, timeout_s=1.0)
    by_node: dict[int, str] = {}
    for i in range(500):
        name = f"load-{i}"
        by_node.setdefault(master_of(backend, name), name)
        if len(by_node) == 3:
            break
    backend.close()
    return [by_node[port] for port in sorted(by_node)]


def master_of(backend: RedisBudgetBackend, name: str) -> int:
    return int(backend.client.get_node_from_key("{cw:b:" + name + "}:spent").port)


def worker(url: str, names: list[str], args: argparse.Namespace, out: Any) -> None:
    totals = Totals()
    costwatch.configure(
        service="load",
        redis_url=url,
        redis_timeout_s=0.5,
        prometheus=False,
        warm_up=False,
        sinks=[totals],
    )
    price = costwatch._configure.runtime().catalog.resolve("openai", MODEL)
    assert price is not None
    totals.worst_usd = price.cost(TokenUsage(input=len(PROMPT), output=MAX_OUT))
    for name in names:
        costwatch.budget(name, args.limit, "day", action="block", on_backend_error="deny")

    @costwatch.retrieval(source="kb", cache=costwatch.RetrievalCache(ttl=600))
    def search(query: str) -> list[dict[str, str]]:
        return [{"tenant": TENANT.get(), "text": f"the answer to {query}"}]

    @costwatch.generation(provider="openai", model=MODEL)
    def answer(prompt: list[int], max_tokens: int, completion: int) -> dict[str, Any]:
        return {"usage": {"prompt_tokens": len(prompt), "completion_tokens": completion}}

    lock = threading.Lock()
    calls = Counter({"granted": 0, "refused": 0, "unreachable": 0, "failed": 0})
    cross_tenant = 0
    deadline = time.monotonic() + args.seconds

    def run(seed: int) -> None:
        nonlocal cross_tenant
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            tenant = f"tenant-{rng.randrange(TENANTS)}"
            TENANT.set(tenant)
            try:
                with costwatch.tags(tenant=tenant):
                    docs = search(f"question {rng.randrange(QUERIES)}")
                    if docs[0]["tenant"] != tenant:
                        with lock:
                            cross_tenant += 1
                    answer(PROMPT, max_tokens=MAX_OUT, completion=rng.randint(1, MAX_OUT))
                outcome = "granted"
            except costwatch.BudgetExceeded as exc:
                outcome = "unreachable" if "unavailable" in exc.reason else "refused"
                time.sleep(0.002)
            except Exception:
                outcome = "failed"
            with lock:
                calls[outcome] += 1

    pool = [threading.Thread(target=run, args=(seed,)) for seed in range(args.threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    budgets = costwatch._configure.runtime().budgets
    costwatch.shutdown()
    out.put(
        {
            "settled": str(totals.settled),
            "estimate_error": str(totals.estimate_error),
            "calls": dict(calls),
            "cache": dict(totals.cache),
            "cross_tenant": cross_tenant,
            "state_lost": totals.state_lost,
            "internal_errors": dict(totals.internal_errors),
            "flushed": not budgets.worker.pending,
        }
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the load on a fresh cluster; every figure of the run."""
    cluster = RedisCluster(node_args=BUDGET_SAFE)
    cluster.start()
    try:
        names = budget_names(cluster.url)
        probe = RedisBudgetBackend.from_url(cluster.url, timeout_s=1.0)
        nodes = {name: cluster.index_of(master_of(probe, name)) for name in names}
        probe.close()
        restarted = nodes[names[1]]
        context = multiprocessing.get_context("fork")
        out = context.Queue()
        procs = [
            context.Process(target=worker, args=(cluster.url, names, args, out))
            for _ in range(PROCESSES)
        ]
        t0 = time.monotonic()
        for proc in procs:
            proc.start()
        time.sleep(args.restart_at)
        cluster.restart(restarted)
        results = [out.get(timeout=args.seconds + 60) for _ in procs]
        for proc in procs:
            proc.join(30)
        wall = time.monotonic() - t0

        settled = sum((Decimal(r["settled"]) for r in results), Decimal(0))
        limit = args.limit
        registry = BudgetRegistry(RedisBudgetBackend.from_url(cluster.url, timeout_s=1.0))
        budgets = []
        for name in names:
            registry.add(Budget(name, limit, "day"))
            status = registry.status(name)
            budgets.append(
                {
                    "name": name,
                    "master": nodes[name],
                    "restarted": nodes[name] == restarted,
                    "redis_usd": str(status.spent_usd.normalize()),
                    "held_usd": str(status.reserved_usd.normalize()),
                    "overshoot_usd": str(max(status.spent_usd - limit, Decimal(0)).normalize()),
                }
            )
        registry.close()
        cache: Counter[str] = Counter()
        internal: Counter[str] = Counter()
        calls: Counter[str] = Counter()
        for r in results:
            cache.update(r["cache"])
            internal.update(r["internal_errors"])
            calls.update(r["calls"])
        return {
            "processes": PROCESSES,
            "threads": args.threads,
            "tenants": TENANTS,
            "seconds": args.seconds,
            "wall_s": round(wall, 2),
            "restarted_master": restarted,
            "restart_at_s": args.restart_at,
            "limit_usd": str(limit),
            "settled_usd": str(settled.normalize()),
            "estimate_error_usd": str(max(Decimal(r["estimate_error"]) for r in results)),
            "budgets": budgets,
            "state_losses": sum(r["state_lost"] for r in results),
            "flushed": all(r["flushed"] for r in results),
            "calls": {k: calls[k] for k in ("granted", "refused", "unreachable", "failed")},
            "cache": {k: cache[k] for k in ("hit", "miss", "error", "skip")},
            "cross_tenant_reads": sum(r["cross_tenant"] for r in results),
            "internal_errors": dict(internal),
        }
    finally:
        cluster.cleanup()


def show(f: dict[str, Any]) -> None:
    print(
        f"costwatch budgets + retrieval cache on a 3-master Redis Cluster (AOF everysec, "
        f"volatile-lru): {f['processes']} processes x {f['threads']} threads, {f['tenants']} "
        f"tenants, {f['wall_s']:.1f} s, master {f['restarted_master']} killed and restarted "
        f"at {f['restart_at_s']:g} s"
    )
    print(f"  settled by the processes          ${f['settled_usd']}")
    for b in f["budgets"]:
        exact = "exact" if Decimal(b["redis_usd"]) == Decimal(f["settled_usd"]) else "DIFFERS"
        note = "restarted" if b["restarted"] else "kept running"
        print(
            f"  {b['name']:8s} master {b['master']} ({note:12s})  limit ${f['limit_usd']}  "
            f"Redis ${b['redis_usd']} (vs settled: {exact})  held ${b['held_usd']}  "
            f"over the limit ${b['overshoot_usd']}"
        )
    print(f"  largest estimate error of a call  ${f['estimate_error_usd']}  (overshoot goal: <=)")
    calls = f["calls"]
    print(
        f"  calls granted {calls['granted']}, refused by a budget {calls['refused']}, "
        f"refused while a master was unreachable {calls['unreachable']}"
    )
    cache = f["cache"]
    print(
        f"  cache hit {cache['hit']} / miss {cache['miss']} / error {cache['error']} "
        f"(errors: fail-open while the master was down)"
    )
    print(f"  cache cross-tenant reads          {f['cross_tenant_reads']}   (goal: 0)")
    print(f"  state losses detected             {f['state_losses']}   (goal: 0)")
    print(f"  settlements flushed at shutdown   {f['flushed']}")
    print(f"  host calls failed                 {calls['failed']}   (goal: 0)")
    print(f"  costwatch internal errors         {f['internal_errors'] or 0}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--restart-at", type=float, default=3.0)
    parser.add_argument("--limit", type=Decimal, default=Decimal(2), help="each budget's, USD")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = measure(args)
    if args.json:
        print(json.dumps(figures))
    else:
        show(figures)


if __name__ == "__main__":
    main()
