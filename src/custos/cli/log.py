"""``custos keys``, ``custos log …`` and ``custos witness …``: the verifiable ledger."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from custos.cli.app import app, console, print_json, state
from custos.errors import IntegrityError

log_app = typer.Typer(
    help="The ledger: checkpoints, entries, proofs, verification.", no_args_is_help=True
)
app.add_typer(log_app, name="log")
witness_app = typer.Typer(
    help="Run an independent witness that cosigns a log's checkpoints.", no_args_is_help=True
)
app.add_typer(witness_app, name="witness")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
SizeOption = Annotated[int | None, typer.Option("--size", help="Tree size [default: now].")]


@app.command("keys")
def keys(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Create the log's signing key if missing, and show its verifier key (for witnesses)."""
    from custos.access import Custos

    with Custos.init(state(ctx).home) as system:
        signer = system.ledger.signer
        vkey = signer.verifier_key()
    if as_json:
        print_json({"origin": signer.name, "verifier_key": vkey})
    else:
        console.print(f"origin:       {signer.name}", highlight=False)
        console.print(f"verifier key: {vkey}", highlight=False, soft_wrap=True)


@log_app.command("checkpoint")
def checkpoint(ctx: typer.Context) -> None:
    """Sign a checkpoint of the log as it is now and print it (a C2SP signed note)."""
    from custos.access import Custos

    with Custos.open(state(ctx).home) as system:
        note = system.ledger.checkpoint()
    sys.stdout.write(note)


@log_app.command("entry")
def entry(ctx: typer.Context, index: Annotated[int, typer.Argument(help="Entry index.")]) -> None:
    """Print the exact stored bytes of one entry."""
    from custos.access import Custos

    with Custos.open(state(ctx).home) as system:
        data = system.ledger.entry(index)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@log_app.command("proof")
def proof(
    ctx: typer.Context,
    index: Annotated[int, typer.Argument(help="Entry index.")],
    size: SizeOption = None,
    as_json: JsonFlag = False,
) -> None:
    """The inclusion proof of an entry: {"index", "size", "hashes"}."""
    from custos.access import Custos

    with Custos.open(state(ctx).home) as system:
        found = system.ledger.inclusion_proof(index, size)
    body = found.to_json()
    if as_json:
        print_json(body)
    else:
        console.print(f"entry {body['index']} in tree of size {body['size']}:", highlight=False)
        for h in body["hashes"]:
            console.print(f"  {h}", highlight=False)


@log_app.command("consistency")
def consistency(
    ctx: typer.Context,
    old: Annotated[int, typer.Argument(help="The older tree size.")],
    size: SizeOption = None,
    as_json: JsonFlag = False,
) -> None:
    """The consistency proof between two tree sizes: {"old_size", "new_size", "hashes"}."""
    from custos.access import Custos

    with Custos.open(state(ctx).home) as system:
        found = system.ledger.consistency_proof(old, size)
    body = found.to_json()
    if as_json:
        print_json(body)
    else:
        console.print(f"sizes {body['old_size']} -> {body['new_size']}:", highlight=False)
        for h in body["hashes"]:
            console.print(f"  {h}", highlight=False)


