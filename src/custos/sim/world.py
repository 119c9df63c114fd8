"""A synthetic organisation and its benign traffic (DESIGN.md formats throughout).

Teams of the roles the default policy pack knows, managers, countries with their time zones
and shifts; tickets arrive per team and go to the least-loaded person at work; almost every
access cites the ticket that explains it. The benign traffic keeps to the default policy
pack, as a company's does when its rules are enforced: each role reads only the categories
its policy permits, for its own purpose, on tickets assigned to it, protected people only
under two-person grants; staff who are leaving no longer work on personal data (the pack
refuses them everything). Benign noise that real logs have is included, and where custos
would refuse it the log says so: helping on a teammate's ticket and lookups with no ticket
at all (refused: need to know), a purpose that does not match the ticket's kind on a
protected person (refused), looking before the ticket is filed, refusals and retries,
break-glass during incidents with the ticket filed afterwards, role changes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

#: team, role, share of staff, countries, local shift start hour, tickets per person-day
TEAMS: tuple[tuple[str, str, float, tuple[str, ...], int, float], ...] = (
    ("support-americas", "support_agent", 0.16, ("US", "BR"), 8, 6.0),
    ("support-emea", "support_agent", 0.14, ("IE", "DE"), 8, 6.0),
    ("support-apac", "support_agent", 0.14, ("PH", "IN"), 9, 6.0),
    ("trust-safety", "trust_safety_investigator", 0.13, ("US", "IE", "SG"), 9, 4.0),
    ("fraud", "fraud_analyst", 0.08, ("US", "IN"), 9, 5.0),
    ("security", "security_responder", 0.05, ("US", "IE"), 9, 1.5),
    ("legal", "legal_counsel", 0.03, ("US",), 9, 0.6),
    ("privacy-office", "privacy_officer", 0.02, ("IE",), 9, 0.3),
    ("engineering", "engineer", 0.15, ("US", "DE", "IN"), 10, 0.7),
    ("data-science", "data_scientist", 0.05, ("US",), 10, 0.3),
    ("internal-audit", "internal_audit", 0.05, ("US",), 9, 0.5),
)
MIN_TEAM = {"internal-audit": 4, "legal": 2, "privacy-office": 2, "security": 3}
TZ = {"US": -5, "BR": -3, "IE": 0, "DE": 1, "PH": 8, "IN": 5, "SG": 8, "GB": 0}
PURPOSE = {
    "support_agent": "support",
    "trust_safety_investigator": "trust_safety",
    "fraud_analyst": "fraud",
    "security_responder": "security_incident",
    "legal_counsel": "legal_process",
    "privacy_officer": "legal_process",
    "engineer": "product_debug",
    "data_scientist": "product_debug",
    "internal_audit": "internal_investigation",
}
CATEGORIES = {
    "support": ("profile", "contact", "device", "payment", "ip_history"),
    "trust_safety": ("content", "messages", "social_graph", "profile", "ip_history"),
    "fraud": ("payment", "device", "ip_history", "location", "profile"),
    "security_incident": ("credentials", "ip_history", "device", "profile"),
    "legal_process": ("profile", "contact", "ip_history", "messages", "content"),
    "product_debug": ("profile", "device"),
    "internal_investigation": ("profile", "ip_history", "device", "contact"),
}
OPENERS = {
    "support": ("subject", 0.95),
    "trust_safety": ("system", 0.9),
    "fraud": ("system", 0.97),
    "security_incident": ("system", 0.8),
    "legal_process": ("legal", 1.0),
    "product_debug": ("system", 0.4),
    "internal_investigation": ("system", 0.5),
}
#: Unexplained lookups per person-day (engineers and analysts poke at accounts most).
STRAY_RATE = {"engineer": 0.15, "data_scientist": 0.15}
STRAY_DEFAULT = 0.03
#: Roles that work tickets on individual people: the default pack permits the others (data
#: scientists) no individual-level data.
WORKS_TICKETS = frozenset(PURPOSE) - {"data_scientist"}
JURISDICTIONS = ("US", "US", "US", "GB", "DE", "IN", "BR", "PH", "FR", "CA")
FIRST = ("Dana", "Ravi", "Mei", "Lars", "Ana", "Tomas", "Ife", "Noor", "Sam", "Kai", "Lea")
LAST = ("Reyes", "Iyer", "Chen", "Berg", "Silva", "Novak", "Okafor", "Haddad", "Park", "Ruiz")


@dataclass
class Person:
    id: str
    name: str
    role: str
    team: str
    country: str
    manager: str | None = None
    status: str = "active"
    role_since: datetime | None = None
    shift: int = 9
    night: bool = False
    account: str | None = None

    @property
    def tz(self) -> int:
        return TZ.get(self.country, 0)


@dataclass
class World:
    """The organisation, its subjects, tickets and events, plus scenario labels."""

    start: datetime
    days: int
    people: list[Person]
    subjects: list[dict[str, Any]]
    tickets: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Grant records (see :mod:`custos.sim.grants`), and who approved whom when.
    grants: list[dict[str, Any]] = field(default_factory=list)
    grant_edges: list[tuple[datetime, str, str]] = field(default_factory=list)
    _next_event: int = 0
    _next_ticket: int = 0
    _guarded: set[str] = field(default_factory=set)
    _flagged: set[str] = field(default_factory=set)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    def person(self, principal: str) -> Person:
        return next(p for p in self.people if p.id == principal)

    def event(self, **fields: Any) -> dict[str, Any]:
        self._next_event += 1
        event: dict[str, Any] = {"id": f"ev-{self._next_event:08d}"}
        moment: datetime = fields.pop("time")
        event["time"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        event.update(fields)
        event.setdefault("decision", "allow")
        event.setdefault("precision", "coarse" if event["decision"] == "allow" else None)
        event.setdefault("action", "read")
        event.setdefault("source", "admin-console")
        self.events.append(event)
        return event

    def ticket(
        self,
        kind: str,
        subject: str,
        assignee: str,
        opened: datetime,
        closed: datetime | None,
        opened_by: str,
    ) -> dict[str, Any]:
        self._next_ticket += 1
        is_closed = closed is not None and closed < self.end
        ticket: dict[str, Any] = {
            "id": f"T-{self._next_ticket:07d}",
            "kind": kind,
            "subject": subject,
            "assignee": assignee,
            "status": "closed" if is_closed else "open",
            "opened": opened.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "opened_by": opened_by,
        }
        if is_closed and closed is not None:
            ticket["closed"] = closed.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.tickets.append(ticket)
        return ticket

    def guarded(self, subject: str) -> bool:
        """Whether ``subject`` carries a protected flag, its own or through an account it is
        linked to (custos then demands approvals)."""
        if not self._guarded:
            flagged = {s["id"] for s in self.subjects if s.get("protected")}
            through = {
                other for s in self.subjects for other in s.get("linked", ()) if s["id"] in flagged
            } | {s["id"] for s in self.subjects if set(s.get("linked", ())) & flagged}
            self._guarded = flagged | through | {""}
            self._flagged = flagged | {""}
        return subject in self._guarded

    def linked_guard(self, subject: str) -> bool:
        """Whether ``subject`` is protected only through an account it is linked to."""
        return self.guarded(subject) and subject not in self._flagged

    def ordinary_subjects(self) -> list[str]:
        """Accounts with no protection, their own or through a link."""
        return [s["id"] for s in self.subjects if not self.guarded(s["id"])]

    def linked_to(self, subject: str) -> list[str]:
        """The accounts linked to ``subject`` (links are stated on one side in the world)."""
        return sorted(
            {s["id"] for s in self.subjects if subject in s.get("linked", ())}
            | {o for s in self.subjects if s["id"] == subject for o in s.get("linked", ())}
        )

    def flagged(self, flag: str) -> list[str]:
        return [s["id"] for s in self.subjects if flag in s.get("protected", ())]

    def directory(self) -> dict[str, Any]:
        """The directory in the DESIGN.md format."""
        principals = []
        for p in self.people:
            entry: dict[str, Any] = {
                "id": p.id,
                "name": p.name,
                "kind": "employee",
                "role": p.role,
                "team": p.team,
                "country": p.country,
                "status": p.status,
            }
            if p.manager:
                entry["manager"] = p.manager
            if p.team == "privacy-office":
                entry["groups"] = ["privacy_office", "approvers"]
            elif p.manager is None:
                # Team leads approve other teams' requests (never their own team's: their
                # reports are in their management chain).
                entry["groups"] = ["approvers"]
            if p.role_since:
                entry["role_since"] = p.role_since.strftime("%Y-%m-%dT%H:%M:%SZ")
            principals.append(entry)
        return {"principals": principals, "subjects": self.subjects, "tickets": self.tickets}


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method is fine for the small rates used here.
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def build_org(rng: random.Random, employees: int, start: datetime, days: int) -> World:
    """People in teams (with managers), their accounts, and the platform's subjects."""
    sizes = {
        team: max(MIN_TEAM.get(team, 2), round(share * employees)) for team, _, share, *_ in TEAMS
    }
    people: list[Person] = []
    number = 1000
    for team, role, _share, countries, shift, _rate in TEAMS:
        lead: str | None = None
        for position in range(sizes[team]):
            person = Person(
                id=f"emp-{number}",
                name=f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                role=role,
                team=team,
                country=countries[position % len(countries)],
                manager=lead,
                shift=shift + rng.choice((-1, 0, 0, 1)),
                night=team == "security" and position % 3 == 2,
            )
            number += 1
            if lead is None:
                lead = person.id
            people.append(person)
    for person in people:
        roll = rng.random()
        if roll < 0.04:
            person.role_since = start + timedelta(days=rng.uniform(0, days * 0.8))
        elif roll < 0.06:
            person.status = "leaving"
    count = max(2000, employees * 40)
    subjects: list[dict[str, Any]] = []
    for i in range(count):
        roll = rng.random()
        flags: list[str] = []
        if roll < 0.0015:
            flags = ["journalist"]
        elif roll < 0.003:
            flags = ["public_official"]
        elif roll < 0.0045:
            flags = ["activist"]
        elif roll < 0.05:
            flags = ["minor"]
        entry: dict[str, Any] = {"id": f"user-{i:07d}", "jurisdiction": rng.choice(JURISDICTIONS)}
        if flags:
            entry["protected"] = flags
        subjects.append(entry)
    for person in people:
        if rng.random() < 0.7:
            person.account = f"acct-{person.id}"
            subjects.append(
                {
                    "id": person.account,
                    "jurisdiction": person.country,
                    "protected": ["employee_account"],
                    "employee": person.id,
                }
            )
    _link_accounts(subjects[:count], count)
    return World(start=start, days=days, people=people, subjects=subjects)


