"""What a retrieval's documents contribute to the request's context: their text, read from
the shapes vector stores and frameworks return."""

from __future__ import annotations

from types import SimpleNamespace

from costwatch.capture._decorators import _document_texts


def test_texts_are_read_from_strings_mappings_and_objects() -> None:
    documents = [
        "plain text",
        {"body": "not read: content comes first", "content": "a mapping's content"},
        {"chunk": "a chunk"},
        SimpleNamespace(page_content="LangChain's Document"),
        SimpleNamespace(body="an object's body"),
    ]
    assert _document_texts(documents) == [
        "plain text",
        "a mapping's content",
        "a chunk",
        "LangChain's Document",
        "an object's body",
    ]


def test_a_mapping_without_text_is_read_through_its_metadata() -> None:
    assert _document_texts([{"id": 7, "metadata": {"content": "kept in metadata"}}]) == [
        "kept in metadata"
    ]


def test_document_score_pairs_give_the_document_s_text() -> None:
    pairs = [({"text": "first"}, 0.9), (SimpleNamespace(page_content="second"), 0.5)]
    assert _document_texts(pairs) == ["first", "second"]


def test_a_result_mapping_is_read_through_its_list_of_documents() -> None:
    assert _document_texts({"matches": [{"text": "hit"}], "took_ms": 3}) == ["hit"]
    assert _document_texts({"text": "one document"}) == ["one document"]


def test_documents_without_text_add_nothing() -> None:
    documents = [
        {"id": 1, "score": 0.3},
        {"text": 42, "metadata": {"text": None}},
        SimpleNamespace(page_content=b"bytes are not text"),
    ]
    assert _document_texts(documents) == []
    assert _document_texts(None) == []
    assert _document_texts(3.5) == []
