"""The PostgreSQL wire-protocol front to guarded SQL (``custos sql serve``).

Layer: beside cli/api/web, above access. It authenticates a token, keeps a session's purpose
and ticket, answers session statements itself and sends every other statement through
``Custos.query``; it holds no data and decides nothing.
"""

from custos.wire.guarded import GuardedQueries
from custos.wire.server import (
    Authenticate,
    Identity,
    SqlFront,
    WireSettings,
    sqlstate,
    text_value,
    token_authenticator,
)

__all__ = [
    "Authenticate",
    "GuardedQueries",
    "Identity",
    "SqlFront",
    "WireSettings",
    "sqlstate",
    "text_value",
    "token_authenticator",
]