def _link_accounts(subjects: list[dict[str, Any]], count: int) -> None:
    """Second accounts (DESIGN.md principle 11): about 1 % of ordinary accounts are linked in
    pairs (benign: most links are ordinary users'), and about half of the journalists,
    officials and activists have a second account linked to theirs. Drawn from a stream of
    their own, so the rest of a world of a given seed is what it was before links."""
    links = random.Random(f"custos-sim-links:{count}")
    hunted = [s for s in subjects if set(s.get("protected", ())) - {"minor"}]
    ordinary = [s for s in subjects if not s.get("protected")]
    links.shuffle(ordinary)
    pairs = max(1, count // 200)
    for first, second in zip(ordinary[: 2 * pairs : 2], ordinary[1 : 2 * pairs : 2], strict=True):
        first["linked"] = [second["id"]]
    spare = iter(ordinary[2 * pairs :])
    for person in hunted:
        if links.random() < 0.5:
            second = next(spare)
            second["jurisdiction"] = person["jurisdiction"]
            second["linked"] = [person["id"]]


def shift_time(rng: random.Random, person: Person, day: datetime, spread: float = 8.0) -> datetime:
    """A moment in ``person``'s working hours on ``day`` (UTC)."""
    start = (22 if person.night else person.shift) - person.tz
    return day + timedelta(hours=start + rng.uniform(0, spread))


def simulate_traffic(rng: random.Random, world: World) -> None:
    """Benign work: tickets by workload, accesses explained by them, and realistic noise."""
    ids = [s["id"] for s in world.subjects]
    strays = [s for s in world.ordinary_subjects() if s.startswith("user-")]
    teams: dict[str, list[Person]] = {}
    for person in world.people:
        teams.setdefault(person.team, []).append(person)
    rates = {team: rate for team, *_, rate in TEAMS}
    load: dict[str, float] = {p.id: 0.0 for p in world.people}
    open_by_team: dict[str, list[dict[str, Any]]] = {}
    for offset in range(world.days):
        day = world.start + timedelta(days=offset)
        weekend = day.weekday() >= 5
        for team, members in teams.items():
            # Staff who are leaving hand over their work: the pack refuses them everything.
            at_work = [
                p
                for p in members
                if rng.random() > 0.04
                and (not weekend or (p.night and rng.random() < 0.5))
                and p.status == "active"
                and p.role in WORKS_TICKETS
            ]
            if not at_work:
                continue
            for p in at_work:
                load[p.id] *= 0.5
            arrivals = _poisson(rng, rates[team] * len(at_work))
            todays: list[dict[str, Any]] = []
            for _ in range(arrivals):
                assignee = min(at_work, key=lambda p: (load[p.id], rng.random()))
                load[assignee.id] += 1
                subject = rng.choice(ids)
                while subject == assignee.account:
                    # Nobody works a case on their own account (the pack refuses it).
                    subject = rng.choice(ids)
                todays.append(_work_ticket(rng, world, assignee, day, subject))
            open_by_team[team] = todays
            for person in at_work:
                _noise(rng, world, person, day, strays, open_by_team.get(team, []))


def _work_ticket(
    rng: random.Random, world: World, person: Person, day: datetime, subject: str
) -> dict[str, Any]:
    kind = PURPOSE[person.role]
    first = shift_time(rng, person, day)
    opener, share = OPENERS[kind]
    opened_by = opener if rng.random() < share else person.id
    early = rng.random() < 0.02
    if world.linked_guard(subject):
        # A protected person's second account: a grant does not explain reaching it (its
        # approvers need not have known whose it was), so legitimate work on it comes with
        # a ticket someone else opened, before the work. Same draws as any other ticket.
        opened_by, early = opener, False
    opened = (
        first + timedelta(minutes=rng.uniform(10, 180))
        if early
        else first - timedelta(hours=rng.uniform(0.1, 20))
    )
    accesses = 1 + _poisson(rng, 2.0)
    times = sorted(first + timedelta(minutes=rng.uniform(0, 240)) for _ in range(accesses))
    # After the last access and after the opening: a ticket filed late (``early`` accesses)
    # can be opened after the last of them, and a ticket never closes before it opens.
    closed = max(times[-1], opened) + timedelta(hours=rng.uniform(0.2, 30))
    ticket = world.ticket(kind, subject, person.id, opened, closed, opened_by)
    palette = CATEGORIES[kind]
    for moment in times:
        purpose = kind
        if world.guarded(subject) and rng.random() < 0.03:
            # The wrong purpose picked in the tool: custos refuses it (below).
            purpose = rng.choice([p for p in CATEGORIES if p != kind])
        category = palette[min(int(rng.expovariate(0.9)), len(palette) - 1)]
        action = "read"
        records: int | None = None
        if kind == "legal_process" and rng.random() < 0.3:
            action, records = "export", rng.randint(50, 500)
        elif kind == "fraud" and rng.random() < 0.2:
            action, records = "search", rng.randint(5, 50)
        if rng.random() < 0.01:
            # Refused first (e.g. the ticket was not routed yet), then allowed.
            refused = moment - timedelta(minutes=rng.uniform(2, 30))
            wrong = purpose if rng.random() < 0.7 else rng.choice(list(CATEGORIES))
            world.event(
                time=refused,
                principal=person.id,
                subject=subject,
                category=category,
                purpose=wrong,
                decision="deny",
            )
        extra: dict[str, Any] = {"records": records} if records is not None else {}
        if world.guarded(subject):
            # Protected people: custos lets the assignee in only under a two-person grant,
            # and refuses anything else (a mismatched purpose).
            if purpose != kind:
                extra["decision"] = "deny"
                extra["precision"] = None
            else:
                extra["grant"] = f"G-{ticket['id']}"
        world.event(
            time=moment,
            principal=person.id,
            subject=subject,
            category=category,
            purpose=purpose,
            ticket=ticket["id"],
            action=action,
            **extra,
        )
    return ticket


def _noise(
    rng: random.Random,
    world: World,
    person: Person,
    day: datetime,
    strays: list[str],
    team_tickets: list[dict[str, Any]],
) -> None:
    purpose = PURPOSE[person.role]
    # Helping a teammate on their ticket. Never on a protected person's: those are worked
    # under the two-person rule, and a look at one by someone not assigned is exactly the
    # attempt protected_subject_attempt exists to show (it would be no false alert). (Drawn
    # from all of them, then skipped, so the random stream stays as it was.)
    mates = [t for t in team_tickets if t["assignee"] != person.id]
    if mates and rng.random() < 0.08:
        ticket = rng.choice(mates)
        opened = datetime.strptime(ticket["opened"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        # Not assigned to them: custos refuses it (need to know).
        moment = opened + timedelta(minutes=rng.uniform(5, 120))
        category = rng.choice(CATEGORIES[ticket["kind"]])
        if not world.guarded(ticket["subject"]):
            world.event(
                time=moment,
                principal=person.id,
                subject=ticket["subject"],
                category=category,
                purpose=ticket["kind"],
                ticket=ticket["id"],
                decision="deny",
                precision=None,
            )
    # A lookup with no ticket (checking a report, reproducing a bug): refused, need to know.
    for _ in range(_poisson(rng, STRAY_RATE.get(person.role, STRAY_DEFAULT))):
        world.event(
            time=shift_time(rng, person, day),
            principal=person.id,
            subject=rng.choice(strays),
            category=rng.choice(CATEGORIES[purpose]),
            purpose=purpose,
            decision="deny",
            precision=None,
        )
    # Break-glass in an incident; the ticket is filed within the hour.
    if person.role == "security_responder" and rng.random() < 0.02:
        moment = shift_time(rng, person, day)
        subject = rng.choice(strays)
        ticket = world.ticket(
            "security_incident",
            subject,
            person.id,
            moment + timedelta(minutes=rng.uniform(5, 60)),
            moment + timedelta(hours=6),
            "system",
        )
        world.event(
            time=moment,
            principal=person.id,
            subject=subject,
            category="credentials",
            purpose="security_incident",
            ticket=ticket["id"],
            break_glass=True,
        )


#: The first simulated day unless another is asked for: a Monday, fixed so that a seed gives
#: the same organisation and history on every run (evaluations are compared across runs).
START = datetime(2026, 1, 5, tzinfo=UTC)


def new_world(
    seed: int, employees: int, days: int, start: datetime = START
) -> tuple[random.Random, World]:
    """A fresh organisation with benign traffic from ``start``, deterministic for ``seed``
    (the same seed from another start gives the same world shifted in time)."""
    rng = random.Random(seed)
    world = build_org(rng, employees, start, days)
    simulate_traffic(rng, world)
    return rng, world
