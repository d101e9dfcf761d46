"""A decorated function that calls an instrumented client records each call once, not twice."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests._fixtures.capture import CaptureSink
from tests._fixtures.fake_providers import (  # noqa: F401 - the fixture
    FakeProvider,
    fake_provider_fixture,
)

MESSAGES = [{"role": "user", "content": "What is the refund policy?"}]


@pytest.mark.parametrize("first_client", [True, False])
def test_decorator_around_instrumented_client_records_once(
    cw: Any,
    capture: CaptureSink,
    fake_provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    first_client: bool,
) -> None:
    if first_client:  # the process's first instrumented call: the decorator learns it now
        from costwatch._core import context as _context

        monkeypatch.setattr(_context, "recorded", False)
    client = cw.instrument(
        openai.OpenAI(base_url=fake_provider.openai_base_url, api_key="test", max_retries=0)
    )

    @cw.generation(provider="openai", model="gpt-4o-mini")
    def answer() -> Any:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    answer()
    answer()
    assert len(capture.records) == 2
    assert cw.summary().total.calls == 2


async def test_async_decorator_around_failing_instrumented_client_records_once(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(
        openai.AsyncOpenAI(base_url=fake_provider.openai_base_url, api_key="test", max_retries=0)
    )

    @cw.generation(provider="openai", model="gpt-4o-mini")
    async def answer() -> Any:
        return await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    fake_provider.fail_next(500)
    with pytest.raises(openai.InternalServerError):
        await answer()
    assert [r.status for r in capture.records] == ["error"]
