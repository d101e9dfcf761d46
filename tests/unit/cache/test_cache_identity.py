"""How a cached function is named in its keys (``cache._identity``)."""

from __future__ import annotations

import enum
import functools
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from costwatch.cache._identity import function_identity


def search(query: str) -> list[str]:
    return [query]


class Index:
    def search(self, query: str) -> list[str]:
        return [query]


class Kind(enum.Enum):
    CONTRACTS = "contracts"


def make(captured: Any) -> Callable[[str], list[str]]:
    def lookup(query: str) -> list[str]:
        return [str(captured), query]

    return lookup


def named(fn: Callable[..., Any]) -> str:
    return function_identity(fn, None)


def test_a_module_level_function_is_its_module_and_qualified_name() -> None:
    assert named(search) == f"{__name__}.search"
    assert named(Index.search) == f"{__name__}.Index.search"


def test_an_explicit_key_namespace_replaces_the_identity_and_never_equals_an_implicit_one() -> None:
    assert function_identity(search, "kb-search") == "=kb-search"
    assert function_identity(make(1), "kb-search") == "=kb-search"


@pytest.mark.parametrize(
    "value",
    [
        "contracts",
        7,
        2**70,
        1.5,
        None,
        True,
        b"\x00",
        ("a", 1),
        frozenset({"a", "b"}),
        Kind.CONTRACTS,
    ],
)
def test_captured_plain_values_name_a_factory_product_by_value(value: Any) -> None:
    assert named(make(value)) == named(make(value))
    assert named(make(value)) != named(make("marketing"))
    assert named(make(value)).startswith(f"{__name__}.make.<locals>.lookup#")


def test_captured_functions_classes_and_modules_are_named_by_their_qualified_names() -> None:
    assert named(make(search)) == named(make(search))
    assert named(make(search)) != named(make(Index.search))
    assert named(make(Index)) == named(make(Index))
    assert named(make(os)) != named(make(functools))


def test_lambdas_differ_by_code_and_equal_lambdas_are_one_function() -> None:
    upper = lambda q: [q.upper()]  # noqa: E731
    lower = lambda q: [q.lower()]  # noqa: E731
    again = lambda q: [q.upper()]  # noqa: E731
    assert named(upper) != named(lower)
    assert named(upper) == named(again)


def test_a_recursive_local_function_is_named_without_looping() -> None:
    def walk(depth: int) -> list[str]:
        return [] if depth == 0 else walk(depth - 1)

    assert named(walk) == named(walk)


def test_partials_are_named_by_their_function_and_bound_arguments() -> None:
    assert named(functools.partial(search, "a")) == named(functools.partial(search, "a"))
    assert named(functools.partial(search, "a")) != named(functools.partial(search, "b"))


def test_a_wrapper_made_with_functools_wraps_is_named_with_what_it_wraps() -> None:
    def logged(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any) -> Any:
            return fn(*args)

        return wrapper

    assert named(logged(search)) == named(logged(search))
    assert named(logged(search)) != named(logged(Index.search))


def test_objects_no_process_can_name_are_named_per_object_in_this_process() -> None:
    first, second = Index(), Index()
    assert named(first.search) == named(first.search)
    assert named(first.search) != named(second.search)
    calls: list[str] = []
    assert named(make(calls)) != named(make(calls))  # a list takes no weak reference


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_names_its_new_objects_apart_from_its_parents_and_siblings() -> None:
    shared = Index()
    before = named(shared.search)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = named(shared.search) == before  # the parent's object: still the same name
        os.write(write, (named(Index().search) + "\n").encode() if ok else b"bad\n")
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode().strip()
    os.close(read)
    os.close(write)
    assert child != "bad"
    assert child != named(Index().search)


class Handle:
    """An object with no name another process could give it: named by a token of its own."""


def test_an_object_collected_while_its_token_table_is_locked_never_hangs_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The garbage collector can finish a named object at any allocation, also inside the
    # naming code while this very thread holds the token table's lock.
    from costwatch.cache import _identity

    monkeypatch.setattr(_identity, "_tokens_lock", threading.Lock())
    held = [Handle()]
    named(make(held[0]))
    collected = threading.Event()

    def collect_while_locked() -> None:
        with _identity._tokens_lock:
            held.clear()  # the last reference: its weak-reference callback runs right here
        collected.set()

    threading.Thread(target=collect_while_locked, daemon=True).start()
    assert collected.wait(5), "the weak-reference callback waited for a lock its thread held"

    alive = Handle()
    named(make(alive))  # the next naming drops the dead object's token
    assert all(ref() is not None for ref, _ in _identity._tokens.values())
