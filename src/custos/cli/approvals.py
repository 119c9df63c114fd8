"""``custos approvals``: just-in-time requests, independent approvals, grants, break-glass."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from custos.access import Custos
    from custos.approvals import Grant, Request

from custos.cli.app import app, console, print_json, state
from custos.cli.operator import answering, asking, revoking
from custos.errors import InvalidInput

approvals_app = typer.Typer(
    help="Just-in-time access requests, independent approvals and time-bound grants.",
    no_args_is_help=True,
)
app.add_typer(approvals_app, name="approvals")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
By = Annotated[
    str | None,
    typer.Option(
        "--by",
        help="Who acts (principal id). With operator_auth: taken from $CUSTOS_TOKEN, and may "
        "only name that token's principal.",
    ),
]
Reason = Annotated[str, typer.Option("--reason", help="Why, in a sentence (required).")]
Categories = Annotated[
    list[str], typer.Option("--category", help="Data category; repeat for several.")
]
Actions = Annotated[
    list[str] | None,
    typer.Option(
        "--action",
        help="What the grant is to cover (read, search, export, modify); repeat for several. "
        "Default: read.",
    ),
]


@contextmanager
def _opened(ctx: typer.Context) -> Iterator[Custos]:
    """The installation, with time-outs applied first and notifications tried after."""
    from custos.access import Custos

    with Custos.open(state(ctx).home) as system:
        system.approvals.sweep()
        yield system
        system.approvals.outbox.deliver()


def _hours(value: float | None) -> timedelta | None:
    if value is None:
        return None
    if value <= 0:
        raise InvalidInput("--hours must be positive")
    return timedelta(hours=value)


def _show_request(request: Request) -> None:
    colour = {"pending": "yellow", "approved": "green"}.get(request.status, "red")
    console.print(
        f"[bold]{request.id}[/] [{colour}]{request.status}[/]: {request.principal} → "
        f"{request.subject} {', '.join(request.categories)} ({request.purpose}, "
        f"{request.precision}; to {', '.join(request.actions)})",
        highlight=False,
    )
    groups = f", including {', '.join(request.groups_needed)}" if request.groups_needed else ""
    console.print(
        f"  approvals: {len(request.approvers)} of {request.approvals_needed}{groups}; "
        f"expires {request.expires:%Y-%m-%d %H:%M} UTC",
        highlight=False,
    )
    console.print(f"  reason: {request.reason}", highlight=False, markup=False)
    for vote in request.votes:
        console.print(
            f"  - {vote.verdict} by {vote.approver}: {vote.reason}", highlight=False, markup=False
        )
    if request.grant_id:
        console.print(f"  grant: {request.grant_id}", highlight=False)


def _print_request(request: Request, as_json: bool) -> None:
    if as_json:
        print_json(request.to_dict())
    else:
        _show_request(request)


#: A grant's status in words where the code's name would not tell a person what it means.
_GRANT_STATUS_WORDS = {
    # Committed, but its ledger entry is not durable yet (the ledger was unavailable): not
    # honoured until the next command that reaches the ledger appends it.
    "pending_ledger": "not yet honoured (waiting for the ledger)",
}


def _show_grant(grant: Grant) -> None:
    now = datetime.now(UTC)
    flag = " [bold red]BREAK-GLASS[/]" if grant.break_glass else ""
    status = _GRANT_STATUS_WORDS.get(grant.status(now), grant.status(now))
    console.print(
        f"[bold]{grant.id}[/] {status}{flag}: {grant.principal} → {grant.subject} "
        f"{', '.join(grant.categories)} ({grant.purpose}, {grant.precision}; "
        f"to {', '.join(grant.actions)}) until {grant.ends:%Y-%m-%d %H:%M} UTC",
        highlight=False,
    )
    if grant.approvers:
        console.print(f"  approved by {', '.join(grant.approvers)}", highlight=False)
    if grant.break_glass:
        console.print(f"  review: {grant.review} ({len(grant.reviews)} note(s))", highlight=False)


@approvals_app.command("request")
def request(
    ctx: typer.Context,
    principal: Annotated[str, typer.Option("--principal", help="Who asks (principal id).")],
    subject: Annotated[str, typer.Option("--subject", help="About whom (subject id).")],
    category: Categories,
    purpose: Annotated[str, typer.Option("--purpose", help="Why, e.g. trust_safety.")],
    reason: Reason,
    ticket: Annotated[str | None, typer.Option("--ticket", help="The ticket behind it.")] = None,
    precision: Annotated[str, typer.Option("--precision", help="coarse or precise.")] = "precise",
    hours: Annotated[
        float | None, typer.Option("--hours", help="How long the grant should last.")
    ] = None,
    action: Actions = None,
    as_json: JsonFlag = False,
) -> None:
    """Ask for access the policies allow only with approval; prints the request."""
    with _opened(ctx) as system:
        asking(system, principal)
        opened = system.request_access(
            principal=principal,
            subject=subject,
            categories=category,
            purpose=purpose,
            ticket=ticket,
            precision=precision,
            reason=reason,
            duration=_hours(hours),
            actions=action or ["read"],
            source="cli",
        )
    _print_request(opened, as_json)


@approvals_app.command("approve")
def approve(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="The request (req-…).")],
    reason: Reason,
    by: By = None,
    as_json: JsonFlag = False,
) -> None:
    """Approve a request; the last approval needed creates the grant."""
    with _opened(ctx) as system:
        operator, principal = answering(system, by)
        answered = system.approvals.approve(request_id, principal, reason, operator=operator)
    _print_request(answered, as_json)


@approvals_app.command("deny")
def deny(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="The request (req-…).")],
    reason: Reason,
    by: By = None,
    as_json: JsonFlag = False,
) -> None:
    """Deny a request; one denial closes it."""
    with _opened(ctx) as system:
        operator, principal = answering(system, by)
        answered = system.approvals.deny(request_id, principal, reason, operator=operator)
    _print_request(answered, as_json)


@approvals_app.command("revoke")
def revoke(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="A grant (grant-…) or pending request (req-…).")],
    reason: Reason,
    by: By = None,
    as_json: JsonFlag = False,
) -> None:
    """End a grant now, or withdraw a pending request."""
    with _opened(ctx) as system:
        operator, principal = revoking(system, by)
        body: dict[str, Any]
        if target.startswith("req-"):
            withdrawn = system.approvals.withdraw(target, principal, reason, operator=operator)
            body = withdrawn.to_dict()
        else:
            revoked = system.approvals.revoke(target, principal, reason, operator=operator)
            body = revoked.to_dict()
    if as_json:
        print_json(body)
    else:
        console.print(f"{target}: {body['status']}", highlight=False)


@approvals_app.command("break-glass")
def break_glass(
    ctx: typer.Context,
    principal: Annotated[str, typer.Option("--principal", help="The incident responder.")],
    subject: Annotated[str, typer.Option("--subject", help="About whom (subject id).")],
    category: Categories,
    reason: Reason,
    purpose: Annotated[str, typer.Option("--purpose", help="Why.")] = "security_incident",
    ticket: Annotated[str | None, typer.Option("--ticket", help="The incident ticket.")] = None,
    hours: Annotated[float | None, typer.Option("--hours", help="How long (default 4).")] = None,
    action: Actions = None,
    as_json: JsonFlag = False,
) -> None:
    """Take an immediate grant for a security incident; raises a critical alert at once."""
    with _opened(ctx) as system:
        asking(system, principal)
        needed = system.approvals.settings.reviews_needed
        grant = system.break_glass(
            principal=principal,
            subject=subject,
            categories=category,
            purpose=purpose,
            ticket=ticket,
            reason=reason,
            duration=_hours(hours),
            actions=action or ["read"],
            source="cli",
        )
    if as_json:
        print_json(grant.to_dict())
    else:
        _show_grant(grant)
        console.print(
            f"[bold red]A critical alert was raised; {needed} reviewer(s) must close this grant.[/]"
        )


@approvals_app.command("review")
def review(
    ctx: typer.Context,
    grant_id: Annotated[str, typer.Argument(help="The break-glass grant (grant-…).")],
    note: Annotated[str, typer.Option("--note", help="What the review found (required).")],
    by: By = None,
    as_json: JsonFlag = False,
) -> None:
    """Review a break-glass grant; the second reviewer closes it."""
    with _opened(ctx) as system:
        operator, principal = answering(system, by, "review break-glass")
        grant = system.approvals.review(grant_id, principal, note, operator=operator)
    if as_json:
        print_json(grant.to_dict())
    else:
        _show_grant(grant)


@approvals_app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option("--status", help="pending, approved, denied, expired or withdrawn."),
    ] = None,
    principal: Annotated[str | None, typer.Option("--principal", help="Only theirs.")] = None,
    grants: Annotated[bool, typer.Option("--grants", help="List grants instead.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List requests (newest first), or grants with --grants."""
    from rich.table import Table

    with _opened(ctx) as system:
        if grants:
            found_grants = system.approvals.grants(principal=principal)
            rows: list[dict[str, Any]] = [g.to_dict() for g in found_grants]
        else:
            found = system.approvals.requests(status=status, principal=principal)
            rows = [r.to_dict() for r in found]
    if as_json:
        print_json(rows)
        return
    # Ids are what a person copies into the next command: never cut or wrapped, whatever
    # the terminal's width; the other columns fold instead.
    table = Table()
    table.add_column("id", no_wrap=True, min_width=max((len(r["id"]) for r in rows), default=2))
    for heading in ("status", "principal", "subject", "categories", "purpose"):
        table.add_column(heading, overflow="fold")
    for row in rows:
        table.add_row(
            row["id"],
            _GRANT_STATUS_WORDS.get(row["status"], row["status"]),
            row["principal"],
            row["subject"],
            ", ".join(row["categories"]),
            row["purpose"],
        )
    console.print(table)


