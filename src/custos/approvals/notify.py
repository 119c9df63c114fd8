"""Notifications of approval events through an outbox, delivered by a :class:`Notifier`.

A notification is written in the same transaction as the change it announces, so it is never
lost; delivery happens after the commit and is retried with exponential back-off, so a
failing receiver never blocks or undoes an approval.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, select, update

from custos.errors import CustosError
from custos.store import Database
from custos.store.approvals import NotificationRow

SIGNATURE_HEADER = "X-Custos-Signature"
TIMESTAMP_HEADER = "X-Custos-Timestamp"
DELIVERY_HEADER = "X-Custos-Delivery"
EVENT_HEADER = "X-Custos-Event"


class NotificationFailed(CustosError):
    """A notification could not be delivered this time (it stays queued)."""

    code = "notification_failed"
    http_status = 502


class Notifier(Protocol):
    """Delivers one notification to the people who must know.

    ``send`` must either deliver ``body`` (a JSON object) for the event ``kind`` with the
    delivery id ``delivery`` — a receiver may see the same id more than once and must treat
    repeats as one — or raise :class:`NotificationFailed` saying why, without secrets. It
    must return within a bounded time.
    """

    def send(self, delivery: str, kind: str, body: dict[str, Any]) -> None: ...


def signature(secret: bytes, timestamp: str, payload: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``timestamp + "." + payload`` (replay-bound)."""
    digest = hmac.new(secret, timestamp.encode() + b"." + payload, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookNotifier:
    """POSTs the JSON body to a URL, signed with HMAC-SHA256 (see :func:`signature`)."""

    def __init__(self, url: str, secret: bytes, *, timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise CustosError("[approvals] webhook_url must be an http(s) URL")
        self.url = url
        self.secret = secret
        self.timeout = timeout

    def send(self, delivery: str, kind: str, body: dict[str, Any]) -> None:
        payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.url,
            data=payload,
            method="POST",
            headers={
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature(self.secret, timestamp, payload),
                TIMESTAMP_HEADER: timestamp,
                DELIVERY_HEADER: delivery,
                EVENT_HEADER: kind,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read(1024)
        except urllib.error.HTTPError as exc:
            raise NotificationFailed(f"webhook answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NotificationFailed(f"webhook unreachable: {type(reason).__name__}") from None


@dataclass(frozen=True)
class DeliveryReport:
    delivered: int
    failed: int
    gave_up: int
    pending: int

    def to_dict(self) -> dict[str, int]:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "gave_up": self.gave_up,
            "pending": self.pending,
        }


class Outbox:
    """Queued notifications and their delivery with back-off."""

    def __init__(
        self,
        db: Database,
        notifier: Notifier | None,
        *,
        base_delay: timedelta = timedelta(seconds=30),
        max_delay: timedelta = timedelta(hours=1),
        max_attempts: int = 12,
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_attempts = max_attempts

    def backoff(self, attempts: int) -> timedelta:
        """Delay before attempt ``attempts + 1``: doubling from ``base_delay``, capped."""
        delay: timedelta = self.base_delay * (2 ** max(attempts - 1, 0))
        return min(delay, self.max_delay)

    def deliver(self, now: datetime | None = None, *, limit: int = 100) -> DeliveryReport:
        """Try every due notification once. Never raises for a failing receiver.

        Without a notifier configured, nothing is attempted and everything stays queued.
        """
        now = now or datetime.now(UTC)
        delivered = failed = gave_up = 0
        if self.notifier is not None:
            with self.db.session() as session:
                due = list(
                    session.scalars(
                        select(NotificationRow)
                        .where(NotificationRow.status == "pending")
                        .where(NotificationRow.next_attempt <= now)
                        .order_by(NotificationRow.created, NotificationRow.id)
                        .limit(limit)
                    )
                )
                session.expunge_all()
            for row in due:
                if not self._claim(row.id, now):
                    continue  # another worker took it first
                try:
                    self.notifier.send(row.id, row.kind, row.body)
                except NotificationFailed as exc:
                    attempts = row.attempts + 1
                    done = attempts >= self.max_attempts
                    gave_up += done
                    failed += not done
                    self._update(
                        row.id,
                        attempts=attempts,
                        status="failed" if done else "pending",
                        next_attempt=now + self.backoff(attempts),
                        last_error=exc.message,
                    )
                else:
                    delivered += 1
                    self._update(
                        row.id, attempts=row.attempts + 1, status="delivered", delivered=now
                    )
        return DeliveryReport(delivered, failed, gave_up, self.pending())

    def _claim(self, delivery: str, now: datetime) -> bool:
        """Take a due notification for this attempt: several workers deliver from one
        outbox, and only the one whose UPDATE finds it still due sends it. The claim holds it
        back for ``base_delay``; if the claimer dies while sending, it is due again then
        (delivered at least once; receivers treat a repeated delivery id as one)."""
        statement = (
            update(NotificationRow)
            .where(
                NotificationRow.id == delivery,
                NotificationRow.status == "pending",
                NotificationRow.next_attempt <= now,
            )
            .values(next_attempt=now + self.base_delay)
        )
        with self.db.session() as session:
            done = cast("CursorResult[Any]", session.execute(statement))
            return done.rowcount == 1

    def _update(self, delivery: str, **values: Any) -> None:
        with self.db.session() as session:
            row = session.get(NotificationRow, delivery)
            if row is not None:
                for key, value in values.items():
                    setattr(row, key, value)

    def pending(self) -> int:
        with self.db.session() as session:
            return len(
                list(
                    session.scalars(
                        select(NotificationRow.id).where(NotificationRow.status == "pending")
                    )
                )
            )

    def notifications(self) -> list[dict[str, Any]]:
        """Every notification with its delivery state, oldest first."""
        with self.db.session() as session:
            rows = session.scalars(
                select(NotificationRow).order_by(NotificationRow.created, NotificationRow.id)
            )
            return [
                {
                    "id": r.id,
                    "kind": r.kind,
                    "status": r.status,
                    "attempts": r.attempts,
                    "next_attempt": r.next_attempt.isoformat(),
                    "last_error": r.last_error,
                    "body": r.body,
                }
                for r in rows
            ]
