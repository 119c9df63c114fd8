"""Grants as evidence, not excuses: the rules about who approved whose grants.

A two-person grant explains an access only when its approvers are independent of the holder.
Where they are not — an approver on the holder's own team, under the same manager or in their
management chain, or one whom the holder approved in turn (directly: a reciprocal pair; or
through others: a ring of up to ``ring_max`` people, within ``ring_days``) — the grant is
*doubted*: a read under it is classified as if there were no grant, by its ticket alone, so
every other rule (protected subjects, leak hunts, volume, convergence…) counts it again, and
the rules here name the grant's approvers. Grants detection has no facts for (events that
claim a grant custos never recorded: imported logs) keep explaining their reads as before.

Tables made by :func:`prepare` (in the detector's database, beside ``ev``):

- ``gr``: every grant that is not break-glass, with its holder's team;
- ``ga``: one row per grant and approver, with how the approver sits to the holder
  (``relation``: ``management chain``, ``same manager``, ``same team`` or null) and the
  shortest ring through both (``ring``: the people in order, the holder first, or null);
- ``gcover``: per grant, whether it is doubted (some approver close or in a ring).

The rules read the residue ``ev`` (see :mod:`custos.detect.engine`): a doubted read has
``doubted`` true and ``granted`` false there; ``tk_indep`` says whether a ticket (not a
grant) explains it independently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from custos.detect.kept import bucket
from custos.detect.tables import GRANT_COLUMNS, create_table

if TYPE_CHECKING:
    from custos.detect.engine import Detector, Finding


def prepare(d: Detector) -> None:
    """Make ``gr``, ``ga`` and ``gcover`` from ``grants`` and the directory's ``principals``."""
    c = d.config
    con = d.con
    found = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'grants'"
    ).fetchone()
    if not found or not found[0]:
        # Tables made elsewhere without grant facts: none is doubted.
        con.execute(create_table("grants", GRANT_COLUMNS))
    con.execute(
        """
        CREATE OR REPLACE TABLE gr AS
        SELECT g.id, g.principal, g.subject, g.purpose, g.precision, g.starts, g.ends,
               coalesce(g.approvers, '') AS approvers, coalesce(p.team, '(unknown)') AS team,
               p.manager
        FROM grants g LEFT JOIN principals p ON p.id = g.principal
        WHERE NOT coalesce(g.break_glass, false) AND g.starts IS NOT NULL
        """
    )
    window = f"to_days({c.ring_days})"

    def near(e: str) -> str:
        return f"abs(epoch({e}.t) - epoch(a.starts)) <= epoch({window})"

    # Edges "x approved a grant of y", at the grant's start; a ring closing on approver a of
    # holder p is a path p -> ... -> a (p approved someone who … approved a) within the
    # window of the grant, through people other than p and a.
    paths = [
        f"""SELECT a.id, a.approver, [a.principal, a.approver] AS ring FROM ga0 a
            JOIN edges e1 ON e1.x = a.principal AND e1.y = a.approver AND {near("e1")}"""
    ]
    if c.ring_max >= 3:
        paths.append(
            f"""SELECT a.id, a.approver, [a.principal, e1.y, a.approver] AS ring FROM ga0 a
                JOIN edges e1 ON e1.x = a.principal AND {near("e1")}
                JOIN edges e2 ON e2.x = e1.y AND e2.y = a.approver AND {near("e2")}
                WHERE e1.y NOT IN (a.principal, a.approver)"""
        )
    if c.ring_max >= 4:
        paths.append(
            f"""SELECT a.id, a.approver, [a.principal, e1.y, e2.y, a.approver] AS ring
                FROM ga0 a
                JOIN edges e1 ON e1.x = a.principal AND {near("e1")}
                JOIN edges e2 ON e2.x = e1.y AND {near("e2")}
                JOIN edges e3 ON e3.x = e2.y AND e3.y = a.approver AND {near("e3")}
                WHERE e1.y NOT IN (a.principal, a.approver)
                  AND e2.y NOT IN (a.principal, a.approver, e1.y)"""
        )
    rings = (
        " UNION ALL ".join(paths)
        if c.ring_max >= 2
        else (
            "SELECT NULL::VARCHAR AS id, NULL::VARCHAR AS approver, NULL::VARCHAR[] AS ring "
            "WHERE false"
        )
    )
    con.execute(
        f"""
        CREATE OR REPLACE TABLE ga AS
        WITH ga0 AS (
            SELECT g.id, g.principal, g.starts, g.team, g.manager, u.approver
            FROM gr g, unnest(string_split(g.approvers, '|')) u(approver)
            WHERE u.approver <> ''
        ),
        edges AS (SELECT DISTINCT approver AS x, principal AS y, starts AS t FROM ga0),
        rings AS (
            SELECT id, approver, arg_min(ring, len(ring)) AS ring
            FROM ({rings}) GROUP BY id, approver
        )
        SELECT a.id, a.principal, a.approver, q.team AS approver_team,
               CASE WHEN q.id IS NULL THEN NULL
                    WHEN a.manager = q.id OR q.manager = a.principal THEN 'management chain'
                    WHEN a.manager IS NOT NULL AND q.manager = a.manager THEN 'same manager'
                    WHEN q.team = a.team THEN 'same team' END AS relation,
               r.ring
        FROM ga0 a
        LEFT JOIN principals q ON q.id = a.approver
        LEFT JOIN rings r ON r.id = a.id AND r.approver = a.approver
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE gcover AS
        SELECT g.id, g.principal, g.subject, g.starts, g.ends,
               coalesce(bool_or(a.relation IS NOT NULL OR a.ring IS NOT NULL), false) AS doubted
        FROM gr g LEFT JOIN ga a ON a.id = g.id
        GROUP BY g.id, g.principal, g.subject, g.starts, g.ends
        """
    )


