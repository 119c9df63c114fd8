"""What the approval-ring check costs: an approval with it against the same approval without
it, same run, on an approvals history of realistic size.

Builds a home (SQLite, or PostgreSQL when ``CUSTOS_DATABASE_URL`` is set) with ``--people``
approvers in as many teams and ``--votes`` approve votes within the reciprocal window (default
10^4 over 10^3 people). The history is a random DAG — person i approved requests of people
j > i only — so no ring exists and an approval of a low-numbered requester by a still
lower-numbered approver is allowed only after the search has walked everything the requester
reaches: the check's worst case for an approval it lets through.

Then, in alternating rounds, it times ``Approvals.approve`` (the whole step: locks, rules,
vote, grant, ledger append) with the check and with the search replaced by "no ring", and
the search alone. Prints the times and the ratio; asserts nothing. ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import insert

from custos.access import Custos
from custos.approvals import Approvals
from custos.directory import parse_text
from custos.store.approvals import ApprovalRequestRow, ApprovalVoteRow


def build(home: Path, people: int, votes: int, seed: int) -> Custos:
    rng = random.Random(seed)
    principals = [
        {
            "id": f"emp-{i}",
            "name": f"P{i}",
            "role": "trust_safety_investigator",
            "team": f"team-{i}",
            "country": "US",
            "groups": ["approvers"],
        }
        for i in range(people)
    ]
    tickets = [
        {
            "id": f"T-{i}",
            "kind": "trust_safety",
            "subject": "user-1",
            "assignee": f"emp-{i}",
            "status": "open",
            "opened_by": "system",
        }
        for i in range(people)
    ]
    system = Custos.init(home)
    org = {"principals": principals, "subjects": [{"id": "user-1", "jurisdiction": "US"}]}
    system.directory.merge(
        parse_text(yaml.safe_dump({**org, "tickets": tickets}), "bench"), source="bench"
    )
    now = datetime.now(UTC)
    requests: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    for n in range(votes):
        approver = rng.randrange(people - 1)
        requester = rng.randrange(approver + 1, people)
        when = now - timedelta(days=rng.uniform(0, 29))
        requests.append(
            {
                "id": f"req-h{n}",
                "principal": f"emp-{requester}",
                "subject": "user-1",
                "categories": ["ip_history"],
                "actions": ["read"],
                "purpose": "trust_safety",
                "ticket": f"T-{requester}",
                "precision": "precise",
                "reason": "history",
                "duration_s": 3600,
                "approvals_needed": 1,
                "groups_needed": [],
                "policies": [],
                "status": "approved",
                "created": when,
                "expires": when + timedelta(hours=12),
                "closed": when,
                "grant_id": None,
                "lock": 0,
            }
        )
        answers.append(
            {
                "request_id": f"req-h{n}",
                "approver": f"emp-{approver}",
                "verdict": "approve",
                "reason": "history",
                "time": when,
            }
        )
    with system.db.session() as session:
        for at in range(0, votes, 2000):
            session.execute(insert(ApprovalRequestRow), requests[at : at + 2000])
            session.execute(insert(ApprovalVoteRow), answers[at : at + 2000])
    return system


def ask(system: Custos, requester: int) -> str:
    return system.request_access(
        principal=f"emp-{requester}",
        subject="user-1",
        categories=["ip_history"],
        purpose="trust_safety",
        ticket=f"T-{requester}",
        precision="precise",
        reason="card testing from this account",
    ).id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--votes", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.quick:
        args.people, args.votes, args.rounds, args.per_round = 200, 2000, 2, 5

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        system = build(Path(tmp) / "home", args.people, args.votes, args.seed)
        print(
            f"history: {args.votes} approvals among {args.people} people within the window, "
            f"built in {time.perf_counter() - started:.1f} s ({system.db.engine.dialect.name})"
        )
        searched = Approvals._ring
        # Requesters low in the order reach the most people; approvers lower still are
        # never reached, so every approval timed is allowed after a full search.
        pool = args.people // 4
        requesters = iter(range(pool, 2 * pool))
        approvers = iter(range(pool))
        timed: dict[str, list[float]] = {"with the check": [], "without": [], "search alone": []}
        for _ in range(args.rounds):
            for label in ("with the check", "without"):
                if label == "without":
                    Approvals._ring = lambda *_args: None  # type: ignore[method-assign]
                try:
                    for _n in range(args.per_round):
                        request_id, approver = ask(system, next(requesters)), next(approvers)
                        start = time.perf_counter()
                        done = system.approvals.approve(request_id, f"emp-{approver}", "checked")
                        timed[label].append(time.perf_counter() - start)
                        assert done.status == "approved"
                finally:
                    Approvals._ring = searched  # type: ignore[method-assign]
            for _n in range(args.per_round):
                requester = random.Random(_n).randrange(pool, 2 * pool)
                with system.db.session() as session:
                    start = time.perf_counter()
                    found = system.approvals._ring(
                        session, f"emp-{requester}", "emp-0", datetime.now(UTC)
                    )
                    timed["search alone"].append(time.perf_counter() - start)
                    session.rollback()
                assert found is None
        system.close()

    medians = {label: statistics.median(values) * 1000 for label, values in timed.items()}
    for label, value in medians.items():
        print(f"  {label:>15}: median {value:7.2f} ms over {len(timed[label])}")
    print(
        f"approval with the ring check / without: "
        f"{medians['with the check'] / medians['without']:.2f}x"
    )


if __name__ == "__main__":
    main()
