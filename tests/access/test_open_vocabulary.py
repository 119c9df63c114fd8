"""A pack's own words, end to end, through every path that takes a category, a purpose or a
protected flag: retention in config.toml, the vault, decisions and reads, the transparency
report, tickets over REST and webhooks, bulk directory lines, events and audit-log imports,
detection, policy test tables and the dashboard — and what happens when a pack is replaced by
one that drops words still in use.

The pack is the shipped one plus the purpose ``hr_investigation``, the category ``health``,
the protected flag ``whistleblower`` and the role ``hr_investigator``
(:func:`tests.policy.test_vocabulary_pack.custom_pack`), installed in a real home; the same
requests against the shipped pack are refused, and a misspelt word is refused everywhere with
the nearest word.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from custos.access import Custos, Viewer
from custos.directory import read_directory_file
from custos.errors import ConfigurationError, InvalidInput, ValidationFailed, VocabularyInUse
from custos.feeds.tickets import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from custos.policy import AccessRequest
from custos.policy.pack import DEFAULT_PACK, VOCABULARY_FILE
from custos.reports import render_html
from custos.store.directory import PolicyVersionRow
from tests.api.conftest import PASSWORD, Service, run_service
from tests.factories import hr_source, write_org
from tests.policy.test_vocabulary_pack import HR_POLICY, HR_WORLD, custom_pack

T0 = datetime(2026, 1, 5, 10, tzinfo=UTC)  # a Monday: its week's data key ends 2026-01-12


@dataclass(frozen=True)
class Ran:
    exit_code: int
    output: str


def cli(*args: str) -> Ran:
    """``custos ARGS`` as a person runs it (a real process: real exit codes and messages),
    on the home and database of ``$CUSTOS_HOME`` and ``$CUSTOS_DATABASE_URL``."""
    done = subprocess.run(
        [sys.executable, "-m", "custos", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=180,
        check=False,
    )
    return Ran(done.returncode, done.stdout + done.stderr)


def hr_home(home: Path, tmp_path: Path, config: str = "") -> None:
    """An initialised home whose active pack is the HR pack, with the HR directory."""
    assert cli("init").exit_code == 0
    shutil.rmtree(home / "policies")
    custom_pack(home / "policies")
    (home / "config.toml").write_text(config, encoding="utf-8")
    loaded = cli("org", "load", str(write_org(tmp_path / "hr.yaml", HR_WORLD)))
    assert loaded.exit_code == 0, loaded.output


def health(record_id: str, at: datetime, subject: str = "user-5", **fields: Any) -> str:
    body = {
        "id": record_id,
        "kind": "record",
        "category": "health",
        "subject": subject,
        "time": at.isoformat().replace("+00:00", "Z"),
        "precise": {"diagnosis": f"note {record_id}"},
        "coarse": {"area": "respiratory"},
        **fields,
    }
    return json.dumps(body)


def hr_read(system: Custos, precision: str = "precise") -> Any:
    return system.read(
        AccessRequest(
            "emp-7001", "user-5", "health", "hr_investigation", ticket="HR-1", precision=precision
        ),
        source="test",
    )


def test_a_pack_category_is_kept_read_reported_and_shredded(home: Path, tmp_path: Path) -> None:
    hr_home(home, tmp_path, "[vault.retention_days]\nhealth = 30\n")
    with Custos.open(home) as system:
        assert system.vault.retention_days["health"] == 30
        # Ingest: the category is the pack's, its coarse form the ingester's.
        report = system.ingest(
            [health("h-1", T0), health("h-2", T0 + timedelta(days=15))],
            "hr-records.jsonl",
            now=T0 + timedelta(days=16),
        )
        assert (report.added, report.categories, report.expired) == (2, {"health": 2}, 0)
        stored = system.db.session
        with stored() as session:
            raw = session.execute(sa.text("SELECT ciphertext, coarse FROM vault_records")).all()
        assert all(b"note" not in bytes(ciphertext) for ciphertext, _ in raw)
        # A decision and a read, precise as the HR policy allows, logged first.
        read = hr_read(system)
        assert read.decision.outcome == "allow", read.decision.explanation
        assert [(r["id"], r["diagnosis"], r["area"]) for r in read.records] == [
            ("h-1", "note h-1", "respiratory"),
            ("h-2", "note h-2", "respiratory"),
        ]
        coarse = hr_read(system, "coarse")
        assert [set(r) for r in coarse.records] == [{"id", "time", "area"}] * 2
        # The transparency report names the pack's words as they are.
        shown = system.subject_report("user-5", viewer=Viewer("cli"))
        rows = [(a["category"], a["purpose"]) for a in shown["accesses"]]
        assert rows == [("health", "hr_investigation")] * 2
        page = render_html(shown)
        assert "<td>hr_investigation</td><td>read health</td>" in page
        # Retention: 30 days after h-1's week ended its key is destroyed, h-2's is not.
        shredded = system.shred(now=datetime(2026, 2, 12, tzinfo=UTC))
        assert (shredded.categories, shredded.records) == ({"health": 1}, 1)
        after = hr_read(system)
        assert after.shredded == 1
        assert after.records[0] == {
            "id": "h-1",
            "time": "2026-01-05T10:00:00Z",
            "area": "respiratory",
            "shredded": True,
        }
        assert after.records[1]["diagnosis"] == "note h-2"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (health("h-9", T0, category="helth"),
         "line 1: field 'category': unknown category 'helth' (did you mean 'health'?"),
        (health("h-9", T0, category="ip_history"),
         "line 1: field 'category': ip_history records come as kind login"),
        (health("h-9", T0, precise={}), "line 1: field 'precise': Dictionary should have"),
        (health("h-9", T0, coarse={"time": "x"}),
         "line 1: field 'coarse': may not use the key(s) time"),
    ],
)  # fmt: skip
def test_a_record_outside_the_pack_is_refused_by_line_and_field(
    home: Path, tmp_path: Path, line: str, problem: str
) -> None:
    hr_home(home, tmp_path)
    path = tmp_path / "records.jsonl"
    path.write_text(line + "\n" + health("h-8", T0) + "\n", encoding="utf-8")
    result = cli("vault", "ingest", str(path))
    assert result.exit_code == 2, result.output
    assert problem in result.output
    assert "note h-" not in result.output  # never a value
    with Custos.open(home) as system, system.db.session() as session:
        assert session.scalar(sa.text("SELECT count(*) FROM vault_records")) == 0


def test_the_shipped_pack_refuses_the_category_and_its_retention(home: Path) -> None:
    assert cli("init").exit_code == 0
    with Custos.open(home) as system:
        with pytest.raises(ValidationFailed) as refused:
            system.ingest([health("h-1", T0)], "hr.jsonl")
        assert "unknown category 'health'" in refused.value.problems[0]
    (home / "config.toml").write_text("[vault.retention_days]\nhealth = 30\n", encoding="utf-8")
    result = cli("vault", "shred")
    assert result.exit_code == 1
    assert f"{home / 'config.toml'}: [vault.retention_days] unknown category 'health'" in (
        " ".join(result.output.split())
    )


PGAUDIT_MAPPING = """
format: pgaudit
purpose: hr_investigation
log_line_prefix: "%m [%p] %q%u@%d "
principals:
  - {role: hr_ro, principal: emp-7001}