def doubt(d: Detector) -> None:
    """Mark the reads of ``ev`` made under a doubted grant (and no grant that is not): they
    lose the grant's explanation and keep only what their ticket gives them."""
    d.con.execute(
        """
        UPDATE ev SET granted = false, doubted = true,
               indep = cited_ok AND NOT cited_self, own_indep = cited_ok AND NOT cited_self,
               tier = CASE WHEN cited_ok THEN 2 ELSE 0 END,
               self_only = cited_ok AND cited_self
        WHERE id IN (
            SELECT e.id FROM ev e
            JOIN gcover g ON g.principal = e.principal AND g.subject = e.subject
                         AND e.time >= g.starts AND e.time < g.ends
            WHERE e.granted
            GROUP BY e.id HAVING bool_and(g.doubted))
        """
    )


def _under(where: str) -> str:
    """The doubted reads of ``ev`` no ticket explains independently, each with the grant
    rows (``ga``, one per approver) of the doubted grants covering it that match ``where``."""
    return f"""(SELECT e.*, a.id AS grant_id, a.approver, a.relation, a.ring, g.starts
               FROM ev e
               JOIN gcover g ON g.principal = e.principal AND g.subject = e.subject
                            AND e.time >= g.starts AND e.time < g.ends AND g.doubted
               JOIN ga a ON a.id = g.id
               WHERE e.decision = 'allow' AND e.doubted AND NOT e.indep AND ({where})) u"""


