"""Subject transparency reports: exactly the subject's accesses, staff by role unless names
are allowed, every proof verifiable independently, and any change to a report caught."""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custos.access import Custos, Viewer
from custos.errors import InvalidInput, UnknownSubject
from custos.ledger import NoteSigner
from custos.policy import AccessRequest
from custos.reports import render_html, rows_from_entries, verify_report
from tests.factories import APPROVALS_WORLD, ask, load_org, logins
from tests.ledger import rfc9162

TS_READ = AccessRequest("emp-3001", "user-42", "ip_history", "trust_safety", ticket="T-10")


@pytest.fixture
def world(system: Custos) -> Custos:
    load_org(system, APPROVALS_WORLD)
    system.ingest(logins("user-42") + logins("user-1", net="203.0.113"), "logins.jsonl")
    request_id = ask(system, reason="abuse report <script>alert(1)</script>")
    system.approvals.approve(request_id, "emp-3002", "checked")
    system.approvals.approve(request_id, "emp-4001", "proportionate")
    system.read(
        AccessRequest(
            "emp-3001", "user-42", "ip_history", "trust_safety", ticket="T-10", precision="precise"
        )
    )
    system.read(
        AccessRequest("emp-2001", "user-42", "ip_history", "internal_investigation", ticket="T-7")
    )  # source protection: denied, still reported
    system.read(AccessRequest("emp-3001", "user-1", "profile", "trust_safety", ticket="T-11"))
    return system


def report_of(system: Custos, names: bool = False) -> dict[str, Any]:
    return system.subject_report("user-42", names=names, viewer=Viewer("test"))


def test_the_report_holds_exactly_the_subjects_accesses(world: Custos) -> None:
    report = report_of(world)
    accesses = report["accesses"]
    assert {a["purpose"] for a in accesses} == {"trust_safety", "internal_investigation"}
    assert all(
        json.loads(base64.b64decode(e["entry"]))["subject"] == "user-42" for e in report["entries"]
    )
    denied = [a for a in accesses if a["decision"] == "deny"]
    assert denied[0]["role"] == "internal_audit"
    precise = [a for a in accesses if a["precision"] == "precise" and a["decision"] == "allow"]
    assert (precise[0]["records"], precise[0]["grant"] is not None) == (3, True)
    # Staff by role and team only, unless names are allowed.
    text = json.dumps(report["accesses"]) + json.dumps(report["approvals"])
    assert "emp-3001" not in text
    assert "emp-4001" not in text
    named = report_of(world, names=True)
    assert {a.get("principal") for a in named["accesses"]} == {"emp-3001", "emp-2001"}
    assert verify_report(json.dumps(named)).ok


def test_every_proof_verifies_with_an_independent_verifier(world: Custos) -> None:
    report = report_of(world)
    lines = report["log"]["checkpoint"].split("\n")
    size, root = int(lines[1]), base64.b64decode(lines[2])
    assert report["entries"]
    for item in report["entries"]:
        raw = base64.b64decode(item["entry"])
        hashes = [base64.b64decode(h) for h in item["proof"]["hashes"]]
        assert rfc9162.verify_inclusion(rfc9162.leaf(raw), item["index"], size, hashes, root)
    check = verify_report(json.dumps(report), trusted_key=world.ledger.signer.verifier_key())
    assert (check.ok, check.key_source) == (True, "given")


def tampered(report: dict[str, Any], how: str) -> dict[str, Any]:
    doc = copy.deepcopy(report)
    if how == "entry byte":
        raw = bytearray(base64.b64decode(doc["entries"][0]["entry"]))
        raw[raw.index(b"ip_history")] ^= 1
        doc["entries"][0]["entry"] = base64.b64encode(bytes(raw)).decode()
    elif how == "row altered":
        doc["accesses"][0]["decision"] = (
            "allow" if doc["accesses"][0]["decision"] != "allow" else "deny"
        )
    elif how == "row dropped":
        doc["accesses"].pop()
    elif how == "row added":
        doc["accesses"].append({**doc["accesses"][0], "entry": 10_000})
    elif how == "entry dropped":
        doc["entries"].pop(0)
    elif how == "proof flipped":
        hashes = doc["entries"][-1]["proof"]["hashes"]
        first = bytearray(base64.b64decode(hashes[0]))
        first[0] ^= 0xFF
        hashes[0] = base64.b64encode(bytes(first)).decode()
    elif how == "approval altered":
        doc["approvals"][0]["reason"] = "routine"
    return doc


