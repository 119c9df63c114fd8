"""Pushing to real receivers: a JSON Lines file, a syslog listener on 127.0.0.1 (UDP and
TCP), an HTTP webhook on loopback. In order, at least once, nothing lost while a
destination is down, and a killed exporter resumes where its destinations acknowledged."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from custos.access import Custos
from custos.api import create_app
from custos.config import load_settings
from custos.errors import ExportFailed
from custos.export import Cursors, Exporter, load_key, problems
from custos.policy import AccessRequest
from tests.export.conftest import (
    WEBHOOK_SECRET,
    SyslogListener,
    WebhookReceiver,
    add_alert,
    cli_env,
    later,
    run_cli,
    write_config,
)
from tests.export.test_ocsf import exported


def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def uids(events: list[dict[str, Any]]) -> list[str]:
    return [e["metadata"]["uid"] for e in events]


def from_syslog(message: bytes) -> dict[str, Any]:
    header, _, body = message.partition(b" \xef\xbb\xbf")
    assert header.startswith(b"<")
    assert b">1 " in header
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def exporter_for(system: Custos, **kwargs: Any) -> Exporter:
    return Exporter(
        load_settings(system.settings.home), system.db, system.ledger, clock=later, **kwargs
    )


def file_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_one_round_reaches_every_destination_in_order(
    world: Custos,
    syslog: SyslogListener,
    webhook: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("CUSTOS_EXPORT_TEST_SECRET", WEBHOOK_SECRET)
    out = tmp_path / "siem" / "ocsf.jsonl"
    write_config(
        world,
        f"""
[[export]]
name = "file"
kind = "file"
path = "{out}"
batch = 7

[[export]]
name = "syslog-tcp"
kind = "syslog"
host = "127.0.0.1"
port = {syslog.tcp_port}
transport = "tcp"

[[export]]
name = "syslog-udp"
kind = "syslog"
host = "127.0.0.1"
port = {syslog.udp_port}
transport = "udp"
batch = 3

[[export]]
name = "hook"
kind = "webhook"
url = "{webhook.url}"
secret_env = "CUSTOS_EXPORT_TEST_SECRET"
batch = 5
""",
    )
    expected = uids(exported(world))
    exporter = exporter_for(world)
    results = exporter.run_once()
    assert [r.error for r in results] == [None] * 4
    assert all(r.sent == len(expected) for r in results)
    assert uids(file_events(out)) == expected
    wait_for(lambda: len(syslog.received()) == 2 * len(expected))
    # The two transports' messages interleave in the listener; each is in order alone.
    received = [from_syslog(m) for m in syslog.received()]
    assert sorted(uids(received)) == sorted(expected * 2)
    for event in received:
        assert problems(event) == []
    assert uids(webhook.events) == expected
    assert webhook.refused == 0
    assert len(webhook.deliveries) >= 2
    # Nothing new: a second round sends nothing anywhere.
    assert [r.sent for r in exporter.run_once()] == [0, 0, 0, 0]
    # New events go out after the old ones, in order.
    world.decide(AccessRequest("emp-6001", "user-1", "profile", "support"))
    add_alert(world, "emp-2001", "user-1", rule="pretext")
    exporter.run_once()
    after = uids(file_events(out))
    assert after[: len(expected)] == expected
    assert len(after) == len(expected) + 2
    assert after[-1].startswith("alert:")
    assert after[-2].startswith("ledger:")
    exporter.close()


def test_tcp_syslog_frames_and_header(world: Custos, syslog: SyslogListener) -> None:
    write_config(
        world,
        f'[[export]]\nname = "s"\nkind = "syslog"\nhost = "127.0.0.1"\nport = {syslog.tcp_port}\n'
        'facility = 10\nevents = ["decisions"]\n',
    )
    exporter = exporter_for(world)
    (result,) = exporter.run_once()
    wait_for(lambda: len(syslog.received()) == result.sent)
    first = syslog.received()[0]
    pri = int(first[1 : first.index(b">")])
    assert pri // 8 == 10  # authpriv
    assert b" custos - api_activity - \xef\xbb\xbf{" in first
    assert all(from_syslog(m)["class_uid"] == 6003 for m in syslog.received())
    exporter.close()


def metric(system: Custos, name: str, destination: str) -> float:
    app = create_app(Custos.open(system.settings.home))
    text = generate_latest(app.state.registry).decode()
    for line in text.splitlines():
        if line.startswith(f'{name}{{destination="{destination}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"{name} for {destination} not in /metrics:\n{text}")


def test_a_destination_down_queues_shows_it_and_loses_nothing(
    world: Custos, webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUSTOS_EXPORT_TEST_SECRET", WEBHOOK_SECRET)
    write_config(
        world,
        f'[[export]]\nname = "hook"\nkind = "webhook"\nurl = "{webhook.url}"\n'
        'secret_env = "CUSTOS_EXPORT_TEST_SECRET"\nretries = 2\nbackoff = 0.01\nbatch = 4\n',
    )
    sleeps: list[float] = []
    exporter = exporter_for(world)
    exporter.destinations["hook"].sleep = sleeps.append  # type: ignore[attr-defined]
    webhook.fail_next = 10_000
    (down,) = exporter.run_once()
    assert down.error is not None
    assert "HTTP 503" in down.error
    assert down.sent == 0
    assert sleeps == [0.01, 0.02]  # back-off doubling between the retries
    depth = metric(world, "custos_export_queue_depth", "hook")
    assert depth >= len(exported(world))
    for _ in range(3):
        world.decide(AccessRequest("emp-6001", "user-1", "profile", "support"))
    exporter.run_once()
    assert metric(world, "custos_export_queue_depth", "hook") == depth + 3
    assert metric(world, "custos_export_failures_total", "hook") == 2
    assert webhook.events == []
    webhook.fail_next = 0
    (up,) = exporter.run_once()
    assert up.error is None
    assert uids(webhook.events) == uids(exported(world))
    assert metric(world, "custos_export_queue_depth", "hook") == 0
    # The first batch (at most 4 entries' events) was sent and refused before: its events
    # are counted as sent again (an upper bound of the duplicates a receiver may see).
    assert 0 < metric(world, "custos_export_redelivered_total", "hook") <= 4
    exporter.close()


def test_tcp_syslog_refused_keeps_the_cursor(world: Custos) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]  # closed again: nothing listens there
    write_config(
        world,
        f'[[export]]\nname = "s"\nkind = "syslog"\nhost = "127.0.0.1"\nport = {port}\n',
    )
    exporter = exporter_for(world)
    (result,) = exporter.run_once()
    assert result.error is not None
    assert "did not take the batch" in result.error
    state = exporter.cursors.get("s")
    assert (state.ledger, state.alert, state.failures) == (0, 0, 1)
    exporter.close()


CRASHING_EXPORT = """
import os, signal, sys
from custos.access import Custos
from custos.export import Exporter, FileDestination

