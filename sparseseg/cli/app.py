"""The `sparseseg` command line: the Typer application, its help at 80 columns, and the one place where errors
become one line and an exit code.

The commands live in `sparseseg.cli.models` (densify, train, predict, export) and `sparseseg.cli.review` (suggest,
preview, sweep, eval), each registered on `app` with `command`. Results go to stdout (with --json: one JSON object);
progress and messages go to stderr. Exit codes: 0 ok, 2 bad input (one line naming the file or flag, nothing
written), 1 internal error, 130 interrupted (a partial result, if one was written, says so).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import sys
from typing import Annotated

import typer
import typer.core

from sparseseg import __version__
from sparseseg.cli.options import (
    flag,
)
from sparseseg.cli.output import (
    EXIT_INTERRUPTED,
    err,
)
from sparseseg.errors import InputError, Interrupted

#: The click that typer runs on: its own copy in newer typers, click itself in older ones.
_click = getattr(typer.core, "_click", None) or __import__("click")


def one_line(text: str) -> str:
    """``text`` on one line: a newline or carriage return (in a file's name, say) shown as ``\\n`` or ``\\r``."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n")


def _say_error(text: str) -> None:
    err.print(f"error: {one_line(text)}", style="red", markup=False, soft_wrap=True)


class _OneLineErrors(typer.core.TyperGroup):
    """Click's usage errors (a missing argument, ``--iterations abc``) as the one ``error:`` line every other error
    gets, with a hint to use --help; a bare ``sparseseg`` shows the help."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except _click.exceptions.NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help())
            sys.exit(EXIT_BAD_INPUT)
        except _click.exceptions.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            _say_error(f"{exc.format_message()} (see '{ctx.command_path if ctx else 'sparseseg'} --help')")
            sys.exit(exc.exit_code)
        except typer.Abort:
            err.print("interrupted", style="red")
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)

    def format_commands(self, ctx, formatter):
        """The commands with their whole first sentence, wrapped, not cut short."""
        rows = [(name, self.get_command(ctx, name).get_short_help_str(limit=300)) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(
    cls=_OneLineErrors,
    context_settings={"max_content_width": 160},
    help="Dense 3D segmentation from a few annotated planes (3D U-Net, Cicek et al. 2016).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1


def message(exc: InputError) -> str:
    """The one-line message of an `InputError`, naming the flag of the parameter at fault."""
    return exc.named(flag(exc.param)) if exc.param else str(exc)


def handle_errors(command):
    """Turn errors into one line on stderr and an exit code: the one place where this happens."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as exc:
            _say_error(message(exc))
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except Interrupted as exc:
            of = f" of {exc.total}" if exc.total else ""
            err.print(
                f"interrupted: {exc.done}{of} blocks are done and kept in {', '.join(exc.folders)}; run the same "
                "command again with --resume to finish (or delete that folder)",
                style="red",
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except KeyboardInterrupt:
            err.print("interrupted (no output is left half-written)", style="red")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except typer.Exit:
            raise
        except Exception as exc:
            if os.environ.get("SPARSESEG_DEBUG"):
                raise
            err.print(
                one_line(f"internal error: {type(exc).__name__}: {exc} (SPARSESEG_DEBUG=1 shows the traceback)"),
                style="red",
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a batch system's stop) taken as Ctrl-C while the block: a resumable output is kept as on Ctrl-C."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        before = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave SIGTERM as it is
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


class _Command(typer.core.TyperCommand):
    """A command whose help reads at 80 columns: plain click columns (descriptions about 48 wide), the options in
    their panels (everyday options, extra outputs, large volumes, expert levers), and a usage line that reads as
    click's do: ``VOLUME...``, not typer's ``{VOLUME}...``."""

    def collect_usage_pieces(self, ctx):
        return [re.sub(r"^\{(.*)\}", r"\1", piece) for piece in super().collect_usage_pieces(ctx)]

    def format_options(self, ctx, formatter):
        panels: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                panel = getattr(param, "rich_help_panel", None)
                panels.setdefault(
                    panel or ("Arguments" if param.param_type_name == "argument" else "Options"), []
                ).append(record)
        for panel, records in panels.items():
            with formatter.section(panel):
                formatter.write_dl(records)


def _example(line: str, width: int = 76) -> str:
    """A command line cut before an option into shell continuation lines of at most ``width`` characters."""
    pieces, lines = re.split(r" (?=--?[a-z])", line), []
    for piece in pieces:
        if lines and len(lines[-1]) + len(piece) + 3 <= width:
            lines[-1] += " " + piece
        else:
            lines.append(piece if not lines else "    " + piece)
    return " \\\n".join(lines)


def command(name: str, *examples: str):
    """Register command ``name`` with its examples in its help, its errors turned into exit codes by `handle_errors`."""
    # \b: click keeps the lines as they are
    epilog = "Examples:\n\n" + "\n\n".join("\b\n" + _example(line) for line in examples)
    return lambda function: app.command(name=name, epilog=epilog, cls=_Command)(handle_errors(function))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sparseseg {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Dense 3D segmentation from a few annotated planes (3D U-Net, Cicek et al. 2016).

    Exit codes: 0 ok, 1 internal error, 2 bad input, 130 interrupted.
    """


def main() -> None:
    app()


from sparseseg.cli import models, review  # noqa: E402, F401  (registers the commands on app, in this order)
