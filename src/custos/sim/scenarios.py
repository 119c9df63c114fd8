"""Injected misuse, each written from a documented insider case. A scenario adds events
(and, where the case needs them, tickets or a status change) to a benign world and labels
its culprits and evidence events; it never tells detection anything else."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from custos.errors import InvalidInput
from custos.sim import grants
from custos.sim.world import PURPOSE, Person, World, shift_time


def _pick(
    rng: random.Random,
    world: World,
    role: str | None = None,
    team: str | None = None,
    avoid: set[str] | None = None,
) -> Person:
    pool = [
        p
        for p in world.people
        if (role is None or p.role == role)
        and (team is None or p.team == team)
        and p.status == "active"
        and p.role_since is None
        and p.id not in (avoid or set())
    ]
    return rng.choice(pool)


def _day(rng: random.Random, world: World, earliest: int = 7, span: int = 5) -> datetime:
    last = max(earliest, world.days - span - 1)
    return world.start + timedelta(days=rng.randint(min(earliest, last), last))


def _label(
    world: World, name: str, culprits: list[str], events: list[dict[str, Any]], story: str
) -> None:
    world.labels[name] = {
        "culprits": sorted(set(culprits)),
        "events": [e["id"] for e in events],
        "description": story,
    }


def journalist_2022(rng: random.Random, world: World, used: set[str]) -> None:
    """Several internal-audit colleagues pull journalists' IPs and locations, the IP history
    of the accounts linked to them, and those of employees suspected of leaking to them, to
    see who met whom."""
    members = [p for p in world.people if p.team == "internal-audit" and p.id not in used]
    culprits = rng.sample(members, k=min(len(members), 4))
    journalists = rng.sample(world.flagged("journalist"), k=2)
    # As in 2022, at least one of them has a second account, and it is pulled too.
    with_alt = [j for j in world.flagged("journalist") if world.linked_to(j)]
    if with_alt and not any(world.linked_to(j) for j in journalists):
        journalists[1] = rng.choice([j for j in with_alt if j != journalists[0]] or with_alt)
    alts = [a for j in journalists for a in world.linked_to(j)]
    staff = [p for p in world.people if p.account and p.team != "internal-audit"]
    suspects = [p.account for p in rng.sample(staff, k=3) if p.account]
    day = _day(rng, world, span=4)
    events = []
    for person in culprits:
        for offset in range(rng.randint(2, 4)):
            when = day + timedelta(days=offset)
            for subject in rng.sample(journalists, k=rng.randint(1, 2)):
                events.append(
                    world.event(
                        time=shift_time(rng, person, when),
                        principal=person.id,
                        subject=subject,
                        category=rng.choice(("ip_history", "location")),
                        purpose="internal_investigation",
                        source="audit-tool",
                    )
                )
            for subject in alts:
                events.append(
                    world.event(
                        time=shift_time(rng, person, when),
                        principal=person.id,
                        subject=subject,
                        category="ip_history",
                        purpose="internal_investigation",
                        source="audit-tool",
                    )
                )
            for subject in rng.sample(suspects, k=rng.randint(1, 2)):
                events.append(
                    world.event(
                        time=shift_time(rng, person, when),
                        principal=person.id,
                        subject=subject,
                        category="ip_history",
                        purpose="internal_investigation",
                        source="audit-tool",
                    )
                )
    used.update(p.id for p in culprits)
    _label(
        world,
        "journalist_2022",
        [p.id for p in culprits],
        events,
        "internal-audit colleagues pull IP/location of two journalists, IP history of their "
        "linked accounts, and of employees suspected of leaking to them",
    )


def ex_partner_stalking(rng: random.Random, world: World, used: set[str]) -> None:
    """A support agent follows an ex-partner's account for weeks: location, contacts,
    messages, often in the evening."""
    person = _pick(rng, world, role="support_agent", avoid=used)
    target = rng.choice(world.ordinary_subjects())
    events = []
    days = sorted(rng.sample(range(3, world.days), k=min(world.days - 3, rng.randint(5, 8))))
    for offset in days:
        when = world.start + timedelta(days=offset)
        for _ in range(rng.randint(1, 3)):
            moment = (
                when + timedelta(hours=20 - person.tz + rng.uniform(0, 3))
                if rng.random() < 0.5
                else shift_time(rng, person, when)
            )
            events.append(
                world.event(
                    time=moment,
                    principal=person.id,
                    subject=target,
                    category=rng.choice(("location", "ip_history", "contact", "messages")),
                    purpose="support",
                )
            )
    used.add(person.id)
    _label(
        world,
        "ex_partner_stalking",
        [person.id],
        events,
        "a support agent repeatedly looks up one ordinary account without tickets",
    )


def bribed_agent(rng: random.Random, world: World, used: set[str]) -> None:
    """A support agent paid per record pulls contact and payment data of many unrelated
    people (the SIM-swap and data-broker bribery cases)."""
    person = _pick(rng, world, role="support_agent", avoid=used)
    pool = world.ordinary_subjects()
    day = _day(rng, world, span=8)
    events = []
    for offset in rng.sample(range(8), k=rng.randint(3, 5)):
        when = day + timedelta(days=offset)
        for subject in rng.sample(pool, k=rng.randint(6, 14)):
            events.append(
                world.event(
                    time=shift_time(rng, person, when),
                    principal=person.id,
                    subject=subject,
                    category=rng.choice(("contact", "payment", "ip_history", "profile")),
                    purpose="support",
                )
            )
    used.add(person.id)
    _label(
        world,
        "bribed_agent",
        [person.id],
        events,
        "a support agent sells records: many unrelated subjects, no tickets",
    )


def foreign_state_dissidents(rng: random.Random, world: World, used: set[str]) -> None:
    """An engineer recruited by a foreign state looks up activists and critics: contact
    details, IP history, devices, a few a day over weeks."""
    person = _pick(rng, world, role="engineer", avoid=used)
    activists = world.flagged("activist")
    critics = rng.sample(world.ordinary_subjects(), k=4)
    targets = rng.sample(activists, k=min(3, len(activists))) + critics
    events = []
    for offset in sorted(rng.sample(range(2, world.days), k=min(world.days - 2, 8))):
        when = world.start + timedelta(days=offset)
        for subject in rng.sample(targets, k=rng.randint(1, 2)):
            events.append(
                world.event(
                    time=shift_time(rng, person, when),
                    principal=person.id,
                    subject=subject,
                    category=rng.choice(("contact", "ip_history", "device", "profile")),
                    purpose="product_debug",
                )
            )
    used.add(person.id)
    _label(
        world,
        "foreign_state_dissidents",
        [person.id],
        events,
        "an engineer looks up activists and critics for a foreign state",
    )


def celebrity_convergence(rng: random.Random, world: World, used: set[str]) -> None:
    """A person in the news: staff across teams look them up within a day or two
    (the passport-file and hospital-records cases)."""
    # Someone with no ticket open at the company: the crowd has no reason to look.
    ticketed = {t["subject"] for t in world.tickets}
    target = rng.choice([s for s in world.ordinary_subjects() if s not in ticketed])
    crowd: list[Person] = []
    while len(crowd) < rng.randint(6, 9):
        person = _pick(rng, world, avoid=used | {p.id for p in crowd})
        crowd.append(person)
    day = _day(rng, world, span=2)
    events = []
    for person in crowd:
        when = day + timedelta(hours=rng.uniform(0, 30))
        for _ in range(rng.randint(1, 3)):
            events.append(
                world.event(
                    time=when + timedelta(minutes=rng.uniform(0, 90)),
                    principal=person.id,
                    subject=target,
                    category=rng.choice(("profile", "content", "location", "contact")),
                    purpose=PURPOSE[person.role],
                )
            )
    used.update(p.id for p in crowd)
    _label(
        world,
        "celebrity_convergence",
        [p.id for p in crowd],
        events,
        "many staff look up one person in the news without tickets",
    )


def minor_messages(rng: random.Random, world: World, used: set[str]) -> None:
    """An engineer reads teenagers' private messages and contacts through debug access."""
    person = _pick(rng, world, role="engineer", avoid=used)
    minors = rng.sample(world.flagged("minor"), k=3)
    events = []
    for offset in sorted(rng.sample(range(2, world.days), k=min(world.days - 2, 5))):
        when = world.start + timedelta(days=offset)
        for subject in rng.sample(minors, k=rng.randint(1, 2)):
            events.append(
                world.event(
                    time=shift_time(rng, person, when),
                    principal=person.id,
                    subject=subject,
                    category=rng.choice(("messages", "messages", "contact")),
                    purpose="product_debug",
                )
            )
    used.add(person.id)
    _label(
        world,
        "minor_messages",
        [person.id],
        events,
        "an engineer reads minors' messages without tickets",
    )


