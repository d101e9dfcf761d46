"""Budgets under load on a real 3-master Redis Cluster while one master is restarted.

4 processes x ``--threads`` threads make budgeted calls (reserve the worst case, settle a
random actual cost at or below it) for ``--seconds``; after ``--restart-at`` seconds one master
is killed and started again on its port, empty (no persistence).  Three ``block`` budgets, one
per master, match every call.  Prints, from one run:

* per budget: the master it lives on, the limit, the sum of the costs settled against it, what
  Redis holds, and whether the loss of its state was detected;
* calls granted, refused by a budget, refused while a master was unreachable
  (``on_backend_error="deny"``), and host calls failed (anything else raised: goal 0).

Goals: on the masters that kept their data, Redis totals equal the settled sums exactly and stay
within the limit; the restarted master's budget reports its loss (``state_lost``) and counts
from $0 again (``on_state_lost="allow"``).

    python bench/cluster_load.py [--threads 8] [--seconds 8] [--restart-at 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from costwatch._core.errors import BudgetExceeded
from costwatch.budgets import Budget
from costwatch.budgets._budget import BudgetCall, BudgetRegistry
from costwatch.budgets._redis_backend import RedisBudgetBackend
from costwatch.pricing._catalog import Price
from tests._fixtures.redis_cluster import RedisCluster

PROCESSES = 4
LIMIT = Decimal("2")
PRICE = Price(input=Decimal("0.000001"), output=Decimal("0.000004"))
CALL = BudgetCall("openai", "m", "generation", "base", {}, PRICE, 1000, 500)  # worst $0.003


def budget_names(url: str) -> list[str]:
    backend = RedisBudgetBackend.from_url(url, timeout_s=1.0)
    by_node: dict[int, str] = {}
    for i in range(500):
        name = f"load-{i}"
        port = int(backend.client.get_node_from_key("{cw:b:" + name + "}:spent").port)
        by_node.setdefault(port, name)
        if len(by_node) == 3:
            break
    backend.close()
    return [by_node[port] for port in sorted(by_node)]


def worker(url: str, names: list[str], threads: int, seconds: float, out: Any) -> None:
    registry = BudgetRegistry(RedisBudgetBackend.from_url(url, timeout_s=0.5))
    for name in names:
        registry.add(Budget(name, LIMIT, "day", action="block", on_backend_error="deny"))
    lock = threading.Lock()
    totals = {"settled": Decimal(0), "granted": 0, "refused": 0, "unreachable": 0, "failed": 0}
    deadline = time.monotonic() + seconds

    def run(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            try:
                reservation = registry.reserve(CALL)
            except BudgetExceeded as exc:
                key = "unreachable" if "unavailable" in exc.reason else "refused"
                with lock:
                    totals[key] += 1
                time.sleep(0.002)
                continue
            except Exception:
                with lock:
                    totals["failed"] += 1
                continue
            if reservation is None:
                with lock:
                    totals["failed"] += 1
                continue
            cost = Decimal(rng.randint(1, 3000)).scaleb(-6)  # at most the $0.003 worst case
            reservation.settle(cost)
            with lock:
                totals["settled"] += cost
                totals["granted"] += 1

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    flushed = registry.flush(timeout_s=10)
    out.put(({**totals, "settled": str(totals["settled"])}, registry.state_lost, flushed))
    registry.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--restart-at", type=float, default=3.0)
    args = parser.parse_args()

    cluster = RedisCluster()
    cluster.start()
    try:
        names = budget_names(cluster.url)
        probe = RedisBudgetBackend.from_url(cluster.url, timeout_s=1.0)
        nodes = {
            name: cluster.index_of(
                int(probe.client.get_node_from_key("{cw:b:" + name + "}:spent").port)
            )
            for name in names
        }
        probe.close()
        restarted = nodes[names[1]]
        context = multiprocessing.get_context("fork")
        out = context.Queue()
        procs = [
            context.Process(
                target=worker, args=(cluster.url, names, args.threads, args.seconds, out)
            )
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

        settled = sum(Decimal(r[0]["settled"]) for r in results)
        counts = {k: sum(r[0][k] for r in results) for k in ("granted", "refused", "unreachable")}
        failed = sum(r[0]["failed"] for r in results)
        lost_found = sum(r[1] for r in results)
        registry = BudgetRegistry(RedisBudgetBackend.from_url(cluster.url, timeout_s=1.0))
        print(
            f"costwatch budgets on a 3-master Redis Cluster: {PROCESSES} processes x "
            f"{args.threads} threads, {wall:.1f} s, master {restarted} restarted empty at "
            f"{args.restart_at:g} s"
        )
        print(f"  settled by the processes          ${settled}")
        for name in names:
            registry.add(Budget(name, LIMIT, "day"))
            status = registry.status(name)
            note = "restarted: its state was lost" if nodes[name] == restarted else "kept"
            exact = "exact" if status.spent_usd == settled else "DIFFERS"
            print(
                f"  {name:10s} master {nodes[name]}  limit ${LIMIT}  Redis ${status.spent_usd}"
                f"  held ${status.reserved_usd}  ({note}; vs settled: {exact})"
            )
        print(
            f"  calls granted {counts['granted']}, refused by a budget {counts['refused']}, "
            f"refused while a master was unreachable {counts['unreachable']}"
        )
        print(f"  state losses detected             {lost_found}   (goal: 1)")
        print(f"  settlements flushed at the end    {all(r[2] for r in results)}")
        print(f"  host calls failed                 {failed}   (goal: 0)")
        registry.close()
    finally:
        cluster.cleanup()


if __name__ == "__main__":
    main()
