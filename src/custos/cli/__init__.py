"""The ``custos`` command line (Typer).

Every sub-command lives in a module of this package and is registered here. Errors of the
:class:`custos.errors.CustosError` tree are caught in exactly one place, :func:`main`, and
printed as one line (or a JSON object with ``--json``) with the error's own exit code.
"""

from __future__ import annotations

from custos.cli import access as _access  # noqa: F401 - registers check, read
from custos.cli import approvals as _approvals  # noqa: F401 - registers approvals
from custos.cli import demo as _demo  # noqa: F401 - registers demo
from custos.cli import detect as _detect  # noqa: F401 - registers events, detect, cases
from custos.cli import example as _example  # noqa: F401 - registers example
from custos.cli import export as _export  # noqa: F401 - registers export
from custos.cli import log as _log  # noqa: F401 - registers keys, log, witness
from custos.cli import org as _org  # noqa: F401 - registers init, org
from custos.cli import policy as _policy  # noqa: F401 - registers policy
from custos.cli import report as _report  # noqa: F401 - registers report
from custos.cli import service as _service  # noqa: F401 - registers serve, users, tokens
from custos.cli import sim as _sim  # noqa: F401 - registers simulate, eval
from custos.cli import sql as _sql  # noqa: F401 - registers sql, sources
from custos.cli import vault as _vault  # noqa: F401 - registers vault
from custos.cli import wire as _wire  # noqa: F401 - registers sql serve
from custos.cli.app import app, main

__all__ = ["app", "main"]
