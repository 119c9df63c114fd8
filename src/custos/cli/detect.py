"""``custos events import``, ``custos detect`` and ``custos cases …``: access events in,
explained alerts out, and their triage."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

if TYPE_CHECKING:
    from custos.access import Custos
    from custos.detect import Case, Casebook
from custos.cli.app import app, console, print_json, state
from custos.cli.operator import author, triaging
from custos.errors import InvalidInput

events_app = typer.Typer(
    help="Access events (imported logs and custos's own).", no_args_is_help=True
)
cases_app = typer.Typer(help="Cases: triage of alerts.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(cases_app, name="cases")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
By = Annotated[
    str | None,
    typer.Option(
        "--by",
        help="Who is acting (principal id; rule own-case applies to them). With operator_auth: "
        "taken from $CUSTOS_TOKEN, and may only name that token's principal.",
    ),
]


def _time(value: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{option} {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{option} must carry a time zone (e.g. a trailing Z)")
    return moment.astimezone(UTC)


def _casebook(system: Custos) -> Casebook:
    from custos.detect import Casebook, DetectConfig

    config = DetectConfig.from_section(system.settings.section("detect"))
    return Casebook(system.db, suppress_days=config.suppress_days, window_days=config.window_days)


@events_app.command("import")
def import_events(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="Access events as JSON Lines, or a pgaudit or CloudTrail log (docs/formats.md)."
        ),
    ],
    log_format: Annotated[
        str,
        typer.Option(
            "--format", help="jsonl (custos's own), pgaudit (a PostgreSQL log) or cloudtrail."
        ),
    ] = "jsonl",
    mapping_file: Annotated[
        Path | None,
        typer.Option("--mapping", help="pgaudit, cloudtrail: the mapping file (YAML)."),
    ] = None,
    rejects: Annotated[
        Path | None, typer.Option("--rejects", help="Set bad lines aside here; store the rest.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Import access events, all or nothing (or with --rejects, the good ones).

    An audit log (--format pgaudit or cloudtrail) is mapped by --mapping (docs/formats.md).

    Its entries that map to no access are listed by line and reason, and counted."""
    if log_format not in ("jsonl", "pgaudit", "cloudtrail"):
        raise InvalidInput(f"--format {log_format!r}: use jsonl, pgaudit or cloudtrail")
    from custos.access import Custos
    from custos.textfiles import check_rejects_path, read_lines

    check_rejects_path(rejects, file)
    if log_format == "jsonl":
        if mapping_file is not None:
            raise InvalidInput("--mapping is for --format pgaudit or cloudtrail")
        _import_jsonl(ctx, file, rejects, as_json=as_json)
        return
    if mapping_file is None:
        raise InvalidInput(f"--format {log_format} needs --mapping FILE (docs/formats.md)")
    # Imported here: sqlglot is needed only by these imports, not by every command.
    from custos.detect.importers import import_log, read_mapping

    lines = read_lines(file, f"a {log_format} log")
    with Custos.open(state(ctx).home) as system:
        # The mapping's categories and purpose are the active pack's words, as the events'.
        mapping = read_mapping(
            mapping_file,
            "pgaudit" if log_format == "pgaudit" else "cloudtrail",
            system.policy_pack.vocabulary,
        )
        report = import_log(system.events, lines, str(file), mapping, rejects=rejects)
    if as_json:
        print_json(report.to_dict())
        return
    for item in report.unmapped[:_SHOWN_UNMAPPED]:
        console.print(escape(item.describe(str(file))), highlight=False, soft_wrap=True)
    if len(report.unmapped) > _SHOWN_UNMAPPED:
        console.print(
            f"… and {len(report.unmapped) - _SHOWN_UNMAPPED} more unmapped (--json lists all)",
            highlight=False,
        )
    console.print(escape(report.summary()), highlight=False, soft_wrap=True)


_SHOWN_UNMAPPED = 50


def _import_jsonl(ctx: typer.Context, file: Path, rejects: Path | None, *, as_json: bool) -> None:
    from custos.access import Custos
    from custos.textfiles import read_lines

    lines = read_lines(file, "an events file")
    with Custos.open(state(ctx).home) as system:
        # The active pack's words: an event may use only the categories and purposes it has.
        report = system.events.import_lines(lines, str(file), rejects=rejects)
    if as_json:
        print_json(
            {"added": report.added, "unchanged": report.unchanged, "rejected": report.rejected}
        )
    else:
        console.print(
            f"{report.added} events stored, {report.unchanged} already present, "
            f"{report.rejected} set aside",
            highlight=False,
        )


