"""Guarded reads and ingest: custos against the bare operations they wrap, same run.

- Guarded read = decide → log the decision (durable) → decrypt 50 precise records under an
  approved grant → log the release (durable) → return. Baseline: the bare policy decision of
  the same request (facts + Cedar, nothing logged, nothing decrypted). Goal: a guarded read
  costs at most 2x a bare decision. Also shown for concurrent readers, whose reads custos
  runs in batches (one policy batch and one durable ledger batch each): ``--threads``
  threads calling ``Custos.read``, and ``--clients`` coroutines through the service's
  :class:`RequestBatcher`, the latter also against bare decisions of the same requests
  through the same batcher.
- Ingest = validate JSON Lines, derive coarse values, encrypt under per-subject/week data keys,
  store. Baseline: raw AES-GCM encryption of the same plaintext bytes with one key.

Prints rates and ratios; asserts nothing. ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custos.access import Custos
from custos.access.batching import BatchFunction, RequestBatcher
from custos.directory import parse_text
from custos.policy import AccessRequest
from decide import authority_costs, print_authority_costs  # the same comparison

RECORDS_PER_SUBJECT = 50


def build(home: Path, subjects: int) -> tuple[Custos, list[AccessRequest], list[str]]:
    people = [
        {
            "id": "emp-1",
            "name": "Reader",
            "role": "fraud_analyst",
            "team": "fraud",
            "country": "US",
        },
        {
            "id": "emp-2",
            "name": "Approver",
            "role": "fraud_analyst",
            "team": "risk",
            "country": "US",
            "groups": ["approvers"],
        },
    ]
    users = [{"id": f"user-{i}", "jurisdiction": "US"} for i in range(subjects)]
    tickets = [
        {
            "id": f"T-{i}",
            "kind": "fraud",
            "subject": f"user-{i}",
            "assignee": "emp-1",
            "status": "open",
        }
        for i in range(subjects)
    ]
    system = Custos.init(home)
    system.directory.merge(
        parse_text(
            yaml.safe_dump({"principals": people, "subjects": users, "tickets": tickets}), "bench"
        )
    )
    start = datetime.now(UTC) - timedelta(days=30)
    lines = [
        json.dumps(
            {
                "id": f"l-{i}-{n}",
                "kind": "login",
                "subject": f"user-{i}",
                "time": (start + timedelta(hours=n * 12)).isoformat(),
                "ip": f"198.{i % 250}.{n}.{(i * 7 + n) % 250}",
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0",
            }
        )
        for i in range(subjects)
        for n in range(RECORDS_PER_SUBJECT)
    ]
    requests = []
    for i in range(subjects):
        request = system.request_access(
            principal="emp-1",
            subject=f"user-{i}",
            categories=["ip_history"],
            purpose="fraud",
            ticket=f"T-{i}",
            precision="precise",
            reason="card testing from this account",
        )
        system.approvals.approve(request.id, "emp-2", "matches fraud pattern F-12")
        requests.append(
            AccessRequest(
                "emp-1", f"user-{i}", "ip_history", "fraud", ticket=f"T-{i}", precision="precise"
            )
        )
    return system, requests, lines


def best(fn: object, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    subjects = 100 if args.quick else 400
    repeats = 2 if args.quick else 3
    home = Path(tempfile.mkdtemp(prefix="custos-bench-")) / "home"
    system, requests, lines = build(home, subjects)
    report = system.ingest(lines, "warm.jsonl")
    assert report.added == 2 * len(lines), report  # ip_history and device per login
    check = system.read(requests[0])
    assert check.decision.precision == "precise"
    assert len(check.records) == RECORDS_PER_SUBJECT

    def bare() -> None:
        for r in requests:
            system.decisions.decide(r)

    def guarded() -> None:
        for r in requests:
            system.read(r)

    def guarded_threads() -> None:
        share = [requests[i :: args.threads] for i in range(args.threads)]
        workers = [
            threading.Thread(target=lambda part=part: [system.read(r) for r in part])
            for part in share
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    sizes: dict[str, list[int]] = {"bare": [], "read": []}

    def through_batcher(name: str, many: BatchFunction[object]) -> Callable[[], None]:
        def counted(batch: Sequence[AccessRequest], source: str) -> Sequence[object]:
            sizes[name].append(len(batch))
            return many(batch, source)

        async def clients() -> None:
            batcher = RequestBatcher(counted)

            async def client(part: list[AccessRequest]) -> None:
                for r in part:
                    await batcher.submit(r, "bench")

            await asyncio.gather(
                *(client(requests[i :: args.clients]) for i in range(args.clients))
            )

        return lambda: asyncio.run(clients())

    bare_batched = through_batcher("bare", lambda rs, _: system.decisions.decide_many(rs))
    guarded_batched = through_batcher("read", lambda rs, s: system.read_many(rs, source=s))

    guarded()  # warm caches
    guarded_batched()
    n = len(requests)
    t_bare = best(bare, repeats)
    t_read = best(guarded, repeats)
    t_threads = best(guarded_threads, repeats)
    sizes["bare"].clear()
    sizes["read"].clear()
    t_bare_batched = best(bare_batched, repeats)
    t_read_batched = best(guarded_batched, repeats)
    checks = authority_costs(system, guarded, repeats)

    # Ingest against raw AES-GCM over the same plaintext bytes.
    fresh = [line.replace('"l-', '"m-') for line in lines]
    plaintexts = [json.dumps(json.loads(line), sort_keys=True).encode() for line in fresh]
    aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def raw() -> None:
        for p in plaintexts:
            aead.encrypt(os.urandom(12), p, b"bench")

    t_raw = best(raw, repeats)
    start = time.perf_counter()
    system.ingest(fresh, "bench.jsonl")
    t_ingest = time.perf_counter() - start
    system.close()

    print(f"{n} precise reads of {RECORDS_PER_SUBJECT} records each; {len(lines)} records ingested")
    print(f"bare decision (facts + Cedar)      {n / t_bare:9.0f} /s")
    print(
        f"guarded read (1 thread)            {n / t_read:9.0f} /s   cost x{t_read / t_bare:.2f} "
        "of a bare decision (goal <= 2.0)"
    )
    print(
        f"guarded reads, {args.threads} threads batched  {n / t_threads:9.0f} /s   "
        f"cost x{t_threads / t_bare:.2f} of a bare decision"
    )
    mean = {k: sum(v) / len(v) for k, v in sizes.items()}
    print(
        f"bare decisions, {args.clients} clients batched {n / t_bare_batched:9.0f} /s   "
        f"(mean batch {mean['bare']:.1f})"
    )
    print(
        f"guarded reads, {args.clients} clients batched  {n / t_read_batched:9.0f} /s   "
        f"cost x{t_read_batched / t_bare_batched:.2f} of the batched bare decisions, "
        f"x{t_read_batched / t_bare:.2f} of one-by-one (mean batch {mean['read']:.1f})"
    )
    print_authority_costs(n, checks, "reads")
    print(f"raw AES-GCM encrypt                {len(lines) / t_raw:9.0f} records/s")
    print(
        f"custos ingest                      {len(lines) / t_ingest:9.0f} records/s   "
        f"x{t_ingest / t_raw:.1f} the raw encryption time"
    )


if __name__ == "__main__":
    main()