tables:
  - {table: public.notes, category: health, subject_column: user_id, precision: coarse}
"""
PGAUDIT_LINE = (
    "2026-01-05 10:03:00.123 UTC [77] hr_ro@hr LOG:  AUDIT: SESSION,1,1,READ,SELECT,TABLE,"
    "public.notes,\"SELECT * FROM public.notes WHERE user_id = 'user-9'\",<none>"
)


def event(event_id: str, **fields: Any) -> str:
    body = {
        "id": event_id,
        "time": "2026-01-05T10:03:00Z",
        "principal": "emp-7001",
        "action": "read",
        "subject": "user-9",
        "category": "health",
        "purpose": "hr_investigation",
        "decision": "allow",
        "precision": "coarse",
        "records": 3,
        **fields,
    }
    return json.dumps(body)


def test_feeds_imports_detection_tables_and_the_dashboard_take_the_packs_words(
    home: Path, tmp_path: Path
) -> None:
    sensitive = '[detect]\nsensitive_categories = ["credentials", "messages", "health"]\n'
    hr_home(home, tmp_path, sensitive)
    # Directory lines (`custos org import`): the pack's flag and ticket kind, fast path.
    lines = tmp_path / "more.jsonl"
    more = [
        {"subject": {"id": "user-7", "jurisdiction": "US", "protected": ["whistleblower"]}},
        {"subject": {"id": "user-9", "jurisdiction": "US", "protected": ["whistleblower"]}},
        {"ticket": {"id": "HR-7", "kind": "hr_investigation", "subject": "user-7",
                    "assignee": "emp-7001", "status": "open"}},
    ]  # fmt: skip
    lines.write_text("".join(json.dumps(m) + "\n" for m in more), encoding="utf-8")
    imported = cli("org", "import", str(lines))
    assert imported.exit_code == 0, imported.output
    # A misspelt flag is refused, by line, with nothing loaded (it used to get in unchecked
    # through the slow path, leaving the subject unprotected).
    lines.write_text(
        json.dumps({"subject": {"id": "user-8", "jurisdiction": "US", "protected":
                    ["whistleblowr"], "extra_field": 1}}) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    refused = cli("org", "import", str(lines))
    assert refused.exit_code == 2
    assert "field 'protected.0': unknown protected flag 'whistleblowr' (did you mean" in (
        refused.output
    )
    # Access events (`custos detect import`): the pack's words; a misspelt one refuses all.
    events = tmp_path / "events.jsonl"
    events.write_text(event("ev-h1") + "\n" + event("ev-h2", purpose="hr_invest") + "\n")
    bad = cli("events", "import", str(events))
    assert bad.exit_code == 2
    assert "line 2: field 'purpose': unknown purpose 'hr_invest'" in bad.output
    events.write_text(event("ev-h1") + "\n")
    good = cli("events", "import", str(events))
    assert good.exit_code == 0, good.output
    # A pgaudit log through a mapping that names the pack's category and purpose.
    mapping, log = tmp_path / "hr-map.yaml", tmp_path / "hr.log"
    mapping.write_text(PGAUDIT_MAPPING, encoding="utf-8")
    log.write_text(PGAUDIT_LINE + "\n", encoding="utf-8")
    audit = cli("events", "import", str(log), "--format", "pgaudit", "--mapping", str(mapping))
    assert audit.exit_code == 0, audit.output
    mapping.write_text(PGAUDIT_MAPPING.replace("category: health", "category: helth"))
    audit = cli("events", "import", str(log), "--format", "pgaudit", "--mapping", str(mapping))
    assert audit.exit_code == 2
    assert "field 'tables.0.category': unknown category 'helth'" in audit.output
    with Custos.open(home) as system:
        stored = system.events.search(subject="user-9", limit=10)
        assert {(e.category, e.purpose) for e in stored} == {("health", "hr_investigation")}
        assert len(stored) == 2
        # Detection: a whistleblower reached with no ticket about them is a protected
        # subject reached (detection watched only the shipped flags before).
        run = system.detect()
        found = {a.rule: a for a in run.alerts}
        assert "protected_subject_access" in found, list(found)
        alert = found["protected_subject_access"]
        assert "(whistleblower)" in alert.explanation
        assert "(health)" in alert.explanation
        # health is configured sensitive: its unexplained use alerts, and reaching a
        # protected person's health data is as grave as their messages.
        assert alert.severity == "critical"
        assert "sensitive_category_access" in found
    # A misspelt category in [detect] would match nothing: refused, naming it.
    (home / "config.toml").write_text(sensitive.replace('"health"', '"helth"'), "utf-8")
    with Custos.open(home) as system, pytest.raises(ConfigurationError) as refused:
        system.detect()
    assert refused.value.message == (
        f"{home / 'config.toml'} [detect]: sensitive_categories: unknown category 'helth' "
        "(did you mean 'health'? valid: profile, contact, ip_history, location, device, "
        "messages, content, social_graph, payment, credentials, health)"
    )
    # A policy test table in the pack's words, run against the home's pack.
    table = tmp_path / "cases.yaml"
    table.write_text(
        json.dumps(
            {
                "now": "2026-01-05T12:00:00Z",
                "directory": HR_WORLD,
                "cases": [
                    {"name": "HR reads health for an HR investigation",
                     "request": {"principal": "emp-7001", "subject": "user-5",
                                 "category": "health", "purpose": "hr_investigation",
                                 "ticket": "HR-1"},
                     "expect": {"decision": "allow", "precision": "precise"}},
                    {"name": "a whistleblower is shielded",
                     "request": {"principal": "emp-7001", "subject": "user-6",
                                 "category": "health", "purpose": "hr_investigation",
                                 "ticket": "HR-2"},
                     "expect": {"decision": "deny", "reason": "whistleblower-shield"}},
                ],
            }
        ),
        encoding="utf-8",
    )  # fmt: skip
    tested = cli("policy", "test", str(table))
    assert tested.exit_code == 0, tested.output
    assert "2 passed, 0 failed" in tested.output


SECRET = b"a shared secret for the ticket hooks"


def test_tickets_over_rest_and_webhooks_and_the_dashboard_take_the_packs_words(
    home: Path, tmp_path: Path
) -> None:
    hr_home(home, tmp_path)
    hr_source(home)
    with Custos.open(home) as system:
        (system.settings.keys_dir / "hooks.secret").write_bytes(SECRET)
        _, feed = system.accounts.create_token("hr-feed", ["provisioner"], None)
        _, tool = system.accounts.create_token("hr-tool", ["tool"], "emp-7001")
        system.accounts.add("hana", PASSWORD, ["investigator"], "emp-7001")
        for url, api in run_service(system):
            service = Service(system, url, api)
            ticket = {"id": "HR-3", "kind": "hr_investigation", "subject": "user-5",
                      "assignee": "emp-7001", "status": "open"}  # fmt: skip
            with service.client(feed) as client:
                put = client.put("/v1/tickets/HR-3", json=ticket)
                assert put.status_code == 200, put.text
                typo = client.put(
                    "/v1/tickets/HR-5", json={**ticket, "id": "HR-5", "kind": "hr_investigaton"}
                )
                assert typo.status_code == 422
                assert "did you mean 'hr_investigation'" in typo.text
            payload = {"event": "upsert", "ticket": {**ticket, "id": "HR-4"}}
            body = json.dumps(payload).encode()
            stamp = str(int(time.time()))
            with service.client() as client:
                hook = client.post(
                    "/v1/hooks/tickets/generic",
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        TIMESTAMP_HEADER: stamp,
                        SIGNATURE_HEADER: sign(SECRET, stamp, body),
                    },
                )
            assert hook.status_code == 200, hook.text
            with service.client(tool) as client:
                for ticket_id in ("HR-3", "HR-4"):
                    check = client.post(
                        "/v1/check",
                        json={"subject": "user-5", "category": "health",
                              "purpose": "hr_investigation", "ticket": ticket_id},
                    )  # fmt: skip
                    assert check.json()["decision"] == "allow", check.text
            # The dashboard's SQL console offers the pack's purposes, and runs a query on the
            # data map's health column for one.
            browser = service.session("hana")
            page = browser.get("/sql")
            ran = browser.post(
                "/sql",
                data={"source": "hr", "purpose": "hr_investigation", "ticket": "HR-1",
                      "sql": "SELECT seen, diagnosis FROM notes WHERE user_id = 'user-5'"},
            )  # fmt: skip
            browser.close()
            assert page.status_code == 200
            assert "<option>hr_investigation</option>" in page.text
            assert ran.status_code == 200, ran.text
            assert "health: precise" in ran.text
            assert "flu" in ran.text


def test_a_pack_that_drops_words_in_use_is_not_activated(home: Path, tmp_path: Path) -> None:
    hr_home(home, tmp_path, "[vault.retention_days]\nhealth = 30\n")
    with Custos.open(home) as system:
        system.ingest([health("h-1", T0)], "hr.jsonl", now=T0)
        versions = _versions(system)
        size = system.ledger.size()
    # The shipped pack drops health (retention set, precise values held) and whistleblower.
    # `custos policy validate --pack` says so before the pack is put in place.
    checked = cli("policy", "validate", "--pack", str(DEFAULT_PACK), "--json")
    assert checked.exit_code == 4
    error = json.loads(checked.output)["error"]
    assert error["code"] == "vocabulary_in_use"
    assert "the policy pack lacks 3 word(s) this home uses" in error["message"]
    problems = error["problems"]
    assert problems == [
        f"category 'health': {home / 'config.toml'} [vault.retention_days] sets a "
        "retention for it, which would apply to nothing",
        "category 'health': the vault holds precise values under 1 data key(s) not yet "
        "shredded, which no read and no retention could name",
        "protected flag 'whistleblower': 1 subject(s) carry it, and would lose its protection",
    ]
    shutil.rmtree(home / "policies")
    shutil.copytree(Path(str(DEFAULT_PACK)), home / "policies")
    # Activating it: the retention is named first, as config.toml's (whatever else).
    with Custos.open(home) as system, pytest.raises(ConfigurationError) as named:
        _ = system.policy_pack
    assert named.value.message.startswith(
        f"{home / 'config.toml'}: [vault.retention_days] unknown category 'health' (valid: "
    )
    (home / "config.toml").write_text("", encoding="utf-8")
    with Custos.open(home) as system:
        with pytest.raises(VocabularyInUse) as refused:
            _ = system.policy_pack
        assert refused.value.problems == problems[1:]
        assert "keep the words in vocabulary.yaml" in (refused.value.hint or "")
        # Fail closed: nothing is decided, nothing ledgered, no version recorded.
        with pytest.raises(VocabularyInUse):
            system.decide(AccessRequest("emp-7001", "user-5", "profile", "support"))
        assert system.ledger.size() == size
        assert _versions(system) == versions
    # The CLI says so, listing each use.
    result = cli("check", "--principal", "emp-7001", "--subject", "user-5",
                 "--category", "profile", "--purpose", "support")  # fmt: skip
    assert result.exit_code == 4
    assert "the policy pack lacks 2 word(s) in use" in result.output
    assert "protected flag 'whistleblower'" in result.output
    # The HR pack and its retention back: everything works as before.
    shutil.rmtree(home / "policies")
    custom_pack(home / "policies")
    (home / "config.toml").write_text("[vault.retention_days]\nhealth = 30\n", "utf-8")
    with Custos.open(home) as system:
        assert hr_read(system).records[0]["diagnosis"] == "note h-1"
        # Once the data is shredded, the retention removed and nobody carries the flag, the
        # words may go.
        system.shred(now=T0 + timedelta(days=60))
        system.directory.remove_subject("user-6", "test", None)
    (home / "config.toml").write_text("", encoding="utf-8")
    shutil.rmtree(home / "policies")
    shutil.copytree(Path(str(DEFAULT_PACK)), home / "policies")
    with Custos.open(home) as system:
        assert "health" not in system.policy_pack.vocabulary.categories
        assert _versions(system) == versions  # the shipped pack was recorded at init


def test_a_flag_given_by_a_process_still_on_the_old_pack_is_caught(
    home: Path, tmp_path: Path
) -> None:
    """A service started under the old pack keeps it until restarted, and may give a subject
    a flag the new pack lacks after the new pack was checked: the check runs again whenever
    the directory moved since, so the next process refuses the new pack."""
    hr_home(home, tmp_path)
    with Custos.open(home) as old:  # a long-running service under the HR pack
        assert "whistleblower" in old.policy_pack.vocabulary.protected_flags
        old.directory.remove_subject("user-6", "test")
        # The HR pack without the whistleblower flag (and its policy) replaces it.
        words = home / "policies" / VOCABULARY_FILE
        words.write_text(
            words.read_text(encoding="utf-8").replace("- whistleblower\n", ""), "utf-8"
        )
        (home / "policies" / "60-hr.cedar").write_text(
            HR_POLICY.split('@id("whistleblower-shield")')[0], encoding="utf-8"
        )
        with Custos.open(home) as new:
            assert "whistleblower" not in new.policy_pack.vocabulary.protected_flags
        flagged = {"subjects": [{"id": "user-8", "jurisdiction": "US",
                                 "protected": ["whistleblower"]}]}  # fmt: skip
        old.directory.merge(
            read_directory_file(
                write_org(tmp_path / "late.yaml", flagged), old.policy_pack.vocabulary
            ),
            source="a feed of the old service",
        )
    with Custos.open(home) as restarted, pytest.raises(VocabularyInUse) as refused:
        _ = restarted.policy_pack
    assert refused.value.problems == [
        "protected flag 'whistleblower': 1 subject(s) carry it, and would lose its protection"
    ]


def test_a_pack_may_drop_a_word_nothing_uses(home: Path, tmp_path: Path) -> None:
    hr_home(home, tmp_path)
    words = home / "policies" / VOCABULARY_FILE
    text = words.read_text(encoding="utf-8")
    words.write_text(text.replace("- health\n", "- health\n- genetics\n"), encoding="utf-8")
    with Custos.open(home) as system:
        assert "genetics" in system.policy_pack.vocabulary.categories
    words.write_text(text, encoding="utf-8")
    with Custos.open(home) as system:
        assert "genetics" not in system.policy_pack.vocabulary.categories
        with pytest.raises(InvalidInput, match="unknown category 'genetics'"):
            system.decide(AccessRequest("emp-7001", "user-5", "genetics", "hr_investigation"))


def test_a_retention_typo_is_refused_naming_the_file_and_key(home: Path, tmp_path: Path) -> None:
    hr_home(home, tmp_path)
    (home / "config.toml").write_text("[vault.retention_days]\nhelth = 30\n", encoding="utf-8")
    with Custos.open(home) as system, pytest.raises(ConfigurationError) as refused:
        _ = system.vault
    assert refused.value.message == (
        f"{home / 'config.toml'}: [vault.retention_days] unknown category 'helth' (did you "
        "mean 'health'? valid: profile, contact, ip_history, location, device, messages, "
        "content, social_graph, payment, credentials, health)"
    )


def _versions(system: Custos) -> list[str]:
    with system.db.session() as session:
        return list(session.scalars(sa.select(PolicyVersionRow.digest).order_by("id")))
