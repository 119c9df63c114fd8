"""``custos sql`` (one guarded SELECT on a source of the data map) and ``custos sources
check`` (the data map held against the live schemas)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer._click.core import Context as ClickContext
from typer.core import TyperGroup

from custos.cli.app import app, console, print_json, state
from custos.cli.operator import asking
from custos.errors import IntegrityError, InvalidInput

if TYPE_CHECKING:
    from custos.access import QueryResult

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
#: Where the group keeps the SELECT text it was given in place of a sub-command.
_TEXT = "custos.sql.text"


class _QueryOrCommand(TyperGroup):
    """``custos sql [OPTIONS] "SELECT …"`` runs the query; ``custos sql serve`` (and any
    other sub-command) runs as usual: a first argument that names no sub-command is the
    query's text."""

    def invoke(self, ctx: ClickContext) -> Any:
        args = [*ctx._protected_args, *ctx.args]
        if args and args[0] not in self.commands:
            if len(args) != 1:
                raise InvalidInput(
                    "custos sql takes one SELECT, as one quoted argument",
                    hint='custos sql --source app … "SELECT …"',
                )
            ctx.meta[_TEXT] = args[0]
            ctx._protected_args, ctx.args = [], []
        return super().invoke(ctx)


sql_app = typer.Typer(
    cls=_QueryOrCommand,
    invoke_without_command=True,
    no_args_is_help=True,
    help="Guarded SQL over the data map (sources.yaml): custos sql --source S --principal P "
    '--purpose U [--ticket T] "SELECT …".',
)
app.add_typer(sql_app, name="sql")
sources_app = typer.Typer(help="The data map's sources (sources.yaml).", no_args_is_help=True)
app.add_typer(sources_app, name="sources")


@sql_app.callback()
def sql(
    ctx: typer.Context,
    source: Annotated[
        str | None, typer.Option("--source", help="The source of the data map to query.")
    ] = None,
    principal: Annotated[
        str | None, typer.Option("--principal", help="Who asks (principal id).")
    ] = None,
    purpose: Annotated[str | None, typer.Option("--purpose", help="Why, e.g. support.")] = None,
    ticket: Annotated[
        str | None, typer.Option("--ticket", help="The ticket explaining an individual query.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run one read-only SELECT on a source of the data map, guarded: decided per subject and
    category (or in aggregate, for groups of at least [sql] k subjects), logged before any row
    is shown. Exit code 7 when refused (the refusal is logged)."""
    if ctx.invoked_subcommand is not None:
        return
    text = ctx.meta.get(_TEXT)
    missing = [
        name
        for name, value in (
            ("--source", source),
            ("--principal", principal),
            ("--purpose", purpose),
        )
        if not value
    ]
    if text is None or missing:
        raise InvalidInput(
            "custos sql needs " + ", ".join([*missing, *(["the SELECT"] if text is None else [])]),
            hint="custos sql --source app --principal emp-1 --purpose support --ticket T-1 "
            '"SELECT …"',
        )
    assert source is not None
    assert principal is not None
    assert purpose is not None
    from custos.access import Custos, QueryRequest

    with Custos.open(state(ctx).home) as system:
        acting = asking(system, principal)
        result = system.query(
            QueryRequest(
                principal=acting, source=source, sql=str(text), purpose=purpose, ticket=ticket
            ),
            source_tag="cli",
        )
    if as_json:
        print_json(result.to_dict())
    else:
        _show(result)


def _show(result: QueryResult) -> None:
    from rich.table import Table

    from custos.access.query import json_value

    table = Table(show_lines=False)
    for column in result.columns:
        label = column.name
        if column.category:
            label += f"\n[dim]{column.category} ({column.precision})[/]"
        table.add_column(label)
    for row in result.rows:
        table.add_row(*("NULL" if v is None else str(json_value(v)) for v in row))
    console.print(table)
    shown = f"{len(result.rows)} row{'s' if len(result.rows) != 1 else ''}"
    if result.truncated:
        shown += " (truncated at [sql] row_cap)"
    decided = len(result.decisions) + len(result.aggregates)
    console.print(
        f"{shown}; {decided} decision(s) and the release logged at ledger index "
        f"{result.release_index}; sql sha256 {result.sql_digest[:16]}…",
        highlight=False,
        markup=False,
    )


@sources_app.command("check")
def sources_check(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Hold the data map (sources.yaml) to every source's live schema: mapped tables and
    columns and the subject column must exist; unmapped columns of mapped tables are listed
    (refused to every query) and a PostgreSQL role that can write is a warning. Exit code 6
    when a source does not match its map."""
    from custos.access import Custos
    from custos.access.query import SqlSettings
    from custos.sql.sources import check_schema

    with Custos.open(state(ctx).home) as system:
        data_map = system.data_map()
        timeout = SqlSettings.from_settings(system.settings).statement_timeout
        home = system.settings.home
        checks = [
            check_schema(data_map.sources[n], home, timeout=timeout)
            for n in sorted(data_map.sources)
        ]
    failing = [c.source for c in checks if not c.ok]
    if as_json:
        print_json(
            {
                "ok": not failing,
                "data_map": data_map.digest,
                "sources": [c.to_dict() for c in checks],
            }
        )
        if failing:
            raise typer.Exit(IntegrityError.exit_code)
        return
    if not checks:
        console.print("sources.yaml maps no source", highlight=False)
    for check in checks:
        mark = "[green]ok[/]" if check.ok else "[red]does not match[/]"
        console.print(f"{check.source}: {mark}", highlight=False)
        for problem in check.problems:
            console.print(f"  problem: {problem}", highlight=False, markup=False)
        for table, columns in check.unmapped.items():
            console.print(
                f"  unmapped in {table} (refused to queries): {', '.join(columns)}",
                highlight=False,
                markup=False,
            )
        for warning in check.warnings:
            console.print(f"  warning: {warning}", highlight=False, markup=False)
    if failing:
        raise IntegrityError(
            f"the data map does not match the live schema of {', '.join(failing)}",
            hint="fix sources.yaml (or the source) and run `custos sources check` again",
        )
