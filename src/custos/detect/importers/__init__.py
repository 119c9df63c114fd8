"""Importers of audit logs companies already keep: PostgreSQL's pgaudit and AWS
CloudTrail, turned into access events by a mapping file (docs/formats.md, *Audit-log
mapping*). Accesses by these paths bypassed custos: the events carry no ticket, the
mapping's purpose, and ``guarded: false``.
"""

from custos.detect.importers.common import REASONS, ReadLog, Rejected, Unmapped
from custos.detect.importers.mapping import LogFormat, LogMapping, parse_mapping, read_mapping
from custos.detect.importers.service import LogImport, import_log, read_log

__all__ = [
    "REASONS",
    "LogFormat",
    "LogImport",
    "LogMapping",
    "ReadLog",
    "Rejected",
    "Unmapped",
    "import_log",
    "parse_mapping",
    "read_log",
    "read_mapping",
]
