"""Detection: access events in, explained alerts out, and cases to triage them.

- :class:`EventStore` keeps access events (DESIGN.md format): ``import_lines`` for JSON Lines
  files, ``append`` for events handed over in code (custos's own decisions and reads).
- :func:`run_detection` runs every rule (:class:`Detector`, SQL on DuckDB) and stores the
  findings as :class:`Alert` s filed into cases of the :class:`Casebook`.
"""

from custos.detect.cases import (
    DISPOSITIONS,
    Alert,
    Case,
    Casebook,
    Comment,
    UnknownAlert,
    UnknownCase,
)
from custos.detect.config import DetectConfig
from custos.detect.engine import Detector, Finding, connect
from custos.detect.events import (
    AccessEvent,
    ChangedRows,
    EventStore,
    ImportReport,
    parse_event,
    parse_lines,
)
from custos.detect.loading import attach_parquet, load_store
from custos.detect.service import DetectionRun, run_detection

__all__ = [
    "DISPOSITIONS",
    "AccessEvent",
    "Alert",
    "Case",
    "Casebook",
    "ChangedRows",
    "Comment",
    "DetectConfig",
    "DetectionRun",
    "Detector",
    "EventStore",
    "Finding",
    "ImportReport",
    "UnknownAlert",
    "UnknownCase",
    "attach_parquet",
    "connect",
    "load_store",
    "parse_event",
    "parse_lines",
    "run_detection",
]
