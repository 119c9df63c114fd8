"""Reading the text files people hand custos (directory, access events, vault records).

One place, so that every importer says the same thing, naming the file, when one cannot be
read: missing, a folder, too large, or not UTF-8.
"""

from __future__ import annotations

from pathlib import Path

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
    """The lines of the UTF-8 text file ``path`` (see :func:`read_text`)."""
    return read_text(path, kind).splitlines()
