"""The mapping file of an audit-log import (docs/formats.md, *Audit-log mapping*): which
tables and cloud resources hold which category of personal data, who each database role or
IAM principal is, and where an entry names its subject.

A log says ``alice_ro read public.users``; custos needs ``emp-1001 read contact of
user-42``. The mapping is the company's statement of that translation, kept in a file it
reviews like any other configuration. Rules are tried in file order; the first that matches
wins. Names match as shell-style patterns (``fnmatch``: ``*``, ``?``, ``[…]``), tables and
roles without regard to case (PostgreSQL folds unquoted names).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from custos.directory.files import Id
from custos.errors import InvalidInput, ValidationFailed
from custos.textfiles import read_text, strict_yaml
from custos.vocabulary import DEFAULT_VOCABULARY, Precision, Vocabulary

LogFormat = Literal["pgaudit", "cloudtrail"]
MAX_MAPPING_BYTES = 4 * 2**20

Pattern = Annotated[str, Field(min_length=1, max_length=2048)]
Prefix = Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9._:@+\-]*$")]
#: A category or purpose: a word of the active pack's vocabulary, checked by
#: :func:`parse_mapping` (its shape here, its meaning there).
Word = Annotated[str, Field(min_length=1, max_length=64)]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrincipalRule(_Rule):
    """Who a log's actor is: exactly one of ``role`` (a database role, pgaudit), ``arn`` (an
    IAM principal's ARN), ``user_name`` (an IAM user's name) or ``session_name`` (the session
    name of an assumed role, typically the person's login), mapped to ``principal``."""

    role: Pattern | None = None
    arn: Pattern | None = None
    user_name: Pattern | None = None
    session_name: Pattern | None = None
    principal: Id

    @model_validator(mode="after")
    def _one_matcher(self) -> PrincipalRule:
        given = [k for k in ("role", "arn", "user_name", "session_name") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of role, arn, user_name, session_name")
        return self


class TableRule(_Rule):
    """A table (``schema.table`` pattern; Athena: ``database.table``) holding ``category``.
    ``subject_column`` names the column whose value is the subject id (found in a statement's
    ``WHERE col = …``/``col IN (…)`` or an ``INSERT``'s values), made an id with
    ``subject_prefix`` in front. Without it no statement on the table names a subject."""

    table: Pattern
    category: Word
    subject_column: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    subject_prefix: Prefix = ""
    precision: Precision = "precise"


class SubjectPath(_Rule):
    """Where a CloudTrail record names the subject: ``path``, a dotted key path into the
    record (``requestParameters.key.UserId``); ``pattern``, a regular expression whose group
    ``subject`` is taken from the value found (default: the whole value); ``prefix`` put in
    front to make the id."""

    path: Annotated[str, Field(min_length=1, max_length=512)]
    pattern: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    prefix: Prefix = ""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc.msg})") from None
        if "subject" not in compiled.groupindex:
            raise ValueError("needs a named group (?P<subject>…)")
        return value

    def find(self, record: Mapping[str, Any]) -> str | None:
        """The subject named in ``record``, or None if the path or the pattern finds none."""
        value: Any = record
        for key in self.path.split("."):
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
        if isinstance(value, bool) or not isinstance(value, str | int):
            return None
        text = str(value)
        if self.pattern is not None:
            found = re.search(self.pattern, text)
            if found is None or found.group("subject") is None:
                return None
            text = found.group("subject")
        return self.prefix + text


