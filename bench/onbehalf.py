"""What acting on behalf of someone costs per call: a tool token with a staff member's
assertion (checked on every call: signature, claims, principal) against the same tool token
alone, and against a token exchanged once (RFC 8693, an HMAC and two look-ups per call).

Builds a home (SQLite, or PostgreSQL when ``CUSTOS_DATABASE_URL`` is set) with one tool
token allowed to act on behalf, serves a JWKS (one RSA and one EC key) over HTTP on loopback
and resolves ``--calls`` callers each way, in alternating rounds, without the HTTP service
around it (that cost is the same for all three). Prints microseconds per call and the ratios
against the plain token; asserts nothing. ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from custos.access import Custos
from custos.directory import parse_text

ISSUER, AUDIENCE = "https://idp.example.test", "custos-bench"


def serve_jwks(keys: dict[str, tuple[Any, str]]) -> tuple[ThreadingHTTPServer, str]:
    body = json.dumps(
        {
            "keys": [
                {
                    **json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key)),
                    "kid": kid,
                    "alg": alg,
                }
                for kid, (key, alg) in keys.items()
            ]
        }
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/jwks.json"


def timed(work: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        work()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    calls, rounds = (200, 3) if args.quick else (args.calls, args.rounds)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    server, url = serve_jwks(
        {"r": (rsa_key.public_key(), "RS256"), "e": (ec_key.public_key(), "ES256")}
    )
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        home.mkdir()
        (home / "config.toml").write_text(
            f'[on_behalf]\njwks_url = "{url}"\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n',
            encoding="utf-8",
        )
        with Custos.init(home) as system:
            system.directory.merge(
                parse_text(
                    "principals:\n"
                    "  - {id: svc-console, name: C, kind: service, role: engineer, team: t,"
                    " country: US}\n"
                    "  - {id: emp-1, name: E, role: support_agent, team: t, country: US}\n",
                    "bench",
                ),
                source="bench",
            )
            token, secret = system.accounts.create_token(
                "console", ["tool"], "svc-console", on_behalf=True
            )
            resolver = system.on_behalf
            assert resolver is not None
            now = int(time.time())
            claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "emp-1", "iat": now, "exp": now + 600}
            signed = {
                "RS256": jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "r"}),
                "ES256": jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "e"}),
            }
            exchanged, _ = resolver.exchange(token, signed["ES256"])
            ways: dict[str, Callable[[], object]] = {
                "tool token alone": lambda: system.accounts.verify_token(secret),
                "+ RS256 assertion": lambda: resolver.act_for(
                    system.accounts.verify_token(secret), signed["RS256"]
                ),
                "+ ES256 assertion": lambda: resolver.act_for(
                    system.accounts.verify_token(secret), signed["ES256"]
                ),
                "exchanged token": lambda: resolver.exchanged(exchanged),
            }
            results: dict[str, list[float]] = {name: [] for name in ways}
            for _ in range(rounds):
                for name, work in ways.items():
                    results[name].append(timed(work, calls))
    server.shutdown()
    base = statistics.median(results["tool token alone"])
    print(f"{calls} calls x {rounds} rounds, median µs per call (ratio to the plain token):")
    for name, figures in results.items():
        median = statistics.median(figures)
        print(f"  {name:20s} {median:9.1f} µs  ({median / base:5.1f}x)")
    print(f"JWKS fetches: {resolver.verifier.keys.fetches}")


if __name__ == "__main__":
    main()
