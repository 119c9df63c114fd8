"""Imports every table module so that ``Base.metadata`` is complete (for Alembic and tests).

Each part adds its table module here, e.g. ``from custos.store import ledger``.
"""

from custos.store import directory  # noqa: F401
