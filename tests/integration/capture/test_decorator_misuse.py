"""Misuse of the decorators fails loudly at decoration time; the bare forms work.

``@costwatch.generation`` without parentheses once turned the function into a decorator
factory whose body never ran.  The bare forms of ``generation`` and ``embedding`` now record
like the called forms (here around the real openai SDK talking to the fake endpoint);
``retrieval`` needs its source and says so; wrong argument types name the argument.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests._fixtures.capture import CaptureSink
from tests._fixtures.fake_providers import (  # noqa: F401 - the fixture
    FakeProvider,
    fake_provider_fixture,
)

MESSAGES = [{"role": "user", "content": "Tell me about refunds."}]


def _openai(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)


def test_bare_generation_runs_the_function_and_records_its_call(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = _openai(fake_provider)

    @cw.generation
    def ask(question: str, model: str = "gpt-4o-mini") -> Any:
        return client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}]
        )

    response = ask("Tell me about refunds.", model="gpt-4o-mini")

    assert response.choices[0].message.content == "Hello from the fake provider."
    assert ask.__name__ == "ask"
    record = capture.last
    assert (record.stage, record.model, record.usage.input, record.usage.output) == (
        "generation",
        "gpt-4o-mini",
        120,
        30,
    )
    assert record.cost_usd is not None and record.cost_usd > 0


async def test_bare_embedding_runs_the_coroutine_and_records_its_call(
    cw: Any, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    client = openai.AsyncOpenAI(
        base_url=fake_provider.openai_base_url, api_key="test", max_retries=0
    )

    @cw.embedding
    async def embed(texts: list[str], model: str = "text-embedding-3-small") -> Any:
        return await client.embeddings.create(model=model, input=texts)

    result = await embed(["refunds", "returns"], model="text-embedding-3-small")

    assert len(result.data) == 2
    record = capture.last
    assert (record.stage, record.model, record.usage.input) == (
        "embedding",
        "text-embedding-3-small",
        fake_provider.embedding_tokens,
    )


def test_bare_retrieval_is_refused_with_the_fix() -> None:
    import costwatch

    with pytest.raises(TypeError, match=r'@costwatch.retrieval\("docs"\)'):

        @costwatch.retrieval  # type: ignore[arg-type]
        def search(query: str) -> list[str]:
            return []


@pytest.mark.parametrize("decorator", ["generation", "embedding"])
def test_decorating_something_that_is_not_callable_is_refused(decorator: str) -> None:
    import costwatch

    with pytest.raises(TypeError, match="decorates a function"):
        getattr(costwatch, decorator)("openai", "gpt-4o-mini")("not a function")
    with pytest.raises(TypeError, match="decorates a function"):
        costwatch.retrieval("docs")(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "argument", "error"),
    [
        (lambda cw: cw.retrieval("docs", cache="yes"), "cache", TypeError),
        (lambda cw: cw.embedding("openai", "text-embedding-3-small", cache={}), "cache", TypeError),
        (lambda cw: cw.retrieval(None), "source", TypeError),
        (lambda cw: cw.retrieval(""), "source", ValueError),
        (lambda cw: cw.retrieval("docs", provider=3), "provider", TypeError),
        (lambda cw: cw.retrieval("docs", price_usd=[1]), "price_usd", TypeError),
        (lambda cw: cw.generation("openai", model=4), "model", TypeError),
        (lambda cw: cw.generation("openai", "gpt-4o", stage=None), "stage", TypeError),
        (lambda cw: cw.generation("openai", "gpt-4o", batch="no"), "batch", TypeError),
        (lambda cw: cw.generation("openai", "gpt-4o", price_usd="free"), "price_usd", ValueError),
        (lambda cw: cw.embedding(5), "provider", TypeError),
    ],
)
def test_a_wrong_argument_type_is_refused_at_decoration_naming_it(
    cw: Any, make: Any, argument: str, error: type[Exception]
) -> None:
    with pytest.raises(error, match=argument):
        make(cw)
