"""``custos init`` and ``custos org …``: set up a home and load the directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from custos.access import Custos
from custos.accounts import need_roles
from custos.cli.app import app, console, err_console, print_json, state
from custos.cli.operator import operator
from custos.directory import merge_documents, read_directory_file

org_app = typer.Typer(help="The directory: principals, subjects and tickets.", no_args_is_help=True)
app.add_typer(org_app, name="org")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@app.command("init")
def init(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Create the home folder, its database and default policy pack (safe to re-run)."""
    with Custos.init(state(ctx).home) as system:
        home = system.settings.home
    if as_json:
        print_json({"home": str(home), "initialised": True})
    else:
        console.print(f"custos home ready at {home}")


@org_app.command("load")
def load(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="Directory files (YAML or JSON).")],
    as_json: JsonFlag = False,
) -> None:
    """Validate directory files and merge them into the directory, all or nothing.

    Loading the same file twice changes nothing. Every problem is reported with its file,
    entry and field, and then nothing is loaded. What it adds or changes is ledgered first,
    naming who loaded it (with ``[service] operator_auth``: an admin's token in
    ``$CUSTOS_TOKEN``), and only then written.
    """
    source = ", ".join(str(p) for p in files)
    with Custos.open(state(ctx).home) as system:
        # Protected flags and ticket kinds are the active pack's words.
        words = system.policy_pack.vocabulary
        document = merge_documents(read_directory_file(path, words) for path in files)
        who = operator(system)
        if who.authenticated:
            # The directory is authority: loading it is the admin plane's job.
            need_roles(who.roles, "admin")
        report = system.directory.merge(document, source=source, by=who.entry())
    # A role the pack does not declare is allowed but gets nothing from its policies: say
    # so, since it is most often a typo.
    for role in sorted({p.role for p in document.principals} - set(words.roles)):
        holders = sorted(p.id for p in document.principals if p.role == role)
        err_console.print(
            f"note: {words.unknown('role', role)}: {', '.join(holders[:5])}"
            f"{' …' if len(holders) > 5 else ''} get nothing from the policy pack",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if as_json:
        print_json(
            {"added": report.added, "changed": report.changed, "unchanged": report.unchanged}
        )
        return
    for section in ("principals", "subjects", "tickets"):
        console.print(
            f"{section}: {report.added[section]} added, {report.changed[section]} changed, "
            f"{report.unchanged[section]} unchanged"
        )
