"""Where events go: a JSON Lines file, syslog (RFC 5424 over UDP, or TCP with RFC 6587
octet counting) and a webhook (HTTP POST signed with HMAC-SHA256, retried with back-off).

Each destination says when it has *acknowledged* a batch, which is when the exporter may
move its cursor: the file after ``fsync``, TCP syslog after the whole write, UDP syslog
after each datagram left (UDP has no acknowledgement: a lost datagram is not seen), the
webhook on a 2xx answer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import httpx

from custos.errors import ExportFailed

SIGNATURE_HEADER: Final = "X-Custos-Signature"
TIMESTAMP_HEADER: Final = "X-Custos-Timestamp"
DELIVERY_HEADER: Final = "X-Custos-Delivery"
#: RFC 5424 severities for OCSF ``severity_id`` (0 unknown … 6 fatal).
SYSLOG_SEVERITY: Final = {0: 6, 1: 6, 2: 5, 3: 4, 4: 3, 5: 2, 6: 1, 99: 5}
#: The largest message sent over UDP: what fits one IPv4 datagram.
UDP_MAX: Final = 65507
BOM: Final = b"\xef\xbb\xbf"


class Destination(Protocol):
    """One place ``[[export]]`` sends events to.

    ``send`` delivers ``events`` (OCSF objects, already in order) and returns only once the
    destination has acknowledged every one of them, in that order; otherwise it raises
    :class:`ExportFailed` saying why (never a secret, never an event's content), in which
    case any prefix of the batch may have arrived: the exporter sends the whole batch again
    and counts the repeats. It returns or raises within a bounded time. ``close`` releases
    connections and files; ``send`` may be called again after it (reconnecting).
    """

    name: str

    def send(self, events: Sequence[Mapping[str, Any]]) -> None: ...

    def close(self) -> None: ...


def encode(event: Mapping[str, Any]) -> bytes:
    """One event as compact JSON with sorted keys (the same bytes every time)."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class FileDestination:
    """Appends one JSON object per line to ``path``, then fsyncs the file."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._checked = False

    def send(self, events: Sequence[Mapping[str, Any]]) -> None:
        if not events:
            return
        data = b"".join(encode(e) + b"\n" for e in events)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            with self.path.open("ab") as handle:
                if not self._checked:
                    self._drop_torn_tail(handle)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if created:
                _fsync_folder(self.path.parent)
        except OSError as exc:
            raise ExportFailed(
                f"export {self.name!r}: cannot write {self.path} ({exc.strerror})"
            ) from None
        self._checked = True

    def _drop_torn_tail(self, handle: Any) -> None:
        """A line cut short by a crash was never acknowledged (the cursor did not move), so
        it is removed before the batch is written again: the file holds whole lines only."""
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        with self.path.open("rb") as reader:
            reader.seek(max(size - 1, 0))
            if reader.read(1) == b"\n":
                return
            # Find the last newline, reading back in blocks.
            end = size
            while end > 0:
                start = max(end - 65536, 0)
                reader.seek(start)
                block = reader.read(end - start)
                cut = block.rfind(b"\n")
                if cut >= 0:
                    handle.truncate(start + cut + 1)
                    return
                end = start
            handle.truncate(0)

    def close(self) -> None:
        """Nothing stays open between batches."""


def _fsync_folder(folder: Path) -> None:
    """Make a new file's name durable too (its folder entry)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syslog_message(
    event: Mapping[str, Any], *, facility: int, hostname: str, app_name: str = "custos"
) -> bytes:
    """One RFC 5424 message carrying ``event`` as its MSG (UTF-8 with a BOM).

    PRI is ``facility * 8`` plus the severity for the event's ``severity_id``; TIMESTAMP
    the event's time; MSGID its OCSF class (``api_activity``, ``detection_finding``); no
    structured data.
    """
    severity = SYSLOG_SEVERITY.get(int(event.get("severity_id", 0)), 5)
    millis = event.get("time", 0)
    moment = datetime.fromtimestamp((millis if isinstance(millis, int) else 0) / 1000, UTC)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    msgid = {6003: "api_activity", 2004: "detection_finding"}.get(
        int(event.get("class_uid", 0)), "ocsf"
    )
    header = f"<{facility * 8 + severity}>1 {stamp} {hostname} {app_name} - {msgid} -"
    return header.encode("ascii") + b" " + BOM + encode(event)


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 octet-counting framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode("ascii") + b" " + message