class CrashAfterWrite(FileDestination):
    calls = 0
    def send(self, events):
        super().send(events)  # written and fsynced: acknowledged by the file
        CrashAfterWrite.calls += 1
        if CrashAfterWrite.calls == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)  # before the cursor moves

with Custos.open() as system:
    exporter = Exporter(
        system.settings, system.db, system.ledger,
        destinations={"file": CrashAfterWrite("file", __import__("pathlib").Path(sys.argv[1]))},
    )
    exporter.run_once()
"""


def test_killed_between_send_and_cursor_resumes_with_counted_duplicates(
    world: Custos, tmp_path: Path
) -> None:
    out = tmp_path / "ocsf.jsonl"
    for _ in range(20):
        world.decide(AccessRequest("emp-6001", "user-1", "profile", "support"))
    write_config(
        world,
        f'[[export]]\nname = "file"\nkind = "file"\npath = "{out}"\nbatch = 5\n'
        'events = ["decisions", "releases", "approvals"]\n',
    )
    expected = uids([e for e in exported(world) if e["class_uid"] == 6003])
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_EXPORT, str(out), "3"],
        env=cli_env(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    before = uids(file_events(out))
    assert before
    assert before == expected[: len(before)]
    done = run_cli("export", "run", "--once", "--json")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    got = uids(file_events(out))
    seen: set[str] = set()
    duplicates = 0
    unique = []
    for uid in got:
        if uid in seen:
            duplicates += 1
        else:
            seen.add(uid)
            unique.append(uid)
    assert unique == expected  # nothing lost, nothing reordered
    assert duplicates > 0
    assert duplicates == result["redelivered"]
    # The repeats are exactly the batch in flight, sent again right after it.
    assert (
        got[len(before) - duplicates : len(before)] == got[len(before) : len(before) + duplicates]
    )
    status = run_cli("export", "status", "--json")
    (row,) = json.loads(status.stdout)
    assert (row["queue_depth"], row["redelivered"]) == (0, duplicates)


def test_killed_at_any_moment_by_a_signal_loses_nothing(world: Custos, tmp_path: Path) -> None:
    out = tmp_path / "ocsf.jsonl"
    for _ in range(60):
        world.decide(AccessRequest("emp-6001", "user-1", "profile", "support"))
    write_config(
        world,
        f'[[export]]\nname = "file"\nkind = "file"\npath = "{out}"\nbatch = 2\n'
        'events = ["decisions"]\n',
    )
    expected = uids(
        [e for e in exported(world) if e["unmapped"]["custos"].get("entry_type") == "decision"]
    )
    runner = subprocess.Popen(
        [sys.executable, "-m", "custos", "export", "run"],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: out.exists() and out.stat().st_size > 2000, 60)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    done = run_cli("export", "run", "--once", "--json")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    got = uids(file_events(out))  # every line whole: a torn last line was dropped
    unique = list(dict.fromkeys(got))
    assert unique == expected
    duplicates = len(got) - len(unique)
    assert duplicates <= result["redelivered"] <= 2


def test_a_mark_left_by_a_crash_is_kept_until_the_cursor_passes_it(system: Custos) -> None:
    cursors = Cursors(system.db, load_key(system.settings)[0])
    assert cursors.acquire("d", "host:1:a")
    cursors.mark("d", "host:1:a", ledger=50, alert=None)  # then the process died
    assert cursors.acquire("d", "host:1:a")
    cursors.mark("d", "host:1:a", ledger=45, alert=None)
    cursors.advance("d", "host:1:a", ledger=45, delivered=3, redelivered=3)
    assert cursors.get("d").ledger_inflight == 50
    cursors.advance("d", "host:1:a", ledger=50, delivered=2, redelivered=2)
    state = cursors.get("d")
    assert (state.ledger, state.ledger_inflight, state.redelivered) == (50, None, 5)


def test_one_sender_per_destination(system: Custos) -> None:
    cursors = Cursors(system.db, load_key(system.settings)[0])
    here = socket.gethostname()[:80]
    assert cursors.acquire("d", f"{here}:{os.getpid()}:a")
    assert not cursors.acquire("d", "elsewhere:1:b")  # held, and not ours to judge
    with pytest.raises(ExportFailed, match="another worker"):
        cursors.mark("d", "elsewhere:1:b", ledger=1, alert=None)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    cursors.release("d", f"{here}:{os.getpid()}:a")
    assert cursors.acquire("d", f"{here}:{dead.stdout.strip()}:c")
    # Its process has exited: another sender on this host takes over without waiting.
    assert cursors.acquire("d", f"{here}:{os.getpid()}:d")
