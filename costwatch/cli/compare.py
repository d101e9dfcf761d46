"""``costwatch compare`` and ``costwatch reprice``: RAG or fine-tuning, from real traffic; a
period of the record log priced again.  The work is in ``costwatch.analysis``."""

from __future__ import annotations

import click

from costwatch._core.errors import ConfigError
from costwatch.cli._output import CliError, json_option


def _fail(exc: Exception, fix: str) -> CliError:
    message = str(exc).removeprefix("costwatch: ")
    return CliError(message, fix)


@click.command()
@click.option("--record-log", metavar="PATH", help="read a record log (with its rotations)")
@click.option("--prometheus", metavar="URL", help="read a Prometheus server's HTTP API")
@click.option("--start", help="with --prometheus: Unix s, ISO 8601 or a duration ago (24h)")
@click.option("--end", help="with --prometheus: Unix s, ISO 8601 or a duration ago (default now)")
@click.option("--service", help="with --prometheus: only this service")
@click.option("--scenarios", metavar="YAML", help="the what-if candidates")
@click.option("--prices", "price_file", metavar="FILE", help="your price YAML (with training:)")
@click.option("--explain", is_flag=True, help="every figure's arithmetic and price source")
@click.option("--html", metavar="FILE", help="also write the self-contained HTML report")
@json_option("print every figure as exact JSON")
def compare(
    record_log: str | None,
    prometheus: str | None,
    start: str | None,
    end: str | None,
    service: str | None,
    scenarios: str | None,
    price_file: str | None,
    explain: bool,
    html: str | None,
    as_json: bool,
) -> None:
    """Per pipeline: monthly cost split into variable and fixed, cost per request and per
    successful answer, and for each candidate of --scenarios the break-even monthly volume and
    the payback of a training run, read from real traffic."""
    from costwatch.analysis._command import read_traffic, run_compare

    try:
        traffic = read_traffic(
            record_log=record_log, prometheus=prometheus, start=start, end=end, service=service
        )
        text, _ = run_compare(
            traffic,
            scenarios=scenarios,
            prices=price_file,
            as_json=as_json,
            explain=explain,
            html=html,
        )
    except ConfigError as exc:
        raise _fail(exc, "see `costwatch compare --help`") from exc
    except ImportError as exc:
        raise _fail(exc, "pip install 'costwatch[report]'") from exc
    except (OSError, ValueError) as exc:
        raise _fail(exc, "check --record-log / --prometheus and the files given") from exc
    click.echo(text, nl=False)


@click.command()
@click.argument("record_log", metavar="PATH")
@click.option("--prices", "price_file", metavar="FILE", help="your price YAML with the correction")
@click.option("--start", help="Unix s, ISO 8601 or a duration ago (24h)")
@click.option("--end", help="Unix s, ISO 8601 or a duration ago")
@click.option("--write", metavar="FILE", help="write the re-priced lines there")
@json_option()
def reprice(
    record_log: str,
    price_file: str | None,
    start: str | None,
    end: str | None,
    write: str | None,
    as_json: bool,
) -> None:
    """Price the calls of a record log again with today's prices (a corrected price in --prices
    wins): what the period cost as recorded and as re-priced, by model."""
    from costwatch.analysis._command import run_reprice

    try:
        text = run_reprice(
            record_log, prices=price_file, start=start, end=end, write_to=write, as_json=as_json
        )
    except ConfigError as exc:
        raise _fail(exc, "see `costwatch reprice --help`") from exc
    except (OSError, ValueError) as exc:
        raise _fail(exc, "check the record log and the price file") from exc
    click.echo(text, nl=False)
