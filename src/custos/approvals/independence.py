"""Who may answer whom: the independence rules of the two-person rule, each named.

A rule that refuses raises :class:`ApprovalRefused` whose ``rule`` is one of the ids below
and whose message says, in a sentence, which relationship is the problem. The rules exist
because the 2022 lookups were done by colleagues of one team: an approval means something
only when it comes from outside the requester's reach.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from custos.approvals.model import ApprovalSettings, Request
from custos.directory import DirectoryStore, Principal
from custos.errors import ApprovalRefused

SELF_APPROVAL = "self-approval"
MANAGEMENT_CHAIN = "management-chain"
SUBJECT_OWNER = "subject-owner"
INACTIVE = "inactive-approver"
NOT_AN_APPROVER = "not-an-approver"
ALREADY_ANSWERED = "already-answered"
RECIPROCAL = "reciprocal-approval"
APPROVAL_RING = "approval-ring"
SAME_TEAM = "same-team"
GROUP_COVERAGE = "group-coverage"
NOT_A_REVIEWER = "not-a-reviewer"
UNREVIEWED_BREAK_GLASS = "unreviewed-break-glass"

#: Every rule, with the sentence ``custos approvals rules`` and the docs show.
RULES: dict[str, str] = {
    SELF_APPROVAL: "nobody approves, denies or reviews their own request or grant",
    MANAGEMENT_CHAIN: "no approver from the requester's management chain, upward or downward",
    SUBJECT_OWNER: "no approver whose own account is the subject",
    SAME_TEAM: "no approver, denier or break-glass reviewer from the requester's own team",
    INACTIVE: "approvers must be active staff",
    NOT_AN_APPROVER: "approvers must belong to an approver group or a group the policy names",
    ALREADY_ANSWERED: "each approver answers a request once; N approvals means N people",
    RECIPROCAL: "no reciprocal approvals: whoever the requester approved within the window "
    "may not approve the requester in return",
    APPROVAL_RING: "no rings of approvals: whoever approved someone who (through any chain of "
    "approvals within the window) approved the approver may not be approved by them in turn",
    GROUP_COVERAGE: "the approvals together must include every group the policy names",
    NOT_A_REVIEWER: "break-glass grants are closed by reviewers of the review groups",
    UNREVIEWED_BREAK_GLASS: "a responder whose break-glass grants awaiting review reach "
    "break_glass_open_limit may not break glass again until they are reviewed",
}


@dataclass(frozen=True, slots=True)
class Ring:
    """Approvals within the reciprocal window leading from a requester to an approver.

    ``people[0]`` (the requester) approved a request of ``people[1]``, who approved one of
    ``people[2]``, and so on up to ``people[-1]``, the approver now answering; ``times[i]``
    is when ``people[i]`` approved ``people[i + 1]``. The approver approving the requester
    would close the ring. Two people: the reciprocal pair.
    """

    people: tuple[str, ...]
    times: tuple[datetime, ...]

    def shown(self) -> str:
        """The ring as a line, each arrow read "approved a request of", closed at the end:
        ``emp-4 → emp-3 → emp-2 → emp-1 → emp-4``."""
        return " → ".join((*self.people, self.people[0]))


def check_relationship(
    directory: DirectoryStore, requester: str, subject_owner: str | None, person: Principal
) -> None:
    """Refuse ``person`` as an answerer of ``requester``'s request on any relationship rule.

    Raises :class:`ApprovalRefused` naming the rule.
    """
    if person.status != "active":
        raise ApprovalRefused(f"{person.id} is {person.status} and may not approve", rule=INACTIVE)
    if person.id == requester:
        raise ApprovalRefused(
            f"{person.id} made this request and may not answer it themselves", rule=SELF_APPROVAL
        )
    if person.id in directory.management_chain(requester):
        raise ApprovalRefused(
            f"{person.id} is in {requester}'s management chain (above them), so their "
            "approval is not independent",
            rule=MANAGEMENT_CHAIN,
        )
    if requester in directory.management_chain(person.id):
        raise ApprovalRefused(
            f"{person.id} reports to {requester} (directly or indirectly), so their approval "
            "is not independent",
            rule=MANAGEMENT_CHAIN,
        )
    if subject_owner is not None and person.id == subject_owner:
        raise ApprovalRefused(
            f"the subject's account belongs to {person.id}, who may not answer for it",
            rule=SUBJECT_OWNER,
        )
    team = directory.principal(requester).team
    # No team (an empty value) is nobody's team: two people without one share nothing.
    if team and person.team == team:
        raise ApprovalRefused(
            f"{person.id} is in {requester}'s own team ({team}), so their answer is not "
            "independent",
            rule=SAME_TEAM,
        )


def check_not_answered(request: Request, person: Principal) -> None:
    """Refuse a second answer (approval or denial) by ``person`` to ``request``."""
    if any(v.approver == person.id for v in request.votes):
        raise ApprovalRefused(
            f"{person.id} has already answered request {request.id}", rule=ALREADY_ANSWERED
        )


def check_approver(
    directory: DirectoryStore,
    settings: ApprovalSettings,
    request: Request,
    subject_owner: str | None,
    approver: Principal,
    *,
    ring: Callable[[], Ring | None],
) -> None:
    """Refuse ``approver`` approving ``request`` on any rule (see :data:`RULES`).

    ``ring`` finds the approvals within the reciprocal window that lead from
    ``request.principal`` to ``approver`` (None when there are none); it is called only
    once every cheaper rule has passed. Raises :class:`ApprovalRefused`.
    """
    check_relationship(directory, request.principal, subject_owner, approver)
    check_eligible(settings, request, approver)
    check_not_answered(request, approver)
    found = ring()
    if found is not None:
        raise ring_refusal(found)
    missing = missing_groups(request, [directory.principal(a) for a in request.approvers])
    slots = request.approvals_needed - len(request.approvers)
    if missing and not missing & set(approver.groups) and slots <= len(missing):
        raise ApprovalRefused(
            f"the remaining approval must come from {', '.join(sorted(missing))}, "
            f"and {approver.id} is not a member",
            rule=GROUP_COVERAGE,
        )


def ring_refusal(ring: Ring) -> ApprovalRefused:
    """The refusal for an approval that would close ``ring``: ``reciprocal-approval`` for a
    pair (its message as ever), ``approval-ring`` naming everyone for three or more."""
    requester, approver = ring.people[0], ring.people[-1]
    if len(ring.people) == 2:
        return ApprovalRefused(
            f"{requester} approved a request of {approver} on {ring.times[0]:%Y-%m-%d}, so "
            f"{approver} may not approve theirs in return",
            rule=RECIPROCAL,
        )
    return ApprovalRefused(
        f"{approver} approving {requester} would close a ring of approvals since "
        f"{min(ring.times):%Y-%m-%d} ({ring.shown()}, each arrow: approved a request of), so "
        "the approval is not independent",
        rule=APPROVAL_RING,
    )


def check_eligible(settings: ApprovalSettings, request: Request, approver: Principal) -> None:
    """Refuse an approver who belongs to none of the groups allowed to answer ``request``."""
    allowed = set(settings.approver_groups) | set(request.groups_needed)
    if not allowed & set(approver.groups):
        raise ApprovalRefused(
            f"{approver.id} is in none of the approver groups ({', '.join(sorted(allowed))})",
            rule=NOT_AN_APPROVER,
        )


def missing_groups(request: Request, approvers: Sequence[Principal]) -> set[str]:
    """Groups the policy named that no approval so far comes from."""
    covered = {group for person in approvers for group in person.groups}
    return set(request.groups_needed) - covered


def check_reviewer(
    directory: DirectoryStore,
    settings: ApprovalSettings,
    holder: str,
    subject_owner: str | None,
    reviewer: Principal,
) -> None:
    """Refuse ``reviewer`` closing ``holder``'s break-glass grant. Raises ApprovalRefused."""
    check_relationship(directory, holder, subject_owner, reviewer)
    if not set(settings.review_groups) & set(reviewer.groups):
        raise ApprovalRefused(
            f"{reviewer.id} is in none of the review groups ({', '.join(settings.review_groups)})",
            rule=NOT_A_REVIEWER,
        )
