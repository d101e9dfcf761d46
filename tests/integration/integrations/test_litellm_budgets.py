"""Budgets over the LiteLLM logger with the real litellm package and a real Redis: LiteLLM's
synchronous calls are refused before they are sent (costwatch wraps ``function_setup``), the
holds are settled to the calls' cost or released, with ``instrument()`` on as well a call is
held once, and async calls reserve through ``redis.asyncio`` (Redis 30 ms away).

The fake OpenAI endpoint counts what it received: a refused call must never reach it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import litellm
import litellm.utils
import pytest
import redis.asyncio

import costwatch
from costwatch.integrations.litellm import (
    CostwatchLogger,
    install_sync_preflight,
    uninstall_sync_preflight,
)
from tests._fixtures.capture import CaptureSink
from tests._fixtures.fake_providers import FakeProvider, fake_provider_fixture  # noqa: F401
from tests._fixtures.hand_costs import MESSAGES, MINI_COST, MINI_USAGE, REPLY
from tests._fixtures.latency_proxy import LatencyProxy
from tests._fixtures.redis_proc import RedisProcess

MINI = "gpt-4o-mini"
INSTRUCT = "gpt-3.5-turbo-instruct"
EMBEDDER = "text-embedding-3-small"


@pytest.fixture
def configured(redis_server: str, capture: CaptureSink) -> Iterator[Any]:
    costwatch.configure(
        service="t", strict=True, prometheus=False, otel=False, warm_up=False,
        redis_url=redis_server, sinks=[capture],
    )  # fmt: skip
    yield costwatch
    costwatch.uninstrument()
    costwatch._configure.shutdown()


@pytest.fixture
def logger(configured: Any) -> Iterator[CostwatchLogger]:
    handler = CostwatchLogger()
    before = litellm.callbacks
    litellm.callbacks = [handler]
    try:
        yield handler
    finally:
        litellm.callbacks = before
        litellm.logging_callback_manager.remove_callback_from_all_lists(handler)


def _openai(fake: FakeProvider, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"model": f"openai/{model}", "api_base": fake.openai_base_url, "api_key": "test"}


def _sync_calls(fake: FakeProvider) -> dict[str, Callable[[], Any]]:
    """Every kind of synchronous LiteLLM call, each one request to the fake."""
    router = litellm.Router(model_list=[{"model_name": "support", "litellm_params": _openai(fake)}])
    return {
        "completion": lambda: litellm.completion(messages=MESSAGES, **_openai(fake)),
        "stream": lambda: list(
            litellm.completion(
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
                **_openai(fake),
            )
        ),
        "text_completion": lambda: litellm.text_completion(
            prompt="What is the refund policy?", max_tokens=50, **_openai(fake, INSTRUCT)
        ),
        "embedding": lambda: litellm.embedding(input=["refunds"], **_openai(fake, EMBEDDER)),
        "router": lambda: router.completion(model="support", messages=MESSAGES),
    }


def _spend(amount_usd: str) -> None:
    """Charge the budgets ``amount_usd`` of gpt-4o-mini input (what earlier calls spent)."""
    tokens = int(Decimal(amount_usd) / (Decimal("0.15") / 1_000_000))
    costwatch.record(provider="openai", model="gpt-4o-mini", input_tokens=tokens)
    assert costwatch.runtime().budgets.flush()


def _records(capture: CaptureSink, count: int) -> list[Any]:
    """The records once LiteLLM's logging threads delivered ``count`` (and nothing more)."""
    deadline = time.monotonic() + 10
    while len(capture.records) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # a second record of the same call would arrive by now
    assert len(capture.records) == count, capture.records
    return list(capture.records)


def test_the_litellm_module_exports_the_logger_and_the_sync_preflight_switches() -> None:
    import costwatch.integrations.litellm as module

    assert module.__all__ == [
        "CostwatchLogger",
        "install_sync_preflight",
        "uninstall_sync_preflight",
        "usage_of",
    ]


