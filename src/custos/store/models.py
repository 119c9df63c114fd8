"""Imports every table module so that ``Base.metadata`` is complete (for Alembic and tests).

Each part adds its table module here.
"""

from custos.store import accounts, approvals, directory, events, ledger, reports, vault  # noqa: F401