@app.command("detect")
def detect(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option("--since", help="Only alerts last seen at or after this time.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run every detection rule over the stored events; print the alerts (filed in cases)."""
    from custos.access import Custos

    moment = _time(since, "--since") if since else None
    with Custos.open(state(ctx).home) as system:
        run = system.detect(since=moment)
    if as_json:
        print_json([a.to_dict() for a in run.alerts])
        return
    for alert in run.alerts:
        console.print(
            f"[bold]{alert.id}[/] {alert.severity:8} {alert.rule} "
            f"({', '.join(alert.principals)}) {alert.case or ''}",
            highlight=False,
        )
        console.print(f"    {escape(alert.explanation)}", highlight=False, soft_wrap=True)
    console.print(
        f"{len(run.alerts)} alert(s) from {run.events} events"
        + (f"; {run.suppressed} suppressed by earlier dispositions" if run.suppressed else ""),
        highlight=False,
    )


def _print_case(case: Case, *, full: bool) -> None:
    console.print(
        f"[bold]{case.id}[/] {case.status:6} {case.severity:8} {escape(case.title)} "
        f"({len(case.alerts)} alert(s)"
        + (f", assigned to {escape(case.assignee)}" if case.assignee else "")
        + (f", {case.disposition}" if case.disposition else "")
        + ")",
        highlight=False,
    )
    if not full:
        return
    for alert in case.alerts:
        console.print(f"  {alert.id} {alert.severity} {alert.rule}", highlight=False)
        console.print(f"    {escape(alert.explanation)}", highlight=False, soft_wrap=True)
        console.print(f"    evidence: {', '.join(alert.events[:20])}", highlight=False)
    for comment in case.comments:
        console.print(
            f"  [{comment.time:%Y-%m-%d %H:%M}] {escape(comment.author)}: {escape(comment.text)}",
            highlight=False,
        )


@cases_app.command("list")
def list_cases(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option("--status", help="open or closed (default: both).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List cases, newest first."""
    from custos.access import Custos

    with Custos.open(state(ctx).home) as system:
        cases = _casebook(system).cases(status)
    if as_json:
        print_json([c.to_dict(full=False) for c in cases])
        return
    for case in cases:
        _print_case(case, full=False)
    if not cases:
        console.print("no cases")


@cases_app.command("show")
def show(
    ctx: typer.Context, case_id: Annotated[str, typer.Argument()], as_json: JsonFlag = False
) -> None:
    """Show one case: its alerts, evidence and comments."""
    from custos.access import Custos

    with Custos.open(state(ctx).home) as system:
        case = _casebook(system).case(case_id)
    if as_json:
        print_json(case.to_dict())
    else:
        _print_case(case, full=True)


@cases_app.command("assign")
def assign(
    ctx: typer.Context,
    case_id: Annotated[str, typer.Argument()],
    assignee: Annotated[str, typer.Argument(help="Who reviews the case.")],
    by: By = None,
    as_json: JsonFlag = False,
) -> None:
    """Assign a case to a reviewer (logged first; nobody assigns a case about themselves)."""
    from custos.access import Custos, acts

    with Custos.open(state(ctx).home) as system:
        operator, principal = triaging(system, by, needs_principal=True)
        case = acts.assign_case(system, operator, case_id, assignee, acting_as=principal)
    if as_json:
        print_json(case.to_dict())
    else:
        _print_case(case, full=False)


@cases_app.command("comment")
def comment(
    ctx: typer.Context,
    case_id: Annotated[str, typer.Argument()],
    text: Annotated[str, typer.Argument(help="The comment.")],
    by: By = None,
    as_json: JsonFlag = False,
) -> None:
    """Add a comment to a case (logged first, as a digest of its text)."""
    from custos.access import Custos, acts

    with Custos.open(state(ctx).home) as system:
        operator, _ = triaging(system, by, needs_principal=False)
        case = acts.comment_case(system, operator, case_id, author(operator), text)
    if as_json:
        print_json(case.to_dict())
    else:
        _print_case(case, full=False)


@cases_app.command("group")
def group(
    ctx: typer.Context,
    alerts: Annotated[list[str], typer.Argument(help="Alert ids (al-N).")],
    into: Annotated[str | None, typer.Option("--into", help="Target case (case-N).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Move alerts into one case."""
    from custos.access import Custos

    with Custos.open(state(ctx).home) as system:
        case = _casebook(system).group(alerts, into)
    if as_json:
        print_json(case.to_dict())
    else:
        _print_case(case, full=False)


@cases_app.command("close")
def close(
    ctx: typer.Context,
    case_id: Annotated[str, typer.Argument()],
    disposition: Annotated[
        str,
        typer.Option("--disposition", help="confirmed_misuse, legitimate or false_positive."),
    ],
    note: Annotated[str | None, typer.Option("--comment", help="A closing comment.")] = None,
    suppress_days: Annotated[
        int | None,
        typer.Option("--suppress-days", min=0, help="Days to suppress the same pattern."),
    ] = None,
    by: By = None,
    as_json: JsonFlag = False,
) -> None:
    """Close a case; legitimate and false_positive suppress the same pattern for a while.

    Logged first; nobody closes a case about themselves (rule own-case)."""
    from custos.access import Custos, acts

    with Custos.open(state(ctx).home) as system:
        operator, principal = triaging(system, by, needs_principal=True)
        case = acts.close_case(
            system,
            operator,
            case_id,
            disposition,
            author=author(operator),
            acting_as=principal,
            comment=note,
            suppress_days=suppress_days,
        )
    if as_json:
        print_json(case.to_dict())
    else:
        _print_case(case, full=False)
