"""docs/formats.md: every example parses with custos's own parsers, and the ledger examples
(entries, proofs, checkpoint, key) verify against each other, so the page cannot drift."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from scim2_models import Context

from custos.access import Custos, Viewer
from custos.detect.engine import Finding
from custos.detect.events import EventStore, parse_event
from custos.detect.importers import parse_mapping
from custos.directory import import_lines, parse_text
from custos.feeds.scim import ScimMapping, parse_user, principal_of
from custos.feeds.tickets import HookMapping
from custos.feeds.tickets import parse as parse_hook
from custos.ledger.hashing import canonical_json, leaf_hash, node_hash
from custos.ledger.notes import NoteVerifier, open_checkpoint
from custos.ledger.tree import verify_consistency, verify_inclusion
from custos.policy import AccessRequest, load_pack
from custos.policy.pack import parse_vocabulary
from custos.sql import BUILTIN_COARSE, parse_data_map
from custos.vocabulary import CATEGORIES, KNOWN_ROLES, PROTECTED_FLAGS, PURPOSES

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ROOT / "docs" / "formats.md"


def examples() -> dict[str, str]:
    """Each ``<!-- example: NAME -->`` block of formats.md, by name."""
    text = FORMATS.read_text(encoding="utf-8")
    found = re.findall(r"<!-- example: ([a-z-]+) -->\n```[a-z]*\n(.*?)```", text, re.S)
    assert len(found) == len({name for name, _ in found})
    return dict(found)


def json_lines(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip()]


def test_the_docs_refer_to_formats_md_not_to_a_file_outside_the_repository() -> None:
    assert set(examples()) == {
        "directory", "directory-lines", "events", "records", "alert", "ledger", "inclusion",
        "consistency",
        "checkpoint", "verifier-key", "report-fields", "sources", "ocsf-activity",
        "ocsf-finding", "pgaudit-mapping", "cloudtrail-mapping", "scim-user", "hook-generic",
        "hook-jira", "hook-servicenow", "vocabulary", "telemetry-config", "otlp-headers",
        "sql-tls",
    }  # fmt: skip
    for path in [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("src/**/*.py")]:
        assert "shared/DESIGN.md" not in path.read_text(encoding="utf-8"), path


def test_directory_events_and_records_load_into_a_real_home(system: Custos) -> None:
    given = examples()
    document = parse_text(given["directory"], "formats.md")
    # `linked` is read whether the directory keeps it as a field or (before it knew the
    # field) among the kept unknown fields.
    linked = [
        list(getattr(s, "linked", ()) or s.extra.get("linked", [])) for s in document.subjects
    ]
    assert ["user-42"] in linked
    report = system.directory.merge(document, source="formats.md")
    assert report.added == {"principals": 3, "subjects": 3, "tickets": 1}
    events = EventStore(system.db).import_lines(json_lines(given["events"]), "formats.md")
    assert (events.added, events.rejected) == (2, 0)
    records = system.ingest(json_lines(given["records"]), "formats.md")
    # A login with a user agent is two records (ip_history and device); a `record` is any
    # other category of the pack.
    assert (records.added, records.rejected) == (5, 0)
    assert set(records.categories) == {"ip_history", "device", "location", "contact", "payment"}


@pytest.mark.parametrize("log_format", ["pgaudit", "cloudtrail"])
def test_the_audit_log_mappings_parse(log_format: str) -> None:
    mapping = parse_mapping(examples()[f"{log_format}-mapping"], "formats.md")
    assert mapping.format == log_format
    assert mapping.principals
    assert mapping.tables
    assert bool(mapping.resources) == (log_format == "cloudtrail")


def test_the_feed_examples_parse_with_the_feeds_parsers() -> None:
    given = examples()
    user = parse_user(
        json.loads(given["scim-user"]), Context.RESOURCE_CREATION_REQUEST, "https://x/scim/v2"
    )
    person = principal_of(user, ScimMapping(), current=None)
    assert (person.id, person.role, person.team, person.manager, person.country) == (
        "emp-1001",
        "support_agent",
        "support",
        "emp-1000",
        "US",
    )
    mappings = {
        "jira": HookMapping(kind="support", subject_field="customfield_10042"),
        "servicenow": HookMapping(kind="support"),
    }
    for kind in ("generic", "jira", "servicenow"):
        change = parse_hook(kind, json.loads(given[f"hook-{kind}"]), mappings)
        assert change.ticket is not None, kind
        assert (change.ticket.subject, change.ticket.assignee) == ("user-42", "emp-1001"), kind
        assert change.ticket.status == "closed", kind
        assert change.ticket.closed is not None, kind
        assert change.ticket.closed.isoformat() == "2026-01-06T16:00:00+00:00", kind


def test_the_directory_lines_import_as_the_directory_file_loads(
    system: Custos, tmp_path: Path
) -> None:
    given = examples()
    lines = tmp_path / "directory.jsonl"
    lines.write_text(given["directory-lines"], encoding="utf-8")
    report = import_lines(system.directory, lines)
    assert report.added == {"principals": 3, "subjects": 3, "tickets": 1}
    # The same directory as the file example: merging that one changes nothing.
    again = system.directory.merge(parse_text(given["directory"], "formats.md"))
    assert again.total_changes == 0


def test_the_alert_example_has_an_alerts_fields() -> None:
    alert = json.loads(examples()["alert"])
    stored = {f.name for f in dataclasses.fields(Finding)} & set(alert)
    assert set(alert) == {"id", "case"} | stored
    assert {"rule", "severity", "principals", "events", "explanation"} <= stored
    assert alert["severity"] in ("low", "medium", "high", "critical")


def test_the_ledger_examples_verify_against_each_other() -> None:
    given = examples()
    entries = [line.encode() for line in json_lines(given["ledger"])]
    leaves = []
    for raw in entries:
        entry: dict[str, Any] = json.loads(raw)
        assert canonical_json(entry) == raw  # exactly the bytes custos would write
        assert len(base64.b64decode(entry["salt"])) == 16
        if entry["type"] == "decision":
            # A decision entry carries the access-event fields (the rest kept as extras).
            assert parse_event(entry).id == entry["id"]
        leaves.append(leaf_hash(raw))
    verifier = NoteVerifier.parse(given["verifier-key"])
    checkpoint, _ = open_checkpoint(given["checkpoint"], verifier)
    assert checkpoint.size == len(entries) == 3
    inclusion = json.loads(given["inclusion"])
    hashes = [base64.b64decode(h) for h in inclusion["hashes"]]
    assert verify_inclusion(
        leaves[inclusion["index"]], inclusion["index"], inclusion["size"], hashes, checkpoint.root
    )
    consistency = json.loads(given["consistency"])
    assert (consistency["old_size"], consistency["new_size"]) == (2, 3)
    old_root = node_hash(leaves[0], leaves[1])
    proof = [base64.b64decode(h) for h in consistency["hashes"]]
    assert verify_consistency(2, 3, proof, old_root, checkpoint.root)


def test_the_report_example_has_a_real_reports_fields(system: Custos) -> None:
    system.directory.merge(parse_text(examples()["directory"], "formats.md"), source="f")
    system.decide(AccessRequest("emp-1001", "user-42", "profile", "support", ticket="T-9001"))
    real = system.subject_report("user-42", viewer=Viewer("cli"))
    shown = json.loads(examples()["report-fields"])
    assert set(shown) == set(real)
    assert set(shown["log"]) == set(real["log"])
    assert set(shown["entries"][0]) == set(real["entries"][0])
    assert set(shown["entries"][0]["proof"]) == set(real["entries"][0]["proof"])
    assert set(shown["accesses"][0]) == set(real["accesses"][0])
    assert shown["format"] == real["format"]


@pytest.mark.parametrize(
    ("heading", "words"),
    [
        ("Roles the default policy pack knows", KNOWN_ROLES),
        ("Protected flags", PROTECTED_FLAGS),
        ("Purposes (and ticket kinds)", PURPOSES),
        ("Data categories", CATEGORIES),
    ],
)
def test_the_words_are_the_vocabularys(heading: str, words: frozenset[str]) -> None:
    text = FORMATS.read_text(encoding="utf-8").split("## Words", 1)[1]
    item = text.split(f"- {heading}:", 1)[1].split("\n- ", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", item)) == words


def test_the_data_map_example_parses() -> None:
    data_map = parse_data_map(examples()["sources"], "formats.md")
    logins = data_map.source("app").tables["public.logins"]
    assert logins.columns["user_id"].is_subject
    assert logins.columns["ip"].coarse == BUILTIN_COARSE["ip_prefix"]
    assert data_map.source("lake").tables["logins"].file == "data/logins/*.parquet"


def test_the_ocsf_examples_are_valid_and_shaped_as_custos_makes_them(system: Custos) -> None:
    from custos.export import problems
    from tests.export.conftest import populate
    from tests.export.test_ocsf import exported

    populate(system)
    made = exported(system)
    decision = next(e for e in made if e["unmapped"]["custos"].get("entry_type") == "decision")
    alert = next(e for e in made if "alert_id" in e["unmapped"]["custos"])
    for name, real in (("ocsf-activity", decision), ("ocsf-finding", alert)):
        example = json.loads(examples()[name])
        assert example["class_uid"] == real["class_uid"]
        assert problems(example) == []
        assert set(example) - {"status_detail"} == set(real) - {"status_detail"}
        assert set(example["metadata"]) - {"sequence"} == set(real["metadata"]) - {"sequence"}


def test_the_vocabulary_example_is_a_valid_vocabulary() -> None:
    words = parse_vocabulary(examples()["vocabulary"], "formats.md")
    assert "hr_investigation" in words.purposes
    assert "health" in words.categories
    default = load_pack().vocabulary
    assert set(words.categories) == set(default.categories) | {"health"}


def test_the_otlp_examples_are_settings_custos_takes(tmp_path: Path) -> None:
    import tomllib

    from custos import telemetry
    from custos.config import check_known_keys

    config = tomllib.loads(examples()["telemetry-config"])
    check_known_keys(config, tmp_path / "config.toml")
    (tmp_path / "keys").mkdir()
    headers = tmp_path / "keys" / "otlp.headers"
    headers.write_text(examples()["otlp-headers"], encoding="utf-8")
    headers.chmod(0o600)
    settings = telemetry.read_settings(config["telemetry"], tmp_path, "config.toml", env={})
    assert settings.service_name == "custos-prod"
    assert settings.otlp is not None
    assert settings.otlp.endpoint == "https://otel-collector.internal:4318/v1/traces"
    assert settings.otlp.timeout == 10
    assert settings.otlp.headers == {
        "x-honeycomb-team": "hcaik_01hexample",
        "authorization": "Bearer abc123",
    }


def test_the_sql_tls_example_opens_a_tls_front(system: Custos, home: Path) -> None:
    from custos.config import load_settings
    from custos.wire import SqlFront, WireSettings, token_authenticator
    from custos.wire.tls import check_exposure
    from tests.wire.certs import Authority

    (home / "config.toml").write_text(examples()["sql-tls"], encoding="utf-8")
    settings = WireSettings.from_settings(load_settings(home))
    assert settings.tls_cert == home.resolve() / "tls/sql-front.pem"
    ca = Authority(home / "tls")
    issued = ca.issue("sql-front")
    assert (issued.cert, issued.key) == (settings.tls_cert, settings.tls_key)
    clients = Authority(home / "tls", "analyst laptops ca")
    assert clients.path == settings.tls_client_ca
    front = SqlFront(system, token_authenticator(system.accounts), settings)
    assert front.tls is not None
    check_exposure(["0.0.0.0"], tls=True, allow_cleartext=False, origin="x")  # noqa: S104
