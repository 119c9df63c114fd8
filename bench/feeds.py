"""Directory feeds against a file load, same run: what one change costs through a feed.

Starts the service on loopback over a fresh SQLite home, then provisions N users through SCIM
(one ``POST /scim/v2/Users`` each) and N tickets through signed webhooks (one ``POST
/v1/hooks/tickets/generic`` each), and loads the same numbers of principals and tickets into
a second home in one ``DirectoryStore.merge`` (``custos org load``'s path). Every change is
ledgered first on both paths; a feed pays one ledger entry, one transaction and one HTTP round
trip per change, a file load one entry per 1,000 rows.

Prints per-change times and the ratio feed / file; asserts nothing. ``--n`` (default 200).
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from custos.access import Custos
from custos.api import create_app
from custos.directory import DirectoryDocument, Principal, Subject, Ticket
from custos.feeds.tickets import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

SECRET = b"bench secret"
BASE = DirectoryDocument(
    principals=(
        Principal("emp-0", "Boss", "employee", "support_agent", "support", "US", "active"),
    ),
    subjects=(Subject("user-1", "US"),),
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def user(i: int) -> dict[str, object]:
    return {
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        ],
        "userName": f"emp-{i + 1}",
        "title": "support_agent",
        "addresses": [{"country": "US"}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "department": "support",
            "manager": {"value": "emp-0"},
        },
    }


def ticket(i: int) -> bytes:
    body = {
        "event": "upsert",
        "ticket": {
            "id": f"T-{i}",
            "kind": "support",
            "subject": "user-1",
            "assignee": "emp-0",
            "status": "open",
        },
    }
    return json.dumps(body).encode()


def feeds(home: Path, n: int) -> tuple[float, float]:
    system = Custos.init(home)
    system.directory.merge(BASE, source="bench")
    (system.settings.keys_dir / "hooks.secret").write_bytes(SECRET)
    _, token = system.accounts.create_token("bench", ["provisioner"])
    port = _port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(system, housekeeping_seconds=3600), port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            headers = {"Authorization": f"Bearer {token}"}
            start = time.perf_counter()
            for i in range(n):
                reply = client.post("/scim/v2/Users", json=user(i), headers=headers)
                assert reply.status_code == 201, reply.text
            scim = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(n):
                body, stamp = ticket(i), str(int(time.time()))
                signed = {
                    "Content-Type": "application/json",
                    TIMESTAMP_HEADER: stamp,
                    SIGNATURE_HEADER: sign(SECRET, stamp, body),
                }
                reply = client.post("/v1/hooks/tickets/generic", content=body, headers=signed)
                assert reply.status_code == 200, reply.text
            hooks = time.perf_counter() - start
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        system.close()
    return scim, hooks


def file_load(home: Path, n: int) -> float:
    system = Custos.init(home)
    system.directory.merge(BASE, source="bench")
    document = DirectoryDocument(
        principals=tuple(
            Principal(f"emp-{i + 1}", "", "employee", "support_agent", "support", "US", "active")
            for i in range(n)
        ),
        tickets=tuple(Ticket(f"T-{i}", "support", "user-1", "emp-0", "open") for i in range(n)),
    )
    start = time.perf_counter()
    system.directory.merge(document, source="bench")
    took = time.perf_counter() - start
    system.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200)
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        scim, hooks = feeds(Path(tmp) / "feeds", n)
        loaded = file_load(Path(tmp) / "file", n)
    per = loaded / (2 * n)
    print(f"{n} SCIM users: {scim / n * 1000:.1f} ms each")
    print(f"{n} signed ticket webhooks: {hooks / n * 1000:.1f} ms each")
    print(f"{n} principals + {n} tickets in one file load: {per * 1000:.2f} ms per row")
    print(f"ratio SCIM / file: x{scim / n / per:.0f}; webhook / file: x{hooks / n / per:.0f}")


if __name__ == "__main__":
    main()
