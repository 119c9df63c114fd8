"""The store's errors: a broken uniqueness rule is a conflict, named without the driver's
text; a database that went away is unavailable."""

from __future__ import annotations

import pytest

from custos.access import Custos
from custos.errors import StoreConflict
from custos.store.approvals import ApprovalVoteRow
from tests.factories import APPROVALS_WORLD, ask, load_org


def test_a_duplicate_row_is_a_conflict_and_names_no_table_or_value(system: Custos) -> None:
    load_org(system, APPROVALS_WORLD)
    request_id = ask(system)
    system.approvals.approve(request_id, "emp-3002", "report checked")
    when = system.approvals.request(request_id).votes[0].time

    def through_the_orm() -> None:
        with system.db.session() as session:
            session.add(
                ApprovalVoteRow(
                    request_id=request_id,
                    approver="emp-3002",
                    verdict="deny",
                    reason="again",
                    time=when,
                )
            )

    def through_the_hot_cursor() -> None:
        with system.db.cursor() as cursor:
            cursor.execute(
                "INSERT INTO approval_votes (request_id, approver, verdict, reason, time)"
                " VALUES (?, ?, 'deny', 'again', ?)",
                (request_id, "emp-3002", "2026-01-05 10:00:00.000000"),
            )

    for write in (through_the_orm, through_the_hot_cursor):
        with pytest.raises(StoreConflict) as caught:
            write()
        body = str(caught.value.to_dict())
        assert caught.value.http_status == 409
        assert "approval_votes" not in body
        assert "emp-3002" not in body
    assert len(system.approvals.request(request_id).votes) == 1
