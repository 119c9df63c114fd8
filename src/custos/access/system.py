"""The composition root: one custos installation (a home folder and its database) and the
parts wired to it. Everything above (CLI, API, web) reaches the parts through this."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from custos.config import Settings, load_settings
from custos.directory import DirectoryStore
from custos.errors import ConfigurationError, NotInitialised
from custos.store import Database, open_database


class Custos:
    """An opened custos installation. Create with :meth:`open` (existing) or :meth:`init`."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    @classmethod
    def init(cls, home: Path | None = None) -> Custos:
        """Create (or bring up to date) the home folder and database; idempotent.

        Raises :class:`ConfigurationError` when the home cannot be created.
        """
        settings = load_settings(home)
        try:
            settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            settings.keys_dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create custos home {settings.home}: {exc.strerror}"
            ) from None
        db = open_database(settings.database_url, migrate=True)
        system = cls(settings, db)
        # Each part's own setup goes here, in layer order (policy pack, keys, ...).
        return system

    @classmethod
    def open(cls, home: Path | None = None) -> Custos:
        """Open an initialised installation. Raises :class:`NotInitialised` otherwise."""
        settings = load_settings(home)
        if settings.database_url.startswith("sqlite") and not settings.home.is_dir():
            raise NotInitialised(
                f"no custos home at {settings.home}", hint="run `custos init` first"
            )
        return cls(settings, open_database(settings.database_url))

    @cached_property
    def directory(self) -> DirectoryStore:
        return DirectoryStore(self.db)

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> Custos:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