def test_a_spent_block_budget_refuses_every_kind_of_sync_call_before_it_is_sent(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    costwatch.budget("daily", limit_usd="0.01", window="1d", action="block")
    _spend("0.0101")
    calls = _sync_calls(fake_provider)

    refused = []
    for name, call in calls.items():
        with pytest.raises(costwatch.BudgetExceeded) as info:
            call()
        refused.append((name, info.value.budget))

    assert refused == [(name, "daily") for name in calls]
    assert fake_provider.requests == []  # nothing was sent, not even on the Router's retries
    assert set(capture.blocked) == {"daily"}
    assert len(capture.records) == 1  # only the spend charged above
    budgets = costwatch.runtime().budgets
    assert budgets.flush()
    assert budgets.status("daily").holds == 0


def test_within_budget_each_sync_call_is_recorded_once_and_its_hold_settled_to_its_cost(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    costwatch.budget("daily", limit_usd="5", window="1d", action="block")
    calls = _sync_calls(fake_provider)

    results = {name: call() for name, call in calls.items()}

    assert results["completion"].choices[0].message.content == REPLY
    assert results["router"].choices[0].message.content == REPLY
    assert len(fake_provider.requests) == len(calls)
    records = _records(capture, len(calls))
    assert [r.model for r in records] == [MINI, MINI, INSTRUCT, EMBEDDER, MINI]
    assert records[0].cost_usd == records[4].cost_usd == MINI_COST
    budgets = costwatch.runtime().budgets
    assert budgets.flush()
    status = budgets.status("daily")
    assert (status.holds, status.reserved_usd) == (0, 0)
    assert status.spent_usd == sum(r.cost_usd for r in records if r.cost_usd)
    assert status.spent_usd > 3 * MINI_COST


def test_a_sync_call_that_fails_releases_its_hold(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    costwatch.budget("daily", limit_usd="5", window="1d", action="block")
    fake_provider.fail_next(400, "bad request")

    with pytest.raises(litellm.BadRequestError):
        litellm.completion(messages=MESSAGES, num_retries=0, **_openai(fake_provider))

    [record] = _records(capture, 1)
    assert record.status == "error"
    budgets = costwatch.runtime().budgets
    assert budgets.flush()
    status = budgets.status("daily")
    assert (status.holds, status.reserved_usd, status.spent_usd) == (0, 0, 0)


def test_a_sync_call_litellm_rejects_before_sending_releases_its_hold(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """A LiteLLM pre-call rule refuses the prompt inside ``function_setup``, after the
    preflight held the budget: no success or failure event will come, the hold is freed."""
    costwatch.budget("daily", limit_usd="5", window="1d", action="block")
    before = litellm.pre_call_rules
    litellm.pre_call_rules = [lambda text: "password" not in text]
    try:
        with pytest.raises(litellm.APIResponseValidationError):
            litellm.completion(
                messages=[{"role": "user", "content": "my password is hunter2"}],
                max_tokens=1000,
                **_openai(fake_provider),
            )
    finally:
        litellm.pre_call_rules = before

    assert fake_provider.requests == []
    budgets = costwatch.runtime().budgets
    assert budgets.flush()
    status = budgets.status("daily")
    assert (status.holds, status.reserved_usd, status.spent_usd) == (0, 0, 0)
    time.sleep(0.3)  # a record of the refused call would arrive by now
    assert capture.records == []


def test_uninstall_restores_function_setup_and_sync_calls_are_then_charged_after_the_fact(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    costwatch.budget("daily", limit_usd="0.01", window="1d", action="block")
    _spend("0.0101")
    wrapped = litellm.utils.function_setup

    uninstall_sync_preflight()
    try:
        original = litellm.utils.function_setup
        reply = litellm.completion(messages=MESSAGES, **_openai(fake_provider))
    finally:
        install_sync_preflight()
        install_sync_preflight()  # idempotent

    assert original is wrapped.__wrapped__
    assert litellm.utils.function_setup is not original
    assert litellm.utils.function_setup.__wrapped__ is original
    assert reply.choices[0].message.content == REPLY
    assert len(fake_provider.requests) == 1
    _records(capture, 2)
    with pytest.raises(costwatch.BudgetExceeded):
        litellm.completion(messages=MESSAGES, **_openai(fake_provider))
    assert len(fake_provider.requests) == 1


def test_with_instrumentation_too_an_openai_backed_call_holds_the_budget_once(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """The logger's hold wins: taken before LiteLLM picks its transport, then handed to the
    SDK call, which records the call and settles it.  The budget has room for one worst case
    (100 000 output tokens of gpt-4o-mini, $0.06), not two: a second hold would refuse."""
    fake_provider.openai_usage = MINI_USAGE
    costwatch.budget("daily", limit_usd="0.1", window="1d", action="block")
    costwatch.instrument(inject_stream_usage=True)

    async def acompletion() -> Any:
        return await litellm.acompletion(
            messages=MESSAGES, max_tokens=100_000, **_openai(fake_provider)
        )

    def settled() -> None:
        """The call before has let go of its hold (LiteLLM may report a call's end from its
        logging thread a moment after the call returned)."""
        budgets = costwatch.runtime().budgets
        deadline = time.monotonic() + 5
        while budgets.flush() and budgets.status("daily").holds and time.monotonic() < deadline:
            time.sleep(0.01)

    first = litellm.completion(messages=MESSAGES, max_tokens=100_000, **_openai(fake_provider))
    settled()
    second = asyncio.run(acompletion())
    settled()
    chunks = list(
        litellm.completion(
            messages=MESSAGES, max_tokens=100_000, stream=True, **_openai(fake_provider)
        )
    )
    settled()
    litellm.embedding(input=["refunds"], **_openai(fake_provider, EMBEDDER))

    assert first.choices[0].message.content == second.choices[0].message.content == REPLY
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
    records = _records(capture, 4)
    assert [(r.usage_source, r.cost_usd) for r in records[:2]] == [("reported", MINI_COST)] * 2
    assert [(r.stage, r.usage_source) for r in records[2:]] == [
        ("generation", "estimated"),  # LiteLLM reads the stream raw: no usage is injected
        ("embedding", "reported"),
    ]
    budgets = costwatch.runtime().budgets
    assert budgets.flush()
    status = budgets.status("daily")
    assert (status.holds, status.reserved_usd) == (0, 0)
    assert status.spent_usd == sum(r.cost_usd for r in records) > 2 * MINI_COST
    assert capture.blocked == []


def test_concurrent_async_calls_reserve_through_redis_asyncio_sharing_round_trips(
    redis_server: str,
    redis_process: RedisProcess,
    capture: CaptureSink,
    fake_provider: FakeProvider,
) -> None:
    """The async hook awaits the ``redis.asyncio`` reservation: twenty calls started together
    share a round trip or two to a Redis 30 ms away.  A blocking reservation in the hook takes
    one round trip per call, one after the other (about 0.7 s and 20 writes; about 0.1 s and
    2 writes through ``redis.asyncio``)."""
    proxy = LatencyProxy(redis_process.port, 0.03).start()
    costwatch.configure(
        service="t", strict=True, prometheus=False, otel=False, warm_up=False,
        redis_url=proxy.url, redis_timeout_s=2.0, sinks=[capture],
    )  # fmt: skip
    costwatch.budget("daily", limit_usd="5", window="1d", action="block")
    handler = CostwatchLogger()
    before = litellm.callbacks
    litellm.callbacks = [handler]

    async def call() -> Any:
        kwargs = _openai(fake_provider)
        return await litellm.acompletion(messages=MESSAGES, max_tokens=100, **kwargs)

    async def run() -> tuple[float, float, int]:
        await asyncio.gather(*(call() for _ in range(20)))  # warm up: connections, scripts
        ping = redis.asyncio.Redis.from_url(proxy.url)
        await ping.ping()
        t0 = time.perf_counter()
        await ping.ping()
        rtt = time.perf_counter() - t0
        await ping.aclose()
        writes = proxy.writes
        t0 = time.perf_counter()
        await asyncio.gather(*(call() for _ in range(20)))
        elapsed = time.perf_counter() - t0
        deadline = time.monotonic() + 10  # LiteLLM logs async calls in tasks on this loop
        while len(capture.records) < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return rtt, elapsed, proxy.writes - writes

    try:
        rtt, elapsed, writes = asyncio.run(run())
        assert rtt >= 0.03
        assert writes <= 8, writes  # a reservation per call would send 20
        assert elapsed <= 10 * rtt, (elapsed, rtt)  # serialised: 20 round trips and more
        records = _records(capture, 40)
        budgets = costwatch.runtime().budgets
        assert budgets.flush()
        status = budgets.status("daily")
        assert (status.holds, status.reserved_usd) == (0, 0)
        assert status.spent_usd == sum(r.cost_usd for r in records)
    finally:
        litellm.callbacks = before
        litellm.logging_callback_manager.remove_callback_from_all_lists(handler)
        costwatch._configure.shutdown()
        proxy.close()


def test_with_instrumentation_too_a_retried_call_is_charged_once_for_the_attempt_that_answered(
    logger: CostwatchLogger, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """LiteLLM retries under the same call id: the first attempt's SDK call takes the logger's
    hold and settles it as a failure; the retry holds anew and is charged its cost."""
    fake_provider.openai_usage = MINI_USAGE
    costwatch.budget("daily", limit_usd="5", window="1d", action="block")
    costwatch.instrument(inject_stream_usage=True)
    fake_provider.fail_next(400, "bad request")  # the SDK does not retry it; LiteLLM does

    reply = litellm.completion(messages=MESSAGES, num_retries=1, **_openai(fake_provider))

    assert reply.choices[0].message.content == REPLY
    assert len(fake_provider.requests) == 2
    records = _records(capture, 2)
    assert [(r.status, r.cost_usd) for r in records] == [("error", 0), ("ok", MINI_COST)]
    budgets = costwatch.runtime().budgets
    assert budgets.flush()
    status = budgets.status("daily")
    assert (status.holds, status.reserved_usd, status.spent_usd) == (0, 0, MINI_COST)
