"""Fresh copies of a decoded JSON value for the local LRU, cheaper than decoding it again.

A JSON value's only mutable parts are its lists and dicts; its leaves (str, int, float, bool,
None) are immutable.  A copy with new lists and dicts that shares the leaves is therefore as
independent of the original as a fresh decode: nothing the host does to what it got can reach
the next caller's copy.  :func:`copier` looks at a value's shape once and returns a function
that copies values of that shape with C-level ``dict.copy``/``list.copy`` where it can: about
half the cost of ``orjson.loads`` for a list of documents, a third for a list of small dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

Copier = Callable[[Any], Any]

_MAX_DEPTH = 64

Shape = tuple[object, ...] | None
"""A value's shape: None for an immutable leaf, else what tells lists and dicts apart."""


class _TooDeep(Exception):
    pass


def copier(value: object) -> Copier | None:
    """A function returning fresh copies of ``value`` (or of any value of the same shape):
    new lists and dicts all the way down, the same immutable leaves.

    None when ``value`` is nested deeper than 64 levels (decode it again instead).  ``value``
    must be plain decoded JSON that nobody mutates afterwards: the copier follows its shape.
    """
    try:
        shape, copy = _build(value, 0, {})
    except _TooDeep:
        return None
    if shape is None:
        return _same
    assert copy is not None
    return copy


def _same(value: Any) -> Any:
    return value


def _build(value: object, depth: int, memo: dict[Shape, Copier]) -> tuple[Shape, Copier | None]:
    """``(shape, copier)`` of ``value``; the copier is None for a leaf (share it as it is).

    Containers of the same shape get the same copier (``memo``), so a list of alike documents
    is copied by mapping one function over it.
    """
    kind = type(value)
    if kind is not list and kind is not dict:
        return None, None
    if depth >= _MAX_DEPTH:
        raise _TooDeep
    shape: Shape
    copy: Copier
    if kind is dict:
        nested: list[tuple[str, Copier]] = []
        shapes: list[tuple[str, Shape]] = []
        for key, item in cast(dict[str, object], value).items():
            item_shape, item_copy = _build(item, depth + 1, memo)
            if item_copy is not None:
                nested.append((key, item_copy))
                shapes.append((key, item_shape))
        shape = ("dict", *shapes)
        found = memo.get(shape)
        if found is not None:
            return shape, found
        copy = _dict_copier(tuple(nested)) if nested else dict.copy
    else:
        built = [_build(item, depth + 1, memo) for item in cast(list[object], value)]
        item_shapes = {item_shape for item_shape, _ in built}
        if len(item_shapes) == 1:
            [only] = item_shapes
            shape = ("list of", only)
        else:
            shape = ("list", *(item_shape for item_shape, _ in built))
        found = memo.get(shape)
        if found is not None:
            return shape, found
        copy = _list_copier([item_copy for _, item_copy in built])
    memo[shape] = copy
    return shape, copy


def _dict_copier(nested: tuple[tuple[str, Copier], ...]) -> Copier:
    """Copy a dict whose values at the keys of ``nested`` are containers."""
    if len(nested) == 1:  # the common document: one nested dict (metadata), no loop
        [(only_key, only_copy)] = nested

        def copy_dict_with_one(value: dict[str, Any]) -> dict[str, Any]:
            out = value.copy()
            out[only_key] = only_copy(out[only_key])
            return out

        return copy_dict_with_one

    def copy_dict(value: dict[str, Any]) -> dict[str, Any]:
        out = value.copy()
        for key, copy in nested:
            out[key] = copy(out[key])
        return out

    return copy_dict


def _list_copier(items: list[Copier | None]) -> Copier:
    """Copy a list whose item ``i`` is copied by ``items[i]`` (None: an immutable leaf)."""
    kinds = set(items)
    if kinds <= {None}:
        return list.copy
    if len(kinds) == 1:
        [only] = cast(set[Copier], kinds)
        return lambda value: list(map(only, value))
    per_item = tuple(items)

    def copy_list(value: list[Any]) -> list[Any]:
        pairs = zip(per_item, value, strict=True)
        return [item if copy is None else copy(item) for copy, item in pairs]

    return copy_list
