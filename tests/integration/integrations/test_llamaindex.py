"""The LlamaIndex event handler with the real llama-index-core, llama-index-llms-openai and
llama-index-embeddings-openai packages: a VectorStoreIndex query engine over a small in-memory
corpus, LLM and embeddings talking HTTP to the local fake endpoint.

Costs by hand: tests/_fixtures/hand_costs.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.llms import ChatMessage
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai import OpenAI

import costwatch
from costwatch._core.record import TokenUsage
from costwatch.integrations.llamaindex import (
    CostwatchEventHandler,
    instrument_llamaindex,
    uninstrument_llamaindex,
)
from tests._fixtures.capture import CaptureSink
from tests._fixtures.fake_providers import FakeProvider, fake_provider_fixture  # noqa: F401
from tests._fixtures.hand_costs import EMBEDDING_PRICE, MINI_COST, MINI_TOKENS, MINI_USAGE, REPLY

DOCS = [
    "Refunds are granted within 30 days of purchase with a receipt.",
    "Shipping takes three to five business days within the EU.",
    "Gift cards cannot be refunded or exchanged for cash.",
]


@pytest.fixture
def handler(cw: Any) -> Iterator[CostwatchEventHandler]:
    try:
        yield instrument_llamaindex()
    finally:
        uninstrument_llamaindex()
        cw.uninstrument()


def _llm(fake: FakeProvider) -> OpenAI:
    return OpenAI(model="gpt-4o-mini", api_base=fake.openai_base_url, api_key="test")


def _embed(fake: FakeProvider) -> OpenAIEmbedding:
    return OpenAIEmbedding(
        model="text-embedding-3-small", api_base=fake.openai_base_url, api_key="test"
    )


def _engine(fake: FakeProvider) -> Any:
    index = VectorStoreIndex.from_documents(
        [Document(text=t) for t in DOCS], embed_model=_embed(fake)
    )
    return index.as_query_engine(llm=_llm(fake), similarity_top_k=2)


def _by_stage(capture: CaptureSink) -> dict[str, list[Any]]:
    stages: dict[str, list[Any]] = {}
    for record in capture.records:
        stages.setdefault(record.stage, []).append(record)
    return stages


def test_a_query_engine_records_retrieval_as_context_of_the_generation(
    handler: CostwatchEventHandler, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    engine = _engine(fake_provider)
    capture.records.clear()  # the index build embedded the corpus

    with costwatch.tags(feature="kb"), costwatch.request("ask"):
        answer = engine.query("Can I get a refund?")

    assert str(answer) == REPLY
    stages = _by_stage(capture)
    assert {stage: len(r) for stage, r in stages.items()} == {
        "embedding": 1,
        "retrieval": 1,
        "generation": 1,
    }
    [generation] = stages["generation"]
    assert (generation.provider, generation.model) == ("openai", "gpt-4o-mini")
    assert generation.usage == MINI_TOKENS
    assert generation.cost_usd == MINI_COST
    assert generation.usage_source == "reported"
    assert generation.context_tokens["VectorIndexRetriever"] > 0
    assert generation.strategy == "rag"
    [embedding] = stages["embedding"]
    assert embedding.usage_source == "estimated"  # LlamaIndex's events carry no usage
    assert embedding.cost_usd == embedding.usage.input * EMBEDDING_PRICE
    assert {(r.feature, r.pipeline) for r in capture.records} == {("kb", "ask")}


def test_with_class_instrumentation_embeddings_are_exact_and_nothing_is_recorded_twice(
    cw: Any, handler: CostwatchEventHandler, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    fake_provider.embedding_tokens = 9
    cw.instrument(inject_stream_usage=True)
    engine = _engine(fake_provider)
    [build] = capture.records
    assert (build.stage, build.usage, build.usage_source) == (
        "embedding",
        TokenUsage(input=9),
        "reported",
    )
    capture.records.clear()

    with costwatch.request("ask"):
        answer = engine.query("Can I get a refund?")

    assert str(answer) == REPLY
    stages = _by_stage(capture)
    assert {stage: len(r) for stage, r in stages.items()} == {
        "embedding": 1,
        "retrieval": 1,
        "generation": 1,
    }
    assert stages["embedding"][0].cost_usd == 9 * EMBEDDING_PRICE
    assert stages["generation"][0].usage == MINI_TOKENS
    assert stages["generation"][0].context_tokens["VectorIndexRetriever"] > 0
    assert capture.requests[0].cost_usd == MINI_COST + 9 * EMBEDDING_PRICE


@pytest.mark.parametrize("with_classes", [False, True])
def test_a_streamed_chat_is_recorded_once_with_its_tokens_unchanged(
    cw: Any,
    handler: CostwatchEventHandler,
    capture: CaptureSink,
    fake_provider: FakeProvider,
    with_classes: bool,
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    llm = _llm(fake_provider)
    if with_classes:
        cw.instrument(inject_stream_usage=True)

    deltas = [r.delta for r in llm.stream_chat([ChatMessage(role="user", content="Hi")])]

    assert "".join(d or "" for d in deltas) == REPLY
    [record] = capture.records
    if with_classes:  # the SDK layer asks for the stream's usage
        assert (record.usage, record.usage_source) == (MINI_TOKENS, "reported")
    else:  # LlamaIndex does not: estimated, and marked so
        assert record.usage_source == "estimated"
        assert record.usage.output > 0


async def test_async_chat_is_recorded_under_its_tags(
    handler: CostwatchEventHandler, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE

    with costwatch.tags(team="async"):
        reply = await _llm(fake_provider).achat([ChatMessage(role="user", content="Hi")])

    assert reply.message.content == REPLY
    [record] = capture.records
    assert (record.usage, record.cost_usd, record.team) == (MINI_TOKENS, MINI_COST, "async")


def test_instrument_llamaindex_is_idempotent(handler: CostwatchEventHandler) -> None:
    assert instrument_llamaindex() is handler
