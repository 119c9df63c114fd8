"""Imports every table module so that ``Base.metadata`` is complete (for Alembic and tests).

Each part adds its table module here.
"""

from custos.store import (  # noqa: F401
    accounts,
    approvals,
    bulk,
    directory,
    events,
    export,
    ledger,
    reports,
    vault,
)
