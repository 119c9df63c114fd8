"""Grants in the simulated organisation, as custos's approvals part would have recorded them.

Benign accesses to protected people run under two-person grants (``grant`` on the event);
:func:`benign_grants` gives each of them the grant record custos would hold: approved by a
privacy officer and by a lead of another team who has the ``approvers`` group, chosen as
custos's independence rules would allow (not the requester, not their management chain, and
no approval that closes a ring of approvals within :data:`RING_DAYS`). Scenarios record the
grants their misuse needs with :func:`record`, approvers and all.

A record has the fields of the approvals part's ``grant`` ledger entry (``grant``,
``principal``, ``subject``, ``categories``, ``actions``, ``purpose``, ``ticket``,
``precision``, ``approvals``, ``approver_groups``, ``approvers``, ``starts``, ``ends``,
``reason``), times as ISO 8601 UTC.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from custos.sim.world import Person, World

#: Approvals within this many days of each other can form a ring (the approvals part's
#: reciprocal window).
RING_DAYS = 30
#: How long a benign grant lasts (the approvals part's default).
GRANT_HOURS = 8
FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _time(text: str) -> datetime:
    return datetime.strptime(text, FORMAT).replace(tzinfo=UTC)


def approver_pool(world: World) -> tuple[list[Person], list[Person]]:
    """The privacy officers, and the leads of the other teams (the ``approvers`` group)."""
    officers = [p for p in world.people if p.team == "privacy-office" and p.status == "active"]
    leads = [
        p
        for p in world.people
        if p.manager is None and p.team != "privacy-office" and p.status == "active"
    ]
    return officers, leads


def closes_ring(world: World, holder: str, approver: str, when: datetime) -> bool:
    """Whether ``approver`` approving ``holder`` at ``when`` closes a ring of at most four
    people: the holder approved the approver, directly or through up to two others, within
    :data:`RING_DAYS` of ``when``."""
    window = timedelta(days=RING_DAYS)
    edges: dict[str, set[str]] = {}
    for moment, approver_id, holder_id in world.grant_edges:
        if abs(moment - when) <= window:
            edges.setdefault(approver_id, set()).add(holder_id)
    frontier = {holder}
    for _ in range(3):
        frontier = {y for x in frontier for y in edges.get(x, ())}
        if approver in frontier:
            return True
    return False


def independent_approvers(
    rng: random.Random, world: World, holder: Person, when: datetime
) -> list[str]:
    """A privacy officer and a lead of another team, as the independence rules allow."""
    officers, leads = approver_pool(world)
    chosen: list[str] = []
    for pool in (officers, leads):
        fit = [
            p.id
            for p in pool
            if p.id != holder.id
            and p.id != holder.manager
            and p.manager != holder.id
            and (pool is officers or p.team != holder.team)
            and p.id not in chosen
            and not closes_ring(world, holder.id, p.id, when)
        ]
        if fit:
            chosen.append(rng.choice(fit))
    return chosen


def record(
    world: World,
    grant_id: str,
    holder: Person,
    subject: str,
    approvers: list[str],
    starts: datetime,
    *,
    categories: list[str],
    purpose: str,
    ticket: str | None,
    precision: str,
    reason: str,
    hours: float = GRANT_HOURS,
) -> dict[str, Any]:
    """Record a grant in ``world.grants`` and return it."""
    groups = sorted(
        {
            g
            for a in approvers
            for g in (
                ["approvers", "privacy_office"]
                if world.person(a).team == "privacy-office"
                else ["approvers"]
            )
        }
    )
    grant: dict[str, Any] = {
        "grant": grant_id,
        "principal": holder.id,
        "subject": subject,
        "categories": categories,
        "actions": ["read"],
        "purpose": purpose,
        "ticket": ticket,
        "precision": precision,
        "approvals": len(approvers),
        "approver_groups": groups,
        "approvers": approvers,
        "starts": starts.strftime(FORMAT),
        "ends": (starts + timedelta(hours=hours)).strftime(FORMAT),
        "reason": reason,
    }
    world.grants.append(grant)
    world.grant_edges.extend((starts, a, holder.id) for a in approvers)
    return grant


def benign_grants(seed: int, world: World) -> None:
    """Give every grant the events name and no scenario recorded its record (see the module
    docstring). Uses its own random numbers, so the events of a seed stay as they were."""
    rng = random.Random(f"grants-{seed}")
    known = {g["grant"] for g in world.grants}
    uses: dict[str, list[dict[str, Any]]] = {}
    for event in world.events:
        name = event.get("grant")
        if isinstance(name, str) and name not in known:
            uses.setdefault(name, []).append(event)
    for name, events in sorted(uses.items(), key=lambda kv: (kv[1][0]["time"], kv[0])):
        first = min(_time(e["time"]) for e in events)
        holder = world.person(events[0]["principal"])
        starts = first - timedelta(minutes=rng.uniform(5, 60))
        approvers = independent_approvers(rng, world, holder, starts)
        if len(approvers) < 2 or not any(
            world.person(a).team == "privacy-office" for a in approvers
        ):
            # No two independent approvers, one of the privacy office, could be found:
            # custos would have granted nothing, and refused the accesses.
            for event in events:
                del event["grant"]
                event.update(decision="deny", precision=None)
            continue
        record(
            world,
            name,
            holder,
            events[0]["subject"],
            approvers,
            starts,
            categories=sorted({e["category"] for e in events}),
            purpose=events[0]["purpose"],
            ticket=events[0].get("ticket"),
            precision="coarse",
            reason="protected account; working the ticket",
        )
