"""Plain successful calls are tallied and priced when read: to the cent, the same as records.

A decorated call outside any request, budget or cache scope reaches ``summary()`` and the
in-process Prometheus exporter through per-thread token totals that are priced when read
(prices are linear in tokens).  These tests hold that path to the per-call records the other
sinks receive, to the published prices, and to exactness under threads and reconfiguration.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import costwatch
from costwatch import TokenUsage
from tests._fixtures.capture import CaptureSink

M = Decimal(1_000_000)
USER_PRICES = {
    "models": [
        {
            "provider": "acme",
            "model": "metered-llm",
            "input_per_mtok": "2",
            "output_per_mtok": "8",
            "per_request_usd": "0.001",
        },
    ]
}


def _response(model: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "usage": usage}


def _openai(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _anthropic(fresh: int, output: int, read: int = 0, write: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": fresh,
        "output_tokens": output,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write,
    }


CALLS: list[tuple[str, str, dict[str, str], dict[str, Any]]] = [
    ("openai", "gpt-4o-mini", {"feature": "faq", "tenant": "acme"}, _openai(1200, 300, 1024)),
    ("openai", "gpt-4o-mini", {"feature": "faq", "tenant": "acme"}, _openai(900, 80)),
    ("openai", "gpt-4o-mini", {"feature": "chat", "tenant": "globex"}, _openai(50, 10)),
    ("openai", "o3-mini", {"feature": "math"}, _openai(400, 900, reasoning=700)),
    ("openai", "ft:gpt-4o-mini-2024-07-18:acme::x1", {"feature": "triage"}, _openai(700, 40)),
    ("anthropic", "claude-sonnet-4-5", {"team": "support"}, _anthropic(30, 200, 5000, 1200)),
    # Past the 200k-token long-context tier: every token of the call bills at the tier price.
    ("anthropic", "claude-sonnet-4-5", {"team": "support"}, _anthropic(210_000, 500)),
    ("acme", "metered-llm", {}, _openai(1000, 100)),
    ("acme", "metered-llm", {}, _openai(10, 1)),
    ("acme", "no-such-model", {"feature": "faq"}, _openai(10, 10)),
    # Server-side searches bill per search, beside the tokens.
    (
        "anthropic",
        "claude-sonnet-4-5",
        {"feature": "research"},
        {**_anthropic(900, 300), "server_tool_use": {"web_search_requests": 3}},
    ),
    # Audio parts of the prompt and the completion bill at the audio rates.
    (
        "openai",
        "gpt-audio",
        {"feature": "voice"},
        {
            "prompt_tokens": 1000,
            "completion_tokens": 500,
            "prompt_tokens_details": {"audio_tokens": 800},
            "completion_tokens_details": {"audio_tokens": 450},
        },
    ),
]


def _site(provider: str, model: str) -> Any:
    @costwatch.generation(provider=provider, model=model)
    def call(usage: dict[str, Any]) -> dict[str, Any]:
        return _response(model, usage)

    return call


def _run_all(times: int = 3) -> None:
    sites = {(p, m): _site(p, m) for p, m, _, _ in CALLS}
    for _ in range(times):
        for provider, model, tags, usage in CALLS:
            with costwatch.tags(**tags):
                sites[provider, model](usage)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def configured(capture: CaptureSink, registry: CollectorRegistry) -> Any:
    costwatch.configure(
        service="test",
        strict=True,
        prometheus=True,
        registry=registry,
        prices=USER_PRICES,
        warm_up=False,
        sinks=[capture],
    )
    yield costwatch
    costwatch._configure.shutdown()


def test_summary_of_tallied_calls_equals_the_sum_of_their_per_call_records(
    configured: Any, capture: CaptureSink
) -> None:
    _run_all()
    summary = costwatch.summary()
    records = capture.records
    assert len(records) == summary.total.calls == 3 * len(CALLS)
    priced = [r.cost_usd for r in records if r.cost_usd is not None]
    assert summary.total_usd == sum(priced, Decimal(0))
    assert summary.total.unpriced == sum(1 for r in records if r.cost_usd is None) == 3
    for group, field in (
        (summary.by_model, "model"),
        (summary.by_feature, "feature"),
        (summary.by_strategy, "strategy"),
        (summary.by_team, "team"),
        (summary.by_tenant, "tenant"),
    ):
        expected: dict[str, Decimal] = defaultdict(Decimal)
        tokens: dict[str, int] = defaultdict(int)
        for r in records:
            expected[getattr(r, field)] += r.cost_usd or 0
            tokens[getattr(r, field)] += r.usage.total
        assert {k: v.cost_usd for k, v in group.items()} == dict(expected)
        assert {k: sum(v.tokens.values()) for k, v in group.items()} == dict(tokens)
    assert summary.by_strategy["fine_tuned"].calls == 3
    gen = summary.by_stage["generation"]
    assert gen.input_cost_usd == sum((r.input_cost_usd or 0 for r in records), Decimal(0))


def test_tallied_calls_bill_tiers_and_per_request_prices_as_published(configured: Any) -> None:
    _run_all(times=1)
    by_model = costwatch.summary().by_model
    # claude-sonnet-4-5: $3 / $15 per Mtok, cache reads $0.30, 5-minute writes $3.75;
    # above 200k prompt tokens $6 / $22.50.
    short = (
        30 * Decimal(3) + 5000 * Decimal("0.30") + 1200 * Decimal("3.75") + 200 * Decimal(15)
    ) / M
    long = (210_000 * Decimal(6) + 500 * Decimal("22.5")) / M
    # Three web searches at $10 per thousand, beside the call's tokens.
    searched = (900 * Decimal(3) + 300 * Decimal(15)) / M + 3 * Decimal("0.01")
    assert by_model["claude-sonnet-4-5"].cost_usd == short + long + searched
    # metered-llm: $2 / $8 per Mtok plus $0.001 per call.
    metered = ((1000 + 10) * Decimal(2) + (100 + 1) * Decimal(8)) / M + 2 * Decimal("0.001")
    assert by_model["metered-llm"].cost_usd == metered
    # gpt-audio: text $2.50 / $10, audio $32 / $64 per Mtok.
    assert (
        by_model["gpt-audio"].cost_usd
        == (200 * Decimal("2.50") + 800 * Decimal(32) + 50 * Decimal(10) + 450 * Decimal(64)) / M
    )
    assert by_model["no-such-model"].unpriced == 1
    assert by_model["no-such-model"].cost_usd == 0


def _sample_sum(registry: CollectorRegistry, family: str, **match: str) -> float:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == family and all(sample.labels.get(k) == v for k, v in match.items()):
                total += sample.value
    return total


def test_prometheus_exports_tallied_calls_with_the_summarys_dollars_and_tokens(
    configured: Any, registry: CollectorRegistry
) -> None:
    _run_all()
    summary = costwatch.summary()
    assert _sample_sum(registry, "costwatch_cost_usd_total") == pytest.approx(
        float(summary.total_usd)
    )
    assert (
        _sample_sum(registry, "costwatch_tokens_total", token_type="cache_write")
        == (summary.total.tokens["cache_write"])
    )
    assert _sample_sum(registry, "costwatch_requests_total", status="ok") == 3 * len(CALLS)
    assert _sample_sum(registry, "costwatch_duration_seconds_count") == 3 * len(CALLS)
    assert _sample_sum(registry, "costwatch_unpriced_requests_total") == 3
    assert _sample_sum(registry, "costwatch_cost_usd_total", strategy="fine_tuned") == (
        pytest.approx(float(summary.by_strategy["fine_tuned"].cost_usd))
    )
    # A second scrape adds nothing that was not called since.
    assert _sample_sum(registry, "costwatch_requests_total") == 3 * len(CALLS)


def test_calls_folded_into_their_rows_keep_every_count_and_latency_bucket(
    configured: Any, capture: CaptureSink, registry: CollectorRegistry
) -> None:
    # Each key's calls are folded into its row every 64 calls: 150 rounds fold every key.
    _run_all(times=150)
    summary = costwatch.summary()
    records = capture.records
    assert summary.total.calls == len(records) == 150 * len(CALLS)
    assert summary.total_usd == sum((r.cost_usd or 0 for r in records), Decimal(0))
    tally = costwatch._configure.runtime().tally
    usages = [TokenUsage(*row[1:11]) for row in tally.totals().values()]
    for field in (
        "input",
        "cache_read",
        "cache_write",
        "output",
        "reasoning",
        "cache_write_1h",
        "web_searches",
        "input_audio",
        "output_audio",
    ):
        assert sum(getattr(u, field) for u in usages) == sum(
            getattr(r.usage, field) for r in records
        ), field
    bounds = tally.bounds
    assert bounds is not None
    for bound in bounds:
        assert _sample_sum(registry, "costwatch_duration_seconds_bucket", le=str(bound)) == sum(
            1 for r in records if r.latency_s <= bound
        )
    assert _sample_sum(registry, "costwatch_duration_seconds_sum") == pytest.approx(
        sum(r.latency_s for r in records)
    )


def test_short_calls_never_add_up_to_the_long_context_price(configured: Any) -> None:
    site = _site("anthropic", "claude-sonnet-4-5")
    for _ in range(100):  # 10M prompt tokens in all, 100k a call: each under the 200k tier
        site(_anthropic(100_000, 10))
    assert costwatch.summary().total_usd == 100 * (100_000 * Decimal(3) + 10 * Decimal(15)) / M


def test_prometheus_counters_keep_tallied_calls_across_configure(
    registry: CollectorRegistry,
) -> None:
    site = _site("openai", "gpt-4o-mini")
    for _ in range(2):
        costwatch.configure(
            service="test", strict=True, prometheus=True, registry=registry, warm_up=False
        )
        for _ in range(5):
            site(_openai(100, 20))
    costwatch._configure.shutdown()
    assert _sample_sum(registry, "costwatch_requests_total") == 10
    assert _sample_sum(registry, "costwatch_tokens_total", token_type="input") == 1000


def test_eight_threads_of_decorated_calls_sum_exactly(registry: CollectorRegistry) -> None:
    costwatch.configure(
        service="test", strict=True, prometheus=True, registry=registry, warm_up=False
    )
    site = _site("openai", "gpt-4o-mini")
    threads, per_thread = 8, 10_000
    scraped: list[float] = []

    def work(team: str) -> None:
        with costwatch.tags(team=team):
            for _ in range(per_thread):
                site(_openai(100, 20))

    def scrape() -> None:  # a reader racing the writers must not lose or double anything
        for _ in range(20):
            scraped.append(_sample_sum(registry, "costwatch_requests_total"))

    pool = [threading.Thread(target=work, args=(f"team-{i % 4}",)) for i in range(threads)]
    pool.append(threading.Thread(target=scrape))
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    summary = costwatch.summary()
    costwatch._configure.shutdown()
    calls = threads * per_thread
    assert summary.total.calls == calls
    assert summary.total_usd == calls * (100 * Decimal("0.15") + 20 * Decimal("0.60")) / M
    assert {team: t.calls for team, t in summary.by_team.items()} == {
        f"team-{i}": 2 * per_thread for i in range(4)
    }
    assert scraped == sorted(scraped)
    assert _sample_sum(registry, "costwatch_requests_total") == calls
    assert _sample_sum(registry, "costwatch_tokens_total", token_type="output") == calls * 20


def test_tallied_tenants_past_the_limit_become_other_and_each_call_is_counted(
    registry: CollectorRegistry,
) -> None:
    costwatch.configure(
        service="test",
        strict=True,
        prometheus=True,
        registry=registry,
        label_limits={"tenant": 50},
        warm_up=False,
    )
    site = _site("openai", "gpt-4o-mini")
    for i in range(10_000):
        with costwatch.tags(tenant=f"t{i}"):
            site(_openai(10, 1))
        if i == 5_000:
            _sample_sum(registry, "costwatch_requests_total")  # a scrape half-way through
    tenants = set()
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "costwatch_requests_total":
                tenants.add(sample.labels["tenant"])
    costwatch._configure.shutdown()
    assert len(tenants) == 51 and "other" in tenants
    assert _sample_sum(registry, "costwatch_label_overflow_total", label="tenant") == 10_000 - 50
    assert _sample_sum(registry, "costwatch_requests_total", tenant="other") == 10_000 - 50


def test_a_call_appended_while_its_entry_is_folded_is_kept() -> None:
    from costwatch.accounting._tally import Tally
    from costwatch.pricing import PriceCatalog

    tally = Tally(PriceCatalog())
    cursor = tally.cursor()
    key = ("openai", "generation", "gpt-4o-mini", ("", "", "", ""), 0, "")
    entry = tally.entry(key)
    for _ in range(3):
        entry.extend((100, 0, 0, 20, 0, 0, None, 0.5))
    fold = tally._folded

    def folded_while_another_thread_appends(held: list[Any]) -> list[Any]:
        entry.extend((7, 0, 0, 1, 0, 0, None, 0.25))  # lands after the calls being folded
        return fold(held)

    tally._folded = folded_while_another_thread_appends  # type: ignore[method-assign]
    tally.fold(entry)
    tally._folded = fold  # type: ignore[method-assign]
    assert len(entry) == 1 + 8  # the new row, then the call that came during the fold
    [calls] = cursor.take()
    assert (calls.calls, calls.usage.input, calls.usage.output, calls.latency_s) == (
        4,
        307,
        61,
        1.75,
    )
    assert calls.cost_usd == (307 * Decimal("0.15") + 61 * Decimal("0.60")) / M
    assert cursor.take() == []


def test_tags_outside_the_attribution_never_multiply_the_totals(
    configured: Any, capture: CaptureSink
) -> None:
    site = _site("openai", "gpt-4o-mini")
    for i in range(1_000):
        with costwatch.tags(feature="faq", user_id=f"u{i}", request_id=f"r{i}"):
            site(_openai(100, 20))
    assert len(costwatch._configure.runtime().tally.totals()) == 1
    summary = costwatch.summary()
    assert summary.by_feature["faq"].calls == 1_000
    assert summary.total_usd == 1_000 * (100 * Decimal("0.15") + 20 * Decimal("0.60")) / M
    assert capture.last.tags["user_id"] == "u999"  # per-call records keep every tag


def test_first_tags_after_untagged_calls_attribute_the_calls_inside(
    configured: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from costwatch._core import context as _context

    # As in a process that has never entered a tags block: plain calls skip reading the
    # tags contextvar until one is entered.
    monkeypatch.setattr(_context, "tagged", False)
    site = _site("openai", "gpt-4o-mini")
    site(_openai(100, 20))
    with costwatch.tags(feature="faq", tenant="acme"):
        site(_openai(100, 20))
        site(_openai(100, 20))
    site(_openai(100, 20))
    summary = costwatch.summary()
    assert summary.by_feature["faq"].calls == summary.by_tenant["acme"].calls == 2
    assert summary.total.calls == 4


def test_functions_decorated_on_the_fly_share_their_totals(configured: Any) -> None:
    for _ in range(100):  # e.g. a closure decorated inside a request handler
        _site("openai", "gpt-4o-mini")(_openai(100, 20))
    assert len(costwatch._configure.runtime().tally.totals()) == 1
    assert costwatch.summary().by_model["gpt-4o-mini"].calls == 100


def test_a_tally_that_cannot_be_read_never_fails_the_scrape(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from costwatch.accounting._tally import Tally

    costwatch.configure(
        service="test", strict=False, prometheus=True, registry=registry, warm_up=False
    )
    _site("openai", "gpt-4o-mini")(_openai(100, 20))  # tallied
    costwatch.record(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=1)

    def unreadable(self: Tally) -> None:
        raise RuntimeError("tally unreadable")

    monkeypatch.setattr(Tally, "totals", unreadable)
    samples = {
        (s.name, s.labels.get("component", "")): s.value
        for metric in registry.collect()
        for s in metric.samples
    }
    monkeypatch.undo()
    costwatch._configure.shutdown()
    assert samples[("costwatch_requests_total", "")] == 1  # the recorded call is still there
    assert samples[("costwatch_internal_errors_total", "exporter.prometheus")] == 1


def test_a_tally_that_cannot_be_read_never_fails_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    from costwatch.accounting._tally import Tally

    costwatch.configure(service="test", strict=False, prometheus=False, warm_up=False)
    _site("openai", "gpt-4o-mini")(_openai(100, 20))  # tallied
    costwatch.record(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=1)

    def unreadable(self: Tally) -> None:
        raise RuntimeError("tally unreadable")

    monkeypatch.setattr(Tally, "totals", unreadable)
    summary = costwatch.summary()
    monkeypatch.undo()
    costwatch._configure.shutdown()
    assert summary.total.calls == 1  # the recorded call is still there
    assert summary.internal_errors == {"ledger": 1}


def test_cache_lookups_are_counted_per_thread_and_exact_for_every_reader(
    configured: Any, capture: CaptureSink, registry: CollectorRegistry
) -> None:
    from tests._fixtures.threads import all_at_once

    saved_per_hit = 1000 * Decimal("0.02") / M  # text-embedding-3-small, 1,000 tokens

    @costwatch.retrieval(source="kb", cache=costwatch.RetrievalCache(ttl=600))
    def search(query: str) -> list[str]:
        costwatch.record(
            provider="openai", model="text-embedding-3-small", input_tokens=1000, stage="embedding"
        )
        return [f"about {query}"]

    def lookups() -> None:
        for i in range(2_000):
            with costwatch.tags(tenant="acme" if i // 10 % 2 else "globex"):
                search(f"q{i % 10}")

    all_at_once(lookups, 8)
    hits, misses = 8 * 2_000 - 20, 20  # ten questions, two tenants: one miss each
    rt = costwatch._configure.runtime()
    assert sum(n for n, _ in rt.tally.cache_totals().values()) == hits + misses
    summary = costwatch.summary()
    assert (summary.cache["kb"].hits, summary.cache["kb"].misses) == (hits, misses)
    assert summary.cache_saved_usd == hits * saved_per_hit
    assert _sample_sum(registry, "costwatch_cache_requests_total", result="hit") == hits
    assert _sample_sum(registry, "costwatch_cache_requests_total", result="miss") == misses
    assert _sample_sum(registry, "costwatch_cache_saved_usd_total") == pytest.approx(
        float(hits * saved_per_hit)
    )
    # Another sink still gets every lookup as it happens.
    assert len(capture.cache) == hits + misses
    assert {e.tenant for e in capture.cache} == {"acme", "globex"}


def test_a_cache_reader_gets_each_lookup_once_with_what_it_saved() -> None:
    from costwatch._core.sink import CacheEvent
    from costwatch.accounting._tally import Tally, cache_key
    from costwatch.pricing import PriceCatalog

    tally = Tally(PriceCatalog())
    ledger, exporter = tally.cursor(), tally.cursor()
    hit = CacheEvent("kb", "hit", Decimal("0.002"), "svc", "faq", "", "acme")
    for _ in range(3):
        tally.add_cache(cache_key(hit), hit.saved_usd)
    other_entry = hit._replace(saved_usd=Decimal("0.0005"))  # another entry, another cost
    tally.add_cache(cache_key(other_entry), other_entry.saved_usd)
    assert ledger.take_cache() == [(hit._replace(saved_usd=Decimal("0.0065")), 4)]
    miss = hit._replace(result="miss", saved_usd=Decimal(0))
    tally.add_cache(cache_key(miss), miss.saved_usd)
    assert ledger.take_cache() == [(miss, 1)]
    assert ledger.take_cache() == []
    assert sorted((n, e.saved_usd) for e, n in exporter.take_cache()) == [
        (1, 0),
        (4, Decimal("0.0065")),
    ]


def test_entries_of_many_different_costs_share_one_row(configured: Any) -> None:
    @costwatch.retrieval(source="kb", cache=costwatch.RetrievalCache(ttl=600))
    def search(query: str) -> list[str]:
        costwatch.record(
            provider="openai",
            model="text-embedding-3-small",
            input_tokens=len(query),
            stage="embedding",
        )
        return [query]

    questions = [f"question {'x' * i}" for i in range(500)]  # each a different cost
    for _ in range(2):
        for question in questions:
            search(question)
    rows = costwatch._configure.runtime().tally.cache_totals()
    assert sorted(n for n, _ in rows.values()) == [500, 500]  # one hit row, one miss row
    saved = sum(len(q) for q in questions) * Decimal("0.02") / M
    assert costwatch.summary().cache_saved_usd == saved


def _run_in_requests(times: int = 3) -> None:
    """``CALLS``, each inside a request: declared strategies, an inferred one, request tags."""
    sites = {(p, m): _site(p, m) for p, m, _, _ in CALLS}
    for _ in range(times):
        for i, (provider, model, tags, usage) in enumerate(CALLS):
            if i % 3 == 0:
                block = costwatch.request("answer", strategy="rag", **tags)
            elif i % 3 == 1:
                block = costwatch.request("triage", strategy="hybrid", **tags)
            else:
                block = costwatch.request("classify", **tags)
            with block:
                sites[provider, model](usage)


def test_calls_inside_requests_are_tallied_to_the_same_samples_and_summary_as_their_records(
    configured: Any, capture: CaptureSink, registry: CollectorRegistry
) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from costwatch.exporters.prometheus import PrometheusSink

    _run_in_requests()
    records, requests = capture.records, capture.requests
    assert len(records) == len(requests) == 3 * len(CALLS)
    # The same calls fed one record at a time to an exporter of their own.
    reference = CollectorRegistry()
    sink = PrometheusSink(reference, service="test")
    for record in records:
        sink.on_record(record)
    for request in requests:
        sink.on_request_end(request)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[Any, ...]], float]:
        text = generate_latest(registry).decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if not s.name.endswith("_created")
        }

    tallied = samples(registry)
    assert any(name == "costwatch_pipeline_cost_usd_total" for name, _ in tallied)
    assert tallied == pytest.approx(samples(reference))

    summary = costwatch.summary()
    for name, pipeline in summary.by_pipeline.items():
        mine = [r for r in records if r.pipeline == name]
        assert pipeline.requests == sum(1 for e in requests if e.pipeline == name)
        assert pipeline.cost_usd == sum((e.cost_usd for e in requests if e.pipeline == name), 0)
        assert sum(t.calls for t in pipeline.calls.values()) == len(mine)
        for (stage, provider, model), totals in pipeline.calls.items():
            these = [r for r in mine if (r.stage, r.provider, r.model) == (stage, provider, model)]
            assert totals.calls == len(these)
            assert totals.cost_usd == sum((r.cost_usd or 0 for r in these), Decimal(0))
            assert totals.unpriced == sum(1 for r in these if r.cost_usd is None)
            assert totals.input_cost_usd == sum((r.input_cost_usd or 0 for r in these), Decimal(0))
            assert totals.tokens["reasoning"] == sum(r.usage.reasoning for r in these)
            assert totals.tokens["input"] == sum(r.usage.input for r in these)
    assert summary.by_pipeline["triage"].strategies == {"hybrid": 4 * 3}
    assert summary.by_strategy["rag"].calls == sum(1 for r in records if r.strategy == "rag")
