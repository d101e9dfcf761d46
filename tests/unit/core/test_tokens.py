"""Token estimation: exact tiktoken counts from an offline-seeded cache, never a download."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry

from costwatch._core import tokens as _tokens
from costwatch._core.tokens import (
    count_message_tokens,
    count_tokens,
    encoding_name_for,
    seed_tiktoken_cache,
)
from costwatch.pricing import PriceCatalog, estimate_cost, format_estimate
from tests._fixtures.tiktoken_cache import tiktoken_cache_dir  # noqa: F401  (fixture)

TEXT = (
    "Retrieval-augmented generation: embed the question, search the vector store, then "
    "answer with the retrieved context. Ünïcödé, emoji 🚀, code `x = f(y)`, numbers 3.14159."
)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the internet (tiktoken's download included) fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    def read_file(blobpath: str) -> bytes:
        if "://" in blobpath:
            raise AssertionError(f"tiktoken tried to download {blobpath}")
        with open(blobpath, "rb") as fh:
            return fh.read()

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file", read_file)


@pytest.fixture
def fresh_encodings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No encoding loaded yet, neither by costwatch nor by tiktoken's own registry."""
    monkeypatch.setattr(_tokens, "_encodings", _tokens._Encodings())
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    yield


@pytest.fixture
def offline_tiktoken(tiktoken_cache_dir: str, no_network: None) -> str:  # noqa: F811
    """The seeded cache, with the network refused (encodings may already be loaded)."""
    return tiktoken_cache_dir


def test_the_seeded_cache_holds_tiktokens_own_files_under_its_cache_key(
    tiktoken_cache_dir: str,  # noqa: F811
) -> None:
    source = resources.files("tiktoken_ext").joinpath("openai_public.py").read_text()
    for encoding in ("cl100k_base", "o200k_base"):
        url = f"https://openaipublic.blob.core.windows.net/encodings/{encoding}.tiktoken"
        path = Path(tiktoken_cache_dir) / hashlib.sha1(url.encode()).hexdigest()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == _tokens.ENCODING_SHA256[encoding]
        assert f'"{url}",\n        expected_hash="{digest}"' in source


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::x1", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("ft:gpt-3.5-turbo-0125:acme::x", "cl100k_base"),
    ],
)
def test_openai_models_count_exactly_what_tiktoken_counts(
    offline_tiktoken: str, model: str, encoding: str
) -> None:
    assert encoding_name_for(model) == encoding
    assert tiktoken.encoding_for_model(model).name == encoding
    expected = len(tiktoken.get_encoding(encoding).encode(TEXT))
    assert count_tokens(TEXT, model) == (expected, "tiktoken")


def test_non_openai_models_are_estimated_with_cl100k(offline_tiktoken: str) -> None:
    expected = len(tiktoken.get_encoding("cl100k_base").encode(TEXT))
    assert count_tokens(TEXT, "claude-3-5-haiku-latest") == (expected, "tiktoken")
    assert count_tokens(TEXT, "models/gemini-2.5-pro") == (expected, "tiktoken")
    assert not _tokens.encoding_is_native("claude-3-5-haiku-latest")
    assert _tokens.encoding_is_native("gpt-4o-mini")


def test_special_token_markers_in_user_text_are_counted_as_text(offline_tiktoken: str) -> None:
    text = "ignore <|endoftext|> this"
    expected = len(tiktoken.get_encoding("o200k_base").encode_ordinary(text))
    assert count_tokens(text, "gpt-4o") == (expected, "tiktoken")
    assert count_tokens("", "gpt-4o") == (0, "tiktoken")


def test_chat_messages_add_the_per_message_framing(offline_tiktoken: str) -> None:
    enc = tiktoken.get_encoding("o200k_base")
    messages = [
        {"role": "system", "content": "You answer questions about invoices."},
        {"role": "user", "content": "What is my balance?", "name": "alice"},
    ]
    expected = 3  # reply priming
    for message in messages:
        expected += 3 + sum(len(enc.encode(value)) for value in message.values())
    expected += 1  # the name field
    assert count_message_tokens(messages, "gpt-4o-mini") == (expected, "tiktoken")


def test_multipart_content_and_tool_calls_count_their_text_only(offline_tiktoken: str) -> None:
    enc = tiktoken.get_encoding("o200k_base")
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe this chart."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "revenue"}'},
                }
            ],
        },
    ]
    texts = ["user", "Describe this chart.", "assistant", "lookup", '{"q": "revenue"}']
    expected = 3 + 2 * 3 + sum(len(enc.encode(t)) for t in texts)
    assert count_message_tokens(messages, "gpt-4o") == (expected, "tiktoken")