def leaving_export(rng: random.Random, world: World, used: set[str]) -> None:
    """A departing employee exports customer records in their last days."""
    person = _pick(rng, world, role="support_agent", avoid=used)
    person.status = "leaving"
    # On notice for the whole window: the directory holds one status, and the pack refuses
    # leaving staff everything, so their benign work is handed over, not done.
    world.events[:] = [e for e in world.events if e["principal"] != person.id]
    pool = world.ordinary_subjects()
    events = []
    for back in range(1, 4):
        when = world.end - timedelta(days=back)
        for subject in rng.sample(pool, k=rng.randint(4, 8)):
            events.append(
                world.event(
                    time=shift_time(rng, person, when),
                    principal=person.id,
                    subject=subject,
                    category=rng.choice(("contact", "payment", "profile")),
                    purpose="support",
                    action="export",
                    records=rng.randint(50, 400),
                )
            )
    used.add(person.id)
    _label(
        world, "leaving_export", [person.id], events, "a leaving employee exports customer records"
    )


def pretext_tickets(rng: random.Random, world: World, used: set[str]) -> None:
    """An investigator opens tickets themselves about people they want to watch, then reads
    their location and content under those tickets (the 'explained' snooping)."""
    person = _pick(rng, world, role="trust_safety_investigator", avoid=used)
    day = _day(rng, world, span=7)
    events = []
    for subject in rng.sample(world.ordinary_subjects(), k=rng.randint(8, 12)):
        when = day + timedelta(days=rng.randint(0, 6))
        moment = shift_time(rng, person, when)
        ticket = world.ticket(
            "trust_safety",
            subject,
            person.id,
            moment - timedelta(minutes=rng.uniform(2, 20)),
            moment + timedelta(hours=2),
            person.id,
        )
        for _ in range(rng.randint(1, 3)):
            events.append(
                world.event(
                    time=moment + timedelta(minutes=rng.uniform(0, 60)),
                    principal=person.id,
                    subject=subject,
                    category=rng.choice(("location", "content", "social_graph")),
                    purpose="trust_safety",
                    ticket=ticket["id"],
                )
            )
    used.add(person.id)
    _label(
        world,
        "pretext_tickets",
        [person.id],
        events,
        "an investigator files tickets themselves to cover lookups",
    )


