"""``costwatch prices MODEL``: every rate of a model's price, each with its source and the time
it is in force (``--at`` another time)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from costwatch.cli._output import console, format_usd, json_option, load_prices, print_json, table

if TYPE_CHECKING:
    from costwatch.pricing import Price, PriceView


def _moment(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """``--at 2025-06-01`` (midnight UTC) or an ISO time (UTC when it names no zone)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date such as 2025-06-01") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command()
@click.argument("model")
@click.option("--provider", help="provider name (default: inferred from the model)")
@click.option("--prices", "price_file", metavar="FILE", help="your price YAML (wins over both)")
@click.option(
    "--at",
    metavar="DATE",
    callback=_moment,
    help="the price in force at this date or time (UTC), e.g. 2025-06-01 (default: now)",
)
@json_option()
def prices(
    model: str, provider: str | None, price_file: str | None, at: datetime | None, as_json: bool
) -> int:
    """Print every rate of MODEL's price (USD per million tokens): long-context tiers, audio,
    batch and processing-tier rates, each with its source and the time it is in force.

    Exits 1 when no price is known, with the price-file entry that would add one.
    """
    from costwatch.pricing import format_price_table, format_when, price_header, price_view

    catalog = load_prices(price_file)
    view = price_view(catalog, model, provider, at)
    if as_json:
        print_json(_view_dict(view))
        return 0 if view.price is not None else 1
    if view.price is None:
        click.echo(format_price_table(catalog, model, provider, at))
        return 1
    click.echo("\n".join(price_header(view, view.price)))
    console().print(
        table(
            ["rate", "applies", "USD", "per", "note", "in force", "source"],
            (
                [
                    row.item,
                    row.condition or "always",
                    format_usd(row.usd),
                    row.unit.removeprefix("per "),
                    row.note,
                    f"{format_when(row.valid_from, 'always', short=True)} -> "
                    f"{format_when(row.valid_to, 'no end', short=True)}",
                    row.source,
                ]
                for row in view.rows
            ),
        )
    )
    return 0


def _view_dict(view: PriceView) -> dict[str, Any]:
    price = view.price
    if price is None:
        return {"model": view.model, "provider": view.provider or None, "price": None}

    def rates(p: Price) -> dict[str, str]:
        return {kind: format_usd(value) for kind, (value, _) in p.per_million().items()}

    return {
        "model": view.model,
        "provider": view.provider,
        "at": view.at.isoformat(),
        "price": {
            "source": price.source,
            "matched": price.matched or None,
            "provenance": price.provenance or None,
            "valid_from": None if view.valid_from is None else view.valid_from.isoformat(),
            "valid_to": None if view.valid_to is None else view.valid_to.isoformat(),
            "fine_tuned": view.fine_tuned,
            "usd_per_million_tokens": rates(price),
            "inherited": list(price.inherited),
            "per_request_usd": format_usd(price.per_request),
            "per_web_search_usd": format_usd(price.per_web_search),
            "per_file_search_usd": format_usd(price.per_file_search),
            "batch_multiplier": format_usd(price.batch_discount),
            "long_context_tiers": [
                {
                    "above_prompt_tokens": t.above_prompt_tokens,
                    "usd_per_million_tokens": rates(t.price),
                }
                for t in price.tiers
            ],
            "service_tiers": {name: rates(tiered) for name, tiered in price.service_tiers},
        },
        "rows": [
            {
                "rate": row.item,
                "applies": row.condition or None,
                "usd": format_usd(row.usd),
                "unit": row.unit,
                "note": row.note or None,
                "source": row.source,
                "provenance": row.provenance or None,
                "valid_from": None if row.valid_from is None else row.valid_from.isoformat(),
                "valid_to": None if row.valid_to is None else row.valid_to.isoformat(),
            }
            for row in view.rows
        ],
    }
