"""Which subjects a ledger entry is about, and the subject chain built on it: every entry about
a subject links to the previous entry about that subject (``prev``). Apart from the reports
themselves because the ledger needs the chain on every append, and a decision's process
should not import what builds and verifies reports."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from custos.ledger.entries import LINKS, Entry

#: Set (true) on an entry whose ``subjects`` list names subjects it is about, each of whom
#: gets it in their report (see :func:`subjects_of`).
SUBJECTS_REPORTED = "subjects_reported"


def subject_of(entry: Mapping[str, Any] | Entry) -> str | None:
    """The one subject an entry names in ``subject`` (a string), if any. Decisions and
    releases, approval steps and refusals, break-glass and its alert, report views and
    oversight views of one subject carry one. See :func:`subjects_of` for all of them."""
    subject = entry.get("subject")
    return subject if isinstance(subject, str) else None


def subjects_of(entry: Mapping[str, Any] | Entry) -> tuple[str, ...]:
    """Every subject an entry is about, each once, in order: its ``subject``, then, when it
    says ``subjects_reported``, each string of its ``subjects`` list (an oversight view of
    a case or an alert names several). Entries written before that marker existed carry a
    ``subjects`` list without links for them; the marker, part of their bytes, is what tells
    the two apart, so old logs still verify. Depends on the entry alone."""
    found = [] if (one := subject_of(entry)) is None else [one]
    many = entry.get("subjects")
    # A list as stored, a tuple as a parsed Entry gives it.
    if entry.get(SUBJECTS_REPORTED) is True and isinstance(many, (list, tuple)):
        found.extend(s for s in many if isinstance(s, str))
    return tuple(dict.fromkeys(found))


def about_subjects(subjects: Iterable[str]) -> dict[str, Any]:
    """The members an entry about several subjects carries so that it reaches each one's
    report and each one's chain links to it: ``subjects`` and ``subjects_reported``."""
    named = sorted(set(subjects))
    return {"subjects": named, SUBJECTS_REPORTED: True} if named else {}


class SubjectChain:
    """The ledger :class:`~custos.ledger.Chain` of custos: every entry about a subject links
    to the previous entry about that subject, in its ``prev`` member — an entry about several
    links to the previous entry about each."""

    field = LINKS

    def keys(self, entry: Mapping[str, Any]) -> Collection[str]:
        """The subjects the entry is about (:func:`subjects_of`)."""
        return subjects_of(entry)


#: Passed to the ledger by the composition root (``Custos.ledger``).
SUBJECT_CHAIN = SubjectChain()