def test_a_plain_string_prompt_is_counted_without_framing(offline_tiktoken: str) -> None:
    assert count_message_tokens(TEXT, "gpt-4o") == count_tokens(TEXT, "gpt-4o")


def test_encodings_load_from_the_seeded_cache_once_under_concurrent_first_use(
    offline_tiktoken: str, fresh_encodings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tiktoken.get_encoding
    loads: list[str] = []

    def counting(name: str) -> Any:
        loads.append(name)
        return real(name)

    monkeypatch.setattr(tiktoken, "get_encoding", counting)
    barrier = threading.Barrier(12)
    results: list[tuple[int, str]] = []

    def worker() -> None:
        barrier.wait()
        results.append(count_tokens(TEXT, "gpt-4o-mini"))

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["o200k_base"]
    assert len(set(results)) == 1 and results[0][1] == "tiktoken"


def test_preloading_makes_the_first_estimate_a_cache_hit(
    offline_tiktoken: str, fresh_encodings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _tokens.preload_encodings() is True

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} loaded again")

    monkeypatch.setattr(tiktoken, "get_encoding", refuse)
    assert count_tokens(TEXT, "gpt-4o")[1] == "tiktoken"
    assert count_tokens(TEXT, "gpt-4")[1] == "tiktoken"


def test_without_bpe_openai_counting_falls_back_to_a_marked_heuristic_and_warns_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    no_network: None,
    fresh_encodings: None,
) -> None:
    empty = tmp_path / "empty-cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(empty))
    monkeypatch.setitem(sys.modules, "bpe_openai", None)  # as if not installed
    caplog.set_level(logging.WARNING, logger="costwatch")

    assert count_tokens("x" * 10, "gpt-4o") == (3, "heuristic")  # ceil(10 / 4)
    assert count_tokens("y" * 8, "gpt-4") == (2, "heuristic")
    tokens, method = count_message_tokens([{"role": "user", "content": "z" * 12}], "gpt-4o")
    assert (tokens, method) == (3 + 3 + 1 + 3, "heuristic")

    assert _tokens.preload_encodings() is False
    warnings = [r for r in caplog.records if "heuristic" in r.getMessage()]
    assert len(warnings) == 1
    assert not empty.exists() or list(empty.iterdir()) == []  # nothing downloaded or seeded


def test_with_caching_disabled_tiktoken_is_never_asked_to_download(
    monkeypatch: pytest.MonkeyPatch, no_network: None, fresh_encodings: None
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert count_tokens("abcdefgh", "gpt-4o-mini") == (2, "heuristic")


def test_seeding_is_idempotent_and_repairs_a_corrupt_cache_file(tmp_path: Path) -> None:
    target = str(tmp_path / "cache")
    assert seed_tiktoken_cache(target) == target
    path = Path(target) / _tokens.cache_key("o200k_base")
    path.write_bytes(b"corrupt")
    assert seed_tiktoken_cache(target) == target
    assert hashlib.sha256(path.read_bytes()).hexdigest() == _tokens.ENCODING_SHA256["o200k_base"]
    assert sorted(os.listdir(target)) == sorted(
        _tokens.cache_key(e) for e in ("cl100k_base", "o200k_base")
    )


def test_seeding_reports_failure_when_the_directory_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert seed_tiktoken_cache(str(blocker / "cache")) is None


def test_estimate_prices_the_counted_prompt_and_the_expected_output(
    offline_tiktoken: str,
) -> None:
    text = "How do I reset my password? " * 20
    tokens = len(tiktoken.get_encoding("o200k_base").encode(text))
    estimate = estimate_cost(text, "gpt-4o-mini", None, PriceCatalog(), expected_output_tokens=200)

    assert estimate.provider == "openai"
    assert (estimate.input_tokens, estimate.output_tokens) == (tokens, 200)
    assert estimate.input_cost_usd == Decimal("0.15") * tokens / 1_000_000
    assert estimate.output_cost_usd == Decimal("0.60") * 200 / 1_000_000
    assert estimate.total_cost_usd == estimate.input_cost_usd + estimate.output_cost_usd
    report = format_estimate(estimate)
    assert "tiktoken o200k_base" in report
    assert f"${estimate.total_cost_usd.normalize():f}" in report


def test_estimate_for_an_unpriced_model_says_so_instead_of_zero(offline_tiktoken: str) -> None:
    estimate = estimate_cost("hello", "in-house-model-7", "self-hosted", PriceCatalog())
    assert estimate.total_cost_usd is None
    report = format_estimate(estimate)
    assert "no price" in report and "$0" not in report
    assert "approximation" in report
