"""Reading the text files people hand custos (directory, access events, vault records).

One place, so that every importer says the same thing, naming the file, when one cannot be
read: missing, a folder, too large, or not UTF-8.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from custos.errors import InvalidInput


def read_text(path: Path, kind: str, *, max_bytes: int | None = None) -> str:
    """The content of the UTF-8 text file ``path``; ``kind`` says what it should be (``"an
    events file"``) for the error when it is a folder.

    Raises :class:`InvalidInput` naming the file when it cannot be read, is larger than
    ``max_bytes`` or is not UTF-8 (giving the offset of the first bad byte, not the byte).
    """
    try:
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise InvalidInput(f"{path}: larger than {max_bytes // 2**20} MiB")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path}: is a folder, not {kind}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read ({exc.strerror})") from None


def read_lines(path: Path, kind: str) -> list[str]:
    """The lines of the UTF-8 text file ``path`` (see :func:`read_text`), numbered as an
    editor numbers them: split at LF (a CR before it dropped) and nowhere else, since
    JSON strings may hold U+2028 and the other breaks ``str.splitlines`` splits at. A
    leading byte-order mark is dropped."""
    return [
        line.removesuffix("\r") for line in read_text(path, kind).removeprefix("\ufeff").split("\n")
    ]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def strict_json(text: str | bytes) -> Any:
    """``json.loads`` refusing NaN and Infinity (Python writes them, JSON has no such
    numbers, and other readers of what custos stores fail on them). Raises
    ``json.JSONDecodeError`` or ``ValueError`` for bad JSON and ``RecursionError`` for
    JSON nested too deeply."""
    return json.loads(text, parse_constant=_refuse_constant)


def check_plain_json(value: Any) -> Any:
    """``value`` unchanged if it is plain JSON (objects, arrays, strings, finite numbers,
    booleans, null); raises ``ValueError`` otherwise: stored extra fields must read back
    everywhere, and a NaN or a YAML date among them would not."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError(
            "extra fields must be plain JSON: no NaN or Infinity, and times as quoted strings"
        ) from None
    except RecursionError:
        raise ValueError("extra fields are nested too deeply") from None
    return value


def write_rejects(path: Path, numbers: Iterable[int], lines: Sequence[str]) -> None:
    """Write the lines numbered ``numbers`` (1-based) of ``lines`` to ``path`` (mode 0600,
    replacing it). Raises :class:`InvalidInput` naming the file when it cannot be written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot write the rejects file ({exc.strerror})") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        for number in sorted(set(numbers)):
            handle.write(lines[number - 1].rstrip("\n") + "\n")


def check_rejects_path(rejects: Path | None, source: Path) -> None:
    """Refuse a rejects file that is the input itself: writing it would destroy the input.
    Raises :class:`InvalidInput`."""
    if rejects is None:
        return
    try:
        same = rejects.exists() and rejects.resolve() == source.resolve()
    except OSError:
        same = False
    if same:
        raise InvalidInput(f"--rejects {rejects}: that is the input file; choose another path")


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
    silently: a second ``role:`` or ``principals:`` would replace the first unseen)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class says so
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"the key {key!r} is given twice",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def strict_yaml(text: str) -> Any:
    """``yaml.safe_load`` refusing duplicate keys. Raises ``yaml.YAMLError`` (with the line
    in ``problem_mark``) and ``RecursionError`` for YAML nested too deeply."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
