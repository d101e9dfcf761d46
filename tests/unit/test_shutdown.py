"""``costwatch.shutdown()``: what exit does, on demand (a server's shutdown hook)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

USAGE = {"usage": {"prompt_tokens": 1000, "completion_tokens": 200}}
"""gpt-4o-mini at $0.15/M in, $0.60/M out: $0.00015 + $0.00012 = $0.00027."""


def test_shutdown_applies_the_queued_settlements_and_releases_every_hold(cw: Any) -> None:
    cw.budget("daily", limit_usd=1, window="day", action="block")
    rt = cw._configure.runtime()

    @cw.generation(provider="openai", model="gpt-4o-mini")
    def answer(prompt: str) -> dict[str, Any]:
        return USAGE

    for _ in range(5):
        answer("hello")
    cw.shutdown()

    status = rt.budgets.status("daily")
    assert status.spent_usd == 5 * Decimal("0.00027")
    assert status.reserved_usd == 0
    assert status.holds == 0
    assert not rt.budgets.worker.pending


def test_after_shutdown_costwatch_starts_afresh_and_a_second_shutdown_is_harmless(
    cw: Any,
) -> None:
    cw.record(provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=200)
    assert cw.summary().total_usd == Decimal("0.00027")
    old = cw._configure.runtime()

    cw.shutdown()
    cw.shutdown()

    assert cw._configure.runtime() is not old
    assert cw.summary().total_usd == 0
