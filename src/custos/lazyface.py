"""Package faces that import their parts on first use (PEP 562).

A part's public face is its ``__init__``; importing every module behind it at once makes each
command pay for all of them (a ``custos check`` needs the ledger's append, not its tile
server or verifier). A package lists its names by part here and imports them for type
checkers only; each name is imported from its part the first time it is asked for, then kept
on the package as a plain attribute.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence


def lazy_face(
    package: str, parts: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package`` whose names are
    ``parts`` (part module name, relative to the package -> the names it provides).

    An unknown name raises :class:`AttributeError` as for any module."""
    if any(isinstance(names, str) for names in parts.values()):
        raise TypeError(f"{package}: each part's names must be a sequence, not a string")
    where = {name: f"{package}.{part}" for part, names in parts.items() for name in names}

    def __getattr__(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(where) | set(vars(sys.modules[package])))

    return __getattr__, __dir__, sorted(where)
