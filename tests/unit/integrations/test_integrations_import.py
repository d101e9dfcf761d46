"""Each framework integration is optional: without its framework, importing it says which
costwatch extra to install."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.mark.parametrize(
    ("integration", "framework", "extra"),
    [
        ("langchain", "langchain_core.callbacks", "langchain"),
        ("llamaindex", "llama_index.core.instrumentation", "llamaindex"),
        ("litellm", "litellm.integrations.custom_logger", "litellm"),
    ],
)
def test_an_integration_without_its_framework_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, integration: str, framework: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, framework, None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, f"costwatch.integrations.{integration}", raising=False)

    with pytest.raises(ImportError, match=rf"pip install 'costwatch\[{extra}\]'"):
        importlib.import_module(f"costwatch.integrations.{integration}")
