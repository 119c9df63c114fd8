"""``custos check`` (one decision) and ``custos demo`` (the main job)."""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from custos.access import Custos
from custos.cli.app import app, console, print_json, state
from custos.directory import parse_text
from custos.policy import AccessRequest, Decision

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _show(decision: Decision) -> None:
    colour = {"allow": "green", "deny": "red", "approval_required": "yellow"}[decision.outcome]
    precision = f" ({decision.precision})" if decision.precision else ""
    console.print(f"[bold {colour}]{decision.outcome}[/]{precision}", highlight=False)
    console.print(decision.explanation, highlight=False, markup=False)
    for reason in decision.reasons:
        console.print(f"  - {reason.policy}: {reason.explanation}", highlight=False, markup=False)


@app.command("check")
def check(
    ctx: typer.Context,
    principal: Annotated[str, typer.Option("--principal", help="Who asks (principal id).")],
    subject: Annotated[str, typer.Option("--subject", help="About whom (subject id).")],
    category: Annotated[str, typer.Option("--category", help="Data category, e.g. ip_history.")],
    purpose: Annotated[str, typer.Option("--purpose", help="Why, e.g. support.")],
    ticket: Annotated[
        str | None, typer.Option("--ticket", help="The ticket explaining it.")
    ] = None,
    action: Annotated[
        str, typer.Option("--action", help="read, search, export or modify.")
    ] = "read",
    precision: Annotated[
        str | None, typer.Option("--precision", help="coarse or precise [default: best allowed].")
    ] = None,
    break_glass: Annotated[
        bool, typer.Option("--break-glass", help="Invoke break-glass (security responders).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Decide one request and say why. Exit code 0 whatever the decision."""
    request = AccessRequest(
        principal=principal,
        subject=subject,
        category=category,
        purpose=purpose,
        action=action,
        ticket=ticket,
        precision=precision,
        break_glass=break_glass,
    )
    with Custos.open(state(ctx).home) as system:
        decision = system.decide(request)
    if as_json:
        print_json(decision.to_dict())
    else:
        _show(decision)


@app.command("read")
def read(
    ctx: typer.Context,
    principal: Annotated[str, typer.Option("--principal", help="Who asks (principal id).")],
    subject: Annotated[str, typer.Option("--subject", help="About whom (subject id).")],
    category: Annotated[str, typer.Option("--category", help="Data category, e.g. ip_history.")],
    purpose: Annotated[str, typer.Option("--purpose", help="Why, e.g. support.")],
    ticket: Annotated[str | None, typer.Option("--ticket", help="The ticket behind it.")] = None,
    precision: Annotated[
        str | None, typer.Option("--precision", help="coarse or precise [default: best allowed].")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """The guarded read: decide, log, release what the decision allows, log the release."""
    request = AccessRequest(
        principal=principal,
        subject=subject,
        category=category,
        purpose=purpose,
        ticket=ticket,
        precision=precision,
    )
    with Custos.open(state(ctx).home) as system:
        result = system.read(request)
    if as_json:
        print_json(result.to_dict())
        return
    _show(result.decision)
    for record in result.records:
        console.print(record, highlight=False, markup=False)


DEMO_REQUESTS: tuple[tuple[str, AccessRequest], ...] = (
    (
        "2022 case: internal audit pulls a journalist's IP history for a leak hunt",
        AccessRequest("emp-2001", "user-42", "ip_history", "internal_investigation", ticket="T-7"),
    ),
    (
        "support agent, own open ticket, reads the profile",
        AccessRequest("emp-1001", "user-1", "profile", "support", ticket="T-1"),
    ),
    (
        "same agent reads IP history",
        AccessRequest("emp-1001", "user-1", "ip_history", "support", ticket="T-1"),
    ),
    (
        "same agent, a colleague's ticket",
        AccessRequest("emp-1001", "user-1", "profile", "support", ticket="T-2"),
    ),
    (
        "agent looks up a colleague's own account",
        AccessRequest("emp-1002", "user-77", "profile", "support", ticket="T-6"),
    ),
    (
        "terminated employee with a valid ticket",
        AccessRequest("emp-1004", "user-1", "profile", "support", ticket="T-10"),
    ),
    (
        "trust & safety wants a public official's precise IPs, no grant yet",
        AccessRequest(
            "emp-3001", "user-50", "ip_history", "trust_safety", ticket="T-16", precision="precise"
        ),
    ),
)


@app.command("demo")
def demo(
    ctx: typer.Context,
    as_json: JsonFlag = False,
) -> None:
    """Build a small organisation in a fresh home and run the 2022 case through custos."""
    home = state(ctx).home or Path(tempfile.mkdtemp(prefix="custos-demo-")) / "home"
    if home.exists() and any(home.iterdir()):
        raise typer.BadParameter(
            f"{home} is not empty; the demo needs a fresh home", param_hint="--home"
        )
    org = resources.files("custos.examples").joinpath("org.yaml").read_text(encoding="utf-8")
    with Custos.init(home) as system:
        system.directory.merge(parse_text(org, "example org"), source="example org")
        decisions = system.decide_many([request for _, request in DEMO_REQUESTS])
    if as_json:
        print_json({"home": str(home), "decisions": [d.to_dict() for d in decisions]})
        return
    console.print(f"custos demo in {home}\n", highlight=False)
    table = Table(show_lines=True)
    table.add_column("request")
    table.add_column("decision")
    table.add_column("why")
    for (label, _), decision in zip(DEMO_REQUESTS, decisions, strict=True):
        outcome = decision.outcome + (f" ({decision.precision})" if decision.precision else "")
        table.add_row(label, outcome, decision.explanation)
    console.print(table)