@pytest.mark.parametrize(
    "how",
    [
        "entry byte",
        "row altered",
        "row dropped",
        "row added",
        "entry dropped",
        "proof flipped",
        "approval altered",
    ],
)
def test_any_change_fails_verification_naming_the_entry(world: Custos, how: str) -> None:
    report = report_of(world)
    assert verify_report(json.dumps(report)).ok
    check = verify_report(json.dumps(tampered(report, how)))
    assert not check.ok, how
    assert check.first_bad_index is not None


def test_a_checkpoint_from_another_key_fails(world: Custos, tmp_path: Path) -> None:
    report = report_of(world)
    other = NoteSigner(report["log"]["origin"], Ed25519PrivateKey.generate())
    forged = copy.deepcopy(report)
    body = report["log"]["checkpoint"].split("\n\n")[0] + "\n"
    forged["log"]["checkpoint"] = body + "\n" + other.sign_line(body)
    forged["log"]["verifier_key"] = other.verifier_key()
    # Self-consistent with its own key, but not with the log's real key.
    assert verify_report(json.dumps(forged)).ok
    check = verify_report(json.dumps(forged), trusted_key=world.ledger.signer.verifier_key())
    assert not check.ok
    assert "does not verify" in check.problems[0][1]


def test_html_escapes_everything(world: Custos) -> None:
    page = render_html(report_of(world))
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "Who accessed the data of user-42" in page
    assert "not from the ledger" not in page
    # Names are the directory's, not the log's: a named page says the proofs do not cover them.
    assert "not from the ledger" in render_html(report_of(world, names=True))


def test_the_index_catches_up_incrementally(world: Custos) -> None:
    world.subject_index.catch_up()
    assert world.subject_index.catch_up() == 0
    world.read(TS_READ)
    assert world.subject_index.catch_up() == 2  # the decision and its release
    report = report_of(world)  # logs its own request first, then looks the entries up
    assert len(world.subject_index.entries_of("user-42")) == len(report["entries"])


def test_a_report_holds_the_record_of_its_own_request(world: Custos) -> None:
    viewer = Viewer("api", "emp-4001", ("privacy_officer",))
    report = world.subject_report("user-42", names=True, viewer=viewer)
    last = json.loads(base64.b64decode(report["entries"][-1]["entry"]))
    assert {k: last[k] for k in ("type", "subject", "principal", "roles", "names", "source")} == {
        "type": "report_view",
        "subject": "user-42",
        "principal": "emp-4001",
        "roles": ["privacy_officer"],
        "names": True,
        "source": "api",
    }
    assert verify_report(json.dumps(report)).ok
    size = world.ledger.size()
    with pytest.raises(UnknownSubject):
        world.subject_report("user-404", viewer=viewer)
    assert world.ledger.size() == size  # nothing logged for a subject that does not exist


def test_a_report_holds_every_entry_its_checkpoint_covers_while_reads_go_on(
    world: Custos,
) -> None:
    # Reads about the subject keep landing while reports are built: whatever the checkpoint
    # covers must be in the report, or the report would prove an incomplete history.
    stop = threading.Event()

    def keep_reading() -> None:
        for _ in range(60):
            if stop.is_set():
                return
            world.read(TS_READ)

    reader = threading.Thread(target=keep_reading)
    reader.start()
    try:
        while reader.is_alive():
            report = report_of(world)
            size = int(report["log"]["checkpoint"].split("\n")[1])
            about = [
                idx
                for idx in range(size)
                if json.loads(world.ledger.entry(idx)).get("subject") == "user-42"
            ]
            assert [e["index"] for e in report["entries"]] == about
    finally:
        stop.set()
        reader.join()
    assert verify_report(json.dumps(report)).ok


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=20,
        ).map(json.dumps),
    )
)
def test_malformed_documents_are_clear_errors(text: str) -> None:
    try:
        check = verify_report(text)
    except InvalidInput as exc:
        message = exc.message
    else:
        message = ""
        assert not check.ok
    assert "Traceback" not in message


