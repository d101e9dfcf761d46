"""How a cached function is named in its keys, so that two different functions never share
entries unless they are given the same explicit ``key_namespace``.

The name must be the same in every process (entries are shared through Redis) and different
for every function that can compute something else:

- ``RetrievalCache(key_namespace="contracts-search")``: that string, and nothing else.  Every
  function wrapped with the same ``key_namespace`` (and source and version) shares entries:
  that is how a user shares them deliberately.
- A function defined at module level or in a class body: its module and qualified name.
- A function defined inside another function (a factory's product, a closure) or a lambda:
  also its code (bytecode, constants and names: two lambdas of one module differ) and the
  values it captures.
- A bound method: its function and the object it is bound to; ``functools.partial``: its
  function and the arguments it binds.

A captured or bound value is named by value when it is the same in every process: None,
bool, int, float, str, bytes, tuples and frozensets of those, enum members, and functions,
classes and modules (by the same rule, recursively).  Anything else — an index or client
object, a list — cannot be told apart from another one across processes: guessing would let a
marketing index serve the contracts index's documents.  Such a value is named by a token of
this process and this object instead (a new one in a forked child, and never reused for
another object), so the function's entries are its own and this process's: safe, but not
shared with other processes.  A warning says so once per function name; ``key_namespace``
shares them.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import functools
import hashlib
import itertools
import logging
import math
import os
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

import orjson

logger = logging.getLogger("costwatch.cache")

_MAX_DEPTH = 8
_SCALARS = (type(None), bool, int, str)
_MAX_WARNED = 1024


class _Unnameable(Exception):
    """A callable the identity cannot describe (what it is)."""


class _Description:
    """One description in progress: the callables on the way (for recursion), and the first
    value that had to be named by a token of this process."""

    __slots__ = ("seen", "local_only")

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.local_only = ""


def function_identity(fn: Callable[..., Any], key_namespace: str | None) -> str:
    """The function's part of every key (see the module docstring for the rule).

    A plain module-level function keeps the ``module.qualname`` it always had; other functions
    get a digest of their description appended; an explicit namespace is ``=<key_namespace>``
    (no module name starts with ``=``, so it never equals an implicit name).
    """
    if key_namespace is not None:
        return "=" + key_namespace
    base = _qualified(fn)
    description = _Description()
    try:
        described = _describe(fn, description, 0)
    except _Unnameable:  # a callable object: its state is what it computes with
        described = _local(fn, description, "is")
    if description.local_only:
        _warn_local(base, description.local_only)
    if described == base:
        return base
    digest = hashlib.sha256(_json(described).encode()).hexdigest()
    return f"{base}#{digest[:32]}"


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _qualified(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or ""
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if qualname is None:
        qualname = type(obj).__qualname__
    return f"{module}.{qualname}"


def _describe(fn: Any, seen: _Description, depth: int) -> Any:
    """A JSON description of a callable, the same in every process as far as it can be."""
    if depth > _MAX_DEPTH:
        return _local(fn, seen, "nests functions too deeply, down to")
    if id(fn) in seen.seen:
        return "<recursive>"
    seen.seen.add(id(fn))
    if isinstance(fn, functools.partial):
        return {
            "partial": _describe(fn.func, seen, depth + 1),
            "args": [_value(a, seen, depth, "binds") for a in fn.args],
            "keywords": {k: _value(v, seen, depth, "binds") for k, v in fn.keywords.items()},
        }
    if isinstance(fn, types.MethodType):
        return {
            "method": _describe(fn.__func__, seen, depth + 1),
            "self": _value(fn.__self__, seen, depth, "is bound to"),
        }
    if isinstance(fn, types.FunctionType):
        name = _qualified(fn)
        local = "<locals>" in fn.__qualname__ or "<lambda>" in fn.__qualname__
        if not local and not fn.__closure__:
            return name
        described: dict[str, Any] = {"function": name}
        if local:
            described["code"] = _code(fn.__code__)
        if fn.__closure__:
            captured = {}
            for var, cell in zip(fn.__code__.co_freevars, fn.__closure__, strict=True):
                try:
                    contents = cell.cell_contents
                except ValueError:  # an empty cell (assigned later in the enclosing function)
                    captured[var] = "<empty>"
                    continue
                captured[var] = _value(contents, seen, depth, f"captures {var!r} as")
            described["captured"] = captured
        return described
    if isinstance(fn, types.BuiltinFunctionType | types.BuiltinMethodType):
        owner = fn.__self__
        if owner is None or isinstance(owner, types.ModuleType):
            return _qualified(fn)
        return {"builtin": _qualified(fn), "self": _value(owner, seen, depth, "is bound to")}
    if isinstance(fn, type):
        return {"class": _qualified(fn)}
    raise _Unnameable(type(fn).__qualname__)


def _value(value: Any, seen: _Description, depth: int, how: str) -> Any:
    """A captured or bound value, named by value where every process names it alike."""
    kind = type(value)
    if kind is int and not -(2**63) <= value < 2**63:
        return {"int": str(value)}
    if kind in _SCALARS:
        return value
    if kind is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if kind is bytes:
        return {"bytes": value.hex()}
    if kind is tuple:
        return {"tuple": [_value(v, seen, depth + 1, how) for v in value]}
    if kind is frozenset:
        items = [_value(v, seen, depth + 1, how) for v in value]
        return {"frozenset": sorted(_json(i) for i in items)}
    if isinstance(value, enum.Enum):
        return {"enum": _qualified(kind), "member": value.name}
    if isinstance(value, types.ModuleType):
        return {"module": value.__name__}
    if callable(value):
        try:
            return _describe(value, seen, depth + 1)
        except _Unnameable:
            pass
    return _local(value, seen, how)


def _local(value: Any, seen: _Description, how: str) -> Any:
    """A value no other process can name alike: a token of this process and this object."""
    if not seen.local_only:
        seen.local_only = f"{how} a {type(value).__qualname__} object"
    return {"object": type(value).__qualname__, "token": _object_token(value)}


_tokens_lock = threading.Lock()
_tokens: dict[int, tuple[weakref.KeyedRef[Any, Any], str]] = {}
# The weak references of named objects that died, by id: appended by the garbage collector,
# which can run at any allocation, also inside _object_token while this thread holds
# _tokens_lock (taking the lock there would hang the host's call); dropped under the lock.
_dead: collections.deque[weakref.KeyedRef[Any, Any]] = collections.deque()
_counter = itertools.count(1)
_salt = os.urandom(12).hex()
_warned: set[str] = set()


def _object_token(obj: Any) -> str:
    """Unique to this process and to ``obj`` while it lives (then never given again); an
    object that takes no weak reference gets a new token each time it is named."""
    with _tokens_lock:
        while _dead:
            ref = _dead.popleft()
            held = _tokens.get(ref.key)
            if held is not None and held[0] is ref:
                del _tokens[ref.key]
        found = _tokens.get(id(obj))
        if found is not None and found[0]() is obj:
            return found[1]
        token = f"{_salt}-{next(_counter)}"
        with contextlib.suppress(TypeError):
            _tokens[id(obj)] = (weakref.KeyedRef(obj, _dead.append, id(obj)), token)
        return token


def _warn_local(base: str, what: str) -> None:
    with _tokens_lock:
        if base in _warned or len(_warned) >= _MAX_WARNED:
            return
        _warned.add(base)
    logger.warning(
        "costwatch cache: the cached function %s %s, which no other process can name alike: "
        "its entries are kept apart for this process and this object, not shared with other "
        "processes; give the cache a key_namespace to share them",
        base,
        what,
    )


def _new_salt_after_fork() -> None:
    """A forked child names new objects with its own salt (its counter continues the
    parent's, so without it two children would give the same token to different objects)."""
    global _salt, _tokens_lock
    _salt = os.urandom(12).hex()
    _tokens_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_salt_after_fork)


def _code(code: types.CodeType) -> Any:
    """What a function's code does, without where it is (file name, line numbers)."""
    return {
        "bytecode": code.co_code.hex(),
        "names": list(code.co_names),
        "varnames": list(code.co_varnames),
        "consts": [_const(c) for c in code.co_consts],
    }


def _const(value: Any) -> Any:
    if isinstance(value, types.CodeType):
        return _code(value)
    if type(value) is frozenset:
        return {"frozenset": sorted(repr(v) for v in value)}
    if type(value) is tuple:
        return {"tuple": [_const(v) for v in value]}
    return repr(value)
