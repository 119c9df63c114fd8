"""Alembic environment: runs against the engine handed over by :class:`custos.store.Database`."""

from __future__ import annotations

from alembic import context

import custos.store.models  # noqa: F401 - registers every table on Base.metadata
from custos.store.base import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=engine.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
