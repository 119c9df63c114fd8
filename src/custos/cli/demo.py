"""``custos demo``: the README's main job.

In a fresh home: simulate an organisation (with its last weeks of access logs), start the real
service on loopback, run a slice of benign traffic and the 2022 journalist case through the
HTTP API, take a legitimate protected access through two-person approval, run detection, sign
a checkpoint, verify the journalist's transparency report — then serve the dashboard and say
what happened: blocked, approved, alerted, proven.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

if TYPE_CHECKING:
    import httpx
    import uvicorn

    from custos.access import Custos
import typer

from custos.cli.app import app, console, print_json, state
from custos.errors import InvalidInput

Step = Callable[[str, int], None]


@dataclass
class Demo:
    """A running demo: its home, the service's URL, who can sign in, and what happened."""

    home: Path
    url: str
    password: str
    accounts: dict[str, str]
    summary: dict[str, Any]
    server: uvicorn.Server
    thread: threading.Thread
    system: Custos
    extra: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.system.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check_port(port: int) -> None:
    """Refuse a port already in use before a minute of simulation, not after it."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise InvalidInput(
                f"port {port} on 127.0.0.1 is in use: choose another with --port "
                "(--port 0 takes any free one)"
            ) from None


def _logins(subject: str, days: int, seed: int) -> list[str]:
    now = datetime.now(UTC)
    return [
        json.dumps(
            {
                "id": f"demo-{subject}-{n}",
                "kind": "login",
                "subject": subject,
                "time": (now - timedelta(days=n + 1, hours=seed % 7)).isoformat(),
                "ip": f"198.51.{(seed + n) % 250}.{(7 * n + seed) % 250 + 1}",
                "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
            }
        )
        for n in range(min(days, 10))
    ]


#: The demo's data map: the login service's table in a DuckDB file of the home.
DEMO_SOURCES = """# The login service's history, guarded: custos sql --source logins ...
sources:
  logins:
    url: duckdb:data/logins.duckdb
    tables:
      logins:
        subject: user_id
        columns:
          login_at: plain
          ip: ip_history
          user_agent: {category: device, coarse: none}
"""


def _sql_demo(
    home: Path,
    call: Callable[[str, str, dict[str, Any]], httpx.Response],
    *,
    culprit: str,
    journalists: list[str],
    watched: list[str],
    support: list[dict[str, Any]],
    ordinary: list[str],
    days: int,
    seed: int,
) -> dict[str, Any]:
    """The simulated users' login history as a DuckDB source; the 2022 query tried through
    guarded SQL (refused), and a support agent's legitimate query (coarse rows)."""
    import duckdb  # only the demo builds a DuckDB file

    subjects = sorted({*watched, *ordinary, *(t["subject"] for t in support)})
    rows = [
        (
            e["subject"],
            datetime.fromisoformat(e["time"]).replace(tzinfo=None),
            e["ip"],
            e["user_agent"],
        )
        for n, subject in enumerate(subjects)
        for e in (json.loads(line) for line in _logins(subject, days, seed + n))
    ]
    (home / "data").mkdir(exist_ok=True)
    with duckdb.connect(str(home / "data" / "logins.duckdb")) as con:
        con.execute(
            "CREATE TABLE logins (user_id VARCHAR, login_at TIMESTAMP, ip VARCHAR, "
            "user_agent VARCHAR)"
        )
        con.executemany("INSERT INTO logins VALUES (?, ?, ?, ?)", rows)
    (home / "sources.yaml").write_text(DEMO_SOURCES, encoding="utf-8")
    # Queries for custos to analyse (ids from the directory), never run as written: S608 is moot.
    pinned = ", ".join(f"'{j}'" for j in journalists)
    hunt = call(
        culprit,
        "/v1/query",
        {
            "source": "logins",
            "sql": f"SELECT user_id, login_at, ip FROM logins WHERE user_id IN ({pinned})",  # noqa: S608
            "purpose": "internal_investigation",
        },
    )
    found: dict[str, Any] = {
        "refused_2022_status": hunt.status_code,
        "refused_2022_reason": hunt.json().get("error", {}).get("message"),
    }
    if support:
        ticket = support[0]
        reply = call(
            ticket["assignee"],
            "/v1/query",
            {
                "source": "logins",
                "sql": "SELECT login_at, ip FROM logins "  # noqa: S608
                f"WHERE user_id = '{ticket['subject']}' ORDER BY login_at DESC",
                "purpose": "support",
                "ticket": ticket["id"],
            },
        )
        body = reply.json()
        found["support"] = {
            "status": reply.status_code,
            "ticket": ticket["id"],
            "rows": body.get("row_count"),
            "precision": {c["name"]: c["precision"] for c in body.get("columns", [])}.get("ip"),
            "example": (body.get("rows") or [[None, None]])[0][1],
        }
    return found


