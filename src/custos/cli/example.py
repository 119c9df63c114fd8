"""``custos example``: the README's example organisation, records and events as files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from custos.cli.app import app, console, print_json


@app.command("example")
def example(
    folder: Annotated[
        Path, typer.Argument(help="Where to write the files [default: the current folder].")
    ] = Path(),
    force: Annotated[
        bool, typer.Option("--force", help="Replace example files that exist already.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Write directory.yaml, logins.jsonl and events.jsonl: the ids the README's examples use.

    Times are in the last few days. Refuses, writing nothing, when a file exists (--force).
    """
    from custos import examples

    written = examples.write(folder, datetime.now(UTC), force=force)
    if as_json:
        print_json({"files": [str(p) for p in written]})
        return
    for path in written:
        console.print(f"wrote {path}", highlight=False)
