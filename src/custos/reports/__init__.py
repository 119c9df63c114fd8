"""Reports that tell: a subject's transparency report of every access to their data, each
row backed by its ledger entry and an inclusion proof to a signed checkpoint, and the
offline verifier for it."""

from typing import TYPE_CHECKING

from custos.lazyface import lazy_face

if TYPE_CHECKING:  # the names as type checkers see them
    from custos.reports.chain import (
        SUBJECT_CHAIN as SUBJECT_CHAIN,
    )
    from custos.reports.chain import (
        SUBJECTS_REPORTED as SUBJECTS_REPORTED,
    )
    from custos.reports.chain import (
        SubjectChain as SubjectChain,
    )
    from custos.reports.chain import (
        about_subjects as about_subjects,
    )
    from custos.reports.chain import (
        subject_of as subject_of,
    )
    from custos.reports.chain import (
        subjects_of as subjects_of,
    )
    from custos.reports.html import render_html as render_html
    from custos.reports.report import (
        FORMAT as FORMAT,
    )
    from custos.reports.report import (
        LINKS as LINKS,
    )
    from custos.reports.report import (
        ReportCheck as ReportCheck,
    )
    from custos.reports.report import (
        SubjectIndex as SubjectIndex,
    )
    from custos.reports.report import (
        build_report as build_report,
    )
    from custos.reports.report import (
        chain_problems as chain_problems,
    )
    from custos.reports.report import (
        parse_report as parse_report,
    )
    from custos.reports.report import (
        rows_from_entries as rows_from_entries,
    )
    from custos.reports.report import (
        verify_report as verify_report,
    )

__getattr__, __dir__, __all__ = lazy_face(
    __name__,
    {
        "chain": (
            "SUBJECT_CHAIN",
            "SUBJECTS_REPORTED",
            "SubjectChain",
            "about_subjects",
            "subject_of",
            "subjects_of",
        ),
        "html": ("render_html",),
        "report": (
            "FORMAT",
            "LINKS",
            "ReportCheck",
            "SubjectIndex",
            "build_report",
            "chain_problems",
            "parse_report",
            "rows_from_entries",
            "verify_report",
        ),
    },
)
