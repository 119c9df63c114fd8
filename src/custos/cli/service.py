"""``custos serve`` (the HTTP service and dashboard), ``custos users`` and ``custos tokens``."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from custos.access import Custos
    from custos.accounts import Operator

from custos.cli.app import app, console, print_json, state
from custos.cli.operator import administering, operator, operator_auth
from custos.errors import Forbidden, InvalidInput

users_app = typer.Typer(help="People who sign in to the dashboard.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens for tools and monitors.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8700,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.")] = 1,
) -> None:
    """Serve the API (/v1, OpenAPI at /v1/openapi.json) and the dashboard."""
    import uvicorn

    from custos import telemetry
    from custos.access import Custos

    home = state(ctx).home
    with Custos.open(home) as system:  # fail here, clearly, if the home is not set up
        system.ledger.size()
        resolved = system.settings.home
        settings = system.settings
        # Checked here too, so that a bad [telemetry] stops `serve` before the workers start.
        telemetry.read_settings(settings.section("telemetry"), resolved, str(settings.config_path))
    if workers < 1:
        raise InvalidInput("--workers must be at least 1")
    os.environ["CUSTOS_HOME"] = str(resolved)
    console.print(f"custos serving on http://{host}:{port}/ (API at /v1)", highlight=False)
    uvicorn.run(
        "custos.api:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        server_header=False,
        proxy_headers=False,
    )


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return str(password)


@users_app.command("add")
def users_add(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Sign-in name.")],
    role: Annotated[
        list[str],
        typer.Option("--role", help="auditor, investigator, approver, privacy_officer or admin."),
    ],
    principal: Annotated[
        str | None, typer.Option("--principal", help="Directory principal they act as.")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    oidc: Annotated[
        str | None,
        typer.Option("--oidc", help="OpenID identity 'issuer|sub' (then no password needed)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a person's account (argon2-hashed password, and/or an OpenID identity)."""
    from custos.access import Custos, acts

    with Custos.open(state(ctx).home) as system:
        # Who asks is settled before the password is read: a refusal should not cost one.
        by = administering(system, bootstrap="admin" in role)
        password = _password(password_stdin) if (oidc is None or password_stdin) else None
        account = acts.add_account(
            system, by, username, password, role, principal, oidc_subject=oidc
        )
    if as_json:
        print_json(account.to_dict())
    else:
        console.print(f"account {account.username} created: {', '.join(account.roles)}")


@users_app.command("list")
def users_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List accounts."""
    from rich.table import Table

    from custos.access import Custos

    with Custos.open(state(ctx).home) as system:
        accounts = system.accounts.all()
    if as_json:
        print_json([a.to_dict() for a in accounts])
        return
    table = Table("username", "roles", "principal", "disabled")
    for a in accounts:
        table.add_row(a.username, ", ".join(a.roles), a.principal or "", str(a.disabled))
    console.print(table)


@users_app.command("disable")
def users_disable(
    ctx: typer.Context, username: Annotated[str, typer.Argument()], as_json: JsonFlag = False
) -> None:
    """Disable an account and end its sessions and tokens (logged first)."""
    from custos.access import Custos, acts

    with Custos.open(state(ctx).home) as system:
        account = acts.disable_account(system, administering(system), username)
    if as_json:
        print_json(account.to_dict())
    else:
        console.print(f"account {account.username} disabled")


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="What the token is for.")],
    role: Annotated[
        list[str], typer.Option("--role", help="tool, auditor, investigator or provisioner.")
    ],
    principal: Annotated[
        str | None, typer.Option("--principal", help="The principal a tool acts as.")
    ] = None,
    on_behalf: Annotated[
        bool,
        typer.Option(
            "--on-behalf",
            help="A tool that may act for staff members who prove it with their own "
            "assertion ([on_behalf] in config.toml).",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create an API token for a tool or monitor (logged first); its secret is printed once
    and stored only hashed. A person gets theirs with `custos users token`."""
    from custos.access import Custos, acts

    with Custos.open(state(ctx).home) as system:
        token, secret = acts.create_token(
            system, administering(system), name, role, principal, on_behalf=on_behalf
        )
    if as_json:
        print_json({**token.to_dict(), "token": secret})
    else:
        console.print(f"token {token.id} ({', '.join(token.roles)}): {secret}", highlight=False)
        console.print("This is the only time the token is shown.")


@tokens_app.command("list")
def tokens_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List tokens (never their secrets)."""
    from rich.table import Table

    from custos.access import Custos

    with Custos.open(state(ctx).home) as system:
        tokens = system.accounts.tokens()
    if as_json:
        print_json([t.to_dict() for t in tokens])
        return
    table = Table("id", "name", "account", "roles", "principal", "revoked")
    for t in tokens:
        table.add_row(
            t.id,
            t.name,
            t.account or "",
            ", ".join(t.roles) + (" (on behalf)" if t.on_behalf else ""),
            t.principal or "",
            str(t.revoked or ""),
        )
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(
    ctx: typer.Context, token_id: Annotated[str, typer.Argument()], as_json: JsonFlag = False
) -> None:
    """Revoke a token now (logged first): an admin's, or a person's own token."""
    from custos.access import Custos, acts

    with Custos.open(state(ctx).home) as system:
        token = acts.revoke_token(system, _revoker(system, token_id), token_id)
    if as_json:
        print_json(token.to_dict())
    else:
        console.print(f"token {token.id} revoked")


def _revoker(system: Custos, token_id: str) -> Operator:
    """Who revokes ``token_id``: an admin, or (with operator_auth) the person it belongs to,
    who may always give up their own credential."""
    if operator_auth(system):
        found = operator(system)
        if found.account is not None and found.account == system.accounts.token(token_id).account:
            return found
        if not found.has("admin"):
            raise Forbidden("this needs the admin role, or the token must be your own")
        return found
    return administering(system)


@users_app.command("token")
def users_token(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Your sign-in name.")],
    name: Annotated[str, typer.Option("--name", help="Where it is used, e.g. 'laptop'.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create your own API token (put it in $CUSTOS_TOKEN): it acts as your account, with
    its roles and principal, until revoked or the account is disabled. Needs your password:
    nobody else, an admin included, can make a person's credential."""
    from custos.access import Custos, acts
    from custos.accounts import Operator

    password = _password(password_stdin)
    with Custos.open(state(ctx).home) as system:
        account = system.accounts.authenticate(username, password)
        by = Operator(account.username, account.principal, account.roles, True)
        token, secret = acts.create_token(system, by, name, [], account=account.username)
    if as_json:
        print_json({**token.to_dict(), "token": secret})
    else:
        console.print(f"token {token.id} for {token.account}: {secret}", highlight=False)
        console.print("This is the only time the token is shown.")
