"""Decisions per second: ``custos`` against bare ``cedarpy.is_authorized``, same run.

Builds a home with a synthetic organisation, then times, on the same requests, policies and
entities:

- baseline: ``cedarpy.is_authorized`` on the Cedar request and entities custos builds for
  each request, called exactly as custos calls it (pre-parsed policy set, no per-call schema);
- ``custos.decide`` one request at a time (facts from the directory cache, obligations,
  explanation, and the ledger entry once the ledger is wired in);
- ``custos.decide_many`` in batches, in one process and in two (the goal is for 2 cores);
- the authority check (every principal, subject, ticket and grant held to the ledger entry
  that set it, docs/design/authority.md) on and off, same code, same run: warm (the
  directory cache full, as a running service is) and cold (the cache dropped before every
  pass, so every row is loaded and checked again, as after every directory change);
- linked accounts (DESIGN.md principle 11): the same requests in a second home where one
  subject in ten is linked to the next (none a journalist, so every outcome is the same and
  the difference is the cost of the links), batches
  alternating between the two homes, warm.

Prints rates and the ratios; asserts nothing. ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cedarpy
import yaml

from custos.access import Custos
from custos.directory import parse_text
from custos.policy import AccessRequest


def build_world(
    home: Path, principals: int, subjects: int, seed: int, *, linked: bool = False
) -> list[AccessRequest]:
    rng = random.Random(seed)
    people = [
        {
            "id": f"emp-{i}",
            "name": f"P{i}",
            "role": rng.choice(["support_agent", "fraud_analyst"]),
            "team": "ops",
            "country": "US",
        }
        for i in range(principals)
    ]
    users = [
        {
            "id": f"user-{i}",
            "jurisdiction": "US",
            "protected": ["journalist"] if i % 50 == 0 else [],
        }
        for i in range(subjects)
    ]
    if linked:
        for i in range(5, subjects - 1, 10):
            users[i]["linked"] = [f"user-{i + 1}"]
    tickets = []
    requests = []
    for i in range(subjects):
        person = people[rng.randrange(principals)]
        kind = "support" if person["role"] == "support_agent" else "fraud"
        tickets.append(
            {
                "id": f"T-{i}",
                "kind": kind,
                "subject": f"user-{i}",
                "assignee": person["id"],
                "status": "open",
            }
        )
        for category in ("profile", "ip_history"):
            requests.append(
                AccessRequest(person["id"], f"user-{i}", category, kind, ticket=f"T-{i}")
            )
        # A share of refusals: no ticket, or someone else's.
        if i % 10 == 0:
            requests.append(
                AccessRequest(
                    people[(i + 1) % principals]["id"],
                    f"user-{i}",
                    "profile",
                    kind,
                    ticket=f"T-{i}",
                )
            )
    with Custos.init(home) as system:
        document = parse_text(
            yaml.safe_dump({"principals": people, "subjects": users, "tickets": tickets}),
            "bench",
        )
        system.directory.merge(document)
    rng.shuffle(requests)
    return requests


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def time_best(fn: object, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return min(samples)


def _batch_worker(args: tuple[str, list[AccessRequest], int]) -> tuple[int, float]:
    home, requests, batch = args
    with Custos.open(Path(home)) as system:
        system.decide_many(requests[:batch])  # warm the caches
        start = time.perf_counter()
        for i in range(0, len(requests), batch):
            system.decide_many(requests[i : i + batch])
        return len(requests), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    principals, subjects = (100, 1000) if args.quick else (500, 5000)
    repeats = 2 if args.quick else 3
    home = Path(tempfile.mkdtemp(prefix="custos-bench-")) / "home"
    requests = build_world(home, principals, subjects, seed=7)
    n = len(requests)
    print(f"{n} requests ({principals} principals, {subjects} subjects)")

    with Custos.open(home) as system:
        engine = system.policy
        pack = system.policy_pack
        facts = [system.decisions.facts(r) for r in requests]
        asked = [
            engine._ask(r, f, engine._first_precision(r, f))
            for r, f in zip(requests, facts, strict=False)
        ]

        def bare_single() -> None:
            for a in asked:
                # The same call custos makes: pre-parsed policies, no per-request schema
                # check (custos validates its request shape in tests, not per call).
                cedarpy.is_authorized(a.request, pack.policy_set, a.entities, None)

        def custos_single() -> None:
            for r in requests:
                system.decide(r)

        def custos_batch() -> None:
            for i in range(0, n, args.batch):
                system.decide_many(requests[i : i + args.batch])

        custos_single()  # warm the directory cache
        t_bare = time_best(bare_single, repeats)
        t_single = time_best(custos_single, repeats)
        t_batch = time_best(custos_batch, repeats)
        outcomes = statistics.mode(d.outcome for d in system.decide_many(requests[:200]))
        checks = authority_costs(system, custos_batch, repeats)

    workers = 2
    chunks = [requests[i::workers] for i in range(workers)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        start = time.perf_counter()
        results = pool.map(_batch_worker, [(str(home), c, args.batch) for c in chunks])
        wall = time.perf_counter() - start
    done = sum(count for count, _ in results)
    slowest = max(seconds for _, seconds in results)

    print(f"most common outcome in sample: {outcomes}")
    print(f"bare cedarpy.is_authorized   {rate(n, t_bare):10.0f} decisions/s")
    print(
        f"custos decide (single)       {rate(n, t_single):10.0f} decisions/s"
        f"   overhead x{t_single / t_bare:.2f} of bare Cedar (goal <= 2.0)"
    )
    print(
        f"custos decide_many (1 proc)  {rate(n, t_batch):10.0f} decisions/s"
        f"   x{t_bare / t_batch:.2f} the bare single rate"
    )
    print(
        f"custos decide_many (2 procs) {rate(done, slowest):10.0f} decisions/s"
        f"   (goal >= 10000; pool wall time incl. start-up {wall:.1f}s)"
    )
    print_authority_costs(n, checks, "decisions")
    print_link_costs(home, requests, principals, subjects, args.batch, repeats)


def print_link_costs(
    home: Path, requests: list[AccessRequest], principals: int, subjects: int, batch: int,
    repeats: int,
) -> None:  # fmt: skip
    """decide_many on ``home`` and on a twin whose subjects are linked, alternating."""
    linked_home = home.parent / "linked"
    again = build_world(linked_home, principals, subjects, seed=7, linked=True)
    assert again == requests, "the twin must be asked the same requests"
    n = len(requests)
    best: dict[bool, float] = {True: float("inf"), False: float("inf")}
    with Custos.open(home) as plain, Custos.open(linked_home) as twin:
        homes = {False: plain, True: twin}
        for system in homes.values():
            system.decide_many(requests[:batch])  # warm the caches
            for i in range(0, n, batch):
                system.decide_many(requests[i : i + batch])
        for _ in range(repeats):
            for linked, system in homes.items():
                start = time.perf_counter()
                for i in range(0, n, batch):
                    system.decide_many(requests[i : i + batch])
                best[linked] = min(best[linked], time.perf_counter() - start)
        groups = sum(1 for s in twin.directory.subjects() if s.link_group is not None)
    print(
        f"linked accounts ({groups} of {subjects} subjects in groups) "
        f"{rate(n, best[True]):10.0f} decisions/s, {rate(n, best[False]):.0f} without: "
        f"x{best[True] / best[False]:.3f}"
    )


def set_authority_check(system: Custos, on: bool) -> None:
    """The same objects with the check on or off (the bench's comparison, not a setting)."""
    system.directory.vouch = system.voucher.check if on else None
    system.approvals.vouch = system.voucher.check if on else None
    system.directory.invalidate()


def authority_costs(
    system: Custos, work: Callable[[], None], repeats: int
) -> dict[str, dict[bool, float]]:
    """Best times of ``work`` with the authority check on and off, warm and cold,
    alternating on and off so that the machine's drift falls on both."""
    times: dict[str, dict[bool, list[float]]] = {
        "warm": {True: [], False: []},
        "cold": {True: [], False: []},
    }
    for _ in range(repeats):
        for on in (True, False):
            set_authority_check(system, on)
            work()  # fill the cache
            start = time.perf_counter()
            work()
            times["warm"][on].append(time.perf_counter() - start)
            system.directory.invalidate()
            start = time.perf_counter()
            work()
            times["cold"][on].append(time.perf_counter() - start)
    set_authority_check(system, True)
    return {k: {on: min(v) for on, v in by.items()} for k, by in times.items()}


def print_authority_costs(n: int, checks: dict[str, dict[bool, float]], what: str) -> None:
    for state, by in checks.items():
        print(
            f"authority check, {state:4}       {rate(n, by[True]):10.0f} {what}/s on, "
            f"{rate(n, by[False]):.0f} off: x{by[True] / by[False]:.3f} "
            f"(+{(by[True] / by[False] - 1) * 100:.1f}%, goal <= +10%)"
        )


if __name__ == "__main__":
    sys.exit(main())
