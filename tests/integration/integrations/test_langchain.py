"""The LangChain callback handler with the real langchain-core, langchain-openai and
langchain-anthropic packages, whose SDK clients talk HTTP to the local fake endpoint.

Costs by hand: tests/_fixtures/hand_costs.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.tools import tool
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

import costwatch
from costwatch._core.record import TokenUsage
from costwatch.integrations.langchain import CostwatchCallbackHandler, usage_from_metadata
from tests._fixtures.capture import CaptureSink
from tests._fixtures.fake_providers import (  # noqa: F401 - the fixture
    FakeProvider,
    OpenAIUsage,
    fake_provider_fixture,
)
from tests._fixtures.hand_costs import (
    CLAUDE,
    CLAUDE_COST,
    CLAUDE_TOKENS,
    CLAUDE_USAGE,
    EMBEDDING_PRICE,
    MINI_COST,
    MINI_TOKENS,
    MINI_USAGE,
    O4_COST,
    O4_TOKENS,
    O4_USAGE,
)

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

DOCS = [
    "Refunds are granted within 30 days of purchase with a receipt.",
    "Shipping takes three to five business days within the EU.",
    "Gift cards cannot be refunded or exchanged for cash.",
]


@pytest.fixture
def handler(cw: Any) -> CostwatchCallbackHandler:
    return CostwatchCallbackHandler()


@pytest.fixture
def classes(cw: Any) -> Iterator[None]:
    cw.instrument(inject_stream_usage=True)
    try:
        yield
    finally:
        cw.uninstrument()


def _chat(fake: FakeProvider, model: str = "gpt-4o-mini", **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model=model, base_url=fake.openai_base_url, api_key="test", max_retries=0, **kwargs
    )


def _claude(fake: FakeProvider) -> ChatAnthropic:
    return ChatAnthropic(  # type: ignore[call-arg]
        model=CLAUDE, base_url=fake.anthropic_base_url, api_key="test", max_retries=0
    )


def _rag_chain(fake: FakeProvider) -> Any:
    embeddings = OpenAIEmbeddings(
        model="text-embedding-3-small",
        base_url=fake.openai_base_url,
        api_key="test",
        check_embedding_ctx_length=False,
    )
    store = InMemoryVectorStore(embeddings)
    store.add_documents([Document(page_content=text) for text in DOCS])
    retriever = store.as_retriever(search_kwargs={"k": 2})
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from this context:\n{context}"), ("human", "{question}")]
    )

    def join(docs: list[Document]) -> str:
        return "\n".join(d.page_content for d in docs)

    return (
        {"context": retriever | join, "question": RunnablePassthrough()}
        | prompt
        | _chat(fake)
        | StrOutputParser()
    )


def _by_stage(capture: CaptureSink) -> dict[str, list[Any]]:
    stages: dict[str, list[Any]] = {}
    for record in capture.records:
        stages.setdefault(record.stage, []).append(record)
    return stages


def test_usage_metadata_details_are_taken_out_of_the_totals_they_are_part_of() -> None:
    usage = usage_from_metadata(
        {
            "input_tokens": 3600,
            "output_tokens": 900,
            "total_tokens": 4500,
            "input_token_details": {
                "cache_read": 2000,
                "cache_creation": 0,
                "ephemeral_5m_input_tokens": 1000,
                "ephemeral_1h_input_tokens": 500,
                "audio": 40,
            },
            "output_token_details": {"reasoning": 640, "audio": 12},
        }
    )

    assert usage == TokenUsage(
        input=100,
        cache_read=2000,
        cache_write=1500,
        output=260,
        reasoning=640,
        cache_write_1h=500,
        input_audio=40,
        output_audio=12,
    )
    assert usage.total == 4500


def test_a_retrieval_chain_records_the_retrieval_and_the_generation_with_its_context(
    handler: CostwatchCallbackHandler, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    chain = _rag_chain(fake_provider)
    plain = chain.invoke("Can I get a refund?")

    with costwatch.tags(feature="faq", team="support"), costwatch.request("answer"):
        answer = chain.invoke("Can I get a refund?", config={"callbacks": [handler]})

    assert answer == plain == "Hello from the fake provider."
    stages = _by_stage(capture)
    assert sorted(stages) == ["generation", "retrieval"]  # embeddings: no LangChain callbacks
    [retrieval] = stages["retrieval"]
    [generation] = stages["generation"]
    assert (retrieval.source, retrieval.cost_usd) == ("VectorStoreRetriever", Decimal(0))
    assert (generation.provider, generation.model) == ("openai", "gpt-4o-mini")
    assert generation.response_model == "gpt-4o-mini-2024-07-18"
    assert generation.usage == MINI_TOKENS
    assert generation.cost_usd == MINI_COST
    assert generation.context_tokens["VectorStoreRetriever"] > 0
    assert generation.strategy == "rag"
    for record in capture.records:
        assert (record.feature, record.team, record.pipeline) == ("faq", "support", "answer")
    assert capture.requests[0].cost_usd == MINI_COST


def test_with_class_instrumentation_too_each_call_is_recorded_once_by_the_sdk_layer(
    classes: None,
    handler: CostwatchCallbackHandler,
    capture: CaptureSink,
    fake_provider: FakeProvider,
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    fake_provider.embedding_tokens = 11
    chain = _rag_chain(fake_provider)  # embeds the three documents: one embedding call
    capture.records.clear()

    with costwatch.request("answer"):
        chain.invoke("Can I get a refund?", config={"callbacks": [handler]})

    stages = _by_stage(capture)
    assert {stage: len(records) for stage, records in stages.items()} == {
        "embedding": 1,
        "retrieval": 1,
        "generation": 1,
    }
    [generation] = stages["generation"]
    assert generation.usage == MINI_TOKENS
    assert generation.cost_usd == MINI_COST
    assert generation.context_tokens["VectorStoreRetriever"] > 0
    assert stages["embedding"][0].cost_usd == 11 * EMBEDDING_PRICE
    assert capture.requests[0].cost_usd == MINI_COST + 11 * EMBEDDING_PRICE


@pytest.mark.parametrize("with_classes", [False, True])
def test_streaming_records_the_reported_usage_once_and_leaves_the_chunks_alone(
    cw: Any,
    handler: CostwatchCallbackHandler,
    capture: CaptureSink,
    fake_provider: FakeProvider,
    with_classes: bool,
) -> None:
    fake_provider.openai_usage = O4_USAGE
    llm = _chat(fake_provider, "o4-mini", stream_usage=True)
    plain = [chunk.content for chunk in llm.stream("Why?")]
    if with_classes:
        cw.instrument(inject_stream_usage=True)
    try:
        chunks = [c.content for c in llm.stream("Why?", config={"callbacks": [handler]})]
    finally:
        cw.uninstrument()

    assert chunks == plain
    assert "".join(chunks) == "Hello from the fake provider."
    [record] = capture.records
    assert record.usage == O4_TOKENS
    assert record.cost_usd == O4_COST
    assert record.usage_source == "reported"


@pytest.mark.parametrize("with_classes", [False, True])
async def test_async_invoke_and_astream_are_recorded_once_each(
    cw: Any,
    handler: CostwatchCallbackHandler,
    capture: CaptureSink,
    fake_provider: FakeProvider,
    with_classes: bool,
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    llm = _chat(fake_provider, stream_usage=True)
    if with_classes:
        cw.instrument(inject_stream_usage=True)
    try:
        with costwatch.tags(feature="async"):
            reply = await llm.ainvoke("Hi", config={"callbacks": [handler]})
            streamed = [c.content async for c in llm.astream("Hi", config={"callbacks": [handler]})]
    finally:
        cw.uninstrument()

    assert reply.content == "".join(streamed) == "Hello from the fake provider."
    assert [r.usage for r in capture.records] == [MINI_TOKENS, MINI_TOKENS]
    assert [r.feature for r in capture.records] == ["async", "async"]


@pytest.mark.parametrize("with_classes", [False, True])
def test_batch_records_every_input_once_under_its_tags(
    cw: Any,
    handler: CostwatchCallbackHandler,
    capture: CaptureSink,
    fake_provider: FakeProvider,
    with_classes: bool,
) -> None:
    fake_provider.openai_usage = MINI_USAGE
    llm = _chat(fake_provider)
    if with_classes:
        cw.instrument(inject_stream_usage=True)
    try:
        with costwatch.tags(team="batchers"):
            replies = llm.batch(["a", "b", "c"], config={"callbacks": [handler]})
    finally:
        cw.uninstrument()

    assert [r.content for r in replies] == ["Hello from the fake provider."] * 3
    assert [r.usage for r in capture.records] == [MINI_TOKENS] * 3
    assert {r.team for r in capture.records} == {"batchers"}
    assert sum(r.cost_usd for r in capture.records) == 3 * MINI_COST


def test_a_tool_calling_model_is_recorded_with_its_tool_calls_returned_unchanged(
    handler: CostwatchCallbackHandler, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    @tool
    def refund_status(order_id: str) -> str:
        """Look up the refund status of an order."""
        return "approved"

    fake_provider.openai_usage = MINI_USAGE
    fake_provider.chat_tool_calls = [{"name": "refund_status", "arguments": '{"order_id": "A-17"}'}]
    llm = _chat(fake_provider).bind_tools([refund_status])

    reply = llm.invoke("Where is my refund for A-17?", config={"callbacks": [handler]})

    assert reply.tool_calls[0]["name"] == "refund_status"
    assert reply.tool_calls[0]["args"] == {"order_id": "A-17"}
    [record] = capture.records
    assert record.usage == MINI_TOKENS
    assert record.cost_usd == MINI_COST
    assert "tools" in fake_provider.requests[-1].body


@pytest.mark.parametrize("with_classes", [False, True])
def test_anthropic_cache_reads_and_both_cache_write_rates_are_priced_exactly(
    cw: Any,
    handler: CostwatchCallbackHandler,
    capture: CaptureSink,
    fake_provider: FakeProvider,
    with_classes: bool,
) -> None:
    fake_provider.anthropic_usage = CLAUDE_USAGE
    llm = _claude(fake_provider)
    if with_classes:
        cw.instrument(inject_stream_usage=True)
    try:
        reply = llm.invoke("Hi", config={"callbacks": [handler]})
    finally:
        cw.uninstrument()

    assert reply.content == "Hello from the fake provider."
    [record] = capture.records
    assert (record.provider, record.model) == ("anthropic", CLAUDE)
    assert record.usage == CLAUDE_TOKENS
    assert record.cost_usd == CLAUDE_COST


@pytest.mark.parametrize("with_classes", [False, True])
def test_a_completion_llm_is_recorded_once_as_a_text_completion(
    cw: Any,
    handler: CostwatchCallbackHandler,
    capture: CaptureSink,
    fake_provider: FakeProvider,
    with_classes: bool,
) -> None:
    from langchain_openai import OpenAI

    model = "ft:davinci-002:acme:triage:9xYz"  # $12.00 per million, input and output
    fake_provider.openai_usage = OpenAIUsage(prompt_tokens=700, completion_tokens=40)
    llm = OpenAI(model=model, base_url=fake_provider.openai_base_url, api_key="t", max_retries=0)
    if with_classes:
        cw.instrument(inject_stream_usage=True)
    try:
        text = llm.invoke("Ticket: refund?\nLabel:", config={"callbacks": [handler]})
    finally:
        cw.uninstrument()

    assert text == "Hello from the fake provider."
    [record] = capture.records
    assert (record.model, record.operation, record.strategy) == (
        model,
        "text_completion",
        "fine_tuned",
    )
    assert record.usage == TokenUsage(input=700, output=40)
    assert record.cost_usd == 740 * Decimal("12.00") / Decimal(1_000_000)


def test_a_failing_model_call_is_recorded_as_an_error_and_raised_unchanged(
    handler: CostwatchCallbackHandler, capture: CaptureSink, fake_provider: FakeProvider
) -> None:
    import openai

    from tests._fixtures.fake_providers import Failure

    fake_provider.failures.append(Failure(status=400, message="bad request"))
    with pytest.raises(openai.BadRequestError) as raised:
        _chat(fake_provider).invoke("Hi", config={"callbacks": [handler]})

    [record] = capture.records
    assert (record.status, record.error_type) == ("error", type(raised.value).__name__)
