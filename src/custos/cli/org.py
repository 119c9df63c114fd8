"""``custos init`` and ``custos org …``: set up a home and load the directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from custos.cli.app import app, console, err_console, print_json, state
from custos.cli.operator import operator

org_app = typer.Typer(help="The directory: principals, subjects and tickets.", no_args_is_help=True)
app.add_typer(org_app, name="org")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@app.command("init")
def init(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Create the home folder, its database and default policy pack (safe to re-run)."""
    from custos.access import Custos

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
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Remove stored rows of each section the files hold that they do not hold.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Validate directory files and merge them into the directory, all or nothing.

    Loading the same file twice changes nothing. Every problem is reported with its file,
    entry and field, and then nothing is loaded. With --prune, the files are the whole
    directory (each section they hold): stored rows they leave out are removed, each
    ledgered first as a removal. What it adds or changes is ledgered first,
    naming who loaded it (with ``[service] operator_auth``: an admin's token in
    ``$CUSTOS_TOKEN``), and only then written.
    """
    from custos.access import Custos
    from custos.accounts import need_roles
    from custos.directory import merge_documents, plan_prune, read_directory_file

    source = ", ".join(str(p) for p in files)
    with Custos.open(state(ctx).home) as system:
        # Protected flags and ticket kinds are the active pack's words.
        words = system.policy_pack.vocabulary
        document = merge_documents(read_directory_file(path, words) for path in files)
        who = operator(system)
        if who.authenticated:
            # The directory is authority: loading it is the admin plane's job.
            need_roles(who.roles, "admin")
        planned = plan_prune(system.directory, document, source) if prune else None
        report = system.directory.merge(document, source=source, by=who.entry())
        removed = planned.apply(system.directory, source, who.entry()) if planned else None
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
        body = {"added": report.added, "changed": report.changed, "unchanged": report.unchanged}
        print_json({**body, "removed": removed} if removed is not None else body)
        return
    for section in ("principals", "subjects", "tickets"):
        gone = f", {removed[section]} removed" if removed is not None else ""
        console.print(
            f"{section}: {report.added[section]} added, {report.changed[section]} changed, "
            f"{report.unchanged[section]} unchanged{gone}"
        )


@org_app.command("import")
def import_lines(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Directory lines (JSON Lines), one entry a line.")],
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Remove stored rows of each section the file holds that it does not hold.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Import a large directory from JSON Lines, streamed and ledgered chunk by chunk.

    Each line is {"principal": {...}}, {"subject": {...}} or {"ticket": {...}} with the
    fields of a directory file's entry. The file is checked whole first: a bad line is
    reported by number and then nothing is loaded. What it adds, changes or (with --prune)
    removes is ledgered before it is written, naming who imported it.
    """
    from custos.access import Custos
    from custos.accounts import need_roles
    from custos.directory import import_lines as run_import

    with Custos.open(state(ctx).home) as system:
        who = operator(system)
        if who.authenticated:
            need_roles(who.roles, "admin")
        report = run_import(
            system.directory,
            file,
            by=who.entry(),
            prune=prune,
            words=system.policy_pack.vocabulary,
        )
    if as_json:
        print_json(report.to_dict())
        return
    for section in ("principals", "subjects", "tickets"):
        console.print(
            f"{section}: {report.added[section]} added, {report.changed[section]} changed, "
            f"{report.unchanged[section]} unchanged, {report.removed[section]} removed"
        )
