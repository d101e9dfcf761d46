"""What every command shares: the consoles, tables, JSON, money and the one-line error."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich import box
from rich.console import Console
from rich.table import Table

from costwatch._core.errors import ConfigError
from costwatch._core.money import format_usd as format_usd
from costwatch._core.money import usd as usd

if TYPE_CHECKING:
    from costwatch.pricing import PriceCatalog

F = TypeVar("F", bound=Callable[..., Any])

_PIPE_WIDTH = 200
"""Columns when the output is not a terminal: a table is never wrapped for a file or a pipe."""


class CliError(Exception):
    """A user error: printed as one line, ``costwatch CMD: <problem>; <fix>``, exit ``code``."""

    def __init__(self, problem: str, fix: str = "", code: int = 1) -> None:
        ctx = click.get_current_context(silent=True)
        self.command = ctx.command_path if ctx is not None else "costwatch"
        self.code = code
        super().__init__(f"{problem}; {fix}" if fix else problem)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader went away (``| head``): end as every other command does, in ``main``."""
        self.quiet = True
        raise BrokenPipeError


def console(*, stderr: bool = False) -> Console:
    """A rich console: colour only on a terminal and without ``NO_COLOR``; plain text otherwise."""
    plain = bool(os.environ.get("NO_COLOR"))  # no-color.org: set and not empty
    out = _Console(stderr=stderr, highlight=False, color_system=None if plain else "auto")
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = _PIPE_WIDTH
    return out


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    """Left-aligned first column, right-aligned figures, a rule under the header."""
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for i, name in enumerate(header):
        t.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        t.add_row(*row)
    return t


def print_json(data: Any) -> None:
    """Figures as JSON on stdout (money as decimal strings), for scripts and ``jq``."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def json_option(text: str = "print the figures as JSON instead of text") -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=text)


def positive_usd(ctx: click.Context, param: click.Parameter, value: str) -> Decimal:
    """An option's positive dollar amount, kept exact (``0.004`` stays ``0.004``)."""
    try:
        amount = Decimal(value.lstrip("$"))
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not an amount of dollars, such as 0.5") from None
    if not amount.is_finite() or amount <= 0:
        raise click.BadParameter(f"{value!r} must be a positive amount of dollars")
    return amount


def load_prices(path: str | None) -> PriceCatalog:
    """The price catalog with the user's price file, or a one-line error saying what is wrong."""
    from costwatch.pricing import PriceCatalog

    try:
        return PriceCatalog(path)
    except ConfigError as exc:
        raise CliError(
            f"price file {path}: "
            + (exc.reason if exc.field == "prices" else str(exc).removeprefix("costwatch: ")),
            "fix the file (format: README, Prices) or leave out --prices",
        ) from exc