def syslog_hostname() -> str:
    """This host's name as RFC 5424 allows it (printable US-ASCII, at most 255), else ``-``."""
    name = "".join(c for c in socket.gethostname() if 33 <= ord(c) <= 126)[:255]
    return name or "-"


class SyslogDestination:
    """Sends each event as an RFC 5424 message to ``host``:``port`` over ``udp`` or ``tcp``."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        *,
        transport: str = "tcp",
        facility: int = 13,
        timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.transport = transport
        self.facility = facility
        self.timeout = timeout
        self.hostname = syslog_hostname()
        self._socket: socket.socket | None = None

    def send(self, events: Sequence[Mapping[str, Any]]) -> None:
        messages = [
            syslog_message(e, facility=self.facility, hostname=self.hostname) for e in events
        ]
        try:
            if self.transport == "udp":
                self._send_udp(messages)
            else:
                connection = self._connect()
                connection.sendall(b"".join(octet_counted(m) for m in messages))
        except OSError as exc:
            self.close()
            reason = exc.strerror or type(exc).__name__
            raise ExportFailed(
                f"export {self.name!r}: syslog {self.transport} {self.host}:{self.port} "
                f"did not take the batch ({reason})"
            ) from None

    def _send_udp(self, messages: list[bytes]) -> None:
        if self._socket is None:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            self._socket = socket.socket(family, socket.SOCK_DGRAM)
            self._socket.settimeout(self.timeout)
        for message in messages:
            if len(message) > UDP_MAX:
                raise ExportFailed(
                    f"export {self.name!r}: an event of {len(message)} bytes does not fit a "
                    "UDP datagram",
                    hint="use transport = 'tcp' for this destination",
                )
            self._socket.sendto(message, (self.host, self.port))

    def _connect(self) -> socket.socket:
        if self._socket is None:
            self._socket = socket.create_connection((self.host, self.port), self.timeout)
        return self._socket

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None


def signature(secret: bytes, timestamp: str, payload: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``timestamp + "." + payload``: what the
    receiver recomputes (and compares in constant time) with the shared secret; the
    timestamp binds it to a moment, so an old delivery cannot be replayed as new."""
    digest = hmac.new(secret, timestamp.encode() + b"." + payload, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookDestination:
    """POSTs each batch as a JSON array to ``url``, signed (see :func:`signature`), retried
    ``retries`` times with exponential back-off (``backoff`` seconds doubling, at most 30)
    on a connection failure, a timeout, 408, 429 or 5xx. Any 2xx acknowledges the batch;
    another answer fails it at once."""

    def __init__(
        self,
        name: str,
        url: str,
        secret: bytes,
        *,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
        self._client: httpx.Client | None = None

    def send(self, events: Sequence[Mapping[str, Any]]) -> None:
        if not events:
            return
        payload = b"[" + b",".join(encode(e) for e in events) + b"]"
        first, last = (str(e.get("metadata", {}).get("uid", "")) for e in (events[0], events[-1]))
        delivery = f"{first}..{last}"
        reason = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(min(self.backoff * 2 ** (attempt - 1), 30.0))
            timestamp = str(int(time.time()))
            try:
                answer = self._http().post(
                    self.url,
                    content=payload,
                    headers={
                        "Content-Type": "application/json",
                        SIGNATURE_HEADER: signature(self.secret, timestamp, payload),
                        TIMESTAMP_HEADER: timestamp,
                        DELIVERY_HEADER: delivery,
                    },
                )
            except httpx.HTTPError as exc:
                self.close()
                reason = type(exc).__name__
                continue
            if 200 <= answer.status_code < 300:
                return
            reason = f"HTTP {answer.status_code}"
            if answer.status_code not in (408, 429) and answer.status_code < 500:
                break
        raise ExportFailed(f"export {self.name!r}: the webhook did not take the batch ({reason})")

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout, follow_redirects=False)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
