"""Policy packs: a Cedar schema and ``.cedar`` files, validated together on load.

A pack is a folder holding exactly one ``*.cedarschema`` file and any number of ``*.cedar``
files (read in name order). Every policy must carry ``@id`` (unique in the pack) and
``@explanation``; the obligations a policy imposes are read from its annotations:

- ``@remedy("approval")`` with ``@approvals("N")`` and ``@approver_groups("g1 g2")``: a forbid
  that an approved grant can lift, and what approval it takes;
- ``@review("mandatory")``: a permit whose use must be reviewed afterwards (break-glass);
- ``@coarse_by_default("cat1 cat2")``: categories for which custos asks coarse precision first.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import cedarpy

from custos.errors import PolicyError
from custos.vocabulary import CATEGORIES

DEFAULT_PACK = resources.files("custos.policy") / "pack"
REQUIRED_ANNOTATIONS = ("id", "explanation")
KNOWN_ANNOTATIONS = frozenset(
    {
        *REQUIRED_ANNOTATIONS,
        "remedy",
        "approvals",
        "approver_groups",
        "review",
        "coarse_by_default",
        "priority",
    }
)


def _is_integer(text: str) -> bool:
    digits = text.removeprefix("-")
    return digits.isascii() and digits.isdigit()


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """One policy of a pack: its id, effect, source file and annotations."""

    id: str
    effect: str  # "permit" | "forbid"
    file: str
    annotations: dict[str, str]

    @property
    def explanation(self) -> str:
        return self.annotations.get("explanation", self.id)

    @property
    def remedy(self) -> str | None:
        return self.annotations.get("remedy")

    @property
    def approvals(self) -> int:
        return int(self.annotations.get("approvals", "0") or 0)

    @property
    def approver_groups(self) -> tuple[str, ...]:
        return tuple(self.annotations.get("approver_groups", "").split())

    @property
    def review_required(self) -> bool:
        return self.annotations.get("review") == "mandatory"


@dataclass(frozen=True)
class PolicyPack:
    """A validated pack, ready to evaluate: parsed handles plus policy metadata."""

    source: str
    schema_text: str
    files: dict[str, str]
    policies: dict[str, PolicyInfo]
    #: Cedar's positional id (policy0, …) → the policy's @id.
    by_cedar_id: dict[str, str]
    digest: str
    coarse_by_default: frozenset[str]
    schema: Any = field(repr=False)
    policy_set: Any = field(repr=False)

    @property
    def text(self) -> str:
        return "\n".join(self.files[name] for name in sorted(self.files))


def _read_folder(folder: Path) -> tuple[str, str, dict[str, str]]:
    if not folder.is_dir():
        raise PolicyError(f"{folder}: no policy pack folder here")
    schemas = sorted(folder.glob("*.cedarschema"))
    if len(schemas) != 1:
        raise PolicyError(
            f"{folder}: a policy pack needs exactly one .cedarschema file (found {len(schemas)})"
        )
    files: dict[str, str] = {}
    for path in sorted(folder.glob("*.cedar")):
        try:
            files[path.name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{path}: cannot read policy file ({exc})") from None
    if not files:
        raise PolicyError(f"{folder}: no .cedar policy files")
    try:
        schema_text = schemas[0].read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{schemas[0]}: cannot read schema ({exc})") from None
    return schemas[0].name, schema_text, files


def load_pack(folder: Path | None = None) -> PolicyPack:
    """Load and validate the pack in ``folder`` (default: the pack shipped with custos).

    Raises :class:`PolicyError` naming the file and policy when the schema does not parse,
    a policy does not parse or fails validation against the schema, or an annotation is
    missing, duplicated or malformed.
    """
    if folder is None:
        with resources.as_file(DEFAULT_PACK) as path:
            return load_pack(Path(path))
    schema_name, schema_text, files = _read_folder(folder)
    return build_pack(str(folder), schema_name, schema_text, files)


# Cedar's parser recurses per bracket and takes the process down (a stack overflow, no
# exception) somewhere below a thousand; real policies nest a handful deep.
MAX_NESTING = 64


def _check_nesting(text: str, where: str) -> None:
    """Refuse brackets nested deeper than :data:`MAX_NESTING` (strings and ``//`` comments
    skipped), naming the line. Raises :class:`PolicyError`."""
    depth = 0
    line = 1
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\n":
            line += 1
        elif char == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end == -1 else end
            continue
        elif char in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise PolicyError(
                    f"{where}: line {line}: brackets nested more than {MAX_NESTING} deep"
                )
        elif char in ")]}":
            depth = max(depth - 1, 0)
        i += 1


def _where(text: str, parse: Callable[[str], object], message: str) -> str:
    """``line L, column C: `` of a Cedar parse error in ``text``, or ``""`` when it cannot be
    placed. cedarpy's messages carry no position (and name the *last* error of a text), so it
    is found here, only when a pack is refused: the end of the text for "unexpected end of
    input"; otherwise the first statement whose prefix, cut where a statement ends, already
    fails (by bisection: a prefix cut elsewhere would fail for ending early), and in that
    statement the token or word the message names (else the statement's start)."""
    if "end of input" in message:
        return _line_column(text, len(text.rstrip()) - 1)
    cuts = [*_statement_ends(text), len(text)]
    if not _fails(parse, text):
        return ""
    low, high = -1, len(cuts) - 1  # text[:cuts[high]] fails; text[:cuts[low]] (or "") not
    while high - low > 1:
        middle = (low + high) // 2
        if _fails(parse, text[: cuts[middle]]):
            high = middle
        else:
            low = middle
    start = cuts[low] if low >= 0 else 0
    statement = text[start : cuts[high]]
    named = re.search(r"unexpected token `([^`]+)`|: (\S+)$", message)
    word = named and (named.group(1) or named.group(2))
    found = _code_index(statement, word) if word else -1
    if message == "invalid token":
        found = _invalid_token(statement)
    offset = found if found >= 0 else len(statement) - len(statement.lstrip())
    return _line_column(text, start + offset)


def _fails(parse: Callable[[str], object], text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return True
    return False


def _line_column(text: str, index: int) -> str:
    if index < 0:
        return ""
    line = text.count("\n", 0, index) + 1
    return f"line {line}, column {index - (text.rfind(chr(10), 0, index) + 1) + 1}: "


def _code_spans(text: str) -> Iterator[tuple[int, int]]:
    """The ``(start, end)`` runs of ``text`` outside strings and ``//`` comments."""
    i = begin = 0
    while i < len(text):
        if text[i] == '"' or text.startswith("//", i):
            yield begin, i
            if text[i] == '"':
                i += 1
                while i < len(text) and text[i] != '"':
                    i += 2 if text[i] == "\\" else 1
                i += 1
            else:
                end = text.find("\n", i)
                i = len(text) if end == -1 else end
            begin = i
            continue
        i += 1
    yield begin, len(text)


def _statement_ends(text: str) -> Iterator[int]:
    """Positions just after each ``;`` outside brackets, strings and comments."""
    depth = 0
    for begin, end in _code_spans(text):
        for i in range(begin, end):
            char = text[i]
            if char in "([{":
                depth += 1
            elif char in ")]}":
                depth = max(depth - 1, 0)
            elif char == ";" and depth == 0:
                yield i + 1


_CEDAR_CHARACTERS = re.compile(r"[A-Za-z0-9_\s(){}\[\];:,.<>=!&|+\-*@%?]")


def _invalid_token(text: str) -> int:
    """Where the lexer stops in ``text``: a string never closed, or a character Cedar has no
    token for (outside strings and comments); -1 when neither is found."""
    i = 0
    while i < len(text):
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end == -1 else end
        elif text[i] == '"':
            start, i = i, i + 1
            while i < len(text) and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            if i >= len(text):
                return start
            i += 1
        elif not _CEDAR_CHARACTERS.match(text[i]):
            return i
        else:
            i += 1
    return -1


def _code_index(text: str, word: str) -> int:
    """Where ``word`` first occurs in ``text`` outside strings and comments, or -1."""
    for begin, end in _code_spans(text):
        found = text.find(word, begin, end)
        if found >= 0:
            return found
    return -1


def _template_problem(text: str) -> str | None:
    """What is wrong with an explanation template, or None. Only plain ``{name}``
    placeholders: a positional ``{0}``, an attribute, an index, a conversion or a format
    spec could raise for some request at decision time, and then no decision is made."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        return f"is not a valid template ({exc})"
    for _, name, spec, conversion in parts:
        if name is not None and (not name.isidentifier() or spec or conversion):
            return f"placeholders must be plain {{name}}, not {{{name}}}"
    return None


def build_pack(
    source: str, schema_name: str, schema_text: str, files: dict[str, str]
) -> PolicyPack:
    """Validate a pack given as texts. Raises :class:`PolicyError` (see :func:`load_pack`)."""
    _check_nesting(schema_text, f"{source}/{schema_name}")
    for name in sorted(files):
        _check_nesting(files[name], f"{source}/{name}")
    try:
        schema = cedarpy.Schema.from_str(schema_text)
    except ValueError as exc:
        # Only a syntax error has a place; "failed to resolve type" is about the whole.
        where = (
            _where(schema_text, cedarpy.Schema.from_str, str(exc))
            if str(exc).startswith("error parsing schema")
            else ""
        )
        raise PolicyError(f"{source}/{schema_name}: {where}invalid Cedar schema: {exc}") from None
    problems: list[str] = []
    policies: dict[str, PolicyInfo] = {}
    by_cedar_id: dict[str, str] = {}
    position = 0
    for name in sorted(files):
        text = files[name]
        try:
            est = json.loads(cedarpy.policies_to_json_str(text))
        except ValueError as exc:
            where = _where(text, cedarpy.policies_to_json_str, str(exc))
            raise PolicyError(f"{source}/{name}: {where}does not parse: {exc}") from None
        result = cedarpy.validate_policies(text, schema)
        if not result.validation_passed:
            for error in result.errors:
                problems.append(f"{name}: policy {error.policy_id}: {error.error}")
        static = est.get("staticPolicies", {})
        if est.get("templates"):
            problems.append(f"{name}: templates are not supported in a policy pack")
        # Cedar numbers policies of one parse policy0, policy1, …; in the combined text the
        # numbering continues across files in name order, which is how decisions name them.
        for local in range(len(static)):
            body = static[f"policy{local}"]
            annotations = {k: str(v or "") for k, v in (body.get("annotations") or {}).items()}
            pid = annotations.get("id", "")
            label = f"{name}: policy #{local + 1}"
            missing = [a for a in REQUIRED_ANNOTATIONS if not annotations.get(a)]
            if missing:
                problems.append(
                    f"{label}: missing annotation(s) {', '.join('@' + m for m in missing)}"
                )
            if pid and pid in policies:
                problems.append(f"{label}: duplicate @id {pid!r} (also in {policies[pid].file})")
            if annotations.get("approvals") and not (
                annotations["approvals"].isascii() and annotations["approvals"].isdigit()
            ):
                problems.append(f"{label} ({pid}): @approvals must be a whole number")
            if annotations.get("remedy") not in (None, "approval"):
                problems.append(f'{label} ({pid}): @remedy must be "approval"')
            # A misspelt obligation must not vanish silently: @review("mandatory ") would
            # otherwise drop break-glass's mandatory review without a word.
            unknown = sorted(set(annotations) - KNOWN_ANNOTATIONS)
            if unknown:
                problems.append(
                    f"{label} ({pid}): unknown annotation(s) "
                    f"{', '.join('@' + a for a in unknown)} (known: "
                    f"{', '.join('@' + a for a in sorted(KNOWN_ANNOTATIONS))})"
                )
            if annotations.get("review") not in (None, "mandatory"):
                problems.append(f'{label} ({pid}): @review must be "mandatory"')
            template = _template_problem(annotations.get("explanation", ""))
            if template:
                problems.append(f"{label} ({pid}): @explanation {template}")
            strange = sorted(set(annotations.get("coarse_by_default", "").split()) - CATEGORIES)
            if strange:
                problems.append(
                    f"{label} ({pid}): @coarse_by_default names unknown categories "
                    f"{', '.join(strange)}"
                )
            priority = annotations.get("priority")
            if priority is not None and not _is_integer(priority):
                problems.append(f"{label} ({pid}): @priority must be a whole number")
            info = PolicyInfo(pid or f"{name}#{local + 1}", body["effect"], name, annotations)
            policies[info.id] = info
            by_cedar_id[f"policy{position}"] = info.id
            position += 1
    if problems:
        raise PolicyError(
            f"{source}: the policy pack is invalid ({len(problems)} problem(s)):\n  - "
            + "\n  - ".join(problems)
        )
    combined = "\n".join(files[name] for name in sorted(files))
    try:
        policy_set = cedarpy.PolicySet.from_str(combined)
    except ValueError as exc:
        raise PolicyError(f"{source}: the policies do not parse together: {exc}") from None
    digest = hashlib.sha256(
        json.dumps({"schema": schema_text, "files": files}, sort_keys=True).encode()
    ).hexdigest()
    coarse = frozenset(
        category
        for info in policies.values()
        for category in info.annotations.get("coarse_by_default", "").split()
    )
    return PolicyPack(
        source=source,
        schema_text=schema_text,
        files={schema_name: schema_text, **files},
        policies=policies,
        by_cedar_id=by_cedar_id,
        digest=digest,
        coarse_by_default=coarse,
        schema=schema,
        policy_set=policy_set,
    )


def install_default_pack(target: Path) -> bool:
    """Copy the shipped pack into ``target`` unless a pack is already there.

    Returns True when files were copied. An existing pack is never overwritten: it may hold
    the operator's changes.
    """
    if target.exists() and any(target.glob("*.cedar")):
        return False
    target.mkdir(parents=True, exist_ok=True)
    with resources.as_file(DEFAULT_PACK) as source:
        for path in sorted(Path(source).iterdir()):
            if path.suffix in (".cedar", ".cedarschema", ".yaml"):
                shutil.copyfile(path, target / path.name)
    return True
