"""``costwatch budget status``: every budget shared through Redis, its spend and its window."""

from __future__ import annotations

import click

from costwatch.cli._output import CliError, console, json_option, print_json, table


@click.group()
def budget() -> None:
    """Budgets shared through Redis."""


@budget.command()
@click.option("--redis-url", help="default: COSTWATCH_REDIS_URL")
@json_option()
def status(redis_url: str | None, as_json: bool) -> None:
    """Each budget's window, spent, reserved (held by calls in flight), limit and reset time.

    Exits 1 when no Redis is configured or Redis cannot be reached.
    """
    from costwatch._core.settings import load_settings
    from costwatch.budgets._budget import BudgetStatusError, budget_readings, status_cells

    settings = load_settings({})
    url = redis_url or settings.redis_url
    try:
        readings = budget_readings(url, cluster=settings.redis_cluster)
    except BudgetStatusError as exc:
        fix = "check that Redis runs there, or pass another --redis-url" if url else ""
        raise CliError(str(exc).removeprefix("costwatch: "), fix) from None
    if as_json:
        print_json([r.as_dict() for r in readings])
        return
    out = console()
    if not readings:
        out.print("No budgets are configured in Redis (costwatch.budget(...) registers one).")
        return
    header = ("budget", "window", "action", "spent", "reserved", "limit", "used", "resets (UTC)")
    out.print(table(header, [status_cells(r) for r in readings]))
