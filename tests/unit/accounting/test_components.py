"""A generation's cost split into fresh input, retrieved context and output adds up the same
whether calls are split one by one (the record log) or summed first (``summary()``'s rows)."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from costwatch.accounting._components import context_share, split

# gpt-4o-mini, per token: with cache reads at half price, a call's input cost per prompt token
# is no terminating decimal, so its context share is a 28-digit quotient
INPUT = Decimal("0.00000015")
CACHE_READ = Decimal("0.000000075")
OUTPUT = Decimal("0.0000006")


def test_a_context_share_is_its_token_fraction_of_the_input_cost_to_at_most_20_places() -> None:
    assert str(context_share(Decimal("0.0001"), 1, 3)) == "0.00003333333333333333"
    assert str(context_share(Decimal("0.0003"), 1, 3)) == "0.0001"  # no trailing zeros
    assert str(context_share(Decimal("30"), 3, 3)) == "30"


@pytest.mark.parametrize("seed", range(10))
def test_splitting_each_call_then_summing_equals_splitting_the_sums_to_the_last_digit(
    seed: int,
) -> None:
    rng = random.Random(seed)
    per_call: dict[str, Decimal] = {}
    cost = input_cost = context_cost = Decimal(0)
    tokens = {"input": 0, "cache_read": 0, "output": 0}
    context_tokens = 0
    for _ in range(200):
        usage = {
            "input": rng.randint(100, 3000),
            "cache_read": rng.choice((0, 1024, 2048)),
            "output": rng.randint(1, 800),
        }
        prompt = usage["input"] + usage["cache_read"]
        context = rng.randint(0, prompt)
        call_input = usage["input"] * INPUT + usage["cache_read"] * CACHE_READ
        call_cost = call_input + usage["output"] * OUTPUT
        share = context_share(call_input, context, prompt)
        for component, usd, _ in split("generation", call_cost, call_input, usage, context, share):
            assert usd is not None
            per_call[component] = per_call.get(component, Decimal(0)) + usd
        cost += call_cost
        input_cost += call_input
        context_cost += share
        context_tokens += context
        for key, count in usage.items():
            tokens[key] += count

    summed = split("generation", cost, input_cost, tokens, context_tokens, context_cost)
    assert {component: usd for component, usd, _ in summed} == per_call
