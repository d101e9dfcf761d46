"""Reading the record log (written by ``costwatch.exporters.recordlog``, whose docstring is the
schema): a ledger of every priced event, one JSON line each."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

SCHEMA = "costwatch.record/1"
"""The schema every line names; fields are only ever added under the same name."""


def record_log_files(path: str | os.PathLike[str]) -> list[str]:
    """The files of a rotating record log, oldest first: ``path.N`` ... ``path.1``, ``path``."""
    base = os.fspath(path)
    rotated = []
    n = 1
    while os.path.exists(f"{base}.{n}"):
        rotated.append(f"{base}.{n}")
        n += 1
    return [*reversed(rotated), *([base] if os.path.exists(base) else [])]


def read_record_log(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> Iterator[dict[str, Any]]:
    """Every line of a record log (its rotated files, oldest first), parsed; amounts stay
    decimal strings.  A line of another schema raises ``ValueError`` naming the file and line."""
    if isinstance(paths, (str, os.PathLike)):
        files: list[str] = record_log_files(paths)
    else:
        files = [os.fspath(p) for p in paths]
    for name in files:
        with open(name, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                line = orjson.loads(raw)
                if not isinstance(line, dict) or line.get("schema") != SCHEMA:
                    raise ValueError(f"{name}:{number}: not a {SCHEMA} line")
                yield line
