"""``custos policy show|validate|test``: read, check and test the policy pack."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from custos.policy import PolicyPack

from custos.cli.app import app, console, print_json, state
from custos.errors import PolicyError

policy_app = typer.Typer(help="The Cedar policy pack: show, validate, test.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
PackOption = Annotated[
    Path | None,
    typer.Option("--pack", help="A policy pack folder [default: the home's policies/]."),
]


def _pack(ctx: typer.Context, folder: Path | None) -> PolicyPack:
    from custos.config import load_settings
    from custos.policy import load_pack

    if folder is not None:
        return load_pack(folder)
    settings = load_settings(state(ctx).home)
    if settings.policy_dir.is_dir():
        return load_pack(settings.policy_dir)
    return load_pack()


@policy_app.command("show")
def show(
    ctx: typer.Context,
    policy_id: Annotated[str | None, typer.Argument(help="Show this policy's text.")] = None,
    pack: PackOption = None,
    as_json: JsonFlag = False,
) -> None:
    """List the active policies (id, effect, obligations), or show one policy's file."""
    from rich.table import Table

    loaded = _pack(ctx, pack)
    if policy_id is not None:
        info = loaded.policies.get(policy_id)
        if info is None:
            raise PolicyError(f"no policy with @id {policy_id!r} in {loaded.source}")
        if as_json:
            print_json(
                {
                    "id": info.id,
                    "effect": info.effect,
                    "file": info.file,
                    "annotations": info.annotations,
                }
            )
        else:
            console.print(f"{info.id} ({info.effect}) in {info.file}", highlight=False)
            console.print(loaded.files[info.file], highlight=False, markup=False)
        return
    if as_json:
        print_json(
            {
                "source": loaded.source,
                "digest": loaded.digest,
                "policies": [
                    {"id": i.id, "effect": i.effect, "file": i.file, "annotations": i.annotations}
                    for i in loaded.policies.values()
                ],
                "vocabulary": loaded.vocabulary.to_dict(),
            }
        )
        return
    table = Table(title=f"policy pack {loaded.digest[:12]} ({loaded.source})")
    for column in ("id", "effect", "file", "obligations", "explanation"):
        table.add_column(column)
    for info in loaded.policies.values():
        obligations = []
        if info.remedy:
            groups = ", ".join(info.approver_groups) or "any group"
            obligations.append(f"approval: {info.approvals} ({groups})")
        if info.review_required:
            obligations.append("mandatory review")
        table.add_row(info.id, info.effect, info.file, "; ".join(obligations), info.explanation)
    console.print(table)
    for key, words in loaded.vocabulary.to_dict().items():
        console.print(f"{key.replace('_', ' ')}: {', '.join(words)}", highlight=False)


@policy_app.command("validate")
def validate(ctx: typer.Context, pack: PackOption = None, as_json: JsonFlag = False) -> None:
    """Parse the pack and validate every policy against its schema; exit non-zero if invalid.

    With an initialised home, also check that the pack has every category and protected flag
    the home still uses (vault data, retention, subjects' flags), as activating it would:
    a pack meant to replace the active one can be checked before it is put in place."""
    loaded = _pack(ctx, pack)
    _check_words_in_use(ctx, loaded)
    if as_json:
        print_json(
            {
                "valid": True,
                "source": loaded.source,
                "digest": loaded.digest,
                "policies": len(loaded.policies),
            }
        )
    else:
        console.print(
            f"valid: {len(loaded.policies)} policies in {loaded.source} "
            f"(digest {loaded.digest[:12]})",
            highlight=False,
        )


def _check_words_in_use(ctx: typer.Context, loaded: PolicyPack) -> None:
    """Raise :class:`VocabularyInUse` when ``loaded`` lacks words the home uses; nothing
    when there is no initialised home to compare with."""
    from custos.access import Custos
    from custos.access.words import words_in_use
    from custos.errors import NotInitialised, VocabularyInUse

    try:
        system = Custos.open(state(ctx).home)
    except NotInitialised:
        return
    with system:
        problems = words_in_use(system, loaded.vocabulary)
    if problems:
        raise VocabularyInUse(
            f"{loaded.source}: the policy pack lacks {len(problems)} word(s) this home uses; "
            "activating it would be refused",
            problems,
            hint="keep the words in vocabulary.yaml until their data is shredded, their "
            "retention removed and nobody carries the flag",
        )


@policy_app.command("test")
def run_tests(
    ctx: typer.Context,
    table_file: Annotated[Path, typer.Argument(help="A policy test table (YAML).")],
    pack: PackOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a table of cases (request → expected decision); exit 1 if any case fails."""
    from custos.policy import PolicyEngine
    from custos.policy.cases import read_table, run_table

    loaded = _pack(ctx, pack)
    table = read_table(table_file, loaded.vocabulary)
    results = run_table(table, PolicyEngine(loaded))
    failed = [r for r in results if not r.passed]
    if as_json:
        print_json(
            {
                "passed": len(results) - len(failed),
                "failed": len(failed),
                "cases": [
                    {
                        "name": r.name,
                        "passed": r.passed,
                        "problems": list(r.problems),
                        "decision": r.decision.to_dict() if r.decision else None,
                    }
                    for r in results
                ],
            }
        )
    else:
        for r in results:
            mark = "[green]PASS[/]" if r.passed else "[red]FAIL[/]"
            console.print(f"{mark} {r.name}", highlight=False)
            for problem in r.problems:
                console.print(f"     {problem}", highlight=False, markup=False)
        console.print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)
