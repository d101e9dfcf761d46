"""The public namespace is the contract: pinned here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import costwatch


def test_all_is_sorted_and_pinned() -> None:
    assert costwatch.__all__ == sorted(costwatch.__all__)
    assert costwatch.__all__ == [
        "BaseSink",
        "BudgetAlert",
        "BudgetExceeded",
        "CacheEvent",
        "ConfigError",
        "CostRecord",
        "FixedCost",
        "LifecycleCost",
        "Outcome",
        "RequestEnd",
        "RetrievalCache",
        "Sink",
        "Summary",
        "TokenUsage",
        "budget",
        "configure",
        "context_executor",
        "embedding",
        "fixed_cost",
        "generation",
        "indexing",
        "instrument",
        "outcome",
        "record",
        "record_batch_results",
        "record_training",
        "request",
        "retrieval",
        "serve_metrics",
        "shutdown",
        "summary",
        "tags",
        "uninstrument",
        "wrap",
    ]
    for name in costwatch.__all__:
        assert hasattr(costwatch, name), name


def test_the_design_doc_describes_every_public_name() -> None:
    design = (Path(__file__).resolve().parents[2] / "docs" / "design.md").read_text("utf-8")
    public_api = design.split("\n## Public API\n", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in costwatch.__all__ if f"`{name}`" not in public_api]
    assert not missing, f"docs/design.md's Public API section does not describe {missing}"


def test_import_costwatch_does_not_import_heavy_or_optional_dependencies() -> None:
    code = (
        "import sys, costwatch\n"
        "costwatch.configure(service='x', prometheus=True, warm_up=False)\n"
        "bad = [m for m in ('genai_prices', 'tiktoken', 'opentelemetry.sdk', 'openai', 'anthropic',"
        " 'google.genai', 'langchain_core', 'langchain_openai', 'langchain_anthropic',"
        " 'llama_index', 'litellm', 'costwatch.integrations') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_package_ships_type_information() -> None:
    from importlib.resources import files

    assert files("costwatch").joinpath("py.typed").is_file()


def test_the_cache_package_exports_the_cache_and_the_backend_protocol() -> None:
    import costwatch.cache

    assert costwatch.cache.__all__ == [
        "AsyncCacheBackend",
        "BackendError",
        "CacheBackend",
        "MemoryBackend",
        "RedisBackend",
        "RetrievalCache",
    ]
    assert costwatch.cache.RetrievalCache is costwatch.RetrievalCache
    assert isinstance(costwatch.cache.MemoryBackend(), costwatch.cache.CacheBackend)