@log_app.command("verify")
def verify(
    ctx: typer.Context,
    sample: Annotated[
        int | None,
        typer.Option("--sample", min=1, help="Replay about N decisions spread over the log."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Recompute the whole log from its entries and check every stored hash and checkpoint,
    then re-derive the authority (directory, grants) from the ledger alone, hold the tables
    and every decision to it, and replay the decisions with their recorded policy version.

    Exits non-zero, naming the first index that does not match, when a row was altered,
    deleted, reordered or inserted, when an entry does not link to the previous entry about
    its subject, or when the subject index differs from the entries; naming table and id for
    an authority row the ledger does not vouch for (or the index of a decision that used
    one); and naming every decision whose replay differs from what was logged.
    """
    from custos.access import Custos

    with Custos.open(state(ctx).home) as system:
        report = system.verify_log()
        replayed = system.verify_authority(sample=sample)
    authority = replayed.projection
    for finding in authority.findings:
        report.fail(finding.index, str(finding))
    differing = [r for r in replayed.results if not r.same]
    for result in differing:
        report.fail(result.index, result.problem or "")
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "size": report.size,
                "checked_entries": report.checked_entries,
                "checked_checkpoints": report.checked_checkpoints,
                "checked_decisions": authority.decisions_checked,
                "replayed_decisions": len(replayed.results),
                "first_bad_index": report.first_bad_index,
                "authority_findings": [
                    {"table": f.table, "id": f.key, "index": f.index, "problem": f.problem}
                    for f in authority.findings
                ],
                "replay_differences": [r.to_dict() for r in differing],
                "problems": report.problems,
            }
        )
        if not report.ok:
            raise typer.Exit(IntegrityError.exit_code)
        return
    if report.ok:
        console.print(
            f"ok: {report.checked_entries} entries and {report.checked_checkpoints} "
            f"checkpoints verify; every directory and grant row is what the ledger set, "
            f"{authority.decisions_checked} decisions used the latest, and "
            f"{len(replayed.results)} replayed to their logged outcome",
            highlight=False,
        )
        return
    where = "" if report.first_bad_index is None else f" at index {report.first_bad_index}"
    raise IntegrityError(f"the log does not verify{where}: " + "; ".join(report.problems))


@log_app.command("replay")
def replay(
    ctx: typer.Context,
    index: Annotated[int, typer.Argument(min=0, help="The ledger index of a decision.")],
    as_json: JsonFlag = False,
) -> None:
    """Decide one logged decision again from the ledger alone (its facts as the authority
    entries set them, its recorded policy version and settings) and show both outcomes.

    Exits non-zero when they differ or the decision cannot be replayed.
    """
    from custos.access import Custos

    with Custos.open(state(ctx).home) as system:
        result = system.replay(index)
    if as_json:
        print_json(result.to_dict())
    else:
        again = result.replayed or {}
        via = result.logged.get("via")
        console.print(
            f"for:      {result.logged.get('principal')}"
            + (f" (asked by tool {via} on their behalf)" if via else "")
            + "\n"
            f"logged:   {result.logged['decision']}/{result.logged['precision']} "
            f"({', '.join(result.logged['reasons']) or 'no policy'})\n"
            f"replayed: {again.get('decision')}/{again.get('precision')} "
            f"({', '.join(again.get('reasons') or []) or 'no policy'})",
            highlight=False,
        )
    if not result.same:
        if as_json:
            raise typer.Exit(IntegrityError.exit_code)
        raise IntegrityError(result.problem or f"decision {index} does not replay")


@log_app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8601,
) -> None:
    """Serve the checkpoint and hash tiles (C2SP tlog-tiles), read-only, for witnesses."""
    import uvicorn

    from custos.access import Custos
    from custos.ledger import TileServer

    system = Custos.open(state(ctx).home)
    uvicorn.run(TileServer(system.ledger), host=host, port=port, log_level="warning")


StateOption = Annotated[Path, typer.Option("--state", help="The witness's own state folder.")]


@witness_app.command("init")
def witness_init(
    state_dir: StateOption,
    name: Annotated[str, typer.Option("--name", help="The witness's key name.")],
    as_json: JsonFlag = False,
) -> None:
    """Create a witness key and state folder; print the witness's verifier key."""
    from custos.ledger import Witness

    witness = Witness.create(state_dir, name)
    vkey = witness.signer.verifier_key()
    if as_json:
        print_json({"name": name, "verifier_key": vkey})
    else:
        console.print(f"witness verifier key: {vkey}", highlight=False, soft_wrap=True)


@witness_app.command("check")
def witness_check(
    state_dir: StateOption,
    log_url: Annotated[str, typer.Option("--log", help="The log's base URL (tiles).")],
    log_key: Annotated[str, typer.Option("--log-key", help="The log's verifier key.")],
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="CUSTOS_WITNESS_TOKEN",
            help="API token, when the log is custos's authenticated /v1/ledger.",
        ),
    ] = None,
    submit: Annotated[
        bool, typer.Option("--submit", help="Hand the cosigned checkpoint back to the log.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Fetch the log's checkpoint, check consistency with the last one cosigned, cosign it.

    Refuses (exit 7) on a rollback, a split view or a bad signature.
    """
    from custos.ledger import TileClient, Witness

    result = Witness(state_dir).check(log_url, log_key, token=token)
    if submit:
        TileClient(log_url, 0, token=token).post("cosignatures", result.note.encode())
    if as_json:
        print_json(
            {
                "origin": result.checkpoint.origin,
                "size": result.checkpoint.size,
                "previous_size": result.previous_size,
                "cosigned": result.note,
            }
        )
    else:
        sys.stdout.write(result.note)
