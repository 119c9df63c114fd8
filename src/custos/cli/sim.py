"""``custos simulate`` and ``custos eval``: a synthetic organisation with injected misuse,
and how well detection finds it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from custos.cli.app import app, console, print_json
from custos.errors import InvalidInput

#: The scenarios of ``custos.sim.SCENARIOS``, named here so that ``--help`` does not import
#: the simulator (tests/cli/test_fast.py keeps the two equal).
SCENARIO_NAMES = (
    "journalist_2022",
    "ex_partner_stalking",
    "bribed_agent",
    "foreign_state_dissidents",
    "celebrity_convergence",
    "minor_messages",
    "leaving_export",
    "pretext_tickets",
    "purpose_shopping",
    "colleague_snooping",
    "approval_ring",
    "grant_abuse",
    "other_paths",
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@app.command("simulate")
def simulate_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the world into.")],
    employees: Annotated[int, typer.Option("--employees", min=40)] = 200,
    days: Annotated[int, typer.Option("--days", min=14)] = 30,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario", help=f"Misuse to inject (default all): {', '.join(SCENARIO_NAMES)}."
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Write directory.yaml, events.jsonl and labels.json for a simulated organisation."""
    from custos.sim import simulate

    report = simulate(out, employees=employees, days=days, seed=seed, scenarios=scenario or ())
    if as_json:
        print_json(
            {
                "out": str(report.out),
                "employees": report.employees,
                "days": report.days,
                "events": report.events,
                "tickets": report.tickets,
                "scenarios": report.scenarios,
            }
        )
        return
    console.print(
        f"{report.employees} employees, {report.days} days: {report.events} events, "
        f"{report.tickets} tickets, {len(report.scenarios)} scenario(s) written to {report.out}",
        highlight=False,
    )


@app.command("eval")
def eval_command(
    folder: Annotated[
        Path | None, typer.Argument(help="A folder written by `custos simulate`.")
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            help="Simulate these seeds (1-5, or 1,2,3) with every scenario and score each.",
        ),
    ] = None,
    employees: Annotated[int, typer.Option("--employees", min=40)] = 200,
    days: Annotated[int, typer.Option("--days", min=14)] = 30,
    as_json: JsonFlag = False,
) -> None:
    """Run detection on a simulated world (in a private, fresh store) and score it; or, with
    --seeds, simulate and score several worlds and print the quality figures."""
    from custos.sim import evaluate
    from custos.sim.run import evaluate_seeds, parse_seeds, seeds_json, seeds_text

    if (folder is None) == (seeds is None):
        raise InvalidInput(
            "eval takes a folder or --seeds, not both or neither",
            hint="e.g. custos eval --seeds 1-5",
        )
    if seeds is not None:
        runs = evaluate_seeds(parse_seeds(seeds), employees=employees, days=days)
        if as_json:
            print_json(seeds_json(runs))
        else:
            # Plain output, not the console's: no wrapping, so it can be quoted as it is.
            typer.echo(seeds_text(runs))
        return
    assert folder is not None
    report = evaluate(folder)
    if as_json:
        print_json(report.to_dict())
        return
    for result in report.scenarios:
        mark = "caught" if result.detected else "MISSED"
        console.print(
            f"{mark:7} {result.name}: {len(result.caught)}/{len(result.culprits)} culprit(s) "
            f"alerted by {', '.join(result.rules) or 'no rule'}",
            highlight=False,
        )
    console.print(
        f"false alerts: {report.false_alerts} over {report.employee_days} employee-days "
        f"= {report.false_rate:.2f} per 1,000 employee-days "
        f"({report.alerts} alerts from {report.events} events)",
        highlight=False,
    )
