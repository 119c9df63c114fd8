"""Writing a simulated world to a folder, and measuring detection against its labels."""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from custos.config import DEFAULT_RESIDENCY
from custos.detect import EventStore, run_detection
from custos.detect.replay import ReplayPolicy, ReplaySource
from custos.directory import DirectoryStore, read_directory_file
from custos.errors import InvalidInput
from custos.policy import PolicyEngine
from custos.policy.pack import DEFAULT_PACK, load_pack
from custos.sim.grants import benign_grants
from custos.sim.scenarios import OPT_IN, SCENARIOS
from custos.sim.world import START, World, new_world
from custos.store import Database, open_database
from custos.store.approvals import GrantRow
from custos.textfiles import read_lines, strict_json
from custos.times import utc_instant

#: A scenario: adds events (and tickets) to the world and labels them in ``world.labels``.
Scenario = Callable[[random.Random, World, set[str]], None]

DIRECTORY_FILE = "directory.yaml"
EVENTS_FILE = "events.jsonl"
LABELS_FILE = "labels.json"
GRANTS_FILE = "grants.jsonl"


@dataclass(frozen=True, slots=True)
class SimulationReport:
    out: Path
    employees: int
    days: int
    events: int
    tickets: int
    scenarios: dict[str, list[str]]


def monday_of(moment: datetime) -> datetime:
    """Midnight UTC of the Monday on or before ``moment`` (which must carry a time zone)."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def simulate(
    out: Path,
    *,
    employees: int = 200,
    days: int = 30,
    seed: int = 1,
    scenarios: Sequence[str] = (),
    extra: Mapping[str, Scenario] | None = None,
    start: datetime = START,
) -> SimulationReport:
    """Write ``directory.yaml``, ``events.jsonl``, ``grants.jsonl`` (the grants the
    approvals part would hold, see :mod:`custos.sim.grants`) and ``labels.json`` into
    ``out``.

    The history runs ``days`` days from ``start`` (midnight UTC of a Monday; by default a
    fixed day, so that a seed always gives the same files).

    ``scenarios`` names the misuse to inject (default: all built-in ones, or none when
    ``extra`` is given); ``extra`` adds scenarios written elsewhere (see
    :mod:`custos.sim.scenarios` for the shape). Raises :class:`InvalidInput` for an unknown
    scenario, sizes too small to hold the scenarios, or an unwritable folder.
    """
    known: dict[str, Scenario] = {**SCENARIOS, **OPT_IN, **(extra or {})}
    names = list(scenarios) or (list(extra) if extra else list(SCENARIOS))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidInput(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if employees < 40 or days < 14:
        raise InvalidInput("a simulation needs at least 40 employees and 14 days")
    if start.tzinfo is None or start.astimezone(UTC) != monday_of(start):
        raise InvalidInput("a simulation starts at midnight UTC on a Monday")
    rng, world = new_world(seed, employees, days, start.astimezone(UTC))
    used: set[str] = set()
    for name in names:
        known[name](rng, world, used)
    benign_grants(seed, world)
    world.events.sort(key=lambda e: (e["time"], e["id"]))
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / DIRECTORY_FILE).write_text(
            yaml.safe_dump(world.directory(), sort_keys=False), encoding="utf-8"
        )
        with (out / EVENTS_FILE).open("w", encoding="utf-8") as handle:
            for event in world.events:
                handle.write(json.dumps(event, separators=(",", ":")) + "\n")
        with (out / GRANTS_FILE).open("w", encoding="utf-8") as handle:
            for grant in world.grants:
                handle.write(json.dumps(grant, separators=(",", ":")) + "\n")
        labels = {
            "employees": len(world.people),
            "days": days,
            "seed": seed,
            "start": world.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "scenarios": world.labels,
        }
        (out / LABELS_FILE).write_text(json.dumps(labels, indent=2), encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"{out}: cannot write the simulation ({exc.strerror})") from None
    return SimulationReport(
        out,
        len(world.people),
        days,
        len(world.events),
        len(world.tickets),
        {k: v["culprits"] for k, v in world.labels.items()},
    )


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    name: str
    culprits: list[str]
    caught: list[str]
    rules: list[str]

    @property
    def detected(self) -> bool:
        return set(self.culprits) <= set(self.caught)


@dataclass(frozen=True, slots=True)
class EvalReport:
    employees: int
    days: int
    events: int
    alerts: int
    scenarios: list[ScenarioResult]
    false_alerts: int
    false_rules: dict[str, int]

    @property
    def employee_days(self) -> int:
        return self.employees * self.days

    @property
    def false_rate(self) -> float:
        """False alerts per 1,000 employee-days."""
        return 1000.0 * self.false_alerts / max(self.employee_days, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "employees": self.employees,
            "days": self.days,
            "employee_days": self.employee_days,
            "events": self.events,
            "alerts": self.alerts,
            "scenarios": {
                s.name: {
                    "detected": s.detected,
                    "culprits": s.culprits,
                    "caught": s.caught,
                    "rules": s.rules,
                }
                for s in self.scenarios
            },
            "false_alerts": self.false_alerts,
            "false_alerts_by_rule": self.false_rules,
            "false_alerts_per_1000_employee_days": round(self.false_rate, 3),
            "all_detected": all(s.detected for s in self.scenarios),
        }


def _labels(folder: Path) -> Mapping[str, Any]:
    path = folder / LABELS_FILE
    try:
        data = strict_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file (run `custos simulate --out {folder}`)") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"{path}: not a labels file ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), dict):
        raise InvalidInput(f"{path}: not a labels file (no 'scenarios' table)")
    for name, info in data["scenarios"].items():
        lists = (
            [info.get(key, []) for key in ("culprits", "events")] if isinstance(info, dict) else []
        )
        if not lists or not all(
            isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in lists
        ):
            raise InvalidInput(
                f"{path}: scenario {name!r} must be a table whose 'culprits' and 'events' "
                "are lists of ids"
            )
    for key in ("employees", "days"):
        if not isinstance(data.get(key), int):
            raise InvalidInput(f"{path}: field '{key}' must be an integer")
    return data


def load_grants(db: Database, lines: Sequence[str], source: str) -> int:
    """Store the grant records of a simulated world (``grants.jsonl``) in ``db``'s grants
    table as durable grants, as the approvals part leaves them once their ledger entries
    are written: history made before this store existed, for detection to read as it reads
    a real installation's. Returns how many. Raises :class:`InvalidInput` for a bad line."""
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            g = strict_json(line)
            rows.append(
                GrantRow(
                    id=str(g["grant"]),
                    request_id=None,
                    principal=str(g["principal"]),
                    subject=str(g["subject"]),
                    categories=list(g["categories"]),
                    actions=list(g["actions"]),
                    purpose=str(g["purpose"]),
                    ticket=g.get("ticket"),
                    precision=str(g["precision"]),
                    approvals=int(g["approvals"]),
                    approver_groups=list(g["approver_groups"]),
                    approvers=[str(a) for a in g["approvers"]],
                    reason=str(g["reason"]),
                    starts=utc_instant(g["starts"]),
                    ends=utc_instant(g["ends"]),
                    break_glass=False,
                    review="none",
                    logged=True,
                )
            )
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise InvalidInput(
                f"{source}: line {number} is not a grant record ({type(exc).__name__})"
            ) from None
    with db.session() as session:
        session.add_all(rows)
    return len(rows)


