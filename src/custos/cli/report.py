"""``custos report subject|verify``: transparency reports for subjects, checked offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from custos.cli.app import app, console, print_json, state
from custos.errors import IntegrityError, InvalidInput

report_app = typer.Typer(help="Subject transparency reports.", no_args_is_help=True)
app.add_typer(report_app, name="report")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@report_app.command("subject")
def subject(
    ctx: typer.Context,
    subject_id: Annotated[str, typer.Argument(help="The subject (platform account id).")],
    fmt: Annotated[str, typer.Option("--format", help="json or html.")] = "json",
    out: Annotated[Path | None, typer.Option("--out", help="Write here (else stdout).")] = None,
    names: Annotated[
        bool, typer.Option("--names", help="Show staff ids and names (privacy office only).")
    ] = False,
) -> None:
    """Every access to a subject's data, each with an inclusion proof to a signed checkpoint."""
    from custos.access import Custos, Viewer
    from custos.reports import render_html

    if fmt not in ("json", "html"):
        raise InvalidInput("--format must be json or html")
    with Custos.open(state(ctx).home) as system:
        document = system.subject_report(subject_id, names=names, viewer=Viewer("cli"))
    text = (
        json.dumps(document, indent=2, sort_keys=True) + "\n"
        if fmt == "json"
        else render_html(document)
    )
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"{out}: cannot write ({exc.strerror})") from None
    console.print(
        f"report on {subject_id}: {len(document['accesses'])} accesses, "
        f"{len(document['approvals'])} approval steps -> {out}",
        highlight=False,
    )


@report_app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="A report in JSON (custos report subject).")],
    key: Annotated[
        str | None,
        typer.Option("--key", help="The log's verifier key, from a source you trust."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check a report offline: signature, every proof, every row. Exit 6 naming the first
    bad entry index when anything does not match."""
    from custos.reports import verify_report

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{file}: cannot read ({exc})") from None
    check = verify_report(text, trusted_key=key, source=str(file))
    if as_json:
        print_json(check.to_dict())
    if not check.ok:
        first = check.problems[0][1]
        raise IntegrityError(
            f"{file} does not verify: {first}"
            + (
                f" (first bad entry {check.first_bad_index})"
                if check.first_bad_index is not None
                else ""
            )
        )
    if not as_json:
        console.print(
            f"{file}: verified — {check.entries} entries about {check.subject} are in the log "
            f"at size {check.checkpoint_size}, signed by {check.key.split('+')[0]} "
            f"(key {'given' if check.key_source == 'given' else 'from the report itself'})",
            highlight=False,
        )