class ResourceRule(_Rule):
    """A cloud resource holding ``category``: exactly one of ``s3`` (``bucket/key``
    pattern), ``dynamodb`` (a table name pattern) or ``arn`` (a resource ARN pattern); the
    subject where ``subject`` says."""

    s3: Pattern | None = None
    dynamodb: Pattern | None = None
    arn: Pattern | None = None
    category: Word
    subject: SubjectPath | None = None
    precision: Precision = "precise"

    @model_validator(mode="after")
    def _one_matcher(self) -> ResourceRule:
        given = [k for k in ("s3", "dynamodb", "arn") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of s3, dynamodb, arn")
        return self


class LogMapping(_Rule):
    """A whole mapping file. ``purpose`` is what the system the log comes from is used for:
    the access events need one, and nobody stated one per access (these paths bypass custos),
    so it is declared once here and every event is marked ``guarded: false``."""

    format: LogFormat
    purpose: Word
    source: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    #: pgaudit, stderr logs: the server's ``log_line_prefix`` (PostgreSQL's default if
    #: absent); it must hold ``%u`` for roles to be known.
    log_line_prefix: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    principals: list[PrincipalRule] = []
    tables: list[TableRule] = []
    resources: list[ResourceRule] = []

    @model_validator(mode="after")
    def _resources_only_for_cloudtrail(self) -> LogMapping:
        if self.format == "pgaudit" and self.resources:
            raise ValueError("resources are for cloudtrail; pgaudit maps tables")
        return self

    #: The SHA-256 of the file's text (set by :func:`parse_mapping`): each event names the
    #: mapping that attributed it, so a mapping changed to blame someone else shows.
    _digest: str = PrivateAttr(default="")

    @property
    def source_name(self) -> str:
        return self.source or self.format

    @property
    def digest(self) -> str:
        return self._digest

    def principal_for(self, **names: str | None) -> str | None:
        """The principal of the first rule matching one of ``names`` (``role``, ``arn``,
        ``user_name``, ``session_name``), or None."""
        for rule in self.principals:
            for key, value in names.items():
                pattern = getattr(rule, key)
                if pattern is None or value is None:
                    continue
                folded = key == "role"
                if fnmatchcase(
                    value.lower() if folded else value, pattern.lower() if folded else pattern
                ):
                    return rule.principal
        return None

    def table_for(self, names: Sequence[str]) -> TableRule | None:
        """The first rule matching one of ``names`` (qualified first), or None."""
        for rule in self.tables:
            pattern = rule.table.lower()
            if any(fnmatchcase(name.lower(), pattern) for name in names):
                return rule
        return None


def _describe(err: Mapping[str, Any]) -> str:
    field = ".".join(str(part) for part in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"field '{field}': unknown field"
    if err["type"] == "missing":
        return f"field '{field}': missing"
    return f"field '{field}': {str(err['msg']).removeprefix('Value error, ')}"


def parse_mapping(text: str, source: str, words: Vocabulary = DEFAULT_VOCABULARY) -> LogMapping:
    """Decode and validate a mapping file's ``text`` (YAML; ``source`` names it in messages);
    its purpose and categories must be words of ``words`` (the active pack's).

    Raises :class:`InvalidInput` when it is not YAML and :class:`ValidationFailed` listing
    every bad field otherwise."""
    try:
        data = strict_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise InvalidInput(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise InvalidInput(f"{source}: nested too deeply") from None
    if not isinstance(data, Mapping):
        raise ValidationFailed(
            f"{source}: not a mapping file",
            [f"{source}: the top level must be a mapping with format, purpose, principals, …"],
        )
    try:
        mapping = LogMapping.model_validate(dict(data))
    except ValidationError as exc:
        problems = [f"{source}: {_describe(e)}" for e in exc.errors()]
        raise ValidationFailed(f"{source}: {len(problems)} problem(s)", problems) from None
    checks = [
        ("purpose", "purpose", mapping.purpose),
        *((f"tables.{i}.category", "category", r.category) for i, r in enumerate(mapping.tables)),
        *(
            (f"resources.{i}.category", "category", r.category)
            for i, r in enumerate(mapping.resources)
        ),
    ]
    problems = [
        f"{source}: field '{field}': {words.unknown(kind, value)}"
        for field, kind, value in checks
        if not words.knows(kind, value)
    ]
    if problems:
        raise ValidationFailed(f"{source}: {len(problems)} problem(s)", problems)
    mapping._digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return mapping


def read_mapping(
    path: Path, log_format: LogFormat, words: Vocabulary = DEFAULT_VOCABULARY
) -> LogMapping:
    """Read the mapping file ``path`` for a log of ``log_format``, its words ``words``'s.

    Raises :class:`InvalidInput` when it cannot be read, is not YAML or maps another format,
    and :class:`ValidationFailed` when a field is wrong."""
    mapping = parse_mapping(
        read_text(path, "a mapping file", max_bytes=MAX_MAPPING_BYTES), str(path), words
    )
    if mapping.format != log_format:
        raise InvalidInput(
            f"{path}: maps a {mapping.format} log, not {log_format}",
            hint=f"pass --format {mapping.format}, or the mapping written for {log_format}",
        )
    return mapping