def approval_ring(d: Detector) -> list[Finding]:
    """Reads under grants approved from inside a ring (or a reciprocal pair) of approvals."""
    from custos.detect.engine import _plural, _span

    n = d.config.max_evidence
    rows = d._rows(
        f"""
        SELECT list_sort(list_distinct(flatten(list(ring)))) AS members,
               min(ring) AS ring, bucket,
               list(DISTINCT principal ORDER BY principal) AS principals,
               list(DISTINCT subject ORDER BY subject) AS subjects,
               list(DISTINCT id ORDER BY id)[1:{n}] AS ids, count(DISTINCT id) AS n,
               count(DISTINCT grant_id) AS grants, min(time) AS first, max(time) AS last,
               list(DISTINCT category ORDER BY category) AS categories,
               bool_or(precision = 'precise') AS precise, bool_or(hv OR minor) AS guarded
        FROM {_under("a.ring IS NOT NULL")}
        GROUP BY list_sort(ring), bucket
        """
    )
    # One alert per ring and period: rings found from each of their grants are the same
    # people, so the groups above merge on their members.
    merged: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:
        key = (*row["members"], str(row["bucket"]))
        if key in merged:
            old = merged[key]
            old["principals"] = sorted(set(old["principals"]) | set(row["principals"]))
            old["subjects"] = sorted(set(old["subjects"]) | set(row["subjects"]))
            old["ids"] = sorted(set(old["ids"]) | set(row["ids"]))[:n]
            old["n"] += row["n"]
            old["grants"] += row["grants"]
            old["first"], old["last"] = (
                min(old["first"], row["first"]),
                max(old["last"], row["last"]),
            )
            old["categories"] = sorted(set(old["categories"]) | set(row["categories"]))
            old["precise"] = old["precise"] or row["precise"]
            old["guarded"] = old["guarded"] or row["guarded"]
        else:
            merged[key] = dict(row)
    out = []
    for row in merged.values():
        ring = list(row["ring"])
        # ring = [holder, …, approver]: each approved the next one's grant, and the last
        # approved the holder's. Told from its first member, so it reads the same each run.
        first = ring.index(min(ring))
        ring = ring[first:] + ring[:first]
        steps = [f"{ring[i]} approved {ring[i + 1]}" for i in range(len(ring) - 1)]
        steps.append(f"{ring[-1]} approved {ring[0]}")
        kind = "a reciprocal pair" if len(ring) == 2 else f"a ring of {len(ring)}"
        members = row["members"]
        out.append(
            d._finding(
                "approval_ring",
                "critical" if row["guarded"] or d._severe(row) else "high",
                row,
                f"{', '.join(d._who(p) for p in row['principals'])} read "
                f"{', '.join(row['categories'])} of "
                f"{_plural(len(row['subjects']), 'subject')} {row['n']} time(s) "
                f"{_span(row['first'], row['last'])} under {_plural(row['grants'], 'grant')} "
                f"approved within {kind} ({', '.join(members)}: {'; '.join(steps)}, within "
                f"{d.config.ring_days} days), with no ticket opened by someone else "
                "explaining the reads. Approvals traded inside a group are not independent.",
                f"{'|'.join(members)}|{row['bucket']}",
                principals=sorted(set(row["principals"]) | set(members)),
            )
        )
    return out


def close_approvers(d: Detector) -> list[Finding]:
    """Reads under grants approved by someone close to the holder: their own team, the
    same manager, or their management chain."""
    from custos.detect.engine import _plural, _span

    n = d.config.max_evidence
    sql = f"""
        SELECT principal, bucket, list(DISTINCT subject ORDER BY subject) AS subjects,
               list(DISTINCT id ORDER BY id)[1:{n}] AS ids, count(DISTINCT id) AS n,
               count(DISTINCT subject) AS n_subjects, min(time) AS first, max(time) AS last,
               list(DISTINCT category ORDER BY category) AS categories,
               bool_or(precision = 'precise') AS precise,
               list_sort(list(DISTINCT approver || ' (' || relation || ')')) AS close,
               count(DISTINCT grant_id) AS grants, bool_or(hv OR minor) AS guarded
        FROM {_under("a.relation IS NOT NULL")}
        GROUP BY principal, bucket
    """
    out = []
    for row in d._rows(sql):
        out.append(
            d._finding(
                "close_approvers",
                "critical" if row["guarded"] and d._severe(row) else "high",
                row,
                f"{d._who(row['principal'])} read {', '.join(row['categories'])} of "
                f"{_plural(row['n_subjects'], 'subject')} {row['n']} time(s) "
                f"{_span(row['first'], row['last'])} under "
                f"{_plural(row['grants'], 'grant')} approved by {', '.join(row['close'])}, "
                "with no ticket opened by someone else explaining the reads: an approver "
                "that close to the requester is not a second, independent person.",
                f"{row['principal']}|{row['bucket']}",
            )
        )
    return out


