"""Package faces that import their parts on first use: every name a face lists is the object
its part defines, ``__all__`` lists exactly those names, and the type checkers' imports in
each ``__init__`` name the same parts (so the face and what mypy sees cannot drift)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "custos"

FACES = sorted(
    p.parent.name for p in SRC.glob("*/__init__.py") if "lazy_face(" in p.read_text("utf-8")
)


def test_the_guarded_paths_faces_are_lazy() -> None:
    # The parts a decision needs must not drag in the others (bench/cli.py times it).
    assert {"access", "approvals", "authority", "directory", "ledger", "reports", "vault"} <= set(
        FACES
    )


def _checked_imports(package: str) -> dict[str, str]:
    """Name -> part module, from the ``if TYPE_CHECKING:`` block of ``package``."""
    tree = ast.parse((SRC / package / "__init__.py").read_text("utf-8"))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for inner in node.body:
                assert isinstance(inner, ast.ImportFrom)
                assert inner.module
                for alias in inner.names:
                    assert alias.asname == alias.name, f"{package}: re-export {alias.name}"
                    found[alias.name] = inner.module
    return found


@pytest.mark.parametrize("package", FACES)
def test_each_name_is_its_parts_object(package: str) -> None:
    face = importlib.import_module(f"custos.{package}")
    checked = _checked_imports(package)
    assert sorted(face.__all__) == sorted(checked)
    for name, module in checked.items():
        assert getattr(face, name) is getattr(importlib.import_module(module), name)
    assert set(face.__all__) <= set(dir(face))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        _ = face.not_a_name


@pytest.mark.parametrize("package", FACES)
def test_importing_a_face_imports_none_of_its_parts(package: str) -> None:
    code = (
        f"import sys, custos.{package}; "
        f"print(sorted(m for m in sys.modules if m.startswith('custos.{package}.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
