"""Loading a directory with its authority ledgered, against the same load without, same run.

Builds a synthetic directory (principals, subjects, a ticket per ten subjects), then loads it
into two fresh homes on the same database kind: once through ``custos org load``'s path (every
fact ledgered in batches before its row is written, docs/design/authority.md) and once through
the same ``DirectoryStore.merge`` with no ledger. Then loads it again into each (nothing
changed: nothing ledgered) and loads a version with 1 % of the subjects changed.

Prints times, ratios and the ledger's growth; asserts nothing. ``--quick`` for 10^4 subjects;
``--full`` for the issue's 10^5 principals and 10^6 subjects.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from custos.access import Custos
from custos.directory import DirectoryDocument, DirectoryStore, Principal, Subject, Ticket


def build(principals: int, subjects: int) -> DirectoryDocument:
    people = tuple(
        Principal(
            id=f"emp-{i}",
            name=f"P{i}",
            kind="employee",
            role="support_agent" if i % 3 else "fraud_analyst",
            team=f"team-{i % 50}",
            country="US",
            status="active",
            groups=("approvers",) if i % 97 == 0 else (),
        )
        for i in range(principals)
    )
    users = tuple(
        Subject(
            id=f"user-{i}",
            jurisdiction="US" if i % 4 else "DE",
            protected=("journalist",) if i % 500 == 0 else (),
        )
        for i in range(subjects)
    )
    tickets = tuple(
        Ticket(
            id=f"T-{i}",
            kind="support",
            subject=f"user-{i * 10}",
            assignee=f"emp-{i % principals}",
            status="open",
        )
        for i in range(subjects // 10)
    )
    return DirectoryDocument(principals=people, subjects=users, tickets=tickets)


def timed(store: DirectoryStore, document: DirectoryDocument) -> float:
    start = time.perf_counter()
    store.merge(document, source="bench")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--full", action="store_true")
    args = parser.parse_args()
    principals, subjects = (1_000, 10_000) if args.quick else (10_000, 100_000)
    if args.full:
        principals, subjects = 100_000, 1_000_000
    document = build(principals, subjects)
    changed = replace(
        document,
        subjects=tuple(
            replace(s, protected=("activist",)) if n % 100 == 0 else s
            for n, s in enumerate(document.subjects)
        ),
    )
    root = Path(tempfile.mkdtemp(prefix="custos-bench-"))
    results: dict[str, dict[str, float]] = {"ledgered": {}, "plain": {}}
    with Custos.init(root / "ledgered") as ledgered, Custos.init(root / "plain") as plain:
        stores = {"ledgered": ledgered.directory, "plain": DirectoryStore(plain.db)}
        before = ledgered.ledger.size()
        # Step by step, each step on both homes in turn, so that a change in the machine's
        # load falls on both sides of each ratio.
        for step, doc in (("first", document), ("again", document), ("1% changed", changed)):
            for name, store in stores.items():
                results[name][step] = timed(store, doc)
        results["ledgered"]["entries"] = ledgered.ledger.size() - before
    rows = len(document.principals) + len(document.subjects) + len(document.tickets)
    print(f"{principals} principals, {subjects} subjects, {len(document.tickets)} tickets")
    for step in ("first", "again", "1% changed"):
        on, off = results["ledgered"][step], results["plain"][step]
        print(
            f"{step:11} ledgered {on:7.2f} s   plain {off:7.2f} s   x{on / off:.2f}"
            f"   ({rows / on:,.0f} rows/s ledgered)"
        )
    print(f"ledger entries written by the three loads: {results['ledgered']['entries']:.0f}")


if __name__ == "__main__":
    main()