def purpose_shopping(rng: random.Random, world: World, used: set[str]) -> None:
    """Refused, an agent tries purpose after purpose until something lets them in."""
    person = _pick(rng, world, role="support_agent", avoid=used)
    targets = rng.sample(world.ordinary_subjects(), k=2)
    day = _day(rng, world)
    events = []
    for subject in targets:
        moment = shift_time(rng, person, day)
        for purpose, decision in (
            ("support", "deny"),
            ("fraud", "deny"),
            ("trust_safety", "approval_required"),
            ("security_incident", "allow"),
        ):
            moment += timedelta(minutes=rng.uniform(1, 10))
            events.append(
                world.event(
                    time=moment,
                    principal=person.id,
                    subject=subject,
                    category="location",
                    purpose=purpose,
                    decision=decision,
                )
            )
    used.add(person.id)
    _label(
        world,
        "purpose_shopping",
        [person.id],
        events,
        "an agent tries purpose after purpose after being refused",
    )


def colleague_snooping(rng: random.Random, world: World, used: set[str]) -> None:
    """Staff look up colleagues' own accounts (a crush, a rival, a manager)."""
    person = _pick(rng, world, avoid=used)
    accounts = [p.account for p in world.people if p.account and p.id != person.id]
    targets = rng.sample(accounts, k=3)
    day = _day(rng, world)
    events = []
    for subject in targets:
        events.append(
            world.event(
                time=shift_time(rng, person, day + timedelta(days=rng.randint(0, 3))),
                principal=person.id,
                subject=subject,
                category=rng.choice(("profile", "location", "social_graph", "messages")),
                purpose=PURPOSE[person.role],
            )
        )
    used.add(person.id)
    _label(
        world,
        "colleague_snooping",
        [person.id],
        events,
        "an employee looks up colleagues' accounts",
    )


