"""One detection run over a custos installation's stored events and directory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from custos.detect.bulk import load_bulk_accesses
from custos.detect.cases import Alert, Casebook
from custos.detect.config import DetectConfig
from custos.detect.engine import Detector, Finding, connect
from custos.detect.events import EventStore
from custos.detect.loading import load_store
from custos.detect.map_changes import load_map_changes
from custos.detect.mirror import CATALOG, open_mirror
from custos.detect.replay import ReplayRun, ReplaySource, replay_reported, run_replay
from custos.detect.sql_events import load_sql_events
from custos.directory import DirectoryStore
from custos.store import Database


@dataclass(frozen=True, slots=True)
class DetectionRun:
    """What a run found: the alerts to read (not suppressed), and how much it looked at."""

    alerts: list[Alert]
    events: int
    findings: int
    suppressed: int
    #: What policy replay did in this run (None when it did not run).
    replay: ReplayRun | None = None
    #: How many of ``alerts`` this run raised (filed and announced for the first time).
    raised: int = 0


def run_detection(
    db: Database,
    directory: DirectoryStore,
    section: Mapping[str, Any] | None = None,
    *,
    since: datetime | None = None,
    now: datetime | None = None,
    threads: int | None = None,
    home: Path | None = None,
    replay: ReplaySource | None = None,
) -> DetectionRun:
    """Run every rule over all stored events (baselines need the history), store the
    findings as alerts (filed into cases), and return those last seen at or after ``since``.

    With ``home``, the events and directory are read through the home's mirror
    (:mod:`custos.detect.mirror`): only what changed since the last run is copied and
    classified. Without it, everything is copied into memory and classified afresh.

    With ``replay`` (and ``replay`` on in the settings), imported events are also decided by
    the policies with the directory as it stood at their time (:mod:`custos.detect.replay`);
    through the mirror, only the events not replayed before.

    ``section`` is the ``[detect]`` table of config.toml. Raises :class:`ConfigurationError`
    for bad settings or a mirror that cannot be used, and :class:`StoreUnavailable` when the
    database cannot be read.
    """
    config = DetectConfig.from_section(section or {})
    con = connect(threads)
    replayed: ReplayRun | None = None
    replay = replay if config.replay else None
    casebook = Casebook(db, suppress_days=config.suppress_days, window_days=config.window_days)

    def record(findings: list[Finding]) -> tuple[list[Alert], list[Alert]]:
        if since is not None:
            findings = [f for f in findings if f.last_seen >= since]
        return casebook.record_new(findings, now)

    try:
        if home is None:
            count = load_store(con, EventStore(db), directory)
            load_sql_events(con, db)
            load_map_changes(con, db, config)
            load_bulk_accesses(con, db)
            findings = Detector(con, config).run()
            if replay is not None:
                more, replayed = run_replay(con, config, replay)
                findings += more
            alerts, raised = record(findings)
        else:
            with open_mirror(home, con, config) as mirror:
                count = mirror.refresh(EventStore(db), directory).events
                load_sql_events(con, db)
                load_map_changes(con, db, config, catalog=CATALOG)
                load_bulk_accesses(con, db)
                findings = Detector(con, config).run(mirror.kept)
                if replay is not None:
                    row = con.execute(
                        f"SELECT value FROM {CATALOG}.meta WHERE key = 'store'"  # noqa: S608
                    ).fetchone()
                    # Replay returns only what the casebook has not recorded yet: the
                    # principal-days this run changed (alerts of earlier days stand).
                    more, replayed = run_replay(
                        con, config, replay, schema=CATALOG, store=str(row[0]) if row else ""
                    )
                    findings += more
                alerts, raised = record(findings)
                if replay is not None:
                    recorded = [f for f in findings if since is None or f.last_seen >= since]
                    replay_reported(con, config, replay, recorded, schema=CATALOG)
    finally:
        con.close()
    if since is not None:
        findings = [f for f in findings if f.last_seen >= since]
    return DetectionRun(
        alerts, count, len(findings), len(findings) - len(alerts), replayed, len(raised)
    )
