"""Reports that tell: a subject's transparency report of every access to their data, each
row backed by its ledger entry and an inclusion proof to a signed checkpoint, and the
offline verifier for it."""

from custos.reports.html import render_html
from custos.reports.report import (
    FORMAT,
    LINKS,
    SUBJECT_CHAIN,
    SUBJECTS_REPORTED,
    ReportCheck,
    SubjectChain,
    SubjectIndex,
    about_subjects,
    build_report,
    chain_problems,
    parse_report,
    rows_from_entries,
    subject_of,
    subjects_of,
    verify_report,
)

__all__ = [
    "FORMAT",
    "LINKS",
    "SUBJECTS_REPORTED",
    "SUBJECT_CHAIN",
    "ReportCheck",
    "SubjectChain",
    "SubjectIndex",
    "about_subjects",
    "build_report",
    "chain_problems",
    "parse_report",
    "render_html",
    "rows_from_entries",
    "subject_of",
    "subjects_of",
    "verify_report",
]
