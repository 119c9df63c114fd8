"""``custos sql serve``: the PostgreSQL wire-protocol front (see :mod:`custos.wire`)."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
from typing import Annotated

import typer

from custos.cli.app import console, state
from custos.cli.sql import sql_app


@sql_app.command("serve")
def sql_serve(
    ctx: typer.Context,
    listen: Annotated[
        str | None, typer.Option("--listen", help="Address [default: [sql] listen, 127.0.0.1].")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Port [default: [sql] port, 5480].")
    ] = None,
) -> None:
    """Serve guarded SQL over the PostgreSQL wire protocol: psql, psycopg, DBeaver connect
    with a custos API token (role tool) as the password, the source as the database, and
    purpose and ticket as options: PGOPTIONS='-c custos.purpose=support -c custos.ticket=T-9'.
    With [sql] tls_cert and tls_key, TLS only; without, loopback only (unless [sql]
    allow_cleartext = true: TLS is terminated in front).
    """
    import asyncio

    from custos.access import Custos
    from custos.wire import SqlFront, WireSettings, token_authenticator

    with Custos.open(state(ctx).home) as system:
        settings = WireSettings.from_settings(system.settings)
        if listen is not None:
            settings = dataclasses.replace(settings, listen=listen)
        if port is not None:
            settings = dataclasses.replace(settings, port=port)
        front = SqlFront(system, token_authenticator(system.accounts), settings)

        async def run() -> None:
            # SIGTERM (a service manager's stop) ends the front as Ctrl-C does: connections
            # closed, custos closed; a SIGINT inherited as ignored (a background job) stays so.
            main = asyncio.current_task()
            assert main is not None
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
            await front.start()
            secured = "TLS only" if front.tls is not None else "no TLS"
            console.print(
                f"custos SQL front on {settings.listen}:{front.port} ({secured}; Ctrl-C stops it)",
                highlight=False,
            )
            try:
                await front.serve_forever()
            finally:
                await front.close()

        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(run())
