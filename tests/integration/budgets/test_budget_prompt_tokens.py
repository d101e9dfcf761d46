"""A decorated generation's reservation counts its prompt, whatever shape the prompt has, on a
real Redis Cluster: a positional pre-tokenised prompt (a list of token ids, or a batch of them)
is held at its worst case like text is, so a ``block`` budget refuses the call before the
limit is crossed (issue 15: an output-only hold let calls through that then spent past it)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import costwatch
from costwatch._core.errors import BudgetExceeded
from costwatch._core.record import TokenUsage
from tests._fixtures.capture import CaptureSink
from tests._fixtures.redis_cluster import RedisCluster

MODEL = "gpt-4o-mini"


@pytest.fixture
def cw_cluster(redis_cluster: RedisCluster, capture: CaptureSink) -> Iterator[Any]:
    costwatch.configure(
        service="t", strict=True, prometheus=False, otel=False, warm_up=False,
        redis_url=redis_cluster.url, sinks=[capture],
    )  # fmt: skip
    yield costwatch
    costwatch._configure.shutdown()


def worst_case(prompt_tokens: int, max_tokens: int) -> Decimal:
    price = costwatch._configure.runtime().catalog.resolve("openai", MODEL)
    assert price is not None
    return price.cost(TokenUsage(input=prompt_tokens, output=max_tokens))


@pytest.mark.parametrize(
    "prompt",
    [[7] * 1000, [[7] * 600, [7] * 400]],
    ids=["token-ids", "batch-of-token-ids"],
)
def test_a_positional_pre_tokenised_prompt_is_held_at_its_worst_case(
    cw_cluster: Any, prompt: list[Any]
) -> None:
    held: list[Decimal] = []

    @costwatch.generation(provider="openai", model=MODEL)
    def answer(prompt: list[Any], max_tokens: int) -> dict[str, Any]:
        held.append(costwatch._configure.runtime().budgets.status("ids").reserved_usd)
        return {"usage": {"prompt_tokens": 1000, "completion_tokens": max_tokens}}

    costwatch.budget("ids", "1", "day", action="block")
    answer(prompt, max_tokens=500)

    assert held == [worst_case(1000, 500)]


def test_a_block_budget_refuses_a_pre_tokenised_call_whose_worst_case_would_pass_it(
    cw_cluster: Any,
) -> None:
    ran: list[int] = []

    @costwatch.generation(provider="openai", model=MODEL)
    def answer(prompt: list[int], max_tokens: int) -> dict[str, Any]:
        ran.append(len(prompt))
        return {"usage": {"prompt_tokens": len(prompt), "completion_tokens": max_tokens}}

    limit = worst_case(1000, 500) - Decimal("0.00001")  # the output alone would fit
    assert worst_case(0, 500) < limit
    costwatch.budget("tight", limit, "day", action="block")

    with pytest.raises(BudgetExceeded):
        answer([7] * 1000, max_tokens=500)

    budgets = costwatch._configure.runtime().budgets
    assert ran == []
    assert budgets.flush()
    assert budgets.status("tight").spent_usd == 0
