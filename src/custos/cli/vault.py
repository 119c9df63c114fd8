"""``custos vault ingest|shred``: sensitive records in, expired keys out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from custos.cli.app import app, console, print_json, state
from custos.errors import InvalidInput

vault_app = typer.Typer(help="The vault of sensitive records.", no_args_is_help=True)
app.add_typer(vault_app, name="vault")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@vault_app.command("ingest")
def ingest(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Records as JSON Lines (login, location, contact).")],
    rejects: Annotated[
        Path | None, typer.Option("--rejects", help="Set bad lines aside here; store the rest.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Encrypt and store sensitive records, all or nothing (or with --rejects, the good ones)."""
    from custos.access import Custos
    from custos.textfiles import check_rejects_path, read_lines

    check_rejects_path(rejects, file)
    lines = read_lines(file, "a records file")
    with Custos.open(state(ctx).home) as system:
        report = system.ingest(lines, str(file), rejects=rejects)
    body = {
        "added": report.added,
        "unchanged": report.unchanged,
        "rejected": report.rejected,
        "categories": report.categories,
        "expired": report.expired,
    }
    if as_json:
        print_json(body)
    else:
        expired = (
            f" ({report.expired} past retention already: kept coarse only)"
            if report.expired
            else ""
        )
        console.print(
            f"{report.added} records stored{expired}, {report.unchanged} already present, "
            f"{report.rejected} set aside",
            highlight=False,
        )


@vault_app.command("shred")
def shred(
    ctx: typer.Context,
    now: Annotated[
        str | None, typer.Option("--now", help="Treat this ISO time as now (for testing).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Destroy the data keys of records past retention; coarse derivatives remain."""
    from custos.access import Custos

    moment = datetime.now(UTC)
    if now is not None:
        try:
            moment = datetime.fromisoformat(now.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"--now {now!r} is not an ISO 8601 time") from None
        if moment.tzinfo is None:
            raise InvalidInput("--now must carry a time zone (e.g. a trailing Z)")
    with Custos.open(state(ctx).home) as system:
        report = system.shred(moment)
    if as_json:
        print_json(
            {
                "keys": len(report.keys),
                "records": report.records,
                "categories": report.categories,
                "before": report.before,
            }
        )
    else:
        console.print(
            f"shredded {len(report.keys)} data keys ({report.records} records' precise values)",
            highlight=False,
        )
