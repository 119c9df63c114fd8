"""The four tables detection reads, wherever they come from (the custos database, its
mirror, Parquet): their columns, in order, with their DuckDB types. See
:mod:`custos.detect.engine` for what each holds."""

from __future__ import annotations

#: Column order of the ``events`` table the rules read.
EVENT_COLUMNS: dict[str, str] = {
    "id": "VARCHAR",
    "time": "TIMESTAMP",
    "principal": "VARCHAR",
    "action": "VARCHAR",
    "subject": "VARCHAR",
    "category": "VARCHAR",
    "purpose": "VARCHAR",
    "ticket": "VARCHAR",
    "decision": "VARCHAR",
    "precision": "VARCHAR",
    "records": "BIGINT",
    "source": "VARCHAR",
    "break_glass": "BOOLEAN",
    "granted": "BOOLEAN",
    "explained": "VARCHAR",
}
PRINCIPAL_COLUMNS: dict[str, str] = {
    "id": "VARCHAR",
    "kind": "VARCHAR",
    "role": "VARCHAR",
    "team": "VARCHAR",
    "manager": "VARCHAR",
    "country": "VARCHAR",
    "status": "VARCHAR",
    "role_since": "TIMESTAMP",
}
#: ``link_group``: the smallest id of the account's link group (DESIGN.md principle 11), null
#: when it is linked to nothing; the rules read a group as one person and give every account
#: of it the group's protection (see custos.detect.engine).
SUBJECT_COLUMNS: dict[str, str] = {
    "id": "VARCHAR",
    "protected": "VARCHAR",
    "employee": "VARCHAR",
    "link_group": "VARCHAR",
}
TICKET_COLUMNS: dict[str, str] = {
    "id": "VARCHAR",
    "kind": "VARCHAR",
    "subject": "VARCHAR",
    "assignee": "VARCHAR",
    "status": "VARCHAR",
    "opened": "TIMESTAMP",
    "closed": "TIMESTAMP",
    "opened_by": "VARCHAR",
}
#: Grants as detection reads them (``custos.detect.grants``): who held one on whom, when, and
#: who approved it. ``approvers`` and ``approver_groups`` are joined by ``|`` like
#: ``subjects.protected``; ``ends`` is already the revocation time when one came first.
GRANT_COLUMNS: dict[str, str] = {
    "id": "VARCHAR",
    "principal": "VARCHAR",
    "subject": "VARCHAR",
    "purpose": "VARCHAR",
    "precision": "VARCHAR",
    "approvers": "VARCHAR",
    "approver_groups": "VARCHAR",
    "starts": "TIMESTAMP",
    "ends": "TIMESTAMP",
    "break_glass": "BOOLEAN",
}


def create_table(name: str, columns: dict[str, str]) -> str:
    """The statement that makes an empty table ``name`` of ``columns`` (name to type)."""
    return f"CREATE TABLE {name} ({', '.join(f'{c} {t}' for c, t in columns.items())})"
