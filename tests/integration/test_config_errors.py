"""A bad ``COSTWATCH_*`` value surfaces once, at configuration, never as a broken host call.

Without an explicit ``configure()`` costwatch configures itself from the environment on first
use.  When that fails it logs one clear error, counts it, runs with its defaults, and every host
call runs and is recorded.  An explicit ``configure()`` still raises ``ConfigError``, and no
``ConfigError`` ever shows the password of a Redis URL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import openai
import pytest

import costwatch
from tests._fixtures.fake_providers import (  # noqa: F401 - the fixture
    FakeProvider,
    fake_provider_fixture,
)

PASSWORD = "hunter2-secret"


@pytest.fixture(autouse=True)
def _unconfigured() -> Iterator[None]:
    costwatch._configure.shutdown()
    yield
    costwatch._configure.shutdown()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("COSTWATCH_OTEL", "perhaps"),
        ("COSTWATCH_LABEL_LIMITS", "tenant"),
        ("COSTWATCH_REDIS_URL", f"http://admin:{PASSWORD}@127.0.0.1:6379/0"),
        ("COSTWATCH_PRICES", "/nonexistent/prices.yaml"),
    ],
)
def test_a_bad_environment_value_logs_once_and_every_host_call_runs(
    variable: str,
    value: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fake_provider: FakeProvider,
) -> None:
    monkeypatch.setenv(variable, value)
    ran: list[str] = []

    @costwatch.generation(provider="openai", model="gpt-4o-mini")
    def answer(prompt: str) -> dict[str, Any]:
        ran.append(prompt)
        return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 10, "completion_tokens": 2}}

    client = costwatch.instrument(
        openai.OpenAI(base_url=fake_provider.openai_base_url, api_key="test", max_retries=0)
    )
    with caplog.at_level(logging.WARNING, logger="costwatch"):
        assert answer("first") == {
            "model": "gpt-4o-mini",
            "usage": {"prompt_tokens": 10, "completion_tokens": 2},
        }
        answer("second")
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )

    assert ran == ["first", "second"]
    assert reply.choices[0].message.content
    summary = costwatch.summary()
    assert summary.total.calls == 3
    assert summary.by_model["gpt-4o-mini"].cost_usd > 0
    assert summary.internal_errors == {"config": 1}
    logged = [r for r in caplog.records if r.name == "costwatch"]
    assert [r.levelno for r in logged] == [logging.ERROR]
    assert variable.removeprefix("COSTWATCH_").lower() in logged[0].getMessage().lower()
    assert PASSWORD not in caplog.text


def test_an_explicit_configure_with_a_bad_environment_value_still_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COSTWATCH_OTEL", "perhaps")

    with pytest.raises(costwatch.ConfigError, match="otel"):
        costwatch.configure(prometheus=False)


@pytest.mark.parametrize(
    "url",
    [
        f"http://admin:{PASSWORD}@127.0.0.1:6379/0",
        f"https://:{PASSWORD}@redis.internal:6380",
        f"ftp://{PASSWORD}@redis.internal",
    ],
)
def test_a_config_error_never_shows_the_password_of_a_redis_url(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(costwatch.ConfigError) as from_argument:
        costwatch.configure(prometheus=False, redis_url=url)
    monkeypatch.setenv("COSTWATCH_REDIS_URL", url)
    with pytest.raises(costwatch.ConfigError) as from_environment:
        costwatch.configure(prometheus=False)

    for info in (from_argument, from_environment):
        assert info.value.field == "redis_url"
        assert PASSWORD not in str(info.value)
        assert PASSWORD not in repr(info.value)
        assert PASSWORD not in repr(info.value.value)
        assert "redis.internal" in str(info.value) or "127.0.0.1" in str(info.value)
