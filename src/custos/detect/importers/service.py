"""An audit-log import from end to end: read, map, store, report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custos.detect.events import EventStore
from custos.detect.importers.cloudtrail import read_cloudtrail
from custos.detect.importers.common import REASONS, ReadLog, Unmapped
from custos.detect.importers.mapping import LogMapping
from custos.detect.importers.pgaudit import read_pgaudit
from custos.errors import ValidationFailed
from custos.store.bulk import BulkAccessStore
from custos.textfiles import write_rejects


def read_log(lines: Sequence[str], mapping: LogMapping) -> ReadLog:
    """Read ``lines`` as the log ``mapping`` is for (its ``format``). Never raises for the
    log's content (see :class:`ReadLog`)."""
    if mapping.format == "pgaudit":
        return read_pgaudit(lines, mapping)
    return read_cloudtrail(lines, mapping)


@dataclass(frozen=True, slots=True)
class LogImport:
    """What an import did: log ``records`` read, audit ``entries`` (pgaudit) or records
    (CloudTrail) among them, ``events`` made (``duplicates``: entries repeating an access
    already read), of which ``added`` stored and ``unchanged`` already present;
    ``rejected`` records set aside; every entry ``unmapped``. ``bulk`` entries read many
    people at once (no subject named: a scan, a count, a ``COPY``): each is kept as one bulk
    access, ``bulk_added`` stored now and ``bulk_unchanged`` already present."""

    records: int
    entries: int
    events: int
    duplicates: int
    added: int
    unchanged: int
    rejected: int
    unmapped: tuple[Unmapped, ...]
    bulk: int = 0
    bulk_added: int = 0
    bulk_unchanged: int = 0

    def unmapped_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.unmapped:
            counts[item.reason] = counts.get(item.reason, 0) + 1
        return dict(sorted(counts.items()))

    def summary(self) -> str:
        """One line: read N, imported M, unmapped K by reason."""
        reasons = ", ".join(f"{REASONS[r]} {n}" for r, n in self.unmapped_by_reason().items())
        return (
            f"read {self.records} log record(s), {self.entries} audit entries; "
            f"imported {self.events} event(s) ({self.added} stored, {self.unchanged} already "
            f"present, {self.duplicates} repeat(s) of one); {self.bulk} bulk access(es) to "
            f"many people ({self.bulk_added} stored, {self.bulk_unchanged} already present); "
            f"unmapped {len(self.unmapped)}"
            + (f" ({reasons})" if reasons else "")
            + f"; {self.rejected} set aside"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "entries": self.entries,
            "events": self.events,
            "duplicates": self.duplicates,
            "added": self.added,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "bulk": self.bulk,
            "bulk_added": self.bulk_added,
            "bulk_unchanged": self.bulk_unchanged,
            "unmapped": self.unmapped_by_reason(),
            "unmapped_entries": [u.to_dict() for u in self.unmapped],
        }


def import_log(
    store: EventStore,
    lines: Sequence[str],
    source: str,
    mapping: LogMapping,
    *,
    rejects: Path | None = None,
) -> LogImport:
    """Import the audit log ``lines`` (from ``source``, a name for messages) into ``store``.

    All or nothing as :meth:`EventStore.import_lines`: raises :class:`ValidationFailed`
    listing every record that cannot be read, storing nothing, unless ``rejects`` is given;
    then those records' lines are written there (mode 0600) and the rest stored. Entries
    that cannot be mapped are not errors: they are returned, each with line and reason.
    Bulk accesses (entries naming no subject) are stored with the events; an id stored
    already as another access (of either kind) raises :class:`ValidationFailed`, storing
    nothing."""
    read = read_log(lines, mapping)
    problems = [f"{source}: {r.problem}" for r in read.rejected]
    if problems and rejects is None:
        raise ValidationFailed(
            f"{source}: {len(problems)} record(s) that cannot be read; nothing was stored",
            problems,
            hint="fix them, or pass --rejects FILE to set them aside",
        )
    if rejects is not None and read.rejected:
        write_rejects(rejects, [n for r in read.rejected for n in r.lines], lines)
    bulk = BulkAccessStore(store.db)
    records = [{**record, "log_file": source[:512]} for record in read.bulk]
    # Checked before the events are stored, so that a clash stores neither; then stored
    # after them (a second check in the same transaction as the rows).
    clashes = bulk.clashes(records)
    if clashes:
        raise ValidationFailed(
            f"{source}: {len(clashes)} bulk access id(s) already stored differently; "
            "nothing was stored",
            clashes,
        )
    stored = store.append(read.events)
    kept = bulk.append(records)
    return LogImport(
        records=read.records,
        entries=read.entries,
        events=len(read.events),
        duplicates=read.duplicates,
        added=stored.added,
        unchanged=stored.unchanged,
        rejected=len(read.rejected),
        unmapped=tuple(read.unmapped),
        bulk=len(records),
        bulk_added=kept.added,
        bulk_unchanged=kept.unchanged,
    )
