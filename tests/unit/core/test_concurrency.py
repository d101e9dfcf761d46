"""Totals are exact under concurrency, and attribution never leaks between threads or tasks."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from typing import Any

from tests._fixtures.capture import CaptureSink

M = Decimal(1_000_000)
PER_CALL = (100 * Decimal("0.15") + 20 * Decimal("0.60")) / M  # gpt-4o-mini


def test_eight_threads_times_ten_thousand_records_sum_exactly(cw: Any) -> None:
    cw.configure(service="test", strict=True, prometheus=False)
    threads, per_thread = 8, 10_000

    def work(team: str) -> None:
        with cw.tags(team=team):
            for _ in range(per_thread):
                cw.record(
                    provider="openai", model="gpt-4o-mini", input_tokens=100, output_tokens=20
                )

    pool = [threading.Thread(target=work, args=(f"team-{i}",)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    summary = cw.summary()
    assert summary.total.calls == threads * per_thread
    assert summary.total.tokens["input"] == threads * per_thread * 100
    assert summary.total.tokens["output"] == threads * per_thread * 20
    assert summary.total_usd == threads * per_thread * PER_CALL
    assert {team: t.calls for team, t in summary.by_team.items()} == {
        f"team-{i}": per_thread for i in range(threads)
    }


async def test_thousand_concurrent_tasks_keep_their_own_tags_and_requests(
    cw: Any, capture: CaptureSink
) -> None:
    # summary() keys tenants by the label guard: room for all of them
    cw.configure(
        service="test",
        strict=True,
        prometheus=False,
        warm_up=False,
        label_limits={"tenant": 1000},
        sinks=[capture],
    )

    @cw.generation(provider="openai", model="gpt-4o-mini")
    async def answer(prompt: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 100, "completion_tokens": 20}}

    async def one(i: int) -> None:
        with cw.tags(tenant=f"t{i}"):
            async with cw.request(f"req-{i % 10}", strategy="rag"):
                await asyncio.sleep(0)
                await answer("q")
                await asyncio.sleep(0)
                await answer("q")

    await asyncio.gather(*(one(i) for i in range(1000)))
    summary = cw.summary()
    assert summary.total.calls == 2000
    assert summary.total_usd == 2000 * PER_CALL
    assert len(summary.by_tenant) == 1000
    assert all(t.calls == 2 for t in summary.by_tenant.values())
    assert sum(p.requests for p in summary.by_pipeline.values()) == 1000
    assert all(p.cost_usd == 100 * 2 * PER_CALL for p in summary.by_pipeline.values())
    for rec in capture.records:
        assert rec.pipeline == f"req-{int(rec.tenant[1:]) % 10}"