def evaluate(folder: Path, section: Mapping[str, Any] | None = None) -> EvalReport:
    """Load a simulated world into a fresh, private SQLite store, run detection, and score
    it against the labels: a scenario is detected when every culprit is named by an alert
    whose evidence includes the scenario's events; any alert whose evidence holds no
    scenario event is a false alert. Raises :class:`InvalidInput` for a bad folder."""
    labels = _labels(folder)
    document = read_directory_file(folder / DIRECTORY_FILE)
    lines = read_lines(folder / EVENTS_FILE, "an events file")
    with tempfile.TemporaryDirectory(prefix="custos-eval-") as tmp:
        db = open_database(f"sqlite:///{Path(tmp) / 'eval.db'}", migrate=True)
        try:
            directory = DirectoryStore(db)
            directory.merge(document, source=str(folder / DIRECTORY_FILE))
            EventStore(db).import_lines(lines, str(folder / EVENTS_FILE))
            if (folder / GRANTS_FILE).is_file():
                grant_lines = read_lines(folder / GRANTS_FILE, "a grants file")
                load_grants(db, grant_lines, str(folder / GRANTS_FILE))
            # No ledger: policy replay judges the events on the directory and grants loaded
            # here, as a fixed state, with the default pack and residency.
            replay = ReplaySource(
                ReplayPolicy(
                    PolicyEngine(load_pack(Path(str(DEFAULT_PACK)))),
                    lambda jurisdiction: DEFAULT_RESIDENCY.get(jurisdiction, (jurisdiction,)),
                ),
                None,
            )
            run = run_detection(db, directory, section, replay=replay)
        finally:
            db.dispose()
    scenario_events: dict[str, set[str]] = {
        name: set(info.get("events", [])) for name, info in labels["scenarios"].items()
    }
    every = set().union(*scenario_events.values()) if scenario_events else set()
    results = []
    for name, info in labels["scenarios"].items():
        evidence = scenario_events[name]
        caught: set[str] = set()
        rules: set[str] = set()
        for alert in run.alerts:
            if evidence & set(alert.events):
                hit = set(alert.principals) & set(info.get("culprits", []))
                caught |= hit
                if hit:
                    rules.add(alert.rule)
        results.append(
            ScenarioResult(name, list(info.get("culprits", [])), sorted(caught), sorted(rules))
        )
    false_rules: dict[str, int] = {}
    for alert in run.alerts:
        if not every & set(alert.events):
            false_rules[alert.rule] = false_rules.get(alert.rule, 0) + 1
    return EvalReport(
        employees=int(labels["employees"]),
        days=int(labels["days"]),
        events=run.events,
        alerts=len(run.alerts),
        scenarios=results,
        false_alerts=sum(false_rules.values()),
        false_rules=false_rules,
    )


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``1-5``, ``1,2,3`` or a mix (``1-3,7``), in the order given, each once.
    Raises :class:`InvalidInput` for anything else, or more than 100 seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise InvalidInput(
                f"--seeds {text!r}: not a list of seeds", hint="e.g. 1-5 or 1,2,3"
            ) from None
        if first < 0 or last < first:
            raise InvalidInput(f"--seeds {text!r}: {part.strip()} is not an ascending range")
        seeds += [s for s in range(first, last + 1) if s not in seeds]
        if len(seeds) > 100:
            raise InvalidInput(f"--seeds {text!r}: at most 100 seeds")
    return seeds