def run_demo(
    home: Path,
    *,
    employees: int = 120,
    days: int = 21,
    seed: int = 7,
    port: int = 0,
    password: str | None = None,
    step: Step | None = None,
) -> Demo:
    """Build and run the demo in ``home`` (which must be new or empty); returns it running.

    Raises :class:`InvalidInput` for a home that is not empty.
    """
    import httpx
    import uvicorn

    from custos.access import Custos, Viewer
    from custos.api import create_app
    from custos.directory import parse_text, read_directory_file
    from custos.reports import verify_report
    from custos.sim import monday_of, simulate
    from custos.sim.run import DIRECTORY_FILE, EVENTS_FILE, LABELS_FILE

    if home.exists() and any(home.iterdir()):
        raise InvalidInput(f"{home} is not empty; the demo needs a fresh home")
    if port:
        _check_port(port)
    say: Step = step or (lambda _what, _n: None)
    password = password or secrets.token_urlsafe(12)
    say("setting up custos", 1)
    # Policy replay stays off here until the simulated grants reach the ledger: the history's
    # benign work on protected people runs under two-person grants the sim writes straight
    # into the grants table (no ledger entry), so replay, which honours only ledgered
    # grants, would refuse it all. The benign traffic itself keeps to the default pack.
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (home / "config.toml").write_text("[detect]\nreplay = false\n", encoding="utf-8")
    system = Custos.init(home)
    say("simulating an organisation", 1)
    sim = home / "simulation"
    # History up to the last days, so that the dashboard's recent views show it: from the
    # Monday on or before ``days`` ago (the simulated week starts on a Monday).
    start = monday_of(datetime.now(UTC) - timedelta(days=days))
    simulate(sim, employees=employees, days=days, seed=seed, start=start)
    labels = json.loads((sim / LABELS_FILE).read_text())
    document = read_directory_file(sim / DIRECTORY_FILE)
    system.directory.merge(document, source=str(sim / DIRECTORY_FILE))
    history = (sim / EVENTS_FILE).read_text(encoding="utf-8").splitlines()
    system.events.import_lines(history, str(sim / EVENTS_FILE))
    say("simulating an organisation", 1)

    people = {p.id: p for p in system.directory.principals()}
    privacy = sorted(p.id for p in people.values() if "privacy_office" in p.groups)
    investigators = sorted(
        p.id
        for p in people.values()
        if p.role == "trust_safety_investigator" and p.status == "active"
    )
    journalists = sorted(s.id for s in system.directory.subjects() if "journalist" in s.protected)
    officials = sorted(
        s.id for s in system.directory.subjects() if "public_official" in s.protected
    )
    if len(privacy) < 2 or not investigators or len(journalists) < 2:
        raise InvalidInput("the simulated organisation is too small for the demo; add employees")
    culprits = list(labels["scenarios"]["journalist_2022"]["culprits"])
    # The dashboard's investigator triages as a security responder (rule own-case needs to
    # know who), never one of the people the scenarios make misbehave.
    reviewers = sorted(
        p.id
        for p in people.values()
        if p.role == "security_responder"
        and p.status == "active"
        and not any(p.id in s["culprits"] for s in labels["scenarios"].values())
    )
    if not reviewers:
        raise InvalidInput(
            "the simulated organisation has no security responder free of misuse; add employees"
        )

    # Who signs in to the dashboard.
    accounts = {
        "privacy": f"privacy officer ({privacy[0]})",
        "privacy2": f"privacy officer ({privacy[1]})",
        "investigator": f"investigator ({reviewers[0]})",
        "auditor": "auditor",
        "admin": "admin (cannot approve)",
    }
    system.accounts.add("privacy", password, ["privacy_officer"], privacy[0])
    system.accounts.add("privacy2", password, ["privacy_officer"], privacy[1])
    system.accounts.add("investigator", password, ["investigator"], reviewers[0])
    system.accounts.add("auditor", password, ["auditor"])
    system.accounts.add("admin", password, ["admin"])

    # The ticket system hands an investigator a trust-and-safety case about a journalist
    # (their account was used in a harassment campaign) and one about an official.
    # Residency: pick an investigator whose country may see these subjects precisely.
    def reachable(person: str, subject: str) -> bool:
        jurisdiction = system.directory.subject(subject).jurisdiction
        return people[person].country in system.settings.allowed_countries(jurisdiction)

    pairs = [
        (i, j, o)
        for i in investigators
        for j in journalists[2:]
        for o in (officials or journalists[:2])
        if j != o and reachable(i, j) and reachable(i, o)
    ]
    if not pairs:
        raise InvalidInput("no investigator may reach a journalist under residency; reseed")
    investigator, target, official = pairs[0]
    opened = datetime.now(UTC) - timedelta(hours=3)
    system.directory.merge(
        parse_text(
            json.dumps(
                {
                    "tickets": [
                        {
                            "id": "T-DEMO-1",
                            "kind": "trust_safety",
                            "subject": target,
                            "assignee": investigator,
                            "status": "open",
                            "opened_by": "system",
                            "opened": opened.isoformat(),
                        },
                        {
                            "id": "T-DEMO-2",
                            "kind": "trust_safety",
                            "subject": official,
                            "assignee": investigator,
                            "status": "open",
                            "opened_by": "system",
                            "opened": opened.isoformat(),
                        },
                    ]
                }
            ),
            "ticket system",
        ),
        source="ticket system",
    )
    for n, subject in enumerate(sorted({*journalists[:4], target, official})):
        system.ingest(_logins(subject, days, seed + n), "login service")

    say("starting the service", 1)
    port = port or _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(system, housekeeping_seconds=30),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise InvalidInput("the demo service did not start")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    tokens: dict[str, str] = {}

    def token(principal: str) -> str:
        if principal not in tokens:
            _, tokens[principal] = system.accounts.create_token(
                f"demo tool for {principal}", ["tool"], principal
            )
        return tokens[principal]

    def call(principal: str, path: str, body: dict[str, Any]) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=30) as client:
            return client.post(
                path, json=body, headers={"Authorization": f"Bearer {token(principal)}"}
            )

    # Benign traffic: the newest explained accesses of the simulated logs, replayed live.
    # Today's work: the ticket system hands out fresh cases to the front-line teams.
    desk = {
        "support_agent": "support",
        "fraud_analyst": "fraud",
        "trust_safety_investigator": "trust_safety",
    }
    staff = sorted(
        (p for p in people.values() if p.role in desk and p.status == "active"),
        key=lambda p: p.id,
    )
    ordinary = sorted(s.id for s in system.directory.subjects() if not s.protected)
    fresh = (
        [
            {
                "id": f"T-TODAY-{n:04d}",
                "kind": desk[staff[n % len(staff)].role],
                "subject": ordinary[(n * 7919) % len(ordinary)],
                "assignee": staff[n % len(staff)].id,
                "status": "open",
                "opened_by": "subject",
                "opened": opened.isoformat(),
            }
            for n in range(min(120, len(ordinary)))
        ]
        if staff and ordinary
        else []
    )
    if fresh:
        system.directory.merge(
            parse_text(json.dumps({"tickets": fresh}), "ticket system"), source="ticket system"
        )
    open_tickets = {t.id for t in system.directory.tickets() if t.status == "open"}
    benign = [
        event
        for event in (json.loads(line) for line in reversed(history))
        if event.get("ticket") in open_tickets and event.get("decision") == "allow"
    ][:150]
    # And the work on the tickets open now: each assignee looks at their case's account.
    for ticket in system.directory.tickets():
        if ticket.status == "open" and len(benign) < 300 and ticket.id.startswith("T-"):
            if ticket.id.startswith("T-DEMO"):
                continue
            for category in ("profile", "ip_history"):
                benign.append(
                    {
                        "principal": ticket.assignee,
                        "subject": ticket.subject,
                        "category": category,
                        "purpose": ticket.kind,
                        "ticket": ticket.id,
                        "action": "read",
                    }
                )
    outcomes: Counter[str] = Counter()
    say("running benign traffic over HTTP", 0)

    def replay(event: dict[str, Any]) -> str:
        body = {k: event[k] for k in ("subject", "category", "purpose", "ticket", "action")}
        reply = call(event["principal"], "/v1/check", body)
        say("running benign traffic over HTTP", 1)
        return str(reply.json().get("decision", reply.status_code))

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes.update(pool.map(replay, benign))

    say("replaying the 2022 case", 1)
    blocked = 0
    for culprit in culprits:
        for journalist in journalists[:2]:
            for category in ("ip_history", "location"):
                reply = call(
                    culprit,
                    "/v1/read",
                    {
                        "subject": journalist,
                        "category": category,
                        "purpose": "internal_investigation",
                    },
                )
                body = reply.json()
                if body.get("decision") != "allow" and not body.get("records"):
                    blocked += 1
    attempt = call(
        culprits[0],
        "/v1/approvals/requests",
        {
            "subject": journalists[0],
            "categories": ["ip_history"],
            "purpose": "internal_investigation",
            "reason": "find out who talks to the press",
        },
    )
    refused_rule = attempt.json().get("error", {}).get("rule")

    say("guarded SQL", 1)
    sql = _sql_demo(
        home,
        call,
        culprit=culprits[0],
        journalists=journalists[:2],
        watched=sorted({*journalists[:4], target, official}),
        support=[t for t in fresh if t["kind"] == "support"][:1],
        ordinary=ordinary[:40],
        days=days,
        seed=seed,
    )

    say("two-person approval", 1)
    pending = call(
        investigator,
        "/v1/approvals/requests",
        {
            "subject": target,
            "categories": ["ip_history"],
            "purpose": "trust_safety",
            "ticket": "T-DEMO-1",
            "precision": "precise",
            "hours": 4,
            "reason": "the account is used to coordinate a harassment campaign (report R-4471)",
        },
    )
    granted = call(
        investigator,
        "/v1/approvals/requests",
        {
            "subject": official,
            "categories": ["ip_history"],
            "purpose": "trust_safety",
            "ticket": "T-DEMO-2",
            "precision": "precise",
            "hours": 2,
            "reason": "credible threat against this official; locate the abusive sessions",
        },
    )
    granted_id = granted.json().get("id")
    if granted_id is None or pending.status_code != 201:
        raise InvalidInput(
            f"the demo's approval requests were refused: {pending.text} {granted.text}"
        )
    for officer, why in ((privacy[0], "threat report verified"), (privacy[1], "proportionate")):
        system.approvals.approve(granted_id, officer, why)
    precise = call(
        investigator,
        "/v1/read",
        {
            "subject": official,
            "category": "ip_history",
            "purpose": "trust_safety",
            "ticket": "T-DEMO-2",
            "precision": "precise",
        },
    ).json()

    say("detecting", 1)
    run = system.detect()
    severity = Counter(a.severity for a in run.alerts)
    order = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    named = sorted(
        (a for a in run.alerts if set(culprits) & set(a.principals)),
        key=lambda a: (a.rule != "leak_hunt", order.get(a.severity, 9), a.first_seen),
    )

    say("signing and proving", 1)
    checkpoint = system.ledger.checkpoint()
    report = system.subject_report(journalists[0], viewer=Viewer("demo"))
    report_file = home / f"report-{journalists[0]}.json"
    report_file.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    check = verify_report(json.dumps(report), trusted_key=system.ledger.signer.verifier_key())
    others: dict[str, list[Any]] = {}
    for alert in run.alerts:
        if not set(culprits) & set(alert.principals):
            others.setdefault(alert.rule, []).append(alert)
    summary = {
        "url": url,
        "employees": len(people),
        "history_events": len(history),
        "benign_checks": dict(outcomes),
        "blocked_2022_reads": blocked,
        "refused_request_rule": refused_rule,
        "culprits": culprits,
        "journalists": journalists[:2],
        "pending_request": pending.json().get("id"),
        "granted_request": granted_id,
        "precise_read": {
            "decision": precise.get("decision"),
            "precision": precise.get("precision"),
            "records": len(precise.get("records", [])),
        },
        "sql": sql,
        "alerts": dict(severity),
        "alerts_naming_culprits": [a.id for a in named],
        "top_alert_id": named[0].id if named else None,
        "top_alert": named[0].explanation if named else None,
        "ledger_size": system.ledger.size(),
        "checkpoint": checkpoint,
        "report_verified": check.ok,
        "report_entries": check.entries,
        "report_subject": journalists[0],
        "report_file": str(report_file),
        # The alerts beyond the 2022 case, by rule: how many, and the first one's words.
        "other_alerts": {
            rule: {"count": len(found), "example": found[0].explanation}
            for rule, found in sorted(others.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        },
    }
    return Demo(home, url, password, accounts, summary, server, thread, system)


def _account_of(summary: dict[str, Any]) -> list[str]:
    benign = summary["benign_checks"]
    tally = ", ".join(f"{k} {v}" for k, v in sorted(benign.items()))
    return [
        f"[bold]Simulated[/] {summary['employees']} staff and {summary['history_events']} "
        "past accesses; replayed "
        f"{sum(benign.values())} live checks over HTTP ({tally}).",
        f"[bold red]Blocked[/]: {summary['blocked_2022_reads']} reads of journalists' IPs and "
        f"locations by internal audit ({', '.join(summary['culprits'])}); their request for "
        f"approval was refused outright ({summary['refused_request_rule']}).",
        _sql_line(summary["sql"]),
        f"[bold yellow]Approved[/]: request {summary['granted_request']} by two privacy "
        f"officers; the precise read then released {summary['precise_read']['records']} "
        f"records. Request {summary['pending_request']} waits for its two approvers.",
        f"[bold magenta]Alerted[/]: {sum(summary['alerts'].values())} alerts "
        f"({', '.join(f'{k} {v}' for k, v in sorted(summary['alerts'].items()))}); "
        f"{len(summary['alerts_naming_culprits'])} name the 2022 culprits: "
        f"{summary['top_alert'] or ''}"
        + (" The others, by rule:" if summary["other_alerts"] else ""),
        *(
            f"    {rule} ×{other['count']}: {_clip(other['example'])}"
            for rule, other in summary["other_alerts"].items()
        ),
        f"[bold green]Proven[/]: {summary['ledger_size']} ledger entries under a signed "
        f"checkpoint. The transparency report of journalist {summary['report_subject']} "
        f"({summary['report_entries']} entries) "
        + (
            "was verified offline: the checkpoint's signature, every entry's inclusion proof "
            "and her chain of entries"
            if summary["report_verified"]
            else "[bold red]FAILED[/] offline verification"
        )
        + f". It is in {summary['report_file']} (check it yourself: custos report verify "
        f"{summary['report_file']}).",
    ]


def _sql_line(sql: dict[str, Any]) -> str:
    line = (
        f"[bold red]Refused in SQL[/]: the same hunt as one SELECT over the login history "
        f"(HTTP {sql['refused_2022_status']}: {_clip(str(sql['refused_2022_reason']), 110)})."
    )
    support = sql.get("support")
    if support:
        line += (
            f" A support agent's query on ticket {support['ticket']} returned "
            f"{support['rows']} rows, IPs {support['precision']} (e.g. {support['example']})."
        )
    return line


def _clip(text: str, width: int = 140) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


@app.command("demo")
def demo(
    ctx: typer.Context,
    employees: Annotated[int, typer.Option("--employees", help="Simulated staff.")] = 120,
    days: Annotated[int, typer.Option("--days", help="Days of simulated history.")] = 21,
    seed: Annotated[int, typer.Option("--seed", help="Simulation seed.")] = 7,
    port: Annotated[int, typer.Option("--port", help="Port for the dashboard (0: any).")] = 8700,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Keep serving the dashboard.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Simulate an organisation, run its traffic and the 2022 journalist case through the
    real HTTP path, then serve the dashboard and say what happened."""
    given = state(ctx).home
    folder = Path(tempfile.mkdtemp(prefix="custos-demo-")) if given is None else None
    home = given if given is not None else Path(str(folder)) / "home"
    made = not home.exists()
    try:
        running = _start(home, employees, days, seed, port, as_json)
    except BaseException:
        # A demo that failed (a busy port, Ctrl-C while simulating) leaves no half-made home
        # behind: only one it made itself is removed, never a folder that was there before.
        if made:
            shutil.rmtree(folder or home, ignore_errors=True)
        raise
    try:
        if as_json:
            print_json({"home": str(home), **running.summary, "accounts": running.accounts})
        else:
            console.print(f"\ncustos demo in {home}\n", highlight=False)
            for line in _account_of(running.summary):
                console.print("  " + line, highlight=False)
            console.print(
                f"\nDashboard: [bold]{running.url}/[/]  — sign in as "
                + ", ".join(f"[bold]{u}[/] ({r})" for u, r in running.accounts.items())
                + f" with the password [bold]{running.password}[/]",
                highlight=False,
            )
        if serve and not as_json:
            console.print("Press Ctrl-C to stop.")
            while running.thread.is_alive():
                running.thread.join(timeout=1)
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()


def _start(home: Path, employees: int, days: int, seed: int, port: int, as_json: bool) -> Demo:
    """Run the demo in ``home``, with a progress display unless ``as_json``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    totals = {
        "setting up custos": 1,
        "simulating an organisation": 2,
        "starting the service": 1,
        "running benign traffic over HTTP": 300,
        "replaying the 2022 case": 1,
        "guarded SQL": 1,
        "two-person approval": 1,
        "detecting": 1,
        "signing and proving": 1,
    }
    if as_json:
        return run_demo(home, employees=employees, days=days, seed=seed, port=port or 0)
    with Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, Any] = {}
        lock = threading.Lock()

        def step(what: str, n: int) -> None:
            with lock:
                if what not in tasks:
                    tasks[what] = progress.add_task(what, total=totals.get(what, 1))
                progress.advance(tasks[what], n)

        return run_demo(home, employees=employees, days=days, seed=seed, port=port or 0, step=step)
