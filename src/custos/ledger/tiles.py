"""C2SP ``tlog-tiles``: the tile layout, a read-only ASGI server, and a tile client.

A hash tile at tile level ``L`` and index ``N`` holds, concatenated, the hashes of tree nodes
at level ``8·L`` with indexes ``256·N`` to ``256·N + W − 1``; ``W`` is 256 for a full tile and
less for the partial tile at the right edge (path suffix ``.p/W``). Indexes are written in
groups of three digits, all but the last prefixed with ``x`` (``x001/x234/067``).

Entry bundles are not served: entry contents go only to authorised auditors and, for their own
entries, to subjects, through the authenticated API.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from custos.errors import CustosError, IntegrityError, InvalidInput, NotFound
from custos.ledger.hashing import node_hash
from custos.ledger.log import Ledger

TILE_WIDTH = 256
TILE_HEIGHT = 8
# Canonical C2SP tlog-tiles paths only: ASCII digits, no leading "x000/" group, a partial
# width of 1-255 without leading zeros. Anything else would alias a tile under another URL
# (and a full tile is cached as immutable wherever it is served).
_TILE_PATH = re.compile(
    r"^/tile/(0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]?|1[0-9]{2}|2[0-4][0-9]|25[0-5]))?$"
)

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]


def encode_index(n: int) -> str:
    """``1234067`` → ``x001/x234/067``."""
    groups = []
    while True:
        groups.append(f"{n % 1000:03d}")
        n //= 1000
        if n == 0:
            break
    groups.reverse()
    return "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])


def decode_index(text: str) -> int:
    parts = text.split("/")
    if any(not p.startswith("x") for p in parts[:-1]) or parts[-1].startswith("x"):
        raise ValueError(text)
    return int("".join(p.removeprefix("x") for p in parts))


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"tile/{level}/{encode_index(index)}{suffix}"


def tile_hashes(ledger: Ledger, size: int, level: int, index: int, width: int) -> bytes:
    """The bytes of a tile of the tree of ``size``. Raises :class:`NotFound` if not available."""
    if not 1 <= width <= TILE_WIDTH:
        raise NotFound("no such tile width")
    available = (size >> (TILE_HEIGHT * level)) - index * TILE_WIDTH
    if width > available:
        raise NotFound("tile not available at this tree size")
    tree_level = TILE_HEIGHT * level
    start = index * TILE_WIDTH
    nodes = ledger.nodes((tree_level, start + i) for i in range(width))
    return b"".join(nodes[(tree_level, start + i)] for i in range(width))


class TileServer:
    """A read-only ASGI app: ``GET /checkpoint`` and ``GET /tile/...`` of a :class:`Ledger`."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, body, cache = self.handle(scope["method"], scope["path"])
        binary = status == 200 and scope["path"] != "/checkpoint"
        kind = b"application/octet-stream" if binary else b"text/plain; charset=utf-8"
        headers = [
            (b"content-type", kind),
            (b"cache-control", cache.encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def handle(self, method: str, path: str) -> tuple[int, bytes, str]:
        """(status, body, cache-control) for a request; pure, for reuse by other servers."""
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", "no-store"
        try:
            if path == "/checkpoint":
                return 200, self.ledger.current_checkpoint().encode(), "no-cache"
            if path.startswith("/tile/entries/"):
                return 404, b"entry bundles are not public\n", "no-store"
            match = _TILE_PATH.match(path)
            if not match or match.group(2).startswith("x000/"):
                return 404, b"not found\n", "no-store"
            level = int(match.group(1))
            index = decode_index(match.group(2))
            width = int(match.group(3) or TILE_WIDTH)
            note = self.ledger.latest_checkpoint()
            size = int(note.split("\n")[1]) if note else 0
            body = tile_hashes(self.ledger, size, level, index, width)
            cache = "public, max-age=31536000, immutable" if width == TILE_WIDTH else "no-cache"
            return 200, body, cache
        except (NotFound, ValueError):
            return 404, b"not found\n", "no-store"
        except CustosError:
            return 503, b"ledger unavailable\n", "no-store"


class TileClient:
    """Reads node hashes of a remote log through its tiles (what a witness or monitor uses)."""

    def __init__(
        self, base_url: str, size: int, *, timeout: float = 10.0, token: str | None = None
    ) -> None:
        self.base = base_url.rstrip("/") + "/"
        self.size = size
        self.timeout = timeout
        #: A bearer token, for logs served behind custos's authenticated API.
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._tiles: dict[tuple[int, int, int], bytes] = {}

    def fetch(self, path: str) -> bytes:
        """GET ``path`` under the log's URL. Raises :class:`IntegrityError` on failure."""
        url = self.base + path
        if not url.startswith(("http://", "https://")):
            raise InvalidInput(f"log URL must be http(s): {self.base}")
        request = urllib.request.Request(url, headers=self.headers)  # noqa: S310 - checked above
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - scheme checked above
                return bytes(response.read())
        except (urllib.error.URLError, OSError) as exc:
            raise IntegrityError(f"cannot fetch {path} from the log: {exc}") from None

    def post(self, path: str, body: bytes) -> bytes:
        """POST ``body`` (text) to ``path`` under the log's URL. Raises :class:`IntegrityError`."""
        url = self.base + path
        if not url.startswith(("http://", "https://")):
            raise InvalidInput(f"log URL must be http(s): {self.base}")
        request = urllib.request.Request(  # noqa: S310 - scheme checked above
            url,
            data=body,
            method="POST",
            headers={**self.headers, "Content-Type": "text/plain; charset=utf-8"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - scheme checked above
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read(500).decode("utf-8", errors="replace")
            raise IntegrityError(f"the log refused {path}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise IntegrityError(f"cannot reach the log at {path}: {exc}") from None

    def _tile(self, level: int, index: int) -> bytes:
        available = (self.size >> (TILE_HEIGHT * level)) - index * TILE_WIDTH
        width = min(TILE_WIDTH, available)
        key = (level, index, width)
        if key not in self._tiles:
            data = self.fetch(tile_path(level, index, width))
            if len(data) != 32 * width:
                raise IntegrityError(f"tile {tile_path(level, index, width)} has the wrong size")
            self._tiles[key] = data
        return self._tiles[key]

    def node(self, level: int, index: int) -> bytes:
        """The hash of node ``(level, index)``, computed from the tile holding its subtree."""
        tile_level, rest = divmod(level, TILE_HEIGHT)
        first = index << rest  # first node at level 8·tile_level under this node
        tile = self._tile(tile_level, first // TILE_WIDTH)
        offset = first % TILE_WIDTH
        hashes = [tile[32 * i : 32 * i + 32] for i in range(offset, offset + (1 << rest))]
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    def nodes(self, wanted: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return {node: self.node(*node) for node in wanted}
