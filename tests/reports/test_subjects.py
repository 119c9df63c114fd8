"""Entries that used to reach no report: a refused approval (now naming the request's
subject) and an oversight view of several subjects (in each one's report, on each one's
chain). Reports holding them verify; a gap in any one subject's chain still fails."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from custos.access import Custos, Viewer
from custos.errors import ApprovalRefused
from custos.policy import AccessRequest
from custos.reports import LINKS, render_html, subjects_of, verify_report
from tests.factories import ask
from tests.reports.test_chain import entries_of, sql, world

__all__ = ["world"]

OFFICER = Viewer("test", "emp-4001", ("privacy_officer",))


def report(system: Custos, subject: str, *, names: bool = False) -> dict[str, Any]:
    return system.subject_report(subject, viewer=Viewer("test"), names=names)


def verified(system: Custos, doc: dict[str, Any]) -> list[tuple[int | None, str]]:
    key = system.ledger.signer.verifier_key()
    return verify_report(json.dumps(doc), trusted_key=key).problems


def about(system: Custos, subject: str) -> list[int]:
    return [
        idx
        for idx, raw in system.ledger.entries(0, system.ledger.size())
        if subject in subjects_of(json.loads(raw))
    ]


def test_a_refused_approval_is_in_the_subjects_report(world: Custos) -> None:
    request_id = ask(world, "emp-3002", "T-13")
    with pytest.raises(ApprovalRefused):
        world.approvals.approve(request_id, "emp-3000", "my report, fine")  # their manager
    doc = report(world, "user-42")
    (row,) = [r for r in doc["approvals"] if r["type"] == "approval_refused"]
    assert (row["rule"], row["request"], row["verdict"]) == (
        "management-chain",
        request_id,
        "approve",
    )
    # Staff ids stay out of the rows unless the viewer may see names.
    assert "approver" not in row
    assert "principal" not in row
    named = report(world, "user-42", names=True)
    (row,) = [r for r in named["approvals"] if r["type"] == "approval_refused"]
    assert (row["approver"], row["principal"]) == ("emp-3000", "emp-3002")
    assert verified(world, doc) == []
    assert verified(world, named) == []
    assert "refused by rule management-chain" in render_html(doc)
    assert world.verify_log().ok


def test_an_oversight_view_of_several_subjects_reaches_each_report(world: Custos) -> None:
    heads = {s: about(world, s)[-1] for s in ("user-1", "user-42")}
    world.record_view(OFFICER, "case", subjects=["user-42", "user-1"])
    view = world.ledger.size() - 1
    entry = json.loads(world.ledger.entry(view))
    assert entry["subjects"] == ["user-1", "user-42"]
    assert entry[LINKS] == heads  # each subject's chain runs through it
    for subject in ("user-1", "user-42"):
        doc = report(world, subject)
        listed = [item["index"] for item in doc["entries"]]
        assert view in listed
        assert listed == about(world, subject)[: len(listed)]
        assert verified(world, doc) == []
    assert world.verify_log().ok


def test_a_gap_in_one_subjects_chain_still_fails(world: Custos) -> None:
    world.record_view(OFFICER, "case", subjects=["user-1", "user-42"])
    view = world.ledger.size() - 1
    world.read(AccessRequest("emp-3001", "user-1", "profile", "trust_safety", ticket="T-11"))
    after = about(world, "user-1")[-2]  # the decision after the view (its release follows)
    world.subject_index.catch_up()
    sql(world, "DELETE FROM report_subject_entries WHERE idx = :i AND subject = 'user-1'", i=view)
    doc = report(world, "user-1")
    assert view not in [item["index"] for item in doc["entries"]]
    assert (
        after,
        f"entry {after} names previous entry {view}, which the report does not contain",
    ) in verified(world, doc)
    # The other subject's report is whole; log verify names the missing row by index only.
    assert verified(world, report(world, "user-42")) == []
    problems = world.verify_log().problems
    assert problems[0].startswith(
        f"report_subject_entries lacks a row for entry {view} for one of the subjects"
    )
    assert "user-1" not in problems[0]


def test_a_report_may_not_borrow_an_entry_about_others(world: Custos) -> None:
    world.record_view(OFFICER, "case", subjects=["user-1", "user-77"])
    view = world.ledger.size() - 1
    doc = report(world, "user-42")
    size = int(doc["log"]["checkpoint"].split("\n")[1])
    raw = world.ledger.entry(view)
    proof = world.ledger.inclusion_proof(view, size).to_json()
    doc["entries"].append({"index": view, "entry": base64.b64encode(raw).decode(), "proof": proof})
    assert (view, f"entry {view} is not about user-42") in verified(world, doc)


def test_entries_from_before_the_marker_stay_off_the_chains(world: Custos) -> None:
    """A ``subjects`` list written before ``subjects_reported`` existed carries no links for
    them: it is still about nobody, and the log still verifies."""
    world.ledger.append({"type": "oversight_view", "view": "case", "subjects": ["user-1", "x"]})
    old = world.ledger.size() - 1
    assert LINKS not in json.loads(world.ledger.entry(old))
    assert old not in about(world, "user-1")
    assert world.verify_log().ok
    doc = report(world, "user-1")
    assert old not in [item["index"] for item in doc["entries"]]
    assert all("subjects" not in e or e.get("subjects_reported") for e in entries_of(doc))