def grant_convergence(d: Detector) -> list[Finding]:
    """Several people reading one subject under grants in one period, none of them with a
    ticket of their own, opened by someone else, that explains it."""
    from custos.detect.engine import _plural, _span

    c = d.config
    # TODO(link_group): group by the subject's link group once detection's subjects carry
    # it, so that grants on a person's several accounts converge too.
    sql = d._grouped(
        "decision = 'allow' AND (granted OR doubted) AND NOT tk_indep",
        ", list(DISTINCT principal ORDER BY principal) AS principals, "
        "bool_or(hv OR minor) AS guarded",
        by="subject, bucket",
        having=f"count(DISTINCT principal) >= {c.grant_convergence_min_principals}",
    )
    out = []
    for row in d._rows(sql):
        people = row["principals"]
        out.append(
            d._finding(
                "grant_convergence",
                "critical" if row["guarded"] else "high",
                row,
                f"{len(people)} different people ({', '.join(people)}) each read the same "
                f"subject under a grant {_span(row['first'], row['last'])} "
                f"({', '.join(row['categories'])}; {_plural(row['n'], 'read')}), and none had "
                "a ticket opened by someone else explaining it: separate grants converging "
                "on one person look like one search split between several people.",
                f"{row['subject']}|{row['bucket']}",
                principals=people,
            )
        )
    return out


def grant_volume(d: Detector) -> list[Finding]:
    """Principals receiving far more grants in a period than people in their role and than
    they themselves usually do, however independent each approval was."""
    from custos.detect.engine import _plural, _span

    c = d.config
    n = c.max_evidence
    counts = (
        f"SELECT principal, {bucket(c, 'starts')} AS bucket, count(*) AS n FROM gr GROUP BY ALL"
    )
    hits = d._rows(d._baseline(counts, c.grant_volume_min))
    out = []
    for hit in hits:
        row = d._rows(
            f"""
            SELECT list(DISTINCT e.subject ORDER BY e.subject) AS subjects,
                   list(DISTINCT e.id ORDER BY e.id)[1:{n}] AS ids,
                   count(DISTINCT e.id) AS n, count(DISTINCT g.subject) AS n_subjects,
                   min(e.time) AS first, max(e.time) AS last,
                   list(DISTINCT e.category ORDER BY e.category) AS categories
            FROM gr g JOIN events e ON e.principal = g.principal AND e.subject = g.subject
                 AND e.time >= g.starts AND e.time < g.ends AND e.decision = 'allow'
            WHERE g.principal = ? AND {bucket(c, "g.starts")} = ?
            """,
            params=[hit["principal"], hit["bucket"]],
        )[0]
        if not row["ids"]:
            continue  # grants never used leave no reads to show
        out.append(
            d._finding(
                "grant_volume",
                "high",
                row,
                f"{d._who(hit['principal'])} received {int(hit['n'])} grants "
                f"{_span(row['first'], row['last'])} and read {', '.join(row['categories'])} "
                f"of {_plural(row['n_subjects'], 'subject')} under them; people in the same "
                f"role typically receive {hit['peer_med']:g} per {c.window_days} days, and "
                f"they themselves {hit['own_med']:g}. Each approval may look sound; the number "
                "does not.",
                f"{hit['principal']}|{hit['bucket']}",
                principals=[hit["principal"]],
            )
        )
    return out


#: The rules of this module, as the detector runs them.
RULES = (approval_ring, close_approvers, grant_convergence, grant_volume)
