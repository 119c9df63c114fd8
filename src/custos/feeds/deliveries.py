"""The ticket webhooks' taken payloads in the database, shared by every worker."""

from __future__ import annotations

from sqlalchemy import delete

from custos.errors import StoreConflict
from custos.store import Database
from custos.store.directory import HookDeliveryRow


class StoredDeliveries:
    """:class:`custos.feeds.tickets.Deliveries` in the ``hook_deliveries`` table: a payload
    is taken by inserting its signature, so two workers given the same payload at once
    cannot both take it (the second insert breaks the key)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def take(self, signature: str, now: float, window: int) -> bool:
        """See :class:`~custos.feeds.tickets.Deliveries`. Raises :class:`StoreUnavailable`."""
        with self.db.session() as session:
            session.execute(delete(HookDeliveryRow).where(HookDeliveryRow.taken < now - window))
        try:
            with self.db.session() as session:
                session.add(HookDeliveryRow(signature=signature, taken=now))
        except StoreConflict:
            return False
        return True

    def forget(self, signature: str) -> None:
        """See :class:`~custos.feeds.tickets.Deliveries`. Raises :class:`StoreUnavailable`."""
        with self.db.session() as session:
            session.execute(delete(HookDeliveryRow).where(HookDeliveryRow.signature == signature))
