"""Storage: one database (SQLite embedded, PostgreSQL in production) behind SQLAlchemy 2.

Each part's tables live in a module of this package (``store.directory``, …) on one
declarative :class:`Base`; the schema is created and evolved only by Alembic migrations
(``store/migrations``), which run at ``custos init`` and whenever a :class:`Database`
is opened with ``migrate=True``.
"""

from custos.store.base import Base, UTCDateTime
from custos.store.database import Database, HotCursor, WrittenRows, open_database

__all__ = ["Base", "Database", "HotCursor", "UTCDateTime", "WrittenRows", "open_database"]
