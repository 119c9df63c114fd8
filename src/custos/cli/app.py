"""The root Typer app, the global options, and the single place errors are caught."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from custos.errors import CustosError

app = typer.Typer(
    name="custos",
    help="custos: the guarded path between staff and users' personal data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
err_console = Console(stderr=True)


class CliState:
    """Options shared by every command (``--home``), kept on the Typer context."""

    def __init__(self, home: Path | None) -> None:
        self.home = home


@app.callback()
def _root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="CUSTOS_HOME",
            help="Home folder holding the database, keys and policies [default: ~/.custos].",
        ),
    ] = None,
) -> None:
    ctx.obj = CliState(home)


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj


def print_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (sorted keys, one document)."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def narrowed(args: list[str]) -> typer.Typer:
    """The app with only the command (or command group) ``args`` runs, when they name one.

    Typer builds every command's parameters from its annotations before it runs any one
    (a tenth of a second for custos's sixty commands, paid by every call); a copy of the app
    holding just the named command runs it exactly the same way. With no command named, an
    unknown one, or an option before it other than ``--home``, the whole app runs: help and
    usage errors list every command as before.
    """
    name = _command_name(args)
    if name is None:
        return app
    commands = [c for c in app.registered_commands if _registered_name(c) == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if not commands and not groups:
        return app
    only = copy.copy(app)
    only.registered_commands = commands
    only.registered_groups = groups
    return only


def _command_name(args: list[str]) -> str | None:
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--home":
            skip = True
        elif arg.startswith("--home="):
            continue
        elif arg.startswith("-"):
            return None
        else:
            return arg
    return None


def _registered_name(command: Any) -> str:
    name = command.name or command.callback.__name__.replace("_", "-")
    return str(name)


INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE (sysexits.h): distinct from every CustosError's code


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; turn every :class:`CustosError` into a clean message.

    Usage errors are Typer's own (exit code 2); a ``CustosError`` prints its message (or,
    with ``--json``, ``{"error": {...}}`` on stdout) and exits with its own code. Any other
    exception is a bug: one line naming its type, no traceback, exit code 70.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        narrowed(args)(args=args, prog_name="custos")
    except CustosError as exc:
        if "--json" in args:
            print_json({"error": exc.to_dict()})
        else:
            err_console.print(
                f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
            )
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:
        # A bug, not bad input. Its traceback would quote local values (ids, addresses,
        # file contents), so it is shown only to a developer who asks (CUSTOS_DEBUG=1).
        if os.environ.get("CUSTOS_DEBUG") == "1":
            raise
        message = (
            f"internal error ({type(exc).__name__}): custos stopped on something it did not "
            "expect; please report the command you ran (set CUSTOS_DEBUG=1 for the details)"
        )
        if "--json" in args:
            print_json({"error": {"code": "internal_error", "message": message}})
        else:
            err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
        raise SystemExit(INTERNAL_ERROR_EXIT) from None