@approvals_app.command("show")
def show(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="A request (req-…) or grant (grant-…).")],
    as_json: JsonFlag = False,
) -> None:
    """Show one request with its answers, or one grant with its reviews."""
    with _opened(ctx) as system:
        if target.startswith("grant-"):
            grant = system.approvals.grant(target)
            body = grant.to_dict()
        else:
            found = system.approvals.request(target)
            body = found.to_dict()
    if as_json:
        print_json(body)
    elif target.startswith("grant-"):
        _show_grant(grant)
    else:
        _show_request(found)


@approvals_app.command("rules")
def rules(as_json: JsonFlag = False) -> None:
    """The independence rules every approval is checked against."""
    from custos.approvals import RULES

    if as_json:
        print_json(RULES)
        return
    for name, sentence in RULES.items():
        console.print(f"[bold]{name}[/]: {sentence}", highlight=False)


@approvals_app.command("notify")
def notify(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Deliver due webhook notifications now and show what is still queued."""
    from custos.access import Custos

    with Custos.open(state(ctx).home) as system:
        system.approvals.sweep()
        report = system.approvals.outbox.deliver()
    if as_json:
        print_json(report.to_dict())
    else:
        console.print(
            f"{report.delivered} delivered, {report.failed} to retry, {report.gave_up} given "
            f"up, {report.pending} pending",
            highlight=False,
        )
