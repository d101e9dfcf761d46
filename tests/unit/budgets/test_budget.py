"""Budgets against the in-memory backend: validation, windows, matching, reservations, alerts.

The registry is built directly with an injected clock, so window rollover, calendar boundaries
and reservation expiry are exact.  The same behaviour against a real Redis is in
tests/integration/budgets/test_budget_redis.py.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from costwatch._core.errors import BudgetExceeded, ConfigError
from costwatch._core.record import TokenUsage
from costwatch.budgets._alerts import BudgetAlert
from costwatch.budgets._backend import BudgetKeys, MemoryBudgetBackend, ReserveRequest, Settlement
from costwatch.budgets._budget import (
    Budget,
    BudgetCall,
    BudgetRegistry,
    Window,
    from_nano,
    to_nano,
    to_nano_ceiling,
)
from costwatch.pricing import Price, PriceTier
from tests._fixtures.capture import CaptureSink

# $1 per million input tokens, $4 per million output tokens
PRICE = Price(input=Decimal("0.000001"), output=Decimal("0.000004"))


def ts(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[arg-type, misc]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def call(
    *,
    prompt: int = 1000,
    max_out: int | None = 500,
    tags: Mapping[str, str] | None = None,
    model: str = "gpt-4o-mini",
    strategy: str = "rag",
    stage: str = "generation",
    price: Price | None = PRICE,
    fixed: Decimal | None = None,
) -> BudgetCall:
    return BudgetCall(
        provider="openai",
        model=model,
        stage=stage,
        strategy=strategy,
        tags=tags if tags is not None else {"team": "support", "feature": "faq"},
        price=price,
        prompt_tokens=prompt,
        max_output_tokens=max_out,
        fixed_cost_usd=fixed,
    )


WORST = Decimal("0.003")  # 1000 input tokens x $1/M + 500 output tokens x $4/M


@pytest.fixture
def clock() -> Clock:
    return Clock(ts(2025, 3, 14, 12, 0, 0))


@pytest.fixture
def sink() -> CaptureSink:
    return CaptureSink()


@pytest.fixture
def registry(clock: Clock, sink: CaptureSink) -> Any:
    reg = BudgetRegistry(MemoryBudgetBackend(), clock, lambda: (sink,), service="svc")
    yield reg
    reg.close()


def spend(registry: BudgetRegistry, amount: str, **kwargs: Any) -> None:
    reservation = registry.reserve(call(**kwargs))
    assert reservation is not None
    reservation.settle(Decimal(amount))
    assert registry.flush()


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "has space"}, "name"),
        ({"name": "{tag}"}, "name"),
        ({"limit_usd": -1}, "limit_usd"),
        ({"limit_usd": "lots"}, "limit_usd"),
        ({"limit_usd": float("nan")}, "limit_usd"),
        ({"limit_usd": 10_000_000}, "limit_usd"),
        ({"window": "fortnight"}, "window"),
        ({"window": "0h"}, "window"),
        ({"action": "stop"}, "action"),
        ({"thresholds": (0.5, 0)}, "thresholds"),
        ({"thresholds": 0.8}, "thresholds"),
        ({"on_backend_error": "retry"}, "on_backend_error"),
        ({"webhook_url": "ftp://x"}, "webhook_url"),
        ({"match": {"team": 3}}, "match.team"),
        ({"match": ["team"]}, "match"),
        ({"on_alert": "print"}, "on_alert"),
        ({"default_max_output_tokens": -5}, "default_max_output_tokens"),
        ({"reservation_ttl_s": 0}, "reservation_ttl_s"),
    ],
)
def test_invalid_budget_arguments_raise_config_error_naming_the_field(
    kwargs: dict[str, Any], field: str
) -> None:
    arguments: dict[str, Any] = {"name": "b", "limit_usd": 10, "window": "day", **kwargs}
    with pytest.raises(ConfigError) as caught:
        Budget(**arguments)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_limit_given_as_a_float_is_the_decimal_it_reads_as() -> None:
    assert Budget("b", 0.1, "day").limit_usd == Decimal("0.1")


# --------------------------------------------------------------------------- windows


def test_rolling_window_is_sixty_buckets_and_resets_when_the_oldest_spend_ages_out() -> None:
    window = Window("1h")
    now = ts(2025, 3, 14, 12, 30, 10)
    position = window.locate(now)
    assert window.bucket_s == 60
    assert position.cur - position.min == 59
    assert window.resets_at(position, position.cur - 10) == (position.cur - 10 + 60) * 60
    assert window.resets_at(position, -1) is None


def test_one_day_is_a_rolling_24_hours_and_seven_days_slides_by_hours() -> None:
    assert (Window("1d").kind, Window("1d").seconds) == ("rolling", 86400)
    assert Window("24h").seconds == 86400
    assert Window("7d").bucket_s == 7 * 86400 // 60


def test_calendar_month_resets_at_the_first_of_the_next_month_utc() -> None:
    window = Window("month")
    december = window.locate(ts(2024, 12, 31, 23, 59, 59))
    assert december.window_id == "2024-12"
    assert window.resets_at(december, december.cur) == ts(2025, 1, 1)
    january = window.locate(ts(2025, 1, 1, 0, 0, 0))
    assert january.window_id == "2025-01"
    assert january.cur == december.cur + 1
    assert window.resets_at(january, -1) == ts(2025, 2, 1)


def test_calendar_day_is_the_utc_date() -> None:
    window = Window("day")
    position = window.locate(ts(2025, 3, 14, 23, 59, 59))
    assert position.window_id == "2025-03-14"
    assert window.resets_at(position, position.cur) == ts(2025, 3, 15)


# --------------------------------------------------------------------------- matching


def test_match_selects_by_tags_and_dimensions_with_lists_and_model_globs() -> None:
    budget = Budget(
        "b",
        10,
        "day",
        match={"team": "support", "model": "gpt-4o*", "strategy": ["rag", "hybrid"]},
    )
    assert budget.matches(call())
    assert budget.matches(call(strategy="hybrid", model="gpt-4o"))
    assert not budget.matches(call(strategy="fine_tuned"))
    assert not budget.matches(call(model="claude-sonnet-4"))
    assert not budget.matches(call(tags={"team": "search"}))
    assert not budget.matches(call(tags={}))


def test_a_budget_without_match_covers_every_call() -> None:
    assert Budget("all", 10, "day").matches(call(tags={}))


def test_registry_is_inactive_until_a_budget_is_registered(registry: BudgetRegistry) -> None:
    assert registry.active is False
    registry.add(Budget("b", 10, "day"))
    assert registry.active is True
    registry.remove("b")
    assert registry.active is False


def test_calls_no_budget_matches_get_no_reservation(registry: BudgetRegistry) -> None:
    registry.add(Budget("b", 10, "day", match={"team": "search"}))
    assert registry.reserve(call()) is None


# --------------------------------------------------------------------------- worst case


def test_worst_case_is_prompt_at_input_price_plus_max_output_at_output_price() -> None:
    budget = Budget("b", 10, "day", default_max_output_tokens=1000)
    assert from_nano(budget.worst_case_nano(call())) == WORST
    # no max_tokens on the call: the budget's default output allowance
    assert from_nano(budget.worst_case_nano(call(max_out=None))) == Decimal("0.005")
    assert budget.worst_case_nano(call(price=None)) == 0
    assert from_nano(budget.worst_case_nano(call(fixed=Decimal("0.002")))) == Decimal("0.002")


@pytest.mark.parametrize(
    "price",
    [
        PRICE,
        Price(input=Decimal("0.15") / 10**6, output=Decimal("0.60") / 10**6),
        Price(input=Decimal(1) / 3 / 10**6, output=Decimal(2) / 3 / 10**6),  # not exact
        Price(input=Decimal("0.000001"), output=Decimal("0.000002"), per_request=Decimal("0.002")),
        Price(
            input=Decimal("0.000003"),
            output=Decimal("0.000015"),
            tiers=(PriceTier(200, Price(input=Decimal("0.000006"), output=Decimal("0.0000225"))),),
        ),
    ],
    ids=["round", "per-million", "repeating", "per-request", "long-context-tier"],
)
def test_worst_case_equals_the_price_of_prompt_plus_output_allowance(price: Price) -> None:
    budget = Budget("b", 10, "day")
    for prompt, output in ((0, 0), (1000, 500), (150, 50), (4321, 1)):
        expected = to_nano_ceiling(price.cost(TokenUsage(input=prompt, output=output)))
        assert budget.worst_case_nano(call(prompt=prompt, max_out=output, price=price)) == expected


# --------------------------------------------------------------------------- block / warn


def test_block_raises_before_the_call_when_the_worst_case_would_pass_the_limit(
    registry: BudgetRegistry, sink: CaptureSink
) -> None:
    registry.add(Budget("daily", "0.01", "day", action="block", match={"team": "support"}))
    spend(registry, "0.008")
    with pytest.raises(BudgetExceeded) as caught:
        registry.reserve(call())
    error = caught.value
    assert error.budget == "daily"
    assert error.spent_usd == Decimal("0.008")
    assert error.limit_usd == Decimal("0.01")
    assert error.window == "day"
    assert error.resets_at == datetime(2025, 3, 15, tzinfo=UTC)
    assert "would pass the limit" in error.reason
    assert sink.blocked == ["daily"]


def test_in_flight_reservations_count_against_the_limit(registry: BudgetRegistry) -> None:
    registry.add(Budget("daily", "0.007", "day", action="block"))
    first = registry.reserve(call())
    second = registry.reserve(call())
    assert first is not None and second is not None  # 0.006 held
    with pytest.raises(BudgetExceeded):
        registry.reserve(call())  # 0.009 > 0.007
    first.settle(Decimal("0.001"))
    assert registry.flush()
    assert registry.reserve(call()) is not None  # 0.001 spent + 0.003 held + 0.003


def test_settle_replaces_the_hold_with_the_actual_cost_once(registry: BudgetRegistry) -> None:
    registry.add(Budget("b", 1, "day"))
    reservation = registry.reserve(call())
    assert reservation is not None
    assert registry.status("b").reserved_usd == WORST
    assert registry.status("b").holds == 1
    reservation.settle(Decimal("0.0012"))
    reservation.settle(Decimal("0.0012"))  # a second settle is ignored
    assert registry.flush()
    status = registry.status("b")
    assert (status.spent_usd, status.reserved_usd, status.holds) == (Decimal("0.0012"), 0, 0)


def test_an_unpriced_call_releases_its_hold_and_charges_nothing(registry: BudgetRegistry) -> None:
    registry.add(Budget("b", 1, "day"))
    reservation = registry.reserve(call())
    assert reservation is not None
    reservation.settle(None)
    assert registry.flush()
    assert registry.status("b").spent_usd == 0
    assert registry.status("b").reserved_usd == 0


def test_warn_lets_the_call_through_and_alerts_once(
    registry: BudgetRegistry, sink: CaptureSink
) -> None:
    alerts: list[BudgetAlert] = []
    registry.add(
        Budget("soft", "0.004", "day", action="warn", thresholds=(2.0,), on_alert=alerts.append)
    )
    spend(registry, "0.003")
    for _ in range(3):
        reservation = registry.reserve(call())  # 0.003 + 0.003 > 0.004: allowed
        assert reservation is not None
        reservation.settle(Decimal("0.001"))
    assert registry.flush()
    assert [(a.kind, a.budget) for a in alerts] == [("exceeded", "soft")]
    assert sink.blocked == []
    assert registry.status("soft").spent_usd == Decimal("0.006")


def test_a_block_budget_refusing_releases_holds_granted_by_other_budgets(
    registry: BudgetRegistry,
) -> None:
    registry.add(Budget("team", 1, "day", match={"team": "support"}))
    registry.add(Budget("tiny", "0.001", "day", action="block", match={"feature": "faq"}))
    with pytest.raises(BudgetExceeded) as caught:
        registry.reserve(call())
    assert caught.value.budget == "tiny"
    assert registry.flush()
    assert registry.status("team").reserved_usd == 0


def test_a_zero_limit_blocks_even_unpriced_calls(registry: BudgetRegistry) -> None:
    registry.add(Budget("frozen", 0, "month", action="block"))
    with pytest.raises(BudgetExceeded):
        registry.reserve(call(price=None))


def test_calls_made_without_reservation_are_charged(registry: BudgetRegistry) -> None:
    registry.add(Budget("b", 1, "day", match={"team": "support"}))
    registry.charge(call(prompt=0, max_out=0), Decimal("0.25"))
    registry.charge(call(prompt=0, max_out=0, tags={"team": "other"}), Decimal("0.5"))
    registry.charge(call(prompt=0, max_out=0), None)
    assert registry.flush()
    assert registry.status("b").spent_usd == Decimal("0.25")


# --------------------------------------------------------------------------- time


def test_rolling_window_rollover_frees_spend_an_hour_later(
    registry: BudgetRegistry, clock: Clock
) -> None:
    registry.add(Budget("hourly", "0.005", "1h", action="block"))
    spend(registry, "0.004")
    with pytest.raises(BudgetExceeded) as caught:
        registry.reserve(call())
    assert caught.value.resets_at == datetime(2025, 3, 14, 13, 0, tzinfo=UTC)
    clock.advance(30 * 60)
    with pytest.raises(BudgetExceeded):
        registry.reserve(call())
    clock.advance(30 * 60)  # the bucket of 12:00 leaves the window
    assert registry.status("hourly").spent_usd == 0
    assert registry.reserve(call()) is not None


def test_rolling_window_sums_the_spend_of_the_last_hour(
    registry: BudgetRegistry, clock: Clock
) -> None:
    registry.add(Budget("hourly", 1, "1h"))
    for minute in (0, 20, 40, 60):
        clock.now = ts(2025, 3, 14, 12, 0) + minute * 60
        spend(registry, "0.01")
    # now 13:00: the window holds the last 60 one-minute buckets, 12:01 to 13:00
    assert registry.status("hourly").spent_usd == Decimal("0.03")
    clock.now = ts(2025, 3, 14, 13, 20, 30)
    assert registry.status("hourly").spent_usd == Decimal("0.02")


def test_calendar_month_boundary_starts_a_fresh_budget(
    registry: BudgetRegistry, clock: Clock
) -> None:
    clock.now = ts(2025, 1, 31, 23, 59, 0)
    registry.add(Budget("monthly", "0.005", "month", action="block"))
    spend(registry, "0.004")
    with pytest.raises(BudgetExceeded) as caught:
        registry.reserve(call())
    assert caught.value.resets_at == datetime(2025, 2, 1, tzinfo=UTC)
    clock.now = ts(2025, 2, 1, 0, 0, 0)
    status = registry.status("monthly")
    assert (status.window_id, status.spent_usd) == ("2025-02", 0)
    assert status.resets_at == datetime(2025, 3, 1, tzinfo=UTC)
    assert registry.reserve(call()) is not None


def test_a_reservation_never_settled_expires(registry: BudgetRegistry, clock: Clock) -> None:
    registry.add(Budget("b", "0.004", "day", action="block", reservation_ttl_s=120))
    abandoned = registry.reserve(call())  # the process "dies" and never settles
    assert abandoned is not None
    with pytest.raises(BudgetExceeded):
        registry.reserve(call())
    clock.advance(121)
    assert registry.reserve(call()) is not None
    assert registry.status("b").holds == 1


def test_a_settlement_after_its_hold_expired_is_still_charged(
    registry: BudgetRegistry, clock: Clock
) -> None:
    registry.add(Budget("b", 1, "day", reservation_ttl_s=60))
    slow = registry.reserve(call())
    assert slow is not None
    clock.advance(90)
    registry.reserve(call(price=None))  # prunes the expired hold
    slow.settle(Decimal("0.002"))
    assert registry.flush()
    status = registry.status("b")
    assert (status.spent_usd, status.reserved_usd) == (Decimal("0.002"), 0)


def test_a_settlement_batch_applied_twice_is_charged_once_however_late() -> None:
    backend = MemoryBudgetBackend()
    keys = BudgetKeys("b")
    day = Window("day")
    half = to_nano(Decimal("0.5"))
    now_ms = 10 * 86_400_000
    first = Settlement(keys, day, "proc-a", 1, [], half, now_ms, 0)
    second = Settlement(keys, day, "proc-a", 2, [], half, now_ms, 0)
    other = Settlement(keys, day, "proc-b", 1, [], half, now_ms, 0)
    results = backend.settle([first, first, second, first, other])
    assert [r.duplicate for r in results] == [False, True, False, True, False]
    assert results[-1].spent == 3 * half


def test_a_settlement_whose_reply_was_lost_is_charged_once(registry: Any) -> None:
    """Redis ran the batch but the reply timed out: the retry must not charge it again."""
    from costwatch.budgets._backend import BackendUnavailable

    registry.add(Budget("b", 10, "day"))
    real_settle = registry.backend.settle
    lost: list[int] = []

    def settle_then_lose_the_reply(settlements: Any) -> Any:
        results = real_settle(settlements)
        if not lost:
            lost.append(len(settlements))
            raise BackendUnavailable("timeout reading the reply")
        return results

    registry.backend.settle = settle_then_lose_the_reply
    registry.reserve(call()).settle(Decimal("0.25"))
    assert registry.flush(timeout_s=0.1) is False  # unknown outcome: kept for retry
    registry.reserve(call()).settle(Decimal("0.5"))  # a newer batch goes after the retry
    assert registry.flush()
    assert lost == [1]
    status = registry.status("b")
    assert (status.spent_usd, status.reserved_usd) == (Decimal("0.75"), 0)


def test_settlements_are_sent_as_one_batch_per_budget(
    registry: BudgetRegistry, clock: Clock
) -> None:
    seen: list[list[Settlement]] = []
    backend = registry.backend
    original = backend.settle

    def recording(settlements: list[Settlement]) -> Any:
        seen.append(list(settlements))
        return original(settlements)

    backend.settle = recording  # type: ignore[method-assign]
    registry.add(Budget("a", 1, "day"))
    registry.add(Budget("b", 1, "day", match={"feature": "faq"}))
    held = [registry.reserve(call()) for _ in range(5)]
    for reservation in held:
        assert reservation is not None
        reservation.settle(Decimal("0.001"))
    assert registry.flush()
    (batches,) = seen
    assert sorted((len(s.hold_ids), s.cost) for s in batches) == [(5, 5_000_000)] * 2
    assert registry.status("a").spent_usd == Decimal("0.005")
    assert registry.status("b").reserved_usd == 0


# --------------------------------------------------------------------------- alerts


def test_each_threshold_fires_once_per_window(
    registry: BudgetRegistry, clock: Clock, sink: CaptureSink
) -> None:
    alerts: list[BudgetAlert] = []
    clock.now = ts(2025, 1, 30, 12, 0)
    registry.add(Budget("m", 1, "month", thresholds=(0.5, 0.8, 1.0), on_alert=alerts.append))
    for amount in ("0.3", "0.3", "0.1", "0.15", "0.1", "0.2", "0.2"):
        spend(registry, amount)
    assert [(a.kind, a.threshold, a.window_id) for a in alerts] == [
        ("threshold", 0.5, "2025-01"),
        ("threshold", 0.8, "2025-01"),
        ("threshold", 1.0, "2025-01"),
        ("exceeded", 1.0, "2025-01"),  # a warn budget: the next call was let through, once
    ]
    assert alerts[1].spent_usd == Decimal("0.85")
    assert alerts[0].resets_at == datetime(2025, 2, 1, tzinfo=UTC)
    clock.now = ts(2025, 2, 1, 0, 30)
    spend(registry, "0.6")
    assert [(a.threshold, a.window_id) for a in alerts[4:]] == [(0.5, "2025-02")]
    # the gauges follow every settlement
    assert sink.budgets[-1] == ("m", Decimal("0.6"), Decimal("1"))


def test_rolling_window_alerts_fire_again_only_after_a_window_length(
    registry: BudgetRegistry, clock: Clock
) -> None:
    alerts: list[BudgetAlert] = []
    registry.add(Budget("h", 1, "1h", thresholds=(0.5,), on_alert=alerts.append))
    spend(registry, "0.6")
    clock.advance(30 * 60)
    spend(registry, "0.1")
    assert len(alerts) == 1
    clock.advance(61 * 60)
    spend(registry, "0.6")
    assert len(alerts) == 2


def test_a_failing_alert_callback_does_not_stop_the_others(
    registry: BudgetRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def broken(alert: BudgetAlert) -> None:
        raise ValueError("callback bug")

    registry.add(
        Budget("b", 1, "day", thresholds=(0.5,), on_alert=[broken, lambda a: seen.append(a.budget)])
    )
    spend(registry, "0.7")
    assert seen == ["b"]
    assert any("callback bug" in r.getMessage() for r in caplog.records)
    assert any("crossed 50% of its limit" in r.getMessage() for r in caplog.records)


def test_blocked_calls_alert_once_per_window(registry: BudgetRegistry) -> None:
    alerts: list[BudgetAlert] = []
    registry.add(Budget("b", "0.001", "day", action="block", thresholds=(), on_alert=alerts.append))
    for _ in range(3):
        with pytest.raises(BudgetExceeded):
            registry.reserve(call())
    assert registry.flush()
    assert [a.kind for a in alerts] == ["blocked"]
    assert "blocking calls" in alerts[0].message


def test_registration_publishes_the_definition_and_the_gauges(
    registry: BudgetRegistry, sink: CaptureSink
) -> None:
    registry.add(Budget("b", 20, "7d", match={"team": ["a", "b"]}, action="block"))
    assert registry.flush()
    definition = registry.backend.definitions()["b"]
    assert '"window": "7d"' in definition and '"limit_usd": "20"' in definition
    assert sink.budgets == [("b", Decimal(0), Decimal(20))]


# --------------------------------------------------------------------------- public API


def test_public_budget_blocks_a_wrapped_call_before_the_provider_runs(
    cw: Any, capture: CaptureSink
) -> None:
    provider_calls: list[str] = []

    @cw.generation(provider="openai", model="gpt-4o-mini")
    def answer(prompt: str, max_tokens: int = 100) -> dict[str, Any]:
        provider_calls.append(prompt)
        return {"usage": {"prompt_tokens": 20, "completion_tokens": 10}}

    cw.budget(
        "support", limit_usd="0.0001", window="day", match={"team": "support"}, action="block"
    )
    with cw.tags(team="support"):
        answer("hello", max_tokens=50)  # worst case $0.000034: allowed
        with pytest.raises(cw.BudgetExceeded) as caught:
            answer("hello again", max_tokens=200)  # 200 output tokens alone: $0.00012
    assert provider_calls == ["hello"]
    assert caught.value.budget == "support"
    assert capture.blocked == ["support"]
    with cw.tags(team="other"):
        answer("unbudgeted", max_tokens=10_000)
    assert provider_calls == ["hello", "unbudgeted"]


def test_public_budget_charges_manual_records(cw: Any) -> None:
    created = cw.budget("all", limit_usd=10, window="month")
    cw.record(provider="openai", model="gpt-4o-mini", input_tokens=1_000_000, output_tokens=0)
    assert cw.runtime().budgets.flush()
    assert created.status().spent_usd == Decimal("0.15")


def test_idle_processes_refresh_their_gauges_so_they_follow_window_resets(
    clock: Clock, sink: CaptureSink
) -> None:
    registry = BudgetRegistry(MemoryBudgetBackend(), clock, lambda: (sink,), gauge_refresh_s=0.02)
    registry.add(Budget("daily", 10, "day"))
    spend(registry, "4")
    assert sink.budgets[-1] == ("daily", Decimal(4), Decimal(10))
    clock.advance(86400)  # the next day: nothing is spent, the gauge must drop to 0
    deadline = time.monotonic() + 5
    while sink.budgets[-1][1] != 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.budgets[-1] == ("daily", Decimal(0), Decimal(10))
    registry.close()


def test_the_memory_twin_holds_a_reservation_run_twice_once(registry: Any) -> None:
    """As the Redis script does: the same hold id reserved again is held once, so releasing
    it frees the whole limit (tests/integration/budgets/test_budget_redis.py)."""
    registry.add(Budget("twice", "0.006", "day", action="block"))
    budget = registry.get("twice")
    now_ms = int(registry.clock() * 1000)
    request = ReserveRequest(
        budget.keys, budget.window, now_ms, budget.limit_nano, 3_000_000, "p.0",
        budget.hold_ms, True, budget.epoch, False,
    )  # fmt: skip
    first, again = registry.backend.reserve([request, request])
    assert first.granted and again.granted
    registry.backend.settle(
        [Settlement(budget.keys, budget.window, "proc-a", 1, ["p.0"], 0, now_ms, 0)]
    )
    assert registry.status("twice").reserved_usd == 0
    assert registry.reserve(call()) is not None
    assert registry.reserve(call()) is not None  # the whole $0.006 is free again
