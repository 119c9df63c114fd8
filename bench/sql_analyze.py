"""What understanding a query costs: :func:`custos.sql.analyze.analyze` and
:meth:`Analysis.rewrite` of a 1 KB query against sqlglot merely parsing it, same run.

The query joins two CTEs and a UNION ALL branch over two mapped tables (the shape of a support
query). In alternating rounds it times the bare parse (the baseline), the analysis and the
rewrite (all categories coarse, with the pglast re-check on PostgreSQL). Prints medians and
ratios to the baseline; asserts nothing. ``--rounds`` sets the number of rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import sqlglot

from custos.sql import SourceMap, parse_data_map
from custos.sql.analyze import analyze

MAP = """\
sources:
  app:
    url: postgresql://reader@127.0.0.1:5432/app
    tables:
      logins:
        subject: user_id
        columns: {seen: plain, ip: ip_history, email: contact, device_id: plain}
      devices:
        subject: user_id
        columns: {device_id: plain, model: device}
  lake:
    url: duckdb:lake.duckdb
    tables:
      logins:
        subject: user_id
        columns: {seen: plain, ip: ip_history, email: contact, device_id: plain}
      devices:
        subject: user_id
        columns: {device_id: plain, model: device}
"""

QUERY = """\
WITH recent AS (
  SELECT l.user_id, l.ip, l.seen, l.device_id FROM logins l
  WHERE l.user_id IN ('u-1', 'u-2', 'u-3') AND l.seen > '2024-01-01'),
devs AS (SELECT d.user_id, d.model, d.device_id FROM devices d
  WHERE d.user_id IN ('u-1', 'u-2', 'u-3'))
SELECT r.user_id, r.ip, r.seen, v.model,
  CASE WHEN r.seen > '2024-06-01' THEN 'new' ELSE 'old' END AS age,
  lower(v.model) AS m2, length(r.ip) AS n, coalesce(v.model, 'none') AS mm
FROM recent r JOIN devs v ON v.user_id = r.user_id AND v.device_id = r.device_id
WHERE r.seen < '2025-01-01' AND v.device_id <> 'x'
UNION ALL
SELECT l.user_id, l.ip, l.seen, d.model, 'direct' AS age, upper(d.model), length(l.email),
  d.device_id
FROM logins l JOIN devices d ON d.user_id = l.user_id
WHERE l.user_id = 'u-4' AND d.device_id LIKE 'dev-%' AND l.seen BETWEEN '2024-01-01'
  AND '2025-01-01'
ORDER BY seen DESC LIMIT 100
"""


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    rounds = parser.parse_args().rounds
    data_map = parse_data_map(MAP)
    print(f"query: {len(QUERY)} characters, {rounds} rounds")
    for name in ("app", "lake"):
        measure(data_map.source(name), rounds)


def measure(source: SourceMap, rounds: int) -> None:
    analysis = analyze(QUERY, source)
    precision = dict.fromkeys(analysis.categories, "coarse")
    analysis.rewrite(precision)  # warm the template caches
    parse, understand, rewrite = [], [], []
    for _ in range(rounds):
        parse.append(timed(lambda: sqlglot.parse_one(QUERY, read=source.dialect)))
        understand.append(timed(lambda: analyze(QUERY, source)))
        rewrite.append(timed(lambda: analysis.rewrite(precision)))
    base = statistics.median(parse)
    for label, times in (("parse", parse), ("analyze", understand), ("rewrite", rewrite)):
        median = statistics.median(times)
        print(
            f"{source.dialect:8} {label:8} {median * 1000:7.2f} ms"
            f"  {median / base:5.2f}x the bare parse"
        )


if __name__ == "__main__":
    main()
