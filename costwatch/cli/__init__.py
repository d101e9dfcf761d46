"""The ``costwatch`` command: ``demo``, ``prices``, ``estimate``, ``budget status``,
``compare`` and ``reprice``.

One module per command group; ``_output`` holds what they share.  Every error is one line on
stderr naming the problem and the fix, with a non-zero exit; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import click

from costwatch.cli._output import CliError, console
from costwatch.cli.budget import budget
from costwatch.cli.compare import compare, reprice
from costwatch.cli.demo import demo
from costwatch.cli.estimate import estimate
from costwatch.cli.prices import prices

SIGPIPE_EXIT = 141
"""What a shell reports for a writer whose reader went away (``costwatch demo | head``)."""


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Add --debug anywhere to see the traceback of an error.",
    invoke_without_command=True,
)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Runtime cost monitoring for LLM applications."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


for command in (demo, prices, estimate, budget, compare, reprice):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end]
    if debug:
        args.remove("--debug")
    try:
        code = cli.main(args, prog_name="costwatch", standalone_mode=False)
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_EXIT
    except click.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else "costwatch"
        usage = exc.ctx.get_usage().replace("Usage:", "usage:") if exc.ctx else "usage: costwatch"
        return _fail(path, f"{exc.format_message()} ({usage}; see `{path} --help`)", 2)
    except CliError as exc:
        if debug:
            traceback.print_exc()
        return _fail(exc.command, str(exc), exc.code)
    except (click.Abort, KeyboardInterrupt):
        return _fail("costwatch", "interrupted", 130)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        return _fail(
            "costwatch",
            f"unexpected error {type(exc).__name__}: {exc}; "
            "run again with --debug for the traceback and report it",
            1,
        )
    return code if isinstance(code, int) else 0


def _fail(command: str, message: str, code: int) -> int:
    err = console(stderr=True)
    err.print(f"[bold red]{command}:[/] ", end="")
    err.print(" ".join(message.split()), markup=False, soft_wrap=True)
    return code
