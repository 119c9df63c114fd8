"""Detection thresholds: defaults chosen to hold the alert budget, overridable in
``config.toml`` under ``[detect]`` (see docs/design/detect.md for how each was chosen)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from custos.errors import ConfigurationError
from custos.vocabulary import Vocabulary

#: The settings whose values are words of the policy pack, and the kind of each.
WORD_LISTS = {
    "sensitive_categories": "category",
    "locating_categories": "category",
    "minor_categories": "category",
    "sql_hunt_purposes": "purpose",
}


@dataclass(frozen=True, slots=True)
class DetectConfig:
    """Every threshold the rules use. Times are in minutes, hours or days as named."""

    #: Alerts aggregate per principal over periods of this many days (a burst is one alert).
    window_days: int = 7
    #: A ticket opened up to this long after an access still explains it (call first, file
    #: the ticket after), and one closed this long before it still does (follow-up).
    retro_minutes: int = 240
    #: A ticket of any kind about the subject, assigned to the principal within this many
    #: days, or an open ticket of a teammate about it, is a *partial* explanation.
    near_days: int = 3
    #: Robust z (median + k·MAD·1.4826) a principal's count must pass, against both its
    #: peer group (same role) and its own other periods.
    robust_k: float = 4.0
    #: A principal's own baseline is used only once they have this many periods of history
    #: (fewer cannot outvote a misuse that spans several of them).
    own_min_periods: int = 4
    #: Fewest distinct unexplained subjects in a period for a volume alert.
    volume_min_subjects: int = 12
    #: Fewest separate visits (more than ``repeat_gap_hours`` apart) with unexplained access
    #: to one subject for a stalking alert.
    repeat_min_days: int = 3
    repeat_gap_hours: int = 12
    #: Fewest distinct principals with unexplained access to one subject within
    #: ``convergence_hours`` (one fewer when the subject is protected, never below 2).
    convergence_min_principals: int = 4
    convergence_hours: int = 72
    #: Categories whose unexplained use always alerts.
    sensitive_categories: tuple[str, ...] = ("credentials", "messages")
    #: Categories that locate a person (the 2022 pattern, and protected-subject severity).
    locating_categories: tuple[str, ...] = ("ip_history", "location", "device")
    #: For minors, unexplained access to these categories alerts (a profile view does not).
    minor_categories: tuple[str, ...] = (
        "messages",
        "location",
        "ip_history",
        "contact",
        "credentials",
    )
    #: Days after ``role_since`` counted as "new in role", and the fewest distinct
    #: unexplained subjects in them that alert.
    new_role_days: int = 14
    new_role_min_subjects: int = 6
    #: Fewest distinct unexplained subjects by ``leaving`` staff in a period that alert
    #: (any unexplained export by them alerts).
    leaving_min_subjects: int = 5
    #: Hours holding at least this share of a principal's own events are its usual hours;
    #: principals with fewer than ``usual_min_events`` events use their team's hours.
    usual_hour_share: float = 0.01
    usual_min_events: int = 50
    #: Fewest distinct subjects accessed unexplained outside usual hours in a period.
    off_hours_min_subjects: int = 3
    #: Retries within this many minutes of a denial count as deny-then-retry.
    retry_minutes: int = 120
    #: Distinct purposes tried on one subject that alert on their own.
    shopping_min_purposes: int = 3
    #: Fewest denials in one period that alert on their own (also above peer and own
    #: baselines).
    retry_min_denials: int = 6
    #: Break-glass uses in one period that alert even when each was justified afterwards.
    break_glass_max: int = 3
    #: Fewest distinct subjects accessed under tickets the principal opened themselves in
    #: a period for a pretext alert (also above peer and own baselines).
    pretext_min_subjects: int = 5
    #: A category making up less than this share of the accesses of a principal's peers
    #: (same role, at least ``rare_min_peer_events`` of them) is rare for that principal;
    #: unexplained use of a rare category on this many distinct subjects alerts.
    rare_category_share: float = 0.002
    rare_min_peer_events: int = 200
    rare_category_min_subjects: int = 3
    #: Fewest records exported or searched unexplained in a period for a bulk-export alert
    #: (also above peer and own baselines).
    export_min_records: int = 1000
    #: Grants approved within this many days of each other count towards one ring: an
    #: approver whom the holder approved in turn (directly or through others) is not
    #: independent (the approvals part's reciprocal window).
    ring_days: int = 30
    #: Longest ring looked for, in people (2 is a reciprocal pair).
    ring_max: int = 4
    #: Fewest people reading one subject under grants in a period, with no ticket of their
    #: own opened by someone else, for a grant-convergence alert.
    grant_convergence_min_principals: int = 3
    #: Fewest grants a principal must receive in a period (also beyond peer and own
    #: baselines) for a grant-volume alert.
    grant_volume_min: int = 6
    #: Guarded SQL refused this many times (queries the analyzer would not run, or
    #: aggregates the policies refused) within ``sql_probing_minutes`` alerts: someone
    #: probing the analyzer's edges (``sql_probing``).
    sql_probing_refusals: int = 5
    sql_probing_minutes: int = 60
    #: An aggregate refused for one of these purposes alerts on its own, as critical: counting
    #: people's logins by network for an internal investigation is how sources are hunted.
    sql_hunt_purposes: tuple[str, ...] = ("internal_investigation",)
    #: Evidence event ids kept per alert (the count is always in the explanation).
    max_evidence: int = 200
    #: Days a ``legitimate`` / ``false_positive`` disposition suppresses the same pattern.
    suppress_days: int = 30
    #: Decide imported accesses by the policies with the directory as it stood at their
    #: time (``policy_replay``; see :mod:`custos.detect.replay`).
    replay: bool = True
    #: The service runs detection by itself every ``interval`` seconds, and sooner once
    #: ``burst_events`` events (or ledger entries) arrived since its last run; one worker at
    #: a time, under a lease of ``lease_seconds`` renewed while it runs (a killed worker's
    #: lease expires after that long). See :mod:`custos.detect.continuous`.
    interval: float = 300.0
    burst_events: int = 1000
    lease_seconds: float = 60.0

    @classmethod
    def from_section(cls, section: Mapping[str, Any], source: str = "[detect]") -> DetectConfig:
        """Defaults overridden by ``section``. Raises :class:`ConfigurationError` naming an
        unknown key or a value of the wrong type."""
        known = {f.name: f for f in fields(cls)}
        changes: dict[str, Any] = {}
        for key, value in section.items():
            spec = known.get(key)
            if spec is None:
                raise ConfigurationError(f"{source}: unknown setting {key!r}")
            default = getattr(cls(), key)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ConfigurationError(f"{source}: {key} must be true or false")
                changes[key] = value
            elif isinstance(default, tuple):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigurationError(f"{source}: {key} must be a list of strings")
                changes[key] = tuple(value)
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ConfigurationError(f"{source}: {key} must be a non-negative number")
                changes[key] = float(value)
            else:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigurationError(f"{source}: {key} must be a non-negative integer")
                changes[key] = value
        for key in ("window_days", "sql_probing_refusals", "sql_probing_minutes"):
            if changes.get(key, 1) == 0:
                raise ConfigurationError(f"{source}: {key} must be at least 1")
        for key in ("interval", "lease_seconds", "burst_events"):
            if changes.get(key, 1) == 0:
                raise ConfigurationError(f"{source}: {key} must be more than 0")
        return dataclasses.replace(cls(), **changes)


def check_words(section: Mapping[str, Any], words: Vocabulary, source: str = "[detect]") -> None:
    """Refuse a configured category or purpose list naming a word ``words`` (the active
    pack's) lacks: a misspelt ``helth`` would match nothing and its alerts would never come.
    Only lists set in ``section`` are checked (the defaults name the shipped words, and a
    pack without some of them just has nothing they match).

    Raises :class:`ConfigurationError` naming the setting, the word and the valid ones."""
    for key, kind in WORD_LISTS.items():
        value = section.get(key)
        if not isinstance(value, list):
            continue  # absent, or the wrong type: from_section's to refuse
        for word in value:
            if not words.knows(kind, word):
                raise ConfigurationError(f"{source}: {key}: {words.unknown(kind, word)}")
