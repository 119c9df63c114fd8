"""Reports that tell: a subject's transparency report of every access to their data, each
row backed by its ledger entry and an inclusion proof to a signed checkpoint, and the
offline verifier for it."""

from custos.reports.html import render_html
from custos.reports.report import (
    FORMAT,
    ReportCheck,
    SubjectIndex,
    build_report,
    parse_report,
    rows_from_entries,
    verify_report,
)

__all__ = [
    "FORMAT",
    "ReportCheck",
    "SubjectIndex",
    "build_report",
    "parse_report",
    "render_html",
    "rows_from_entries",
    "verify_report",
]
