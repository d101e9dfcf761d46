"""The ledger adds a record and tallied calls with the same arithmetic, to its rows and to the
traffic profile of the request they ran in."""

from __future__ import annotations

from decimal import Decimal

from costwatch._core.record import CostRecord, TokenUsage
from costwatch.accounting._ledger import Ledger
from costwatch.accounting._tally import Tally
from costwatch.pricing import PriceCatalog

M = Decimal(1_000_000)
GPT_4O_MINI = ("generation", "openai", "gpt-4o-mini")


def test_a_record_inside_a_request_adds_to_its_row_and_to_its_pipelines_profile() -> None:
    ledger = Ledger()
    ledger.on_record(
        CostRecord(
            "openai",
            "gpt-4o-mini",
            "generation",
            TokenUsage(input=100, output=20),
            Decimal("0.3"),
            0.5,
            status="error",
            input_cost_usd=Decimal("0.1"),
            feature="faq",
            pipeline="answer",
            context_tokens={"kb": 40},
            context_cost_usd={"kb": Decimal("0.04")},
        )
    )
    ledger.on_record(
        CostRecord("openai", "gpt-4o-mini", "generation", TokenUsage(input=7), None, 0.25)
    )
    summary = ledger.summary()

    [profile] = summary.by_pipeline["answer"].calls.items()
    assert profile[0] == GPT_4O_MINI
    calls = profile[1]
    assert (calls.calls, calls.errors, calls.unpriced) == (1, 1, 0)
    assert (calls.cost_usd, calls.input_cost_usd) == (Decimal("0.3"), Decimal("0.1"))
    assert (calls.tokens["input"], calls.tokens["output"], calls.latency_s) == (100, 20, 0.5)
    assert (calls.context_tokens, calls.context_cost_usd) == (40, Decimal("0.04"))
    assert summary.by_pipeline["answer"].requests == 0  # no request has ended yet
    assert summary.by_feature["faq"] == calls  # the same call, in its row
    total = summary.total
    assert (total.calls, total.errors, total.unpriced, total.cost_usd) == (2, 1, 1, Decimal("0.3"))
    assert (total.tokens["input"], total.latency_s) == (107, 0.75)


def test_tallied_calls_add_to_the_ledger_as_the_records_of_those_calls_would() -> None:
    tally = Tally(PriceCatalog())
    tallied, recorded = Ledger(), Ledger()
    tallied.attach(tally)
    key = ("openai", "generation", "gpt-4o-mini", ("faq", "", "acme", ""), 0, "answer")
    entry = tally.entry(key)
    for _ in range(3):
        entry.extend((100, 0, 0, 20, 0, 0, None, 0.5))
    cost = 3 * (100 * Decimal("0.15") + 20 * Decimal("0.60")) / M
    input_cost = 3 * 100 * Decimal("0.15") / M
    for _ in range(3):
        recorded.on_record(
            CostRecord(
                "openai",
                "gpt-4o-mini",
                "generation",
                TokenUsage(input=100, output=20),
                cost / 3,
                0.5,
                input_cost_usd=input_cost / 3,
                feature="faq",
                tenant="acme",
                pipeline="answer",
            )
        )
    from_tally, from_records = tallied.summary(), recorded.summary()

    assert from_tally.by_tenant["acme"] == from_records.by_tenant["acme"]
    assert from_tally.by_feature["faq"].cost_usd == cost
    profile = from_tally.by_pipeline["answer"].calls[GPT_4O_MINI]
    assert profile == from_records.by_pipeline["answer"].calls[GPT_4O_MINI]
    assert (profile.calls, profile.tokens["input"], profile.latency_s) == (3, 300, 1.5)
