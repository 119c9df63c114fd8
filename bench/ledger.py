"""Ledger benchmark: durable appends/s and inclusion-proof latency, custos vs pymerkle.

Both run in this process on SQLite files in one temporary folder, on the same entries:

- appends: the same canonical-JSON entries in batches (one durable commit per batch) into
  ``custos.ledger.Ledger.append_many`` and ``pymerkle.SqliteTree.append_entries``; also
  single appends from 8 threads into custos (group commit);
- proofs: inclusion-proof latency at a large size (10^6 by default) for random indexes.

Prints rates, latencies and ratios; asserts nothing. ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from pymerkle import SqliteTree

from custos.access import Custos
from custos.ledger import canonical_json


def entries(count: int, start: int = 0) -> list[dict[str, object]]:
    return [
        {
            "type": "decision",
            "id": f"ev-{start + i:012d}",
            "time": "2026-01-05T10:03:00Z",
            "principal": f"emp-{(start + i) % 5000}",
            "action": "read",
            "subject": f"user-{(start + i) * 7919 % 1_000_000}",
            "category": "ip_history",
            "purpose": "support",
            "ticket": f"T-{(start + i) % 90000}",
            "decision": "allow",
            "precision": "coarse",
        }
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    append_count = 20_000 if args.quick else 200_000
    proof_size = 100_000 if args.quick else 1_000_000
    folder = Path(tempfile.mkdtemp(prefix="custos-ledger-bench-"))
    system = Custos.init(folder / "home")
    ledger = system.ledger
    pm = SqliteTree(str(folder / "pymerkle.db"))

    # -- appends ---------------------------------------------------------------------
    data = entries(append_count)
    batches = [data[i : i + args.batch] for i in range(0, len(data), args.batch)]
    start = time.perf_counter()
    for batch in batches:
        ledger.append_many(batch)
    t_custos = time.perf_counter() - start
    start = time.perf_counter()
    for batch in batches:
        # The same work a pymerkle user does: serialise each entry, then append the batch.
        pm.append_entries([canonical_json(e) for e in batch])
    t_pm = time.perf_counter() - start
    big = entries(append_count, start=append_count)
    start = time.perf_counter()
    for i in range(0, len(big), 10 * args.batch):
        ledger.append_many(big[i : i + 10 * args.batch])
    t_big = time.perf_counter() - start

    threads = 8
    per_thread = max(append_count // 20 // threads, 50)

    def worker(n: int) -> None:
        for e in entries(per_thread, start=n * per_thread):
            ledger.append(e)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    t_threads = time.perf_counter() - start

    print(f"durable appends, batches of {args.batch} (one commit each), {append_count} entries")
    print(f"  custos    {append_count / t_custos:12,.0f} appends/s   (goal >= 100,000)")
    print(f"  pymerkle  {append_count / t_pm:12,.0f} appends/s   custos is x{t_pm / t_custos:.2f}")
    print(f"  custos, batches of {10 * args.batch}: {append_count / t_big:,.0f} appends/s")
    print(
        f"  custos, single appends from {threads} threads (group commit): "
        f"{threads * per_thread / t_threads:,.0f} appends/s"
    )

    # -- proofs at size -------------------------------------------------------------------
    missing = proof_size - ledger.size()
    chunk = 10_000
    start = time.perf_counter()
    while missing > 0:
        n = min(chunk, missing)
        ledger.append_many(entries(n, start=ledger.size()))
        missing -= n
    t_fill = time.perf_counter() - start
    pm_missing = proof_size - pm.get_size()
    while pm_missing > 0:
        n = min(chunk, pm_missing)
        pm.append_entries([canonical_json(e) for e in entries(n, start=pm.get_size())])
        pm_missing -= n
    size = ledger.size()
    rng = random.Random(1)
    indexes = [rng.randrange(size) for _ in range(200)]
    samples = []
    for index in indexes:
        t0 = time.perf_counter()
        ledger.inclusion_proof(index, size)
        samples.append(time.perf_counter() - t0)
    custos_ms = statistics.median(samples) * 1e3
    custos_p99 = sorted(samples)[int(len(samples) * 0.99) - 1] * 1e3

    def pymerkle_samples(cold: bool) -> list[float]:
        found = []
        budget = time.perf_counter() + (20 if args.quick else 60)
        for index in indexes:
            if time.perf_counter() > budget and len(found) >= 3:
                break
            if cold:
                pm.cache_clear()
            t0 = time.perf_counter()
            pm.prove_inclusion(index + 1, pm.get_size())  # pymerkle counts from 1
            found.append(time.perf_counter() - t0)
        return found

    cold_samples = pymerkle_samples(cold=True)
    pm_samples = pymerkle_samples(cold=False)
    pm_ms = statistics.median(pm_samples) * 1e3
    cold_ms = statistics.median(cold_samples) * 1e3
    print(f"inclusion proofs at {size:,} entries (custos filled at {size / t_fill:,.0f}/s)")
    print(f"  custos    median {custos_ms:8.3f} ms  p99 {custos_p99:.3f} ms   (goal < 1 ms)")
    print(
        f"  pymerkle  median {pm_ms:8.3f} ms with its cache warm ({len(pm_samples)} samples): "
        f"custos is x{pm_ms / custos_ms:,.1f} faster"
    )
    print(
        f"  pymerkle  median {cold_ms:8.3f} ms from a cold cache ({len(cold_samples)} samples): "
        f"custos is x{cold_ms / custos_ms:,.1f} faster (goal >= 100)"
    )
    pm.close()
    system.close()


if __name__ == "__main__":
    main()
