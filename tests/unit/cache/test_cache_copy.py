"""The local LRU's copies: new lists and dicts at every level, the same immutable leaves."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from costwatch.cache._copy import copier

DOCS = [
    {
        "id": f"kb-{i}",
        "text": "reset your password",
        "score": 0.9 - i / 10,
        "metadata": {"source": "kb", "tags": ["account", "security"]},
    }
    for i in range(3)
]

VALUES = [
    pytest.param(DOCS, id="documents"),
    pytest.param([{"id": "a", "score": 0.5}, {"id": "b", "score": 0.4}], id="flat dicts"),
    pytest.param([[0.1, 0.2], [0.3, 0.4]], id="embeddings"),
    pytest.param({"hits": [{"id": 1}], "total": 1, "facets": {}}, id="dict of containers"),
    pytest.param([1, "two", None, True, {"k": [3]}, [], {}], id="mixed list"),
    pytest.param([], id="empty list"),
    pytest.param({"a": 1}, id="flat dict"),
    pytest.param("just text", id="str"),
    pytest.param(3, id="int"),
    pytest.param(None, id="null"),
]


def _containers(value: object) -> list[object]:
    """Every list and dict inside ``value``, outermost first."""
    found: list[object] = []
    if isinstance(value, list):
        found.append(value)
        for item in value:
            found += _containers(item)
    elif isinstance(value, dict):
        found.append(value)
        for item in value.values():
            found += _containers(item)
    return found


@pytest.mark.parametrize("value", VALUES)
def test_a_copy_equals_a_fresh_decode_of_the_value(value: Any) -> None:
    copy = copier(value)
    assert copy is not None
    copied = copy(value)
    assert copied == value
    assert orjson.dumps(copied) == orjson.dumps(value)  # same order, same types


@pytest.mark.parametrize("value", VALUES)
def test_a_copy_shares_no_list_or_dict_with_the_value(value: Any) -> None:
    copy = copier(value)
    assert copy is not None
    ours = {id(c) for c in _containers(value)}
    assert not ours & {id(c) for c in _containers(copy(value))}


def test_mutating_a_copy_at_any_depth_leaves_the_next_copy_intact() -> None:
    value = orjson.loads(orjson.dumps(DOCS))
    copy = copier(value)
    assert copy is not None
    first = copy(value)
    first[0]["metadata"]["tags"].append("changed")
    first[1]["metadata"]["source"] = "changed"
    first[2]["score"] = 0.0
    first.append({"id": "new"})
    assert copy(value) == DOCS


def test_alike_documents_share_one_copier() -> None:
    """A list of documents of one shape is copied by one function, whatever its length."""
    copy = copier(DOCS)
    assert copy is not None
    longer = orjson.loads(orjson.dumps(DOCS * 4))
    assert copy(longer) == longer


def test_values_nested_deeper_than_64_levels_get_no_copier() -> None:
    deep: list[Any] = []
    for _ in range(65):
        deep = [deep]
    assert copier(deep) is None
    shallow: list[Any] = []
    for _ in range(63):
        shallow = [shallow]
    copy = copier(shallow)
    assert copy is not None
    assert copy(shallow) == shallow


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 6 else 5)
    if kind == 0:
        return rng.randrange(-5, 5)
    if kind == 1:
        return rng.random()
    if kind == 2:
        return rng.choice(["", "a", "text", "ünïcode"])
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return None
    if kind in (5, 6):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {f"k{i}": _random_json(rng, depth + 1) for i in range(rng.randrange(5))}


def test_copies_of_random_json_values_are_equal_and_share_no_container() -> None:
    rng = random.Random(20261124)
    for _ in range(500):
        value = orjson.loads(orjson.dumps(_random_json(rng)))
        copy = copier(value)
        assert copy is not None
        copied = copy(value)
        assert orjson.dumps(copied) == orjson.dumps(value)
        ours = {id(c) for c in _containers(value)}
        assert not ours & {id(c) for c in _containers(copied)}
