"""``costwatch.wrap`` and ``costwatch.context_executor`` carry tags and requests into threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import costwatch
from costwatch._core.context import current_tags, request_var, tags_var
from tests._fixtures.threads import all_at_once


def tenant() -> str:
    return current_tags().get("tenant", "")


def test_a_plain_pool_thread_starts_without_the_submitters_tags() -> None:
    with ThreadPoolExecutor(1) as pool, costwatch.tags(tenant="acme"):
        assert pool.submit(tenant).result() == ""


def test_wrap_carries_tags_and_the_request_of_where_it_was_called(cw: Any) -> None:
    with ThreadPoolExecutor(1) as pool:
        with costwatch.tags(tenant="acme", feature="faq"), costwatch.request("answer"):
            task = costwatch.wrap(lambda: (dict(current_tags()), request_var.get()))
            state = request_var.get()
        with costwatch.tags(tenant="globex"):
            carried, request = pool.submit(task).result()
    assert carried == {"tenant": "acme", "feature": "faq"}
    assert request is state and state is not None


def test_a_wrapped_function_runs_on_many_threads_at_once_each_in_its_own_copy() -> None:
    with costwatch.tags(tenant="acme"):

        def enter_and_read() -> tuple[str, str]:
            before = tenant()
            with costwatch.tags(tenant="inner"):
                inner = tenant()
            return before, inner

        task = costwatch.wrap(enter_and_read)
    assert all_at_once(task, 8) == [("acme", "inner")] * 8
    assert tags_var.get().get("tenant") is None


def test_context_executor_carries_the_context_of_each_submit_and_of_map() -> None:
    with costwatch.context_executor(max_workers=2) as pool:
        futures = []
        for name in ("acme", "globex"):
            with costwatch.tags(tenant=name):
                futures.append(pool.submit(tenant))
        with costwatch.tags(tenant="initech"):
            mapped = list(pool.map(lambda _: tenant(), range(3)))
    assert [f.result() for f in futures] == ["acme", "globex"]
    assert mapped == ["initech"] * 3


def test_context_executor_wraps_an_executor_it_is_given_and_shuts_it_down() -> None:
    inner = ThreadPoolExecutor(1)
    pool = costwatch.context_executor(inner)
    with costwatch.tags(tenant="acme"):
        assert pool.submit(tenant).result() == "acme"
    pool.shutdown()
    with pytest.raises(RuntimeError):
        inner.submit(tenant)


def test_context_executor_refuses_what_is_not_an_executor() -> None:
    with pytest.raises(TypeError, match="Executor"):
        costwatch.context_executor("pool")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pool options"):
        costwatch.context_executor(ThreadPoolExecutor(1), max_workers=2)
