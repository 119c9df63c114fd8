"""``custos export run`` and ``custos export status``: pushing events to the destinations
of ``[[export]]`` in config.toml (docs/design/export.md)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape

from custos.cli.app import app, console, print_json, state
from custos.errors import ConfigurationError, ExportFailed

export_app = typer.Typer(
    help="Push alerts, decisions and approval events as OCSF to a file, syslog or a webhook.",
    no_args_is_help=True,
)
app.add_typer(export_app, name="export")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@export_app.command("run")
def export_run(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="One round for every destination, then stop.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Send every destination what it has not acknowledged yet (and, without --once, keep
    doing so until interrupted). A destination that fails keeps its place and is retried;
    with --once the command then exits with code 5."""
    from custos.access import Custos
    from custos.export import Exporter, results_text

    with Custos.open(state(ctx).home) as system:
        exporter = Exporter(system.settings, system.db, system.ledger)
        if not exporter.configs:
            raise ConfigurationError(
                f"{system.settings.config_path}: no [[export]] table",
                hint="docs/design/export.md shows how to add a destination",
            )
        try:
            if once:
                results = exporter.run_once()
            else:
                while True:  # until interrupted (a signal ends the process)
                    for line in results_text(
                        [r for r in exporter.step(time.monotonic()) if r.sent or r.error]
                    ):
                        console.print(escape(line), highlight=False)
                    time.sleep(0.2)
        finally:
            exporter.close()
    outcomes = [
        {"name": r.name, "sent": r.sent, "redelivered": r.redelivered, "error": r.error}
        for r in results
    ]
    failed = [r.name for r in results if r.error]
    if not as_json:
        for line in results_text(results):
            console.print(escape(line), highlight=False)
    elif not failed:
        print_json(outcomes)
    if failed:
        raise ExportFailed(
            f"export failed for {', '.join(failed)}; each keeps its place",
            destinations=outcomes if as_json else (),
        )


@export_app.command("status")
def export_status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Each destination's cursor, queue depth and counts."""
    from custos.access import Custos
    from custos.export import Exporter

    with Custos.open(state(ctx).home) as system:
        exporter = Exporter(system.settings, system.db, system.ledger)
        depth = exporter.queue_depth()
        states = {s.name: s for s in exporter.cursors.all()}
        rows = []
        for config in exporter.configs:
            s = states.get(config.name)
            rows.append(
                {
                    "name": config.name,
                    "kind": config.kind,
                    "ledger": s.ledger if s else 0,
                    "alert": s.alert if s else 0,
                    # None: the cursor does not verify, so how far behind it is is unknown.
                    "queue_depth": depth.get(config.name),
                    "delivered": s.delivered if s else 0,
                    "redelivered": s.redelivered if s else 0,
                    "failures": s.failures if s else 0,
                    "last_error": s.last_error if s else None,
                    "verified": s.verified if s else True,
                    "problem": s.problem if s else None,
                }
            )
        exporter.close()
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no [[export]] destinations configured", highlight=False, markup=False)
    for r in rows:
        if not r["verified"]:
            console.print(
                escape(
                    f"{r['name']} ({r['kind']}): STOPPED, its cursor does not verify "
                    f"({r['problem']}); {r['failures']} failed round(s). Find out who "
                    f"changed it, then `custos export reset {r['name']} --from <index>`"
                ),
                highlight=False,
            )
            continue
        console.print(
            escape(
                f"{r['name']} ({r['kind']}): {r['queue_depth']} waiting, {r['delivered']} "
                f"delivered, {r['redelivered']} sent again, {r['failures']} failed round(s)"
                + (f"; last error: {r['last_error']}" if r["last_error"] else "")
            ),
            highlight=False,
        )


@export_app.command("reset")
def export_reset(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The destination, as named in [[export]].")],
    start: Annotated[
        int,
        typer.Option(
            "--from",
            help="Send again every event from this ledger index on (0: the whole ledger). "
            "Choose one the destination is known to hold, or lower.",
        ),
    ],
    alerts_from: Annotated[
        int,
        typer.Option("--alerts-from", help="Send again every alert above this id (default: all)."),
    ] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Set a destination's cursor back (after `export status` showed it does not verify, or
    to send a range again). The act and the row as found are ledgered first; a cursor that
    verifies may only be moved back. Duplicates are counted as sent again."""
    from custos.access import Custos
    from custos.export import Exporter

    with Custos.open(state(ctx).home) as system:
        exporter = Exporter(system.settings, system.db, system.ledger)
        try:
            done = exporter.reset(name, ledger=start, alert=alerts_from, by="cli")
        finally:
            exporter.close()
    if as_json:
        print_json({"name": done.name, "ledger": done.ledger, "alert": done.alert})
        return
    console.print(
        escape(
            f"{done.name}: cursor reset to ledger {done.ledger}, alert {done.alert} (ledgered); "
            "the next round sends from there"
        ),
        highlight=False,
    )
