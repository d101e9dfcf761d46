"""The load bench of issue 15, small: 4 processes making budgeted, cached calls for several
tenants on a real 3-master Redis Cluster (append-only files, ``volatile-lru``) while one master
is killed and restarted.  Its figures are the acceptance: Redis holds exactly what was settled
on every budget, no budget passes its limit by more than a call's estimate error, no tenant
reads another's cache entry, no host call fails, and no budget state is lost."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_cluster_load_bench_meets_every_goal_across_a_master_restart() -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "cluster_load.py"),
            "--threads", "2",
            "--seconds", "6",
            "--restart-at", "2",
            "--limit", "0.10",  # reached within the first seconds, also on a loaded machine
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])

    settled = Decimal(figures["settled_usd"])
    limit = Decimal(figures["limit_usd"])
    assert settled > 0
    assert [b["restarted"] for b in figures["budgets"]].count(True) == 1
    for budget in figures["budgets"]:
        assert Decimal(budget["redis_usd"]) == settled, budget  # the restarted master's too
        overshoot = Decimal(budget["overshoot_usd"])
        assert overshoot == max(Decimal(budget["redis_usd"]) - limit, Decimal(0))
        assert overshoot <= Decimal(figures["estimate_error_usd"]), budget
    assert figures["state_losses"] == 0
    assert figures["flushed"] is True

    calls, cache = figures["calls"], figures["cache"]
    assert calls["failed"] == 0
    assert calls["granted"] > 0
    assert calls["refused"] > 0  # the limit was reached: the budgets did block
    assert calls["unreachable"] > 0  # the restart happened while calls were being made
    assert figures["cross_tenant_reads"] == 0
    assert cache["hit"] > cache["miss"] > 0
    assert cache["error"] > 0  # fail-open while the master was down, counted
    assert cache["skip"] == 0
