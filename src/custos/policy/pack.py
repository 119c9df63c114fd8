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
import shutil
import string
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
        raise PolicyError(f"{source}/{schema_name}: invalid Cedar schema: {exc}") from None
    problems: list[str] = []
    policies: dict[str, PolicyInfo] = {}
    by_cedar_id: dict[str, str] = {}
    position = 0
    for name in sorted(files):
        text = files[name]
        try:
            est = json.loads(cedarpy.policies_to_json_str(text))
        except ValueError as exc:
            raise PolicyError(f"{source}/{name}: does not parse: {exc}") from None
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
