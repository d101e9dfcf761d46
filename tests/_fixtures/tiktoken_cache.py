"""Session fixture: a tiktoken cache seeded offline from bpe-openai, with TIKTOKEN_CACHE_DIR set.

Wire it into a conftest with ``from tests._fixtures.tiktoken_cache import tiktoken_cache_dir``
(re-exported fixtures work), or import it the same way in a single test module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def tiktoken_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A directory holding cl100k_base and o200k_base exactly where tiktoken looks for them.

    Fails (never skips) when bpe-openai is missing: token estimation would silently degrade.
    """
    from costwatch._core.tokens import seed_tiktoken_cache

    path = str(tmp_path_factory.mktemp("tiktoken-cache"))
    seeded = seed_tiktoken_cache(path)
    if seeded != path:
        pytest.fail("could not seed the tiktoken cache: is bpe-openai==0.1.4 installed?")
    previous = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = previous
