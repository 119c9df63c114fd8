"""What exporting costs: OCSF events pushed to a JSON Lines file (fsync per batch) and to a
TCP syslog listener on loopback, against reading the same ledger range with a follower that
keeps nothing (the floor: the ledger read and the entry parse), same run.

Also what sealing the cursors costs (custos.export.seal: an HMAC per cursor write, one check
per round), timed alone and as a share of the round (before/after: run this file from a
checkout without the seal and compare the round's events/s).

Also what traces cost on the guarded path: ``decide_many`` with traces off against the same
with an SDK tracer provider whose processor drops every span (so only custos's span code
and the SDK's span objects are measured, not an exporter).

And what sending them costs: ``decide`` one request at a time (two spans each) with traces
off, sent over OTLP/HTTP to a receiver on loopback that answers at once, and sent to an
endpoint where nothing listens (every export fails): the guarded path must not wait for
the collector, so both ratios to off should stay near 1. Prints the spans sent and dropped.

Builds a home (SQLite, or PostgreSQL when ``CUSTOS_DATABASE_URL`` is set) with ``--decisions``
logged decisions (default 20,000). Prints events per second and the ratios; asserts nothing.
``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from custos import telemetry
from custos.access import Custos
from custos.config import load_settings
from custos.directory import parse_text
from custos.export import CursorKey, Exporter
from custos.ledger.entries import Entry
from custos.ledger.follow import follow_ledger
from custos.policy import AccessRequest

WORLD = """
principals:
  - {id: emp-1, name: A, kind: employee, role: support_agent, team: support, country: US}
subjects:
  - {id: user-1, jurisdiction: US}
tickets:
  - {id: T-1, kind: support, subject: user-1, assignee: emp-1, status: open}
"""


class Nothing:
    """A follower that reads everything and keeps nothing."""

    def __init__(self) -> None:
        self.at = 0

    def position(self) -> int:
        return self.at

    def follow(self, index: int, entry: Entry) -> None:
        pass

    def persist(self, end: int) -> None:
        self.at = end


def sink() -> int:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def drain() -> None:
        conn, _ = server.accept()
        with conn:
            while conn.recv(1 << 20):
                pass

    threading.Thread(target=drain, daemon=True).start()
    return int(server.getsockname()[1])


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that takes every request and keeps nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def otlp_costs(system: Custos, home: Path, request: AccessRequest, rounds: int) -> None:
    """``decide`` x50 per round with traces off, to a live receiver, to a dead endpoint."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = int(unused.getsockname()[1])
    endpoints = {
        "live": f"http://127.0.0.1:{server.server_address[1]}",
        "dead": f"http://127.0.0.1:{dead}",
    }
    took = {"off": 0.0, "live": 0.0, "dead": 0.0}
    before = telemetry.span_counts()
    for _ in range(rounds):
        for mode, endpoint in (("off", None), *endpoints.items()):
            section = {} if endpoint is None else {"traces": "otlp", "endpoint": endpoint}
            telemetry.configure({**section, "timeout": 1} if section else {}, home, "bench")
            start = time.perf_counter()
            for _ in range(50):
                system.decide(request)
            took[mode] += time.perf_counter() - start
            telemetry.shutdown()  # not timed: at most the timeout, for the dead endpoint
    after = telemetry.span_counts()
    counts = {k: after[k] - before[k] for k in after}
    server.shutdown()
    print(
        f"decide x{50 * rounds}, traces to a live OTLP receiver / off: "
        f"{took['live'] / took['off']:.3f}; to a dead endpoint / off: "
        f"{took['dead'] / took['off']:.3f}"
    )
    print(f"spans: {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 2_000 if args.quick else args.decisions
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        system = Custos.init(home)
        system.directory.merge(parse_text(WORLD, "bench"), source="bench")
        request = AccessRequest("emp-1", "user-1", "profile", "support", ticket="T-1")
        for _ in range(count // 500):
            system.decide_many([request] * 500)
        size = system.ledger.size()

        start = time.perf_counter()
        follow_ledger(system.ledger, [Nothing()], chunk=500)
        floor = time.perf_counter() - start

        port = sink()
        (home / "config.toml").write_text(
            f'[[export]]\nname = "file"\nkind = "file"\npath = "out.jsonl"\n'
            f'events = ["decisions"]\n'
            f'[[export]]\nname = "syslog"\nkind = "syslog"\nhost = "127.0.0.1"\nport = {port}\n'
            f'events = ["decisions"]\n',
            encoding="utf-8",
        )
        exporter = Exporter(load_settings(home), system.db, system.ledger)
        start = time.perf_counter()
        results = exporter.run_once()
        both = time.perf_counter() - start
        exporter.close()
        sent = sum(r.sent for r in results)
        assert all(r.error is None for r in results), results
        print(f"ledger: {size} entries; {sent} events sent to a file and a TCP syslog listener")
        print(f"read-only floor: {size / floor:,.0f} entries/s")
        print(
            f"export round: {sent / both:,.0f} events/s ({both:.2f} s), "
            f"{both / floor:.1f}x the read-only floor's time"
        )

        # What sealing the cursors costs: each batch seals its row twice (the in-flight mark,
        # the advance) and each round verifies it once; timed alone, against the round.
        key = CursorKey(bytes(range(32)))
        calls = 20_000
        start = time.perf_counter()
        for n in range(calls):
            mac = key.seal("syslog", n, 7, n + 500, None, n - 1)
        sealing = (time.perf_counter() - start) / calls
        start = time.perf_counter()
        for n in range(calls):
            key.problem(mac, "syslog", n, 7, n + 500, None, n - 1)
        checking = (time.perf_counter() - start) / calls
        batches = sum(-(-size // 500) for _ in results)
        in_round = batches * 2 * sealing + len(results) * checking
        print(
            f"cursor MAC: seal {sealing * 1e6:.1f} us, verify {checking * 1e6:.1f} us; "
            f"{batches} batches -> {in_round * 1e3:.2f} ms, "
            f"{in_round / both:.4f} of the round's time"
        )

        rounds = 5 if args.quick else 20
        batch = [request] * 100
        off = on = 0.0
        provider = TracerProvider()  # no processor: spans are made and dropped
        for _ in range(rounds):
            telemetry.install(None)
            start = time.perf_counter()
            system.decisions.decide_many(batch)
            off += time.perf_counter() - start
            telemetry.install(provider)
            start = time.perf_counter()
            system.decisions.decide_many(batch)
            on += time.perf_counter() - start
        telemetry.install(None)
        print(f"decide_many x100, traces on / off: {on / off:.3f}")
        otlp_costs(system, home, request, rounds)
        system.close()


if __name__ == "__main__":
    main()
