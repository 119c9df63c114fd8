"""The composition root: one custos installation (a home folder and its database) and the
parts wired to it. Everything above (CLI, API, web) reaches the parts through this."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from sqlalchemy import select

from custos.access.decisions import DecisionMaker
from custos.config import Settings, load_settings
from custos.directory import DirectoryStore
from custos.errors import ConfigurationError, NotInitialised
from custos.policy import (
    AccessRequest,
    Decision,
    PolicyEngine,
    PolicyPack,
    install_default_pack,
    load_pack,
)
from custos.store import Database, open_database
from custos.store.directory import PolicyVersionRow


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
        # Each part's own setup, in layer order.
        install_default_pack(settings.policy_dir)
        system.activate_policies()
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

    @cached_property
    def policy_pack(self) -> PolicyPack:
        """The active pack: ``policies/`` in the home folder, recorded in the policy history
        (and the ledger) the first time it is used. Raises ``PolicyError``."""
        return self.activate_policies()

    @cached_property
    def policy(self) -> PolicyEngine:
        return PolicyEngine(self.policy_pack)

    @cached_property
    def decisions(self) -> DecisionMaker:
        return DecisionMaker(self.settings, self.directory, self.policy)

    def activate_policies(self) -> PolicyPack:
        """Validate the home's pack and record it in the policy history if it is new.

        Returns the pack. Raises ``PolicyError`` (and records nothing) when it is invalid.
        """
        pack = load_pack(self.settings.policy_dir)
        with self.db.session() as session:
            known = session.scalar(
                select(PolicyVersionRow.id).where(PolicyVersionRow.digest == pack.digest)
            )
            if known is None:
                session.add(
                    PolicyVersionRow(
                        digest=pack.digest, activated=datetime.now(UTC), files=pack.files
                    )
                )
        self.__dict__["policy_pack"] = pack
        self.__dict__.pop("policy", None)
        self.__dict__.pop("decisions", None)
        return pack

    def decide(self, request: AccessRequest) -> Decision:
        """Decide ``request`` on the guarded path. Raises for unknown ids."""
        return self.decisions.decide(request)

    def decide_many(self, requests: Sequence[AccessRequest]) -> list[Decision]:
        """Decide many requests at once (one policy evaluation batch)."""
        return self.decisions.decide_many(requests)

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> Custos:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
