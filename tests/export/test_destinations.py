"""The destinations' wire formats and acknowledgement rules, against real files, sockets
and an HTTP server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custos.errors import ExportFailed
from custos.export import FileDestination, WebhookDestination, octet_counted, syslog_message
from tests.export.conftest import WEBHOOK_SECRET, FrameDecoder, WebhookReceiver

EVENT = {
    "class_uid": 6003,
    "severity_id": 3,
    "time": 1767607380123,
    "metadata": {"uid": "ledger:1"},
}


def test_an_rfc5424_message() -> None:
    message = syslog_message(EVENT, facility=13, hostname="custos-1")
    assert message.startswith(b"<108>1 2026-01-05T10:03:00.123Z custos-1 custos - api_activity - ")
    assert json.loads(message.split(b"\xef\xbb\xbf", 1)[1]) == EVENT  # 13 * 8 + 4 (warning)


@given(
    st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=20),
    st.lists(st.integers(1, 50), min_size=1, max_size=40),
)
def test_octet_counted_frames_survive_any_split(messages: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(octet_counted(m) for m in messages)
    decoder, got, at = FrameDecoder(), [], 0
    for cut in cuts * (len(stream) // max(sum(cuts), 1) + 1):
        got += decoder.feed(stream[at : at + cut])
        at += cut
        if at >= len(stream):
            break
    got += decoder.feed(stream[at:])
    assert got == messages


def test_a_torn_last_line_is_replaced_by_the_batch_sent_again(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"metadata":{"uid":"ledger:0"}}\n{"metadata":{"ui')  # a crash mid-write
    FileDestination("f", path).send([{"metadata": {"uid": "ledger:1"}}])
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [e["metadata"]["uid"] for e in lines] == ["ledger:0", "ledger:1"]


def test_an_unwritable_file_fails_the_batch(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(ExportFailed, match="cannot write"):
        FileDestination("f", tmp_path / "dir").send([EVENT])


def test_a_wrong_secret_is_refused_and_not_acknowledged(webhook: WebhookReceiver) -> None:
    waits: list[float] = []
    wrong = WebhookDestination("w", webhook.url, b"not the secret", retries=3, sleep=waits.append)
    with pytest.raises(ExportFailed, match="HTTP 401"):
        wrong.send([EVENT])
    assert webhook.refused == 1
    assert waits == []
    right = WebhookDestination("w", webhook.url, WEBHOOK_SECRET.encode(), sleep=waits.append)
    webhook.fail_next = 2
    right.send([EVENT])
    assert webhook.events == [EVENT]
    assert waits == [0.5, 1.0]
    right.close()


def test_an_unreachable_webhook_fails_after_its_retries() -> None:
    waits: list[float] = []
    hook = WebhookDestination(
        "w", "http://127.0.0.1:9/", b"k", retries=2, timeout=1, sleep=waits.append
    )
    with pytest.raises(ExportFailed, match="ConnectError"):
        hook.send([EVENT])
    assert waits == [0.5, 1.0]
