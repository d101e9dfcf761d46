"""Only a chunk costwatch itself caused is hidden from a streaming caller.

Many OpenAI-compatible servers end every stream with a usage chunk, asked or not.  costwatch
asks for that chunk (``stream_options.include_usage``) and hides it only from servers known to
send it only when asked; a server it does not know is streamed to as the caller wrote the
request, and what that stream ends with says which kind of server it is.  Each test compares
what the real openai SDK's caller sees with and without costwatch, chunk by chunk, against the
fake endpoint set to behave either way.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests._fixtures.capture import CaptureSink
from tests._fixtures.fake_providers import (  # noqa: F401 - the fixture
    FakeProvider,
    fake_provider_fixture,
    http_client_to_the_fake,
)

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

MESSAGES = [{"role": "user", "content": "Tell me about refunds."}]


def _dumps(items: list[Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(i.model_dump(), i.to_dict()) for i in items]


def _sync(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)


def _async(fake: FakeProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)


def _chat(client: openai.OpenAI, **options: Any) -> list[Any]:
    return list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, **options
        )
    )


async def _async_chat(client: openai.AsyncOpenAI, **options: Any) -> list[Any]:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, **options
    )
    return [chunk async for chunk in stream]


def test_a_server_that_always_sends_usage_keeps_its_usage_chunk_for_the_caller(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.always_send_usage = True
    fake_provider.reply = ["Hi", "!"]
    plain = _chat(_sync(fake_provider))
    assert plain[-1].usage is not None and plain[-1].choices == []  # the server's own chunk

    client = cw.instrument(_sync(fake_provider))
    for _ in range(3):  # the first stream, and the ones after costwatch knows the server
        assert _dumps(_chat(client)) == _dumps(plain)

    assert [r.usage_source for r in capture.records] == ["reported"] * 3
    assert {(r.usage.input, r.usage.output) for r in capture.records} == {(120, 30)}
    assert all("stream_options" not in r.body for r in fake_provider.requests)


async def test_an_async_caller_of_a_server_that_always_sends_usage_sees_every_chunk(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.always_send_usage = True
    plain = await _async_chat(_async(fake_provider))

    client = cw.instrument(_async(fake_provider))
    for _ in range(3):
        assert _dumps(await _async_chat(client)) == _dumps(plain)

    assert [r.usage_source for r in capture.records] == ["reported"] * 3
    assert all("stream_options" not in r.body for r in fake_provider.requests)


@pytest.mark.parametrize("asked", [True, False])
def test_a_caller_who_set_include_usage_on_such_a_server_gets_exactly_its_chunks(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider, asked: bool
) -> None:
    fake_provider.always_send_usage = True
    options = {"stream_options": {"include_usage": asked}}
    plain = _chat(_sync(fake_provider), **options)

    client = cw.instrument(_sync(fake_provider))
    assert _dumps(_chat(client, **options)) == _dumps(plain)
    assert _dumps(_chat(client, **options)) == _dumps(plain)
    assert [r.usage_source for r in capture.records] == ["reported"] * 2


def test_a_server_that_sends_usage_only_when_asked_is_asked_after_its_first_stream(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    plain = _chat(_sync(fake_provider))
    assert all(c.choices for c in plain)  # no usage chunk unasked

    client = cw.instrument(_sync(fake_provider))
    first = _chat(client)
    second = _chat(client)

    assert _dumps(first) == _dumps(plain)
    assert _dumps(second) == _dumps(plain)  # the usage chunk it asked for is hidden
    requests = fake_provider.requests[-2:]
    assert "stream_options" not in requests[0].body
    assert requests[1].body["stream_options"] == {"include_usage": True}
    assert [r.usage_source for r in capture.records] == ["estimated", "reported"]
    assert (capture.records[1].usage.input, capture.records[1].usage.output) == (120, 30)


async def test_an_async_server_that_sends_usage_only_when_asked_is_learned_the_same_way(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    plain = await _async_chat(_async(fake_provider))

    client = cw.instrument(_async(fake_provider))
    assert _dumps(await _async_chat(client)) == _dumps(plain)
    assert _dumps(await _async_chat(client)) == _dumps(plain)
    assert fake_provider.requests[-1].body["stream_options"] == {"include_usage": True}
    assert [r.usage_source for r in capture.records] == ["estimated", "reported"]


def test_openai_s_own_api_is_asked_from_the_first_stream(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    """api.openai.com sends the usage chunk only when asked (documented): no probe needed."""

    def client() -> openai.OpenAI:
        return openai.OpenAI(
            api_key="test", max_retries=0, http_client=http_client_to_the_fake(fake_provider)
        )

    plain = _chat(client())
    watched = _chat(cw.instrument(client()))

    assert _dumps(watched) == _dumps(plain)
    assert fake_provider.requests[-1].body["stream_options"] == {"include_usage": True}
    assert capture.last.usage_source == "reported"


def test_a_stream_closed_early_teaches_nothing_about_its_server(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = cw.instrument(_sync(fake_provider))
    with client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ) as stream:
        next(iter(stream))
    _chat(client)

    assert [("stream_options" in r.body) for r in fake_provider.requests] == [False, False]
