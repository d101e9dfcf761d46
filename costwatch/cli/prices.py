"""``costwatch prices MODEL``: the resolved price of a model, per token type, and its source."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from costwatch.cli._output import format_usd, json_option, load_prices, print_json

if TYPE_CHECKING:
    from costwatch.pricing._catalog import Price


@click.command()
@click.argument("model")
@click.option("--provider", help="provider name (default: inferred from the model)")
@click.option("--prices", "price_file", metavar="FILE", help="your price YAML (wins over both)")
@json_option()
def prices(model: str, provider: str | None, price_file: str | None, as_json: bool) -> int:
    """Print the resolved price of MODEL (USD per million tokens) and where it comes from.

    Exits 1 when no price is known, with the price-file entry that would add one.
    """
    from costwatch.pricing._catalog import canonical_provider, format_price_table, infer_provider

    catalog = load_prices(price_file)
    chosen = provider or infer_provider(model) or ""
    price = catalog.resolve(chosen, model)
    fine_tuned = catalog.is_fine_tuned(model)
    if as_json:
        print_json(
            {
                "model": model,
                "provider": canonical_provider(chosen) if chosen else None,
                "price": None if price is None else _price_dict(price, fine_tuned),
            }
        )
    else:
        click.echo(format_price_table(catalog, model, provider))
    return 0 if price is not None else 1


def _price_dict(price: Price, fine_tuned: bool) -> dict[str, Any]:
    def rates(p: Price) -> dict[str, str]:
        return {kind: format_usd(value) for kind, (value, _) in p.per_million().items()}

    return {
        "source": price.source,
        "matched": price.matched or None,
        "fine_tuned": fine_tuned or price.fine_tuned,
        "usd_per_million_tokens": rates(price),
        "per_request_usd": format_usd(price.per_request),
        "per_web_search_usd": format_usd(price.per_web_search),
        "per_file_search_usd": format_usd(price.per_file_search),
        "batch_multiplier": format_usd(price.batch_discount),
        "long_context_tiers": [
            {"above_prompt_tokens": t.above_prompt_tokens, "usd_per_million_tokens": rates(t.price)}
            for t in price.tiers
        ],
        "service_tiers": {name: rates(tiered) for name, tiered in price.service_tiers},
    }
