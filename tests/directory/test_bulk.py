"""``custos org import``'s engine: directory lines imported fast, every row still ledgered.

Against real parts: real homes on SQLite (and PostgreSQL in that pass), the real ledger, the
real ``log verify`` projection. The fast path is held to ``org load``'s (``merge``): same
rows, same ledgered facts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custos.access import Custos
from custos.directory import bulk, import_lines, parse_text, plan_prune, write_lines
from custos.directory.files import PrincipalEntry, SubjectEntry, TicketEntry
from custos.errors import (
    InvalidInput,
    LedgerUnavailable,
    UnknownSubject,
    UnstorableValue,
    ValidationFailed,
)
from custos.ledger.entries import AuthorityFactsEntry, parse_bytes
from custos.ledger.hashing import canonical_json
from tests.conftest import fresh_database_url
from tests.factories import org

WORLD = org(
    principals=[
        {"id": "emp-1", "role": "support_agent", "groups": ["approvers", "approvers"]},
        {
            "id": "emp-2",
            "role": "privacy_officer",
            "manager": "emp-1",
            "role_since": "2026-01-05T08:00:00+01:00",
            "desk": "3F",
        },
        {"id": "emp-3", "role": "support_agent", "status": "terminated", "kind": "contractor"},
    ],
    subjects=[
        {"id": "user-1", "jurisdiction": "US", "handle": "@one"},
        {"id": "user-2", "jurisdiction": "DE", "protected": ["journalist", "minor"]},
        {"id": "user-3", "jurisdiction": "US", "employee": "emp-2", "linked": ["user-4"]},
        {"id": "user-4", "jurisdiction": "US", "tier": {"plan": "gold", "since": 2019}},
        {"id": "user-5", "jurisdiction": "FR", "linked": ["user-3"]},
    ],
    tickets=[
        {
            "id": "T-1",
            "kind": "support",
            "subject": "user-1",
            "assignee": "emp-1",
            "status": "open",
        },
        {
            "id": "T-2",
            "kind": "fraud",
            "subject": "user-2",
            "assignee": "emp-2",
            "status": "closed",
            "opened": "2026-03-01T10:00:00Z",
            "closed": "2026-03-02T10:00:00Z",
            "opened_by": "emp-1",
        },
    ],
)


def lines_file(path: Path, data: dict[str, Any]) -> Path:
    write_lines(path, data)
    return path


def directory_state(system: Custos) -> dict[str, Any]:
    """Every row as stored (domain values and extras), and the facts the ledger set per row."""
    projection = system.verify_authority(sample=0).projection
    facts = {
        f"{kind}:{key}": dict(value)
        for (kind, key), (_, value) in projection.latest.items()
        if kind in ("principal", "subject", "ticket")
    }
    return {
        "principals": [(p, p.extra) for p in system.directory.principals()],
        "subjects": [(s, s.extra) for s in system.directory.subjects()],
        "tickets": [(t, t.extra) for t in system.directory.tickets()],
        "facts": facts,
    }


def verified(system: Custos) -> list[str]:
    """What ``custos log verify`` finds wrong (nothing, when the home is consistent)."""
    report = system.verify_log()
    findings = system.verify_authority(sample=0).projection.findings
    return [*report.problems, *(str(f) for f in findings)]


@pytest.fixture
def other_system(tmp_path: Path, pg_database: str | None) -> Iterator[Custos]:
    """A second installation on its own database, for the old path."""
    with pytest.MonkeyPatch.context() as patch:
        url = fresh_database_url(pg_database)
        if url is None:
            patch.delenv("CUSTOS_DATABASE_URL", raising=False)
        else:
            patch.setenv("CUSTOS_DATABASE_URL", url)
        with Custos.init(tmp_path / "other-home") as opened:
            yield opened


def test_the_import_stores_and_ledgers_what_org_load_does(
    system: Custos, other_system: Custos, tmp_path: Path
) -> None:
    other_system.directory.merge(parse_text(json.dumps(WORLD), "w.json", as_json=True))
    report = import_lines(system.directory, lines_file(tmp_path / "w.jsonl", WORLD))
    assert report.added == {"principals": 3, "subjects": 5, "tickets": 2}
    assert directory_state(system) == directory_state(other_system)
    # Links are made symmetric and grouped, as merge does.
    assert system.directory.subject("user-4").linked == ("user-3",)
    assert system.directory.subject("user-4").link_group == "user-3"
    assert verified(system) == []


def test_importing_again_ledgers_and_writes_nothing(system: Custos, tmp_path: Path) -> None:
    path = lines_file(tmp_path / "w.jsonl", WORLD)
    import_lines(system.directory, path)
    size, version = system.ledger.size(), system.directory.version()
    report = import_lines(system.directory, path)
    assert report.added == report.changed == report.removed == dict.fromkeys(bulk.SECTIONS, 0)
    assert report.unchanged == {"principals": 3, "subjects": 5, "tickets": 2}
    assert (system.ledger.size(), system.directory.version()) == (size, version)


def test_a_change_is_ledgered_then_honoured(system: Custos, tmp_path: Path) -> None:
    import_lines(system.directory, lines_file(tmp_path / "w.jsonl", WORLD))
    changed = json.loads(json.dumps(WORLD))
    changed["subjects"][0]["protected"] = ["activist"]
    report = import_lines(system.directory, lines_file(tmp_path / "c.jsonl", changed))
    assert report.changed["subjects"] == 1
    subject = system.directory.subject("user-1")  # checked against its entry on load
    assert subject.protected == ("activist",)
    entry = parse_bytes(system.ledger.entry(subject.authority or -1))
    assert isinstance(entry, AuthorityFactsEntry)
    assert entry.rows[0]["protected"] == ["activist"]
    assert verified(system) == []


def test_an_import_over_an_org_load_changes_nothing(system: Custos, tmp_path: Path) -> None:
    system.directory.merge(parse_text(json.dumps(WORLD), "w.json", as_json=True))
    size = system.ledger.size()
    report = import_lines(system.directory, lines_file(tmp_path / "w.jsonl", WORLD))
    assert report.unchanged == {"principals": 3, "subjects": 5, "tickets": 2}
    assert system.ledger.size() == size


def test_bad_lines_are_reported_by_number_and_nothing_is_taken(
    system: Custos, tmp_path: Path
) -> None:
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"subject": {"id": "user-1", "jurisdiction": "US"}})
    path.write_text(
        "\n".join(
            [
                good,
                "",
                '{"subject": {"id": "user-2", "jurisdiction": "US"',
                json.dumps({"subjects": {"id": "user-3"}}),
                json.dumps({"subject": {"id": "user 4", "jurisdiction": "usa"}}),
                good,
                json.dumps({"ticket": {"id": "T-1", "kind": "support", "subject": "user-1",
                                       "assignee": "emp-404", "status": "open"}}),
                json.dumps({"subject": {"id": "user-5", "jurisdiction": "US", "x": float("nan")}}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )  # fmt: skip
    size = system.ledger.size()
    with pytest.raises(ValidationFailed) as caught:
        import_lines(system.directory, path, source="bad.jsonl")
    problems = caught.value.problems
    assert problems[0].startswith("bad.jsonl:3: not valid JSON")
    assert problems[1] == (
        "bad.jsonl:4: must be an object with one key: principal, subject or ticket"
    )
    assert problems[2].startswith("bad.jsonl:5 (id 'user 4'): field 'id': must be 1-128")
    assert problems[3].startswith("bad.jsonl:5 (id 'user 4'): field 'jurisdiction'")
    assert problems[4] == "bad.jsonl:6 (id 'user-1'): duplicate id (first at line 1)"
    assert problems[5].startswith("bad.jsonl:8: not valid JSON")
    assert problems[6] == (
        "bad.jsonl:7: field 'assignee': unknown principal 'emp-404' (neither in the file "
        "nor stored)"
    )
    assert "nothing was loaded" in str(caught.value)
    assert system.ledger.size() == size
    assert system.directory.subjects() == []


def test_a_file_that_cannot_be_read_is_a_clear_error(system: Custos, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        import_lines(system.directory, tmp_path / "missing.jsonl")
    assert "cannot read the directory lines" in str(caught.value)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"subject": {"id": "user-1", "jurisdiction": "US"}}\n\xe9\n')
    with pytest.raises(InvalidInput) as caught:
        import_lines(system.directory, latin)
    assert "not UTF-8" in str(caught.value)


def test_prune_removes_what_a_full_file_leaves_out_ledgered_first(
    system: Custos, tmp_path: Path
) -> None:
    import_lines(system.directory, lines_file(tmp_path / "w.jsonl", WORLD))
    smaller = json.loads(json.dumps(WORLD))
    smaller["subjects"] = [s for s in smaller["subjects"] if s["id"] != "user-5"]
    smaller["tickets"] = [t for t in smaller["tickets"] if t["id"] != "T-2"]
    report = import_lines(system.directory, lines_file(tmp_path / "s.jsonl", smaller), prune=True)
    assert report.removed == {"principals": 0, "subjects": 1, "tickets": 1}
    with pytest.raises(UnknownSubject):
        system.directory.subject("user-5")
    # user-3 lost its link to user-5 (the file states user-3's links in full).
    assert system.directory.subject("user-3").linked == ("user-4",)
    assert verified(system) == []


def test_a_pruned_row_put_back_is_named_by_log_verify(system: Custos, tmp_path: Path) -> None:
    import_lines(system.directory, lines_file(tmp_path / "w.jsonl", WORLD))
    with system.db.cursor() as cursor:
        cursor.execute("CREATE TABLE saved AS SELECT * FROM subjects WHERE id = 'user-1'")
    smaller = json.loads(json.dumps(WORLD))
    smaller["subjects"] = [s for s in smaller["subjects"] if s["id"] != "user-1"]
    smaller["tickets"] = [t for t in smaller["tickets"] if t["subject"] != "user-1"]
    import_lines(system.directory, lines_file(tmp_path / "s.jsonl", smaller), prune=True)
    with system.db.cursor() as cursor:  # a DBA restores the old, genuine row
        cursor.execute("INSERT INTO subjects SELECT * FROM saved")
    assert any("was removed by ledger entry" in problem for problem in verified(system))


def test_prune_refuses_to_orphan_stored_rows(system: Custos, tmp_path: Path) -> None:
    import_lines(system.directory, lines_file(tmp_path / "w.jsonl", WORLD))
    size = system.ledger.size()
    only_subjects = {"subjects": [s for s in WORLD["subjects"] if s["id"] != "user-1"]}
    with pytest.raises(ValidationFailed) as caught:
        import_lines(
            system.directory,
            lines_file(tmp_path / "o.jsonl", only_subjects),
            source="o.jsonl",
            prune=True,
        )
    assert "o.jsonl: --prune would remove subject 'user-1', named by stored ticket 'T-1'" in (
        caught.value.problems
    )
    assert system.ledger.size() == size
    assert system.directory.subject("user-1").id == "user-1"


def many(count: int) -> dict[str, Any]:
    return org(
        principals=[{"id": "emp-1", "role": "support_agent"}],
        subjects=[{"id": f"user-{i}", "jurisdiction": "US"} for i in range(count)],
    )


class Stop(Exception):
    """A process stopping at a given point."""


def test_an_import_stopped_by_the_ledger_keeps_whole_chunks_and_resumes(
    system: Custos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "CHUNK", 100)
    path = lines_file(tmp_path / "m.jsonl", many(450))
    store = system.directory
    record = store.record
    assert record is not None
    calls = []

    def failing(*args: Any) -> list[int]:
        calls.append(args)
        if len(calls) == 4:  # the ledger becomes unavailable at the third chunk of subjects
            raise LedgerUnavailable("the ledger is unavailable")
        return record(*args)

    monkeypatch.setattr(store, "record", failing)
    with pytest.raises(LedgerUnavailable):
        import_lines(store, path)
    # Whole chunks only, each row equal to its entry; nothing ledgered that is not written.
    assert len(store.subjects()) == 200
    assert all(store.subject(s.id).authority is not None for s in store.subjects())
    assert verified(system) == []
    monkeypatch.setattr(store, "record", record)
    report = import_lines(store, path)
    assert (report.added["subjects"], report.unchanged["subjects"]) == (250, 200)
    assert verified(system) == []


def test_an_import_killed_after_ledgering_is_named_then_completed(
    system: Custos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "CHUNK", 100)
    path = lines_file(tmp_path / "m.jsonl", many(300))
    store = system.directory
    record = store.record
    assert record is not None

    def killed_after(*args: Any) -> list[int]:
        indexes = record(*args)
        if args[0] == "subject":
            raise Stop  # the process dies between the durable entry and its rows
        return indexes

    monkeypatch.setattr(store, "record", killed_after)
    with pytest.raises(Stop):
        import_lines(store, path)
    problems = verified(system)
    assert len(problems) == 100
    assert all("set in the ledger but missing from the table" in p for p in problems)
    monkeypatch.setattr(store, "record", record)
    import_lines(store, path)
    assert len(store.subjects()) == 300
    assert verified(system) == []


@pytest.mark.parametrize("when", ["before", "after"])
def test_another_writer_storing_rows_of_a_first_import_meanwhile_is_written_over_in_order(
    system: Custos, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """A first import does not read its table back; another process storing some of its
    rows meanwhile (one the same as the file's, one not) breaks the key of a chunk's insert.
    The chunk is then written from a read, in the ledger's order, and the import ends with
    every row equal to its latest entry."""
    monkeypatch.setattr(bulk, "CHUNK", 100)
    path = lines_file(tmp_path / "m.jsonl", many(300))
    store = system.directory
    record = store.record
    assert record is not None
    calls: list[str] = []
    document = parse_text(
        json.dumps(
            {"subjects": [{"id": "user-150", "jurisdiction": "US"},
                          {"id": "user-160", "jurisdiction": "DE"}]}
        ),
        "other.json",
        as_json=True,
    )  # fmt: skip

    def other_writer() -> None:
        with Custos.open(home) as other:
            other.directory.merge(document, source="other.json")

    def racing(*args: Any) -> list[int]:
        calls.append(args[0])
        second = calls.count("subject") == 2 and len(args[1]) == 100
        if second and when == "before":
            other_writer()  # its entries come before this chunk's
        indexes = record(*args)
        if second and when == "after":
            other_writer()  # its entries come after this chunk's
        return indexes

    monkeypatch.setattr(store, "record", racing)
    report = import_lines(store, path)
    assert calls.count("subject") == 4  # the second chunk was ledgered again, from a read
    if when == "before":  # both rows were set before the chunk's entries: written over
        assert (report.added["subjects"], report.changed["subjects"]) == (298, 2)
    else:  # user-150 as the other writer left it is the latest and is the file's
        assert (report.added["subjects"], report.changed["subjects"]) == (298, 1)
        assert report.unchanged["subjects"] == 1
    assert store.subject("user-160").jurisdiction == "US"
    assert verified(system) == []


# -- the fast path agrees with the directory file's models ------------------------------

ids = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,12}\Z"),
    st.text(max_size=6),
    st.sampled_from([" user-1 ", "user-1\n", "-x", "a" * 129, ""]),
)
times = st.one_of(
    st.none(),
    st.sampled_from(
        ["2026-01-05T08:00:00Z", "2026-01-05T08:00:00+02:00", "2026-01-05", "yesterday", "5"]
    ),
)
values = st.one_of(st.none(), st.integers(), st.text(max_size=5), ids)
extra = st.dictionaries(st.sampled_from(["desk", "tier", "n"]), values, max_size=1)


def fields(**strategies: Any) -> Any:
    """Entries with some fields left out, some given odd values, some extras."""
    return st.fixed_dictionaries({}, optional=dict(strategies)).flatmap(
        lambda d: extra.map(lambda e: {**d, **e})
    )


principal_fields = fields(
    id=ids,
    name=st.one_of(st.text(max_size=4), st.just("Ann")),
    kind=st.sampled_from(["employee", "contractor", "service", "robot", 3]),
    role=st.sampled_from(["support_agent", "Support", "", "privacy_officer"]),
    team=st.sampled_from(["support", "", "x" * 129]),
    manager=st.one_of(st.none(), ids),
    country=st.sampled_from(["US", "DE", "usa", "U", None]),
    status=st.sampled_from(["active", "terminated", "gone"]),
    groups=st.lists(st.sampled_from(["approvers", "Approvers", "a_b"]), max_size=3),
    role_since=times,
)
subject_fields = fields(
    id=st.sampled_from(["user-1", "user-2"]) | ids,
    handle=st.one_of(st.none(), st.text(max_size=3), st.just("h" * 257)),
    jurisdiction=st.sampled_from(["US", "DE", "usa", 7]),
    protected=st.lists(st.sampled_from(["journalist", "minor", "king"]), max_size=3),
    employee=st.one_of(st.none(), ids),
    linked=st.lists(st.sampled_from(["user-1", "user-2", "bad id"]), max_size=3),
)
ticket_fields = fields(
    id=ids,
    kind=st.sampled_from(["support", "fraud", "gossip"]),
    subject=ids,
    assignee=ids,
    status=st.sampled_from(["open", "closed", "lost"]),
    opened=times,
    closed=times,
    opened_by=st.one_of(st.none(), ids),
)
lines = st.one_of(
    principal_fields.map(lambda f: {"principal": f}),
    subject_fields.map(lambda f: {"subject": f}),
    ticket_fields.map(lambda f: {"ticket": f}),
    st.just({"subject": None}),
    st.just({}),
    st.builds(lambda a, b: {"subject": a, "ticket": b}, subject_fields, ticket_fields),
).map(lambda data: json.dumps(data, default=str))

_MODELS = {"principals": PrincipalEntry, "subjects": SubjectEntry, "tickets": TicketEntry}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines)
def test_the_fast_path_accepts_exactly_what_the_entry_models_accept(line: str) -> None:
    problems: list[str] = []
    slow = bulk._slow(line, "f:1", problems.append)
    fast = bulk._fast(line)
    if fast is not None:
        assert slow is not None, line
    if slow is None:
        assert problems
        return
    section, slow_fields = slow
    spooled = bulk._SPOOLED[section](slow_fields)
    # The spooled row is the entry's domain value, column for column, and sets its facts.
    entry = _MODELS[section].model_validate(json.loads(line)[bulk.SINGULAR[section]])
    domain = entry.to_domain()
    sql_facts = dict(
        zip(bulk._FACTS[section], [spooled[bulk.COLUMNS[section].index(n)] for n in
                                   bulk._FACTS[section]], strict=True)
    )  # fmt: skip
    assert sql_facts == domain.facts()
    for name, value in zip(bulk.COLUMNS[section], spooled, strict=True):
        expected = getattr(domain, name)
        if name in bulk._TIMES:
            expected = None if expected is None else bulk.iso(expected)
        elif name in bulk._LISTS:
            expected = list(expected)
        assert value == expected, name
    # Its facts, as a dict and as the text ledgered for it, are the domain's.
    assert bulk._FACTS_OF[section](spooled) == domain.facts()
    assert bulk._ENCODE[section](spooled) == canonical_json(domain.facts()).decode()
    if fast is not None:
        assert fast[0] == section
        assert bulk._SPOOLED[section](fast[1]) == spooled


# -- the facts ledgered for a row are written out by hand: the same bytes ---------------

any_text = st.text(max_size=8)
maybe_text = st.none() | any_text
texts = st.lists(any_text, max_size=3)
spooled_rows = st.one_of(
    st.tuples(
        st.just("principals"), any_text, any_text, any_text, any_text, any_text, maybe_text,
        any_text, any_text, texts, maybe_text, st.just({}),
    ),
    st.tuples(
        st.just("subjects"), any_text, any_text, maybe_text, texts, maybe_text, texts,
        maybe_text, st.just({}),
    ),
    st.tuples(
        st.just("tickets"), any_text, any_text, any_text, any_text, any_text, maybe_text,
        maybe_text, maybe_text, st.just({}),
    ),
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(spooled_rows)
def test_rows_encoded_by_hand_are_the_canonical_json_of_their_facts(
    spooled: tuple[Any, ...],
) -> None:
    section, row = spooled[0], spooled[1:]
    assert len(row) == len(bulk.COLUMNS[section])
    facts = bulk._FACTS_OF[section](row)
    assert tuple(facts) == bulk._FACTS[section]
    try:
        expected = canonical_json(facts).decode()
    except ValueError:  # a lone surrogate is no UTF-8: the ledger refuses the text too
        return
    assert bulk._ENCODE[section](row) == expected


def test_a_value_of_another_type_is_refused_not_encoded() -> None:
    row = ("user-1", "US", None, ("journalist",), None, [], None, {})
    with pytest.raises(TypeError):
        bulk._ENCODE["subjects"](row)
    with pytest.raises(TypeError):
        bulk._ENCODE["subjects"](("user-1", 7, None, [], None, [], None, {}))


def test_org_load_prune_removes_what_the_document_leaves_out(system: Custos) -> None:
    system.directory.merge(parse_text(json.dumps(WORLD), "w.json", as_json=True))
    smaller = json.loads(json.dumps(WORLD))
    smaller["principals"] = [p for p in smaller["principals"] if p["id"] != "emp-3"]
    document = parse_text(json.dumps(smaller), "s.json", as_json=True)
    planned = plan_prune(system.directory, document, "s.json")
    system.directory.merge(document, source="s.json")
    assert planned.apply(system.directory, "s.json") == {
        "principals": 1,
        "subjects": 0,
        "tickets": 0,
    }
    assert [p.id for p in system.directory.principals()] == ["emp-1", "emp-2"]
    assert verified(system) == []


def test_org_load_prune_refuses_a_reference_to_a_row_it_would_remove(system: Custos) -> None:
    system.directory.merge(parse_text(json.dumps(WORLD), "w.json", as_json=True))
    partial = {
        "principals": [p for p in WORLD["principals"] if p["id"] != "emp-1"],
        "tickets": WORLD["tickets"][:1],
    }
    document = parse_text(json.dumps(partial), "p.json", as_json=True)
    with pytest.raises(ValidationFailed) as caught:
        plan_prune(system.directory, document, "p.json")
    assert caught.value.problems[0] == (
        "p.json: principals[0] (id 'emp-2'): field 'manager': principal 'emp-1' is not in the "
        "file, and --prune removes it"
    )


def test_a_value_the_database_refuses_stops_the_import_and_the_rerun_completes(
    system: Custos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NUL in a name passes the check (it is text) and SQLite stores it; PostgreSQL refuses
    it, in the COPY of its chunk: the import stops there (UnstorableValue), the chunks before
    stay, and the rows of that chunk, ledgered, are named until a fixed file is imported."""
    monkeypatch.setattr(bulk, "CHUNK", 100)
    data = many(250)
    data["principals"] = [{"id": f"emp-{i}", "name": f"P{i}", "role": "support_agent",
                           "team": "t", "country": "US"} for i in range(1, 251)]  # fmt: skip
    data["principals"][150]["name"] = "Nul\u0000Name"
    path = lines_file(tmp_path / "nul.jsonl", data)
    store = system.directory
    if system.db.is_sqlite:
        import_lines(store, path)
        assert store.principal("emp-151").name == "Nul\u0000Name"
        assert verified(system) == []
        return
    with pytest.raises(UnstorableValue):
        import_lines(store, path)
    assert len(store.principals()) == 100  # the first chunk; none of the second
    problems = verified(system)
    assert len(problems) == 100
    assert all("set in the ledger but missing from the table" in p for p in problems)
    data["principals"][150]["name"] = "Fixed"
    report = import_lines(store, lines_file(tmp_path / "fixed.jsonl", data))
    assert report.added["principals"] == 150
    assert verified(system) == []
