"""The webhooks' taken payloads in the database: two workers (two checks over one database)
cannot both take one payload, and the window ends what each remembers."""

from __future__ import annotations

import pytest

from custos.access import Custos
from custos.errors import SignatureRefused
from custos.feeds.deliveries import StoredDeliveries
from custos.feeds.tickets import SignatureCheck, sign


def test_a_payload_taken_by_one_worker_is_a_replay_to_another(system: Custos) -> None:
    one = SignatureCheck(b"k", 300, StoredDeliveries(system.db))
    other = SignatureCheck(b"k", 300, StoredDeliveries(system.db))
    good = sign(b"k", "1800000000", b"{}")
    one.check(good, "1800000000", b"{}", now=1800000000)
    with pytest.raises(SignatureRefused, match="replay"):
        other.check(good, "1800000000", b"{}", now=1800000001)
    other.forget(good)  # its change failed: it may come again, to either
    one.check(good, "1800000000", b"{}", now=1800000002)
    # Once the window is over, the timestamp refuses it, and the row is dropped by the next.
    later = sign(b"k", "1800000400", b"{}")
    other.check(later, "1800000400", b"{}", now=1800000400)
    assert StoredDeliveries(system.db).take(good, 1800000400, 300) is True
