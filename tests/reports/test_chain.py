"""Omission is visible: every entry about a subject links to the previous one about that
subject, so a report missing entries fails verification naming the gap, and ``custos log
verify`` names a subject index that differs from the entries or a link that skips one."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from custos.access import Custos, Viewer
from custos.errors import InvalidInput
from custos.policy import AccessRequest
from custos.reports import LINKS, chain_problems, verify_report
from tests.factories import APPROVALS_WORLD, ask, load_org, logins

TS_READ = AccessRequest("emp-3001", "user-42", "ip_history", "trust_safety", ticket="T-10")


@pytest.fixture
def world(system: Custos) -> Custos:
    """Decisions, releases, an approval history, oversight views and earlier reports."""
    load_org(system, APPROVALS_WORLD)
    system.ingest(logins("user-42") + logins("user-1", net="203.0.113"), "logins.jsonl")
    request_id = ask(system)
    system.approvals.approve(request_id, "emp-3002", "checked")
    system.approvals.approve(request_id, "emp-4001", "proportionate")
    system.read(
        AccessRequest(
            "emp-3001", "user-42", "ip_history", "trust_safety", ticket="T-10", precision="precise"
        )
    )
    for _ in range(4):
        system.read(TS_READ)
    system.read(
        AccessRequest("emp-2001", "user-42", "ip_history", "internal_investigation", ticket="T-7")
    )
    system.read(AccessRequest("emp-3001", "user-1", "profile", "trust_safety", ticket="T-11"))
    system.record_view(
        Viewer("test", "emp-4001", ("privacy_officer",)), "access_log", subject="user-42"
    )
    system.subject_report("user-42", viewer=Viewer("test"))
    return system


def report_of(system: Custos) -> dict[str, Any]:
    return system.subject_report("user-42", viewer=Viewer("test"))


def about(system: Custos, subject: str) -> list[int]:
    """The indexes of the entries about ``subject``, read from the log itself."""
    return [
        idx
        for idx, raw in system.ledger.entries(0, system.ledger.size())
        if json.loads(raw).get("subject") == subject
    ]


def sql(system: Custos, statement: str, **params: object) -> None:
    with system.db.engine.begin() as conn:
        conn.execute(text(statement), params)


def entries_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(base64.b64decode(item["entry"])) for item in report["entries"]]


def test_a_normal_report_is_one_unbroken_chain(world: Custos) -> None:
    report = report_of(world)
    listed = [item["index"] for item in report["entries"]]
    assert listed == about(world, "user-42")
    kinds = {entry["type"] for entry in entries_of(report)}
    assert {"decision", "release", "approval_request", "approval", "grant"} <= kinds
    assert {"oversight_view", "report_view"} <= kinds
    links = [entry[LINKS] for entry in entries_of(report)]
    assert links == [{"user-42": previous} for previous in [None, *listed[:-1]]]
    assert report["head"] == listed[-1]
    check = verify_report(json.dumps(report), trusted_key=world.ledger.signer.verifier_key())
    assert check.ok, check.problems
    assert check.unlinked == 0
    assert world.verify_log().ok


def test_index_rows_deleted_fail_the_report_and_log_verify_naming_the_gap(
    world: Custos, home: Path
) -> None:
    listed = about(world, "user-42")
    gone = listed[3:6]  # three entries in the middle of the subject's history
    sql(
        world,
        "DELETE FROM report_subject_entries WHERE idx >= :a AND idx <= :b AND subject = 'user-42'",
        a=gone[0],
        b=gone[-1],
    )
    report = report_of(world)
    assert not {item["index"] for item in report["entries"]} & set(gone)
    check = verify_report(json.dumps(report))
    assert not check.ok
    after = listed[6]
    assert (
        after,
        f"entry {after} names previous entry {gone[-1]}, which the report does not contain",
    ) in check.problems
    assert check.first_bad_index == after

    verified = world.verify_log()
    assert not verified.ok
    assert verified.first_bad_index == gone[0]
    (problem,) = verified.problems
    assert f"report_subject_entries has no row for entry {gone[0]}" in problem
    assert "2 more differences" in problem
    assert "user-42" not in problem  # the ledger index and the table, not the subject

    out = subprocess.run(
        [sys.executable, "-m", "custos", "log", "verify", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "CUSTOS_HOME": str(home)},
        timeout=120,
        check=False,
    )
    assert out.returncode == 6
    body = json.loads(out.stdout)
    assert body["first_bad_index"] == gone[0]
    assert any("report_subject_entries" in p for p in body["problems"])


def test_a_report_cut_short_names_its_missing_head(world: Custos) -> None:
    report = report_of(world)
    doc = copy.deepcopy(report)
    newest = doc["entries"].pop()["index"]
    doc["approvals"] = [r for r in doc["approvals"] if r["entry"] != newest]
    doc["accesses"] = [r for r in doc["accesses"] if r["entry"] != newest]
    check = verify_report(json.dumps(doc))
    assert (
        newest,
        f"the newest entry about user-42 is {newest}, which the report does not "
        "contain (cut short)",
    ) in check.problems
    del doc["head"]
    assert not verify_report(json.dumps(doc)).ok


def test_a_bogus_index_row_is_named_by_log_verify(world: Custos) -> None:
    assert world.verify_log().ok
    world.subject_index.catch_up()
    # Entry 0 is the policy version: about nobody.
    sql(
        world,
        "INSERT INTO report_subject_entries (idx, subject, type) VALUES (0, 'user-42', 'decision')",
    )
    verified = world.verify_log()
    assert verified.first_bad_index == 0
    assert verified.problems == [
        "report_subject_entries has a row for entry 0, which is about no subject (inserted)"
    ]
    sql(world, "DELETE FROM report_subject_entries WHERE idx = 0")
    other = about(world, "user-1")[0]
    sql(world, "UPDATE report_subject_entries SET subject = 'user-42' WHERE idx = :i", i=other)
    verified = world.verify_log()
    assert verified.problems == [
        f"report_subject_entries: the row for entry {other} names another subject than the "
        "entry (altered)"
    ]
    # A report built on it lists an entry that is not about its subject: named too.
    check = verify_report(json.dumps(report_of(world)))
    assert (other, f"entry {other} is not about user-42") in check.problems


def test_a_tampered_head_is_named_by_log_verify_and_by_the_next_report(world: Custos) -> None:
    listed = about(world, "user-42")
    # An insider who moves the head back makes the next entry skip the ones after it...
    sql(world, "UPDATE ledger_subject_heads SET idx = :i WHERE subject = 'user-42'", i=listed[-3])
    verified = world.verify_log()
    assert not verified.ok
    assert "ledger_subject_heads names entry" in verified.problems[0]
    world.read(TS_READ)
    skipping = about(world, "user-42")[-2]  # the decision (its release follows)
    assert json.loads(world.ledger.entry(skipping))[LINKS] == {"user-42": listed[-3]}
    verified = world.verify_log()
    assert verified.first_bad_index == skipping
    assert (
        f"entry {skipping} does not link to the previous entry with its key ({listed[-1]})"
        in (verified.problems[0])
    )
    # ... and the skipped entries, still in the index, are off the chain in the report.
    check = verify_report(json.dumps(report_of(world)))
    assert (
        listed[-1],
        f"entry {listed[-1]} is not on the chain of entries about user-42: "
        f"entry {skipping} names {listed[-3]} as its previous",
    ) in check.problems


def test_concurrent_appends_from_threads_and_processes_keep_every_chain_whole(
    system: Custos, home: Path
) -> None:
    subjects = [f"user-{n}" for n in range(5)]

    def worker(n: int) -> None:
        for i in range(30):
            if i % 3:
                system.ledger.append({"type": "test", "subject": subjects[(n + i) % 5], "i": i})
            else:
                system.ledger.append_many(
                    [{"type": "test", "subject": s, "w": n} for s in (subjects[n % 5], "user-9")]
                    + [{"type": "test", "about": "nobody"}]
                )

    script = (
        "import sys\n"
        "from custos.access import Custos\n"
        "s = Custos.open()\n"
        "for i in range(40):\n"
        "    s.ledger.append_many(\n"
        "        [{'type': 't', 'subject': f'user-{(i + k) % 5}'} for k in range(3)]\n"
        "    )\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], env={**os.environ}) for _ in range(2)]
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        assert p.wait(timeout=120) == 0
    for subject in [*subjects, "user-9"]:
        indexes = about(system, subject)
        links = [json.loads(system.ledger.entry(i))[LINKS][subject] for i in indexes]
        assert links == [None, *indexes[:-1]], subject
        assert system.ledger.chain_head(subject) == indexes[-1]
        assert system.ledger.chain_head(subject, indexes[-1]) == indexes[-2]
    system.ledger.checkpoint()
    verified = system.verify_log()
    assert verified.ok, verified.problems


def test_an_entry_may_not_set_its_own_links(system: Custos) -> None:
    size = system.ledger.size()
    with pytest.raises(InvalidInput, match="prev"):
        system.ledger.append_many(
            [
                {"type": "test", "subject": "user-1"},
                {"type": "test", "subject": "user-1", "prev": {}},
            ]
        )
    assert system.ledger.size() == size
    # An entry about no subject is no one's to link: its fields are its own.
    system.ledger.append({"type": "test", "prev": "whatever"})


# -- the chain check itself ------------------------------------------------------------------


def chain(subject: str, indexes: list[int]) -> list[tuple[int, dict[str, Any]]]:
    previous: list[int | None] = [None, *indexes[:-1]]
    return [
        (idx, {"type": "decision", "subject": subject, LINKS: {subject: prev}})
        for idx, prev in zip(indexes, previous, strict=True)
    ]


INDEXES = st.lists(st.integers(0, 10_000), min_size=1, max_size=40, unique=True).map(sorted)


@settings(max_examples=300, deadline=None)
@given(indexes=INDEXES, data=st.data())
def test_any_deletion_from_a_chain_is_detected(indexes: list[int], data: st.DataObject) -> None:
    whole = chain("user-42", indexes)
    assert chain_problems("user-42", indexes[-1], whole) == []
    gone = data.draw(st.sets(st.sampled_from(indexes), min_size=1))
    kept = [(idx, entry) for idx, entry in whole if idx not in gone]
    problems = chain_problems("user-42", indexes[-1], kept)
    assert problems
    # A deleted entry is named: as a kept one's missing previous entry, or the missing head.
    named = {int(n) for _, problem in problems for n in re.findall(r"\d+", problem)}
    assert named & gone


@settings(max_examples=200, deadline=None)
@given(indexes=INDEXES, extra=st.integers(0, 10_000), data=st.data())
def test_an_entry_off_the_chain_is_detected(
    indexes: list[int], extra: int, data: st.DataObject
) -> None:
    """An entry that names the subject but that no entry links to (a forged head, or one
    added to the report from elsewhere) breaks the chain too."""
    if extra in indexes:
        return
    stray = (extra, {"type": "decision", "subject": "user-42", LINKS: {"user-42": None}})
    mixed = sorted([*chain("user-42", indexes), stray], key=lambda p: p[0])
    head = data.draw(st.sampled_from([indexes[-1], extra]))
    assert chain_problems("user-42", head, mixed)


def test_entries_from_before_links_may_only_come_first() -> None:
    old = [(1, {"subject": "user-42"}), (4, {"subject": "user-42"})]
    linked = [(9, {"subject": "user-42", LINKS: {"user-42": 4}})]
    assert chain_problems("user-42", 9, old + linked) == []
    assert chain_problems("user-42", 9, old[:1] + linked)  # the last old one is named
    assert chain_problems("user-42", 12, [*old, *linked, (12, {"subject": "user-42"})])