def approval_ring(rng: random.Random, world: World, used: set[str]) -> None:
    """Four colleagues approve each other's requests for precise data in a ring (each
    request also approved by a privacy officer who saw a sound reason), then read
    journalists' and activists' IP history under those grants: the 2022 team, after
    two-person approval was introduced but before approvers had to sit outside it."""
    team = next(
        (
            t
            # The 2022 team first; in small worlds its people are taken, so any team.
            for t in ("internal-audit", *sorted({p.team for p in world.people}))
            if sum(p.team == t and p.status == "active" and p.id not in used for p in world.people)
            >= 4
        ),
        None,
    )
    if team is None:
        raise InvalidInput("approval_ring needs a team with four people no other scenario uses")
    pool = [p for p in world.people if p.team == team and p.status == "active" and p.id not in used]
    ring = rng.sample(pool, k=4)
    targets = rng.sample(world.flagged("journalist") + world.flagged("activist"), k=3)
    officers, _ = grants.approver_pool(world)
    day = _day(rng, world, span=4)
    events = []
    for i, person in enumerate(ring):
        subject = rng.choice(targets)
        starts = shift_time(rng, person, day + timedelta(days=i % 3), spread=4.0)
        approvers = [ring[(i + 1) % len(ring)].id, rng.choice(officers).id]
        grant = grants.record(
            world,
            f"G-ring-{i + 1}",
            person,
            subject,
            approvers,
            starts,
            categories=["ip_history"],
            purpose=PURPOSE[person.role],
            ticket=None,
            precision="precise",
            reason="suspected disclosure of confidential material",
        )
        for k in range(rng.randint(2, 4)):
            events.append(
                world.event(
                    time=starts + timedelta(minutes=20 + 40 * k + rng.uniform(0, 30)),
                    principal=person.id,
                    subject=subject,
                    category="ip_history",
                    purpose=PURPOSE[person.role],
                    precision="precise",
                    grant=grant["grant"],
                    source="audit-tool",
                )
            )
    used.update(p.id for p in ring)
    _label(
        world,
        "approval_ring",
        [p.id for p in ring],
        events,
        "four colleagues approve each other's precise requests in a ring and read "
        "journalists' IP history under them",
    )


