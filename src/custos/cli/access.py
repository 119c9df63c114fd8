"""``custos check`` (one decision) and ``custos demo`` (the main job)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from custos.policy import Decision
from custos.cli.app import app, console, print_json, state
from custos.cli.operator import asking

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
    as_json: JsonFlag = False,
) -> None:
    """Decide one request and say why. Exit code 0 whatever the decision."""
    from custos.access import Custos
    from custos.policy import AccessRequest

    request = AccessRequest(
        principal=principal,
        subject=subject,
        category=category,
        purpose=purpose,
        action=action,
        ticket=ticket,
        precision=precision,
    )
    with Custos.open(state(ctx).home) as system:
        asking(system, principal)
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
    from custos.access import Custos
    from custos.policy import AccessRequest

    request = AccessRequest(
        principal=principal,
        subject=subject,
        category=category,
        purpose=purpose,
        ticket=ticket,
        precision=precision,
    )
    with Custos.open(state(ctx).home) as system:
        asking(system, principal)
        result = system.read(request)
    if as_json:
        print_json(result.to_dict())
        return
    _show(result.decision)
    for record in result.records:
        console.print(record, highlight=False, markup=False)
