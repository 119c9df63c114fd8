"""Time-to-alert of a running service: a simulated world replayed into ``custos serve`` at a
chosen speed, and per scenario, the time from its first misuse event arriving to its first
alert.

The world (``custos simulate``: every scenario) is written to a fresh home: the directory
loaded, no events. ``custos serve`` then runs with ``[detect] interval`` = ``--interval``
seconds and detects by itself, while this script posts the events over ``POST /v1/events``
as their simulated time comes round, ``--speed`` simulated seconds per second, and polls
``GET /v1/alerts``. A scenario is alerted by the first alert that names one of its culprits
and holds one of its events in its evidence (as ``custos eval`` scores).

Per scenario it prints: the wall time from its first event's arrival to that alert; the
simulated time the pattern itself took (from its first event to the newest of its events in
the alert's evidence: the misuse was not yet there to see before that); and the service's
own part, the alert's time-to-alert (from that evidence's arrival to the alert), with its
ratio to the interval (the baseline: a run is due every interval, so the ratio should stay
below 1 plus the run's own time). At the default interval the service's part is at most
the interval, plus up to 30 s until a worker looks, plus a run; the pattern's part does not
depend on the service.

``--employees 80 --days 14 --speed 5000 --interval 5`` by default (about four minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from custos.access import Custos
from custos.directory import read_directory_file
from custos.sim import simulate
from custos.times import utc_instant as parse_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--employees", type=int, default=80)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--speed", type=float, default=5000.0, help="simulated s per s")
    parser.add_argument("--interval", type=float, default=5.0, help="[detect] interval, s")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="custos-live-") as tmp:
        world = Path(tmp) / "world"
        simulate(world, employees=args.employees, days=args.days, seed=args.seed)
        labels = json.loads((world / "labels.json").read_text())
        events = [json.loads(line) for line in (world / "events.jsonl").read_text().splitlines()]
        home = Path(tmp) / "home"
        os.environ["CUSTOS_HOME"] = str(home)
        with Custos.init(home) as system:
            system.directory.merge(read_directory_file(world / "directory.yaml"), source="sim")
            _, token = system.accounts.create_token("replay", ["investigator"], None)
        (home / "config.toml").write_text(f"[detect]\ninterval = {args.interval}\n")
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "custos", "--home", str(home), "serve", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            client = httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
            _wait_up(client)
            arrived, alerts = replay(client, events, args.speed, args.interval)
        finally:
            server.terminate()
            server.wait(timeout=30)
    report(labels, events, arrived, alerts, args)


def replay(
    client: httpx.Client, events: list[dict[str, Any]], speed: float, interval: float
) -> tuple[dict[str, datetime], dict[str, dict[str, Any]]]:
    """Post the events at ``speed`` and collect the alerts; returns when each event was
    posted (wall clock, UTC) and every alert by id."""
    start_sim = parse_time(events[0]["time"])
    start = time.monotonic()
    arrived: dict[str, datetime] = {}
    alerts: dict[str, dict[str, Any]] = {}
    position = 0
    last_poll = 0.0
    while position < len(events):
        now_sim = start_sim + timedelta(seconds=(time.monotonic() - start) * speed)
        batch = []
        while position < len(events) and parse_time(events[position]["time"]) <= now_sim:
            batch.append(events[position])
            position += 1
        for chunk in range(0, len(batch), 5000):
            part = batch[chunk : chunk + 5000]
            client.post("/v1/events", json={"events": part}).raise_for_status()
            moment = datetime.now(UTC)
            arrived.update((e["id"], moment) for e in part)
        if time.monotonic() - last_poll > 1.0:
            alerts.update((a["id"], a) for a in client.get("/v1/alerts").json())
            last_poll = time.monotonic()
        time.sleep(0.2)
    # The last events: one interval and a run later they are alerted on too.
    deadline = time.monotonic() + 2 * interval + 30
    while time.monotonic() < deadline:
        alerts.update((a["id"], a) for a in client.get("/v1/alerts").json())
        time.sleep(1.0)
    return arrived, alerts


def report(
    labels: dict[str, Any],
    events: list[dict[str, Any]],
    arrived: dict[str, datetime],
    alerts: dict[str, dict[str, Any]],
    args: argparse.Namespace,
) -> None:
    when = {e["id"]: parse_time(e["time"]) for e in events}
    assert when  # every event has its time
    print(
        f"{len(events):,} events, {args.employees} employees x {args.days} days, seed "
        f"{args.seed}; speed {args.speed:g}x, interval {args.interval:g} s; "
        f"{len(alerts)} alerts"
    )
    print(
        f"{'scenario':26} {'first event->alert':>18} {'(simulated)':>12} "
        f"{'pattern took':>13} {'time-to-alert':>14} {'/ interval':>10}"
    )
    for name, info in sorted(labels["scenarios"].items()):
        own = set(info.get("events", []))
        culprits = set(info.get("culprits", []))
        first_id = min(own, key=lambda e: (when[e], e))
        first = arrived[first_id]
        hits = [
            a for a in alerts.values() if own & set(a["events"]) and culprits & set(a["principals"])
        ]
        if not hits:
            print(f"{name:26} {'not alerted':>18}")
            continue
        alert = min(hits, key=lambda a: a["raised"])
        raised = parse_time(alert["raised"])
        wall = (raised - first).total_seconds()
        tta = alert["time_to_alert"]
        # The evidence it was raised on arrived tta before it: until then the pattern was
        # not complete. (Its evidence list as last polled has grown since, so it is not used.)
        pattern = timedelta(seconds=(wall - tta) * args.speed)
        print(
            f"{name:26} {wall:>16.1f} s {_span(timedelta(seconds=wall * args.speed)):>12} "
            f"{_span(pattern):>13} {tta:>12.1f} s {tta / args.interval:>9.2f}x"
        )


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} d" if hours >= 48 else f"{hours:.1f} h"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(client: httpx.Client) -> None:
    for _ in range(300):
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("custos serve did not start")


if __name__ == "__main__":
    main()
