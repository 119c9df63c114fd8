"""Policy packs: a Cedar schema and ``.cedar`` files, validated together on load.

A pack is a folder holding exactly one ``*.cedarschema`` file and any number of ``*.cedar``
files (read in name order). Every policy must carry ``@id`` (unique in the pack) and
``@explanation``; the obligations a policy imposes are read from its annotations:

- ``@remedy("approval")`` with ``@approvals("N")`` and ``@approver_groups("g1 g2")``: a forbid
  that an approved grant can lift, and what approval it takes;
- ``@review("mandatory")``: a permit whose use must be reviewed afterwards (break-glass);
- ``@coarse_by_default("cat1 cat2")``: categories for which custos asks coarse precision first.

A pack may also hold ``vocabulary.yaml``: the purposes, categories, protected flags and roles
it knows (:class:`custos.vocabulary.Vocabulary`), validated against its schema
(:func:`_vocabulary_schema`).
It is part of the pack's version (its digest and the files ledgered with it). A pack without
one knows the words of the pack shipped with custos. Every string a policy compares with the
purpose, a category or a protected flag must be a word of the vocabulary: a misspelt word
would otherwise make a policy silently never apply.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import cedarpy
import yaml

from custos.errors import PolicyError
from custos.textfiles import strict_yaml
from custos.vocabulary import DEFAULT_VOCABULARY, PACK_WORDS, Vocabulary

DEFAULT_PACK = resources.files("custos.policy") / "pack"
VOCABULARY_FILE = "vocabulary.yaml"
#: A word of a vocabulary: what Cedar string literals, config keys and messages carry
#: without quoting trouble. At most 32 characters: the database keeps categories, purposes
#: and ticket kinds in VARCHAR(32) columns (events, vault, tickets, approvals), which
#: PostgreSQL enforces; a longer word would be accepted here and fail there.
WORD_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
MAX_WORDS = 256
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
    #: The words this pack knows (its vocabulary.yaml, else the shipped pack's).
    vocabulary: Vocabulary = DEFAULT_VOCABULARY

    @property
    def text(self) -> str:
        return "\n".join(self.files[name] for name in sorted(self.files))


def _read_folder(folder: Path) -> tuple[str, str, dict[str, str], str | None]:
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
    vocabulary: str | None = None
    path = folder / VOCABULARY_FILE
    if path.exists():
        try:
            vocabulary = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{path}: cannot read the vocabulary ({exc})") from None
    return schemas[0].name, schema_text, files, vocabulary


def load_pack(folder: Path | None = None) -> PolicyPack:
    """Load and validate the pack in ``folder`` (default: the pack shipped with custos).

    Raises :class:`PolicyError` naming the file and policy when the schema does not parse,
    a policy does not parse or fails validation against the schema, or an annotation is
    missing, duplicated or malformed.
    """
    if folder is None:
        with resources.as_file(DEFAULT_PACK) as path:
            return load_pack(Path(path))
    schema_name, schema_text, files, vocabulary = _read_folder(folder)
    return build_pack(str(folder), schema_name, schema_text, files, vocabulary=vocabulary)


def pack_from_files(source: str, files: Mapping[str, str]) -> PolicyPack:
    """Rebuild a pack from its files as :attr:`PolicyPack.files` holds them (and the ledger
    keeps them): one schema, the policies and perhaps ``vocabulary.yaml``. Raises
    :class:`PolicyError`."""
    schemas = [name for name in files if name.endswith(".cedarschema")]
    if len(schemas) != 1:
        raise PolicyError(f"{source}: a policy pack needs exactly one .cedarschema file")
    policies = {n: t for n, t in files.items() if n.endswith(".cedar")}
    return build_pack(
        source, schemas[0], files[schemas[0]], policies, vocabulary=files.get(VOCABULARY_FILE)
    )


def _vocabulary_schema() -> Any:
    """The schema of a pack's ``vocabulary.yaml`` as a pydantic model: four lists of words.
    Built when a file does not pass :func:`_plainly_valid` (to name every problem): pydantic
    costs a decision's process ~50 ms to import, and a valid file never needs it."""
    from pydantic import BaseModel, ConfigDict, Field

    word = Annotated[str, Field(pattern=WORD_PATTERN)]

    class VocabularyFile(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

        purposes: Annotated[list[word], Field(min_length=1, max_length=MAX_WORDS)]
        categories: Annotated[list[word], Field(min_length=1, max_length=MAX_WORDS)]
        protected_flags: Annotated[list[word], Field(max_length=MAX_WORDS)]
        roles: Annotated[list[word], Field(max_length=MAX_WORDS)]

    return VocabularyFile


_WORD = re.compile(WORD_PATTERN.removeprefix("^").removesuffix("$"))
#: The lists a vocabulary must not leave empty.
_NON_EMPTY = ("purposes", "categories")


def _plainly_valid(data: dict[Any, Any]) -> bool:
    """Whether ``data`` passes the schema (:func:`_vocabulary_schema`) and has no word twice
    in a list, checked without pydantic: exactly the four lists, of strings each wholly a
    word (at least as strict as the schema: a file it passes, the schema passes too)."""
    if set(data) != set(PACK_WORDS):
        return False
    for key, words in data.items():
        if type(words) is not list or len(words) > MAX_WORDS:
            return False
        if key in _NON_EMPTY and not words:
            return False
        if not all(type(w) is str and _WORD.fullmatch(w) for w in words):
            return False
        if len(set(words)) != len(words):
            return False
    return True


def _node_line(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (keys and list positions), or of the
    deepest node on the way that exists."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for step in loc:
        found: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if k.value == step), None)
            if found is None:  # an unknown key: where the key is
                found = next((k for k, _ in node.value if k.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            found = node.value[step] if 0 <= step < len(node.value) else None
        if found is None:
            break
        node, line = found, found.start_mark.line + 1
    return line


def parse_vocabulary(text: str, where: str) -> Vocabulary:
    """Validate a pack's ``vocabulary.yaml`` (``where`` names it in messages) against
    :func:`_vocabulary_schema`: each list present, of words matching :data:`WORD_PATTERN`, no
    word twice in a list. Raises :class:`PolicyError` naming the line and field of every
    problem."""
    try:
        data = strict_yaml(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark else ""
        raise PolicyError(f"{where}: {at}not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise PolicyError(f"{where}: nested too deeply") from None
    if not isinstance(data, dict):
        raise PolicyError(
            f"{where}: must be a mapping of {', '.join(PACK_WORDS)} to lists of words"
        )
    if _plainly_valid(data):
        return Vocabulary(
            purposes=tuple(data["purposes"]),
            categories=tuple(data["categories"]),
            protected_flags=tuple(data["protected_flags"]),
            roles=tuple(data["roles"]),
        )
    from pydantic import ValidationError

    problems: list[str] = []
    try:
        model = _vocabulary_schema().model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            field = ".".join(str(part) for part in loc)
            message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
            if error["type"] == "string_pattern_mismatch":
                message = "a word is a lowercase letter, then up to 31 of a-z, 0-9 and _"
            line = _node_line(root, loc)
            problems.append(f"line {line}: field '{field}': {message}")
    else:
        for key in PACK_WORDS:
            seen: set[str] = set()
            for position, word in enumerate(getattr(model, key)):
                if word in seen:
                    line = _node_line(root, (key, position))
                    problems.append(f"line {line}: field '{key}.{position}': {word!r} twice")
                seen.add(word)
    if problems:
        raise PolicyError(
            f"{where}: the vocabulary is invalid ({len(problems)} problem(s)):\n  - "
            + "\n  - ".join(problems)
        )
    return Vocabulary(
        purposes=tuple(model.purposes),
        categories=tuple(model.categories),
        protected_flags=tuple(model.protected_flags),
        roles=tuple(model.roles),
    )


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
    source: str,
    schema_name: str,
    schema_text: str,
    files: dict[str, str],
    *,
    vocabulary: str | None = None,
) -> PolicyPack:
    """Validate a pack given as texts (``vocabulary``: its vocabulary.yaml, if it has one).
    Raises :class:`PolicyError` (see :func:`load_pack`)."""
    words = (
        parse_vocabulary(vocabulary, f"{source}/{VOCABULARY_FILE}")
        if vocabulary is not None
        else DEFAULT_VOCABULARY
    )
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
            strange = sorted(
                set(annotations.get("coarse_by_default", "").split()) - set(words.categories)
            )
            if strange:
                problems.append(
                    f"{label} ({pid}): @coarse_by_default names unknown categories "
                    f"{', '.join(strange)}"
                )
            priority = annotations.get("priority")
            if priority is not None and not _is_integer(priority):
                problems.append(f"{label} ({pid}): @priority must be a whole number")
            problems.extend(
                f"{label} ({pid}): {message}" for message in _unknown_literals(body, words)
            )
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
    hashed: dict[str, Any] = {"schema": schema_text, "files": files}
    if vocabulary is not None:
        # Only when present: a pack without one keeps the digest it had before vocabularies.
        hashed["vocabulary"] = vocabulary
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()
    coarse = frozenset(
        category
        for info in policies.values()
        for category in info.annotations.get("coarse_by_default", "").split()
    )
    return PolicyPack(
        source=source,
        schema_text=schema_text,
        files={
            schema_name: schema_text,
            **({VOCABULARY_FILE: vocabulary} if vocabulary is not None else {}),
            **files,
        },
        policies=policies,
        by_cedar_id=by_cedar_id,
        digest=digest,
        coarse_by_default=coarse,
        schema=schema,
        policy_set=policy_set,
        vocabulary=words,
    )


#: Attributes whose values are words of the vocabulary: a single word, or a set of words.
_WORD_OF = {
    "context.purpose": "purpose",
    "context.ticket.kind": "purpose",
    "context.grant.purpose": "purpose",
    "resource.category": "category",
    "principal.role": "role",
}
_WORDS_OF = {
    "resource.subject.protected": "protected flag",
    "context.grant.categories": "category",
}


def _attribute_path(expr: Any) -> str | None:
    """``context.purpose`` for Cedar's JSON of that expression; None for anything else."""
    parts: list[str] = []
    while isinstance(expr, dict) and "." in expr:
        parts.append(expr["."]["attr"])
        expr = expr["."]["left"]
    if isinstance(expr, dict) and "Var" in expr and parts:
        return ".".join([expr["Var"], *reversed(parts)])
    return None


def _literals(expr: Any) -> list[str]:
    """The string literals of ``expr`` if it is one, or a set of them."""
    if isinstance(expr, dict) and isinstance(expr.get("Value"), str):
        return [expr["Value"]]
    if isinstance(expr, dict) and isinstance(expr.get("Set"), list):
        return [w for item in expr["Set"] for w in _literals(item)]
    return []


def _unknown_literals(body: Any, words: Vocabulary) -> list[str]:
    """A message per string a policy compares with a word attribute (the purpose, a
    category, a protected flag, a role) that is not a word of ``words``."""
    found: list[str] = []

    def check(kind: str | None, values: list[str]) -> None:
        if kind is not None:
            found.extend(
                f"compares {words.unknown(kind, v)}" for v in values if not words.knows(kind, v)
            )

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        for op, args in node.items():
            if isinstance(args, dict) and "left" in args and "right" in args:
                left, right = args["left"], args["right"]
                if op in ("==", "!="):
                    check(_WORD_OF.get(_attribute_path(left) or ""), _literals(right))
                    check(_WORD_OF.get(_attribute_path(right) or ""), _literals(left))
                elif op in ("contains", "containsAll", "containsAny"):
                    # A set attribute holding a literal, or a literal set holding an attribute.
                    check(_WORDS_OF.get(_attribute_path(left) or ""), _literals(right))
                    check(_WORD_OF.get(_attribute_path(right) or ""), _literals(left))
            walk(args)

    walk(body.get("conditions", []))
    return list(dict.fromkeys(found))


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
