"""``costwatch estimate``: what a prompt would cost on a model, before sending it."""

from __future__ import annotations

import sys

import click

from costwatch.cli._output import CliError, json_option, load_prices, print_json

_GIVE = "give the path of a UTF-8 text file with the prompt, or - to read it from stdin"


@click.command()
@click.argument("file", default="-", metavar="[FILE]")
@click.option("--model", required=True, help="the model to price, e.g. gpt-4o-mini")
@click.option("--provider", help="provider name (default: inferred from the model)")
@click.option(
    "--output-tokens",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="output tokens you expect back",
)
@click.option("--prices", "price_file", metavar="FILE", help="your price YAML")
@json_option()
def estimate(
    file: str,
    model: str,
    provider: str | None,
    output_tokens: int,
    price_file: str | None,
    as_json: bool,
) -> None:
    """Estimate the cost of the prompt in FILE (or stdin) sent to --model.

    Input tokens are counted with tiktoken (the model's own tokenizer for OpenAI models).
    """
    from costwatch.pricing import estimate_cost, format_estimate

    catalog = load_prices(price_file)
    result = estimate_cost(_read(file), model, provider, catalog, output_tokens)
    if not as_json:
        click.echo(format_estimate(result))
        return

    def text(value: object) -> str | None:
        return None if value is None else str(value)

    print_json(
        {
            "model": result.model,
            "provider": result.provider,
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
            "method": result.method,
            "encoding": result.encoding,
            "price_source": None if result.price is None else result.price.source,
            "input_cost_usd": text(result.input_cost_usd),
            "output_cost_usd": text(result.output_cost_usd),
            "total_cost_usd": text(result.total_cost_usd),
        }
    )


def _read(path: str) -> str:
    if path == "-":
        if sys.stdin.isatty():
            raise CliError("no prompt given", f"{_GIVE} (costwatch estimate --model M prompt.txt)")
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise CliError(f"{path}: no such file", _GIVE) from None
    except IsADirectoryError:
        raise CliError(f"{path} is a directory", _GIVE) from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text (a binary file?)", _GIVE) from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", _GIVE) from None