def grant_abuse(rng: random.Random, world: World, used: set[str]) -> None:
    """An agent obtains a dozen grants in a week, each approved by independent approvers
    on a plausible reason, and reads protected accounts' contact and location data under
    them: every approval looks sound; the number does not."""
    person = _pick(rng, world, role="support_agent", avoid=used)
    guarded = world.flagged("minor") + world.flagged("public_official")
    day = _day(rng, world, span=6)
    events = []
    for n, subject in enumerate(rng.sample(guarded, k=rng.randint(11, 14))):
        starts = shift_time(rng, person, day + timedelta(days=n % 5), spread=6.0)
        grant = grants.record(
            world,
            f"G-abuse-{n + 1}",
            person,
            subject,
            grants.independent_approvers(rng, world, person, starts),
            starts,
            categories=["contact", "location"],
            purpose="support",
            ticket=None,
            precision="coarse",
            reason="account recovery; the user called in",
        )
        for _ in range(rng.randint(1, 2)):
            events.append(
                world.event(
                    time=starts + timedelta(minutes=rng.uniform(5, 90)),
                    principal=person.id,
                    subject=subject,
                    category=rng.choice(("contact", "location")),
                    purpose="support",
                    grant=grant["grant"],
                )
            )
    used.add(person.id)
    _label(
        world,
        "grant_abuse",
        [person.id],
        events,
        "an agent obtains far more grants than their peers and reads protected accounts under them",
    )


def other_paths(rng: random.Random, world: World, used: set[str]) -> None:
    """A support agent reads, through an admin console that does not go through custos,
    locations, messages and social graphs — categories no policy lets their role use —
    each under a valid-looking support ticket about that very account, opened by the user
    and assigned to them. A teammate uses the same console within the rules (account and
    contact data under their own support tickets): policy replay must leave them alone.

    Only policy replay names this (``policy_replay``; ``custos eval`` replays on the
    directory as a fixed state): the tickets explain every access, so no other rule fires."""
    person = _pick(rng, world, role="support_agent", avoid=used)
    used.add(person.id)
    # A teammate when the team has one free, else another support agent (small worlds).
    peers = [
        p
        for p in world.people
        if p.role == "support_agent"
        and p.status == "active"
        and p.role_since is None
        and p.id not in used
    ]
    mates = [p for p in peers if p.team == person.team]
    peer = rng.choice(mates or peers)
    used.add(peer.id)
    events: list[dict[str, Any]] = []
    allowed: list[dict[str, Any]] = []
    for who, categories, into in (
        (person, ("location", "messages", "social_graph"), events),
        (peer, ("profile", "contact"), allowed),
    ):
        day = _day(rng, world, span=3)
        for subject in rng.sample(world.ordinary_subjects(), k=4):
            moment = shift_time(rng, who, day + timedelta(days=rng.randint(0, 2)))
            ticket = world.ticket(
                "support",
                subject,
                who.id,
                moment - timedelta(minutes=30),
                moment + timedelta(hours=2),
                "subject",
            )
            for category in categories:
                into.append(
                    world.event(
                        time=moment + timedelta(minutes=rng.uniform(0, 20)),
                        principal=who.id,
                        subject=subject,
                        category=category,
                        purpose="support",
                        ticket=ticket["id"],
                        source="admin-console",
                    )
                )
    _label(
        world,
        "other_paths",
        [person.id],
        events,
        "a support agent reads categories their role may not use, by another path, "
        "under valid-looking tickets",
    )
    world.labels["other_paths"]["allowed"] = [e["id"] for e in allowed]


#: Scenarios that only some ways of running detection can catch: named to inject them,
#: never injected by default.
OPT_IN: dict[str, Callable[[random.Random, World, set[str]], None]] = {}

SCENARIOS: dict[str, Callable[[random.Random, World, set[str]], None]] = {
    "journalist_2022": journalist_2022,
    "ex_partner_stalking": ex_partner_stalking,
    "bribed_agent": bribed_agent,
    "foreign_state_dissidents": foreign_state_dissidents,
    "celebrity_convergence": celebrity_convergence,
    "minor_messages": minor_messages,
    "leaving_export": leaving_export,
    "pretext_tickets": pretext_tickets,
    "purpose_shopping": purpose_shopping,
    "colleague_snooping": colleague_snooping,
    "approval_ring": approval_ring,
    "grant_abuse": grant_abuse,
    # Caught by policy replay, which evaluations run on the directory as a fixed state.
    "other_paths": other_paths,
}
