"""Reading directory files (DESIGN.md, *Directory file*): YAML or JSON.

Validation is complete before anything is returned: every problem in the file is collected
and reported together, each naming the file, the entry (section, position and id) and the
field. Unknown fields of an entry are kept (in ``extra``); unknown top-level sections are an
error, because a misspelt section would otherwise be silently ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from custos.directory.model import DirectoryDocument, Principal, Subject, Ticket
from custos.errors import InvalidInput, ValidationFailed
from custos.textfiles import check_plain_json, read_text, strict_json, strict_yaml
from custos.timefields import UtcTime
from custos.vocabulary import (
    DEFAULT_VOCABULARY,
    PrincipalKind,
    PrincipalStatus,
    TicketStatus,
    Vocabulary,
)

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,127}$")
SECTIONS = ("principals", "subjects", "tickets")
MAX_FILE_BYTES = 256 * 1024 * 1024


def _check_id(value: str) -> str:
    if not ID_PATTERN.match(value):
        raise ValueError(
            "must be 1-128 characters of letters, digits and . _ : @ + -, "
            "starting with a letter or digit"
        )
    return value


Id = Annotated[str, AfterValidator(_check_id)]
Time = UtcTime
Country = Annotated[str, Field(pattern=r"^[A-Z]{2,3}$")]
#: A word of the policy pack's vocabulary (a protected flag, a ticket kind): its shape here,
#: whether the pack knows it in :func:`parse_document`.
Word = Annotated[str, Field(min_length=1, max_length=64)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True, frozen=True)

    @model_validator(mode="after")
    def _plain_extras(self) -> _Entry:
        if self.model_extra:  # most entries have none: skip encoding an empty mapping
            check_plain_json(self.model_extra)
        return self

    def extras(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PrincipalEntry(_Entry):
    id: Id
    name: Annotated[str, Field(min_length=1, max_length=256)]
    kind: PrincipalKind = "employee"
    role: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
    team: Annotated[str, Field(min_length=1, max_length=128)]
    manager: Id | None = None
    country: Country
    status: PrincipalStatus = "active"
    groups: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]] = []
    role_since: Time | None = None

    def to_domain(self) -> Principal:
        return Principal(
            id=self.id,
            name=self.name,
            kind=self.kind,
            role=self.role,
            team=self.team,
            country=self.country,
            status=self.status,
            manager=self.manager,
            groups=tuple(sorted(set(self.groups))),
            role_since=self.role_since,
            extra=self.extras(),
        )


class SubjectEntry(_Entry):
    id: Id
    handle: Annotated[str, Field(max_length=256)] | None = None
    jurisdiction: Country
    protected: list[Word] = []
    employee: Id | None = None
    #: Other accounts of the same person (ids of subjects in this file or already stored).
    linked: list[Id] = []

    @field_validator("linked")
    @classmethod
    def _not_linked_to_itself(cls, linked: list[str], info: ValidationInfo) -> list[str]:
        # Refused rather than dropped: a subject naming itself is most likely a typo for
        # the account that was meant, and that link would otherwise be lost without a word.
        if info.data.get("id") in linked:
            raise ValueError("a subject cannot be linked to itself")
        return linked

    def to_domain(self) -> Subject:
        return Subject(
            id=self.id,
            jurisdiction=self.jurisdiction,
            handle=self.handle,
            protected=tuple(sorted(set(self.protected))),
            employee=self.employee,
            linked=tuple(sorted(set(self.linked))),
            extra=self.extras(),
        )


class TicketEntry(_Entry):
    id: Id
    kind: Word
    subject: Id
    assignee: Id
    status: TicketStatus
    opened: Time | None = None
    closed: Time | None = None
    opened_by: Id | None = None

    @model_validator(mode="after")
    def _closed_after_opened(self) -> TicketEntry:
        if self.opened is not None and self.closed is not None and self.closed < self.opened:
            raise ValueError("closed is before opened")
        return self

    def to_domain(self) -> Ticket:
        return Ticket(
            id=self.id,
            kind=self.kind,
            subject=self.subject,
            assignee=self.assignee,
            status=self.status,
            opened=self.opened,
            closed=self.closed,
            opened_by=self.opened_by,
            extra=self.extras(),
        )


_MODELS: Mapping[str, type[_Entry]] = {
    "principals": PrincipalEntry,
    "subjects": SubjectEntry,
    "tickets": TicketEntry,
}


def _describe_error(err: Mapping[str, Any]) -> str:
    field = ".".join(str(part) for part in err["loc"]) or "(entry)"
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    return f"field '{field}': {message}"


def _unknown_words(section: str, kind: object, flags: object, vocabulary: Vocabulary) -> list[str]:
    """``field '…': unknown …`` for a ticket ``kind`` or each subject's protected flag in
    ``flags`` that ``vocabulary`` lacks (values of another type are the model's to refuse)."""
    if section == "tickets" and isinstance(kind, str) and not vocabulary.knows("purpose", kind):
        return [f"field 'kind': {vocabulary.unknown('ticket kind', kind)}"]
    if section == "subjects" and isinstance(flags, list | tuple):
        return [
            f"field 'protected.{i}': {vocabulary.unknown('protected flag', flag)}"
            for i, flag in enumerate(flags)
            if isinstance(flag, str) and not vocabulary.knows("protected flag", flag)
        ]
    return []


def parse_document(
    data: Any, source: str, vocabulary: Vocabulary = DEFAULT_VOCABULARY
) -> DirectoryDocument:
    """Validate already-decoded directory ``data`` from ``source`` (a name for messages);
    protected flags and ticket kinds must be words of ``vocabulary`` (the active pack's).

    Raises :class:`ValidationFailed` listing every problem found.
    """
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise ValidationFailed(
            f"{source}: not a directory file",
            [f"{source}: the top level must be a mapping with principals, subjects, tickets"],
        )
    for key in data:
        if key not in SECTIONS:
            problems.append(f"{source}: unknown section '{key}' (expected {', '.join(SECTIONS)})")
    parsed: dict[str, list[Any]] = {name: [] for name in SECTIONS}
    for section in SECTIONS:
        entries = data.get(section) or []
        if not isinstance(entries, list):
            problems.append(f"{source}: '{section}' must be a list")
            continue
        seen: dict[str, int] = {}
        model = _MODELS[section]
        for position, raw in enumerate(entries):
            label = _entry_label(source, section, position, raw)
            if not isinstance(raw, Mapping):
                problems.append(f"{label}: must be a mapping of fields")
                continue
            try:
                entry = model.model_validate(dict(raw))
            except ValidationError as exc:
                errors = exc.errors()
                problems.extend(f"{label}: {_describe_error(e)}" for e in errors)
                # Every problem at once: the words too, though the entry has others.
                faulty = {str(e["loc"][0]) for e in errors if e.get("loc")}
                kind = None if "kind" in faulty else raw.get("kind")
                flags = None if "protected" in faulty else raw.get("protected")
                problems.extend(
                    f"{label}: {message}"
                    for message in _unknown_words(section, kind, flags, vocabulary)
                )
                continue
            unknown = _unknown_words(
                section, getattr(entry, "kind", None), getattr(entry, "protected", None), vocabulary
            )
            if unknown:
                problems.extend(f"{label}: {message}" for message in unknown)
                continue
            entry_id = entry.id  # type: ignore[attr-defined]
            if entry_id in seen:
                problems.append(f"{label}: duplicate id (first at {section}[{seen[entry_id]}])")
                continue
            seen[entry_id] = position
            parsed[section].append(entry.to_domain())  # type: ignore[attr-defined]
    if problems:
        raise ValidationFailed(
            f"{source}: {len(problems)} problem(s); nothing was loaded", problems
        )
    return DirectoryDocument(
        principals=tuple(parsed["principals"]),
        subjects=tuple(parsed["subjects"]),
        tickets=tuple(parsed["tickets"]),
    )


def _entry_label(source: str, section: str, position: int, raw: Any) -> str:
    entry_id = raw.get("id") if isinstance(raw, Mapping) else None
    suffix = f" (id {entry_id!r})" if isinstance(entry_id, str) and len(entry_id) <= 128 else ""
    return f"{source}: {section}[{position}]{suffix}"


def read_directory_file(
    path: Path, vocabulary: Vocabulary = DEFAULT_VOCABULARY
) -> DirectoryDocument:
    """Read and validate one directory file (``.json``, ``.yaml``/``.yml``; else YAML)
    against ``vocabulary`` (the active pack's words).

    Raises :class:`InvalidInput` when the file cannot be read or decoded and
    :class:`ValidationFailed` when its content is invalid.
    """
    text = read_text(path, "a directory file", max_bytes=MAX_FILE_BYTES)
    return parse_text(
        text, str(path), as_json=path.suffix.lower() == ".json", vocabulary=vocabulary
    )


def parse_text(
    text: str,
    source: str,
    *,
    as_json: bool = False,
    vocabulary: Vocabulary = DEFAULT_VOCABULARY,
) -> DirectoryDocument:
    """Decode ``text`` as JSON or YAML and validate it. Raises as :func:`read_directory_file`."""
    try:
        data = strict_json(text) if as_json else strict_yaml(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{source}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise InvalidInput(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise InvalidInput(f"{source}: nested too deeply") from None
    except ValueError as exc:  # NaN or Infinity, which JSON does not have
        raise InvalidInput(f"{source}: not valid JSON: {exc}") from None
    if data is None:
        data = {}
    return parse_document(data, source, vocabulary)


def merge_documents(documents: Iterable[DirectoryDocument]) -> DirectoryDocument:
    """Combine documents; a later entry with the same id replaces an earlier one."""
    principals: dict[str, Principal] = {}
    subjects: dict[str, Subject] = {}
    tickets: dict[str, Ticket] = {}
    for doc in documents:
        principals.update((p.id, p) for p in doc.principals)
        subjects.update((s.id, s) for s in doc.subjects)
        tickets.update((t.id, t) for t in doc.tickets)
    return DirectoryDocument(
        tuple(principals.values()), tuple(subjects.values()), tuple(tickets.values())
    )