def evaluate_seeds(
    seeds: Sequence[int],
    *,
    employees: int = 200,
    days: int = 30,
    section: Mapping[str, Any] | None = None,
) -> list[tuple[int, EvalReport]]:
    """Simulate each seed (every built-in scenario) into a private temporary folder and
    :func:`evaluate` it. Raises :class:`InvalidInput` as :func:`simulate` does."""
    runs = []
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="custos-sim-") as tmp:
            simulate(Path(tmp), employees=employees, days=days, seed=seed)
            runs.append((seed, evaluate(Path(tmp), section)))
    return runs


def _total(runs: Sequence[tuple[int, EvalReport]]) -> dict[str, Any]:
    employee_days = sum(r.employee_days for _, r in runs)
    false = sum(r.false_alerts for _, r in runs)
    by_rule: dict[str, int] = {}
    for _, report in runs:
        for rule, count in report.false_rules.items():
            by_rule[rule] = by_rule.get(rule, 0) + count
    return {
        "events": sum(r.events for _, r in runs),
        "alerts": sum(r.alerts for _, r in runs),
        "scenarios": sum(len(r.scenarios) for _, r in runs),
        "caught": sum(s.detected for _, r in runs for s in r.scenarios),
        "false_alerts": false,
        "false_alerts_by_rule": dict(sorted(by_rule.items())),
        "employee_days": employee_days,
        "false_alerts_per_1000_employee_days": round(1000.0 * false / max(employee_days, 1), 3),
    }


def seeds_json(runs: Sequence[tuple[int, EvalReport]]) -> dict[str, Any]:
    """What ``custos eval --seeds … --json`` prints: each seed's report and the totals."""
    return {"seeds": {str(seed): report.to_dict() for seed, report in runs}, "total": _total(runs)}


def seeds_text(runs: Sequence[tuple[int, EvalReport]]) -> str:
    """What ``custos eval --seeds …`` prints: Markdown tables per seed and in total, per
    scenario, and the false alerts by rule (docs/design/detect.md quotes it as it is)."""
    lines = [
        "| seed | events | alerts | scenarios caught | missed | false alerts | "
        "employee-days | false alerts per 1,000 employee-days |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for seed, r in runs:
        missed = ", ".join(s.name for s in r.scenarios if not s.detected) or "-"
        caught = sum(s.detected for s in r.scenarios)
        lines.append(
            f"| {seed} | {r.events:,} | {r.alerts} | {caught}/{len(r.scenarios)} | {missed} | "
            f"{r.false_alerts} | {r.employee_days:,} | {r.false_rate:.2f} |"
        )
    t = _total(runs)
    lines.append(
        f"| total | {t['events']:,} | {t['alerts']} | {t['caught']}/{t['scenarios']} | "
        f"{t['scenarios'] - t['caught']} | {t['false_alerts']} | {t['employee_days']:,} | "
        f"{t['false_alerts_per_1000_employee_days']:.2f} |"
    )
    lines += ["", "| scenario | caught | rules that named the culprits |", "|---|---|---|"]
    names = sorted({s.name for _, r in runs for s in r.scenarios})
    for name in names:
        results = [s for _, r in runs for s in r.scenarios if s.name == name]
        rules = sorted({rule for s in results for rule in s.rules})
        caught = sum(s.detected for s in results)
        lines.append(f"| `{name}` | {caught}/{len(results)} | {', '.join(rules) or '-'} |")
    by_rule = ", ".join(f"{rule} {n}" for rule, n in t["false_alerts_by_rule"].items())
    lines += ["", f"false alerts by rule: {by_rule or 'none'}"]
    return "\n".join(lines)
