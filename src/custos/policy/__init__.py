"""Policy: the Cedar schema and policy pack, and decisions with their obligations.

A :class:`PolicyPack` is loaded and validated from ``.cedar`` files; a :class:`PolicyEngine`
decides :class:`AccessRequest` s given their :class:`Facts`. Policy test tables (request →
expected decision) are run by :func:`run_case_file`.
"""

from custos.policy.engine import PolicyEngine
from custos.policy.model import (
    AGGREGATE,
    AccessRequest,
    AggregateDecision,
    AggregateRequest,
    ApprovalsNeeded,
    Decision,
    Facts,
    GrantFacts,
    Reason,
    check_words,
)
from custos.policy.pack import PolicyInfo, PolicyPack, install_default_pack, load_pack

__all__ = [
    "AGGREGATE",
    "AccessRequest",
    "AggregateDecision",
    "AggregateRequest",
    "ApprovalsNeeded",
    "Decision",
    "Facts",
    "GrantFacts",
    "PolicyEngine",
    "PolicyInfo",
    "PolicyPack",
    "Reason",
    "check_words",
    "install_default_pack",
    "load_pack",
]