def test_the_cli_writes_and_verifies_reports(world: Custos, home: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CUSTOS_HOME": str(home)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "custos", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    out = tmp_path / "report.json"
    made = run("report", "subject", "user-42", "--out", str(out))
    assert made.returncode == 0, made.stderr
    good = run("report", "verify", str(out), "--key", world.ledger.signer.verifier_key(), "--json")
    assert good.returncode == 0, good.stdout
    assert json.loads(good.stdout)["ok"] is True
    doc = json.loads(out.read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tampered(doc, "row altered")))
    failed = run("report", "verify", str(bad))
    assert failed.returncode == 6
    assert "does not verify" in failed.stderr
    assert "first bad entry" in failed.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{nope")
    broken = run("report", "verify", str(garbage))
    assert broken.returncode == 2
    assert "Traceback" not in broken.stderr
    html = run("report", "subject", "user-42", "--format", "html")
    assert "<html" in html.stdout
    unknown = run("report", "subject", "user-404")
    assert unknown.returncode == 3


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*prefix, index)))
    return found


@pytest.fixture(scope="module")
def sample_report(module_system: Custos) -> dict[str, Any]:
    load_org(module_system, APPROVALS_WORLD)
    module_system.ingest(logins("user-42"), "logins.jsonl")
    module_system.read(TS_READ)
    module_system.read(
        AccessRequest("emp-2001", "user-42", "ip_history", "internal_investigation", ticket="T-7")
    )
    return module_system.subject_report("user-42", viewer=Viewer("test"))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_mutation_is_caught_or_refused_never_a_crash(
    sample_report: dict[str, Any], data: st.DataObject
) -> None:
    doc = copy.deepcopy(sample_report)
    path = data.draw(st.sampled_from(_paths(doc)))
    value = data.draw(JSON_VALUES)
    target = doc
    for key in path[:-1]:
        target = target[key]
    before = target[path[-1]]
    target[path[-1]] = value
    try:
        check = verify_report(json.dumps(doc))
    except InvalidInput:
        return
    proven = path[0] in ("entries", "accesses", "approvals") or path[:2] == ("log", "checkpoint")
    if proven and value != before:
        assert not check.ok, (path, value)


def test_rows_read_decisions_and_releases_as_typed_entries() -> None:
    decision = {
        "type": "decision",
        "id": "dec-1",
        "time": "2026-01-05T10:00:00Z",
        "principal": "emp-3001",
        "role": "trust_safety",
        "team": "ts",
        "action": "read",
        "subject": "user-42",
        "category": "ip_history",
        "purpose": "trust_safety",
        "decision": "allow",
        "precision": "coarse",
    }
    release = {
        **{k: decision[k] for k in ("time", "principal", "action", "subject", "category")},
        **{k: decision[k] for k in ("purpose", "decision", "precision")},
        "type": "release",
        "id": "dec-1:release",
        "decision_id": "dec-1",
        "records": 3,
    }
    # Malformed (no id; no rule): the decision cannot be read as one, the approval step
    # is still shown as stored.
    broken = {k: v for k, v in decision.items() if k != "id"}
    refused = {"type": "approval_refused", "time": "t", "approver": "emp-3001", "verdict": "x"}
    rows = rows_from_entries([(0, decision), (1, release), (2, broken), (3, refused)], names=False)
    (access,) = rows["accesses"]
    assert (access["entry"], access["records"], access["release_entry"]) == (0, 3, 1)
    assert access["break_glass"] is False
    assert "principal" not in access
    assert rows["approvals"] == [
        {"entry": 3, "type": "approval_refused", "time": "t", "verdict": "x"}
    ]
    named = rows_from_entries([(0, decision)], names=True)["accesses"][0]
    assert named["principal"] == "emp-3001"
