"""The retrieval cache's JSON: canonical keys and stored entries, exact JSON only.

- Keys: a call's arguments normalised (``f("q")`` and ``f(query="q")`` bind alike) and dumped
  as canonical JSON with the namespace, tenant and function; the cache hashes that material.
  Namespace components are escaped into one Redis Cluster hash tag.
- Entries: ``[1, generation, "cost", value]`` written with orjson, read with ``orjson.loads``
  and nothing else (never pickle, nothing read is executed).
- Only values made of types that survive a JSON round trip unchanged are keyed or stored.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, cast

import orjson

_KEY_PREFIX = "cw:c:"
_MAX_DEPTH = 64
_SCALARS: frozenset[type] = frozenset({str, int, bool, type(None)})


# ------------------------------------------------------------------------------------------
# Plain JSON only
# ------------------------------------------------------------------------------------------


def plain_json(value: object, allow_tuple: bool, depth: int = 0) -> bool:
    """Is ``value`` made only of types that survive a JSON round trip unchanged?

    Exact types only: a subclass (an Enum over str, an OrderedDict), a tuple in a value, a
    non-finite float or a dataclass would come back as something else, and the host must get
    exactly what its function returned.
    """
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is float:
        return math.isfinite(cast(float, value))
    if depth >= _MAX_DEPTH:
        return False
    if kind is list or (allow_tuple and kind is tuple):
        for item in cast(list[object], value):
            if type(item) not in _SCALARS and not plain_json(item, allow_tuple, depth + 1):
                return False
        return True
    if kind is dict:
        for key, item in cast(dict[object, object], value).items():
            if type(key) is not str:
                return False
            if type(item) not in _SCALARS and not plain_json(item, allow_tuple, depth + 1):
                return False
        return True
    return False


def is_empty(value: object) -> bool:
    """None, ``[]``, ``{}`` or ``""``: not stored unless the cache says ``cache_empty``."""
    if value is None:
        return True
    kind = type(value)
    return (kind is list or kind is dict or kind is str) and not cast(Any, value)


# ------------------------------------------------------------------------------------------
# Entries: [1, generation, "cost", value]
# ------------------------------------------------------------------------------------------


def encode_value(value: object) -> bytes | None:
    """The value's JSON, or None when it is not plain JSON (it is then not stored)."""
    if not plain_json(value, False):
        return None
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return None


@functools.lru_cache(maxsize=256)
def _parse_cost(text: str) -> Decimal | None:
    try:
        cost = Decimal(text)
    except InvalidOperation:
        return None
    if not cost.is_finite() or cost < 0:
        return None
    return cost


def _header(generation: int, cost: Decimal) -> bytes:
    return b'[1,%d,"%s",' % (generation, str(cost).encode())


def encode_entry(generation: int, cost: Decimal, body: bytes) -> bytes:
    """The entry to store: the value's JSON ``body`` behind its generation and cost."""
    return _header(generation, cost) + body + b"]"


def decode_entry(entry: bytes, generation: int | None) -> tuple[Any, Decimal, str] | None:
    """``(value, cost, cost as stored)`` of a stored entry, or None.

    None for anything that is not an entry of the expected generation: garbage, a pickle, a
    truncated write.  Decoding is ``orjson.loads`` and nothing else: nothing read is executed.
    """
    try:
        obj = orjson.loads(entry)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not list or len(obj) != 4:
        return None
    version, gen, cost_text, value = obj
    if type(version) is not int or version != 1 or type(gen) is not int:
        return None
    if generation is not None and gen != generation:
        return None
    if type(cost_text) is not str:
        return None
    cost = _parse_cost(cost_text)
    if cost is None:
        return None
    return value, cost, cost_text


def entry_body(entry: bytes, generation: int, cost_text: str) -> bytes | None:
    """The value's JSON inside a decoded entry (for the local LRU and waiters), or None when
    the entry is not laid out exactly as costwatch writes it."""
    header = b'[1,%d,"%s",' % (generation, cost_text.encode())
    if entry.startswith(header) and entry.endswith(b"]"):
        return entry[len(header) : -1]
    return None


# ------------------------------------------------------------------------------------------
# Keys
# ------------------------------------------------------------------------------------------


class Binder:
    """Normalises a call's arguments so ``f("q")`` and ``f(query="q")`` give the same key.

    Functions with only positional-or-keyword parameters (most retrievers) take a fast path
    without ``inspect.Signature.bind``.  ``None`` means the call does not bind (the function
    itself will raise its own ``TypeError``).
    """

    __slots__ = ("_sig", "_simple", "_names", "_defaults")

    def __init__(self, fn: Callable[..., Any]) -> None:
        try:
            sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None
        self._sig = sig
        params = list(sig.parameters.values()) if sig is not None else []
        self._simple = sig is not None and all(
            p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params
        )
        self._names = tuple(p.name for p in params)
        self._defaults = {p.name: p.default for p in params if p.default is not p.empty}

    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> object:
        names = self._names
        if self._simple:
            given = len(args)
            if not kwargs and given == len(names):
                return args
            if given > len(names):
                return None
            values = list(args)
            used = 0
            for name in names[given:]:
                if name in kwargs:
                    values.append(kwargs[name])
                    used += 1
                elif name in self._defaults:
                    values.append(self._defaults[name])
                else:
                    return None
            if used != len(kwargs):
                return None
            return values
        if self._sig is None:
            return None
        try:
            bound = self._sig.bind(*args, **kwargs)
        except TypeError:
            return None
        bound.apply_defaults()
        return bound.arguments


def key_material(
    namespace: str, tenant: str, const: tuple[str, ...], values: object
) -> bytes | None:
    """The canonical JSON a key is hashed from, or None when ``values`` are not plain JSON."""
    if not plain_json(values, True):
        return None
    try:
        return orjson.dumps((namespace, tenant, const, values), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return None


def _key_part(text: str) -> str:
    """A namespace component for a Redis key: no braces (hash tag), colons or spaces; bounded."""
    if len(text) <= 64 and text.isprintable() and not any(c in text for c in "{}:% "):
        return text
    if len(text) > 64:
        return "h-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    out = []
    for ch in text:
        if ch in "{}:% " or not ch.isprintable():
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out)


def namespace_tag(namespace: str, tenant: str, source: str) -> str:
    """``cw:c:{service:tenant:source}:`` — one Redis Cluster hash tag per namespace."""
    return f"{_KEY_PREFIX}{{{_key_part(namespace)}:{_key_part(tenant)}:{_key_part(source)}}}:"
