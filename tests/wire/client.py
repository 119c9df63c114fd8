"""A raw wire-protocol client for hostile-bytes tests: sends what we say, reads what comes."""

from __future__ import annotations

import socket
import struct


def startup_packet(parameters: dict[str, str]) -> bytes:
    body = struct.pack("!i", 196608)
    for name, value in parameters.items():
        body += name.encode() + b"\x00" + value.encode() + b"\x00"
    body += b"\x00"
    return struct.pack("!i", len(body) + 4) + body


def frame(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode() + b"\x00"


class Raw:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def message(self) -> tuple[bytes, bytes]:
        head = self._exactly(5)
        length = struct.unpack("!i", head[1:])[0]
        return head[:1], self._exactly(length - 4)

    def until(self, kind: bytes) -> list[tuple[bytes, bytes]]:
        """Messages up to and including the first of ``kind``."""
        seen = []
        while True:
            message = self.message()
            seen.append(message)
            if message[0] == kind:
                return seen

    def closed(self) -> bool:
        """True when the server has closed the connection (after any pending messages)."""
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionError, OSError):
            return True

    def sign_in(self, token: str, **parameters: str) -> list[tuple[bytes, bytes]]:
        self.send(startup_packet({"user": "tool", "database": "app", **parameters}))
        kind, body = self.message()
        assert (kind, body) == (b"R", struct.pack("!i", 3)), (kind, body)
        self.send(frame(b"p", cstr(token)))
        return self.until(b"Z")

    def close(self) -> None:
        self.sock.close()


def error_fields(body: bytes) -> dict[str, str]:
    fields = {}
    for part in body.rstrip(b"\x00").split(b"\x00"):
        if part:
            fields[chr(part[0])] = part[1:].decode()
    return fields
