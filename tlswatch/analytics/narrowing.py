"""Fewer rollup rows for ``failures --limit N``: only the rows that can be in its groups.

The N groups with the most failed sessions (one per domain, reporter, result type, MX,
receiving IP and sending IP) are found by summing every group; on a store where each
report has new sending IPs that is millions of groups.  Two bounds leave most rows out
without changing the answer:

* a floor: the exact sums of the groups of the largest rollup rows (a sample); their N-th
  largest is at most the N-th largest of all groups, so every group in the answer has at
  least that many failed sessions;
* a ceiling per (domain, sending IP): no group has more failed sessions than its domain
  and sending IP together (``rollup_ips`` holds those sums by month).

Only the rows of the (domain, sending IP) pairs that reach the floor can belong to a group
that does; the others are left out before any grouping.
"""

from __future__ import annotations

from typing import Any

from tlswatch.store import Store

SAMPLE_ROWS = 1_000  # the largest rollup rows whose groups give the floor
MOST_PAIRS = 5_000  # past this many (domain, sending IP) pairs, no narrowing


def narrowed(store: Store, keys: list[str], where: str, params: list[Any], limit: int,
             pairs: tuple[str, str, list[Any]]) -> tuple[str, list[Any]]:
    """``where`` (a WHERE clause on ``rollup_failures`` and its parameters) with a condition
    that leaves out the rows of no group among the first ``limit`` by failed sessions (ties
    included), or unchanged when the bounds leave out too little.  ``pairs``: FROM, WHERE
    and parameters of the failed sessions that count per domain_id and sending_mta_ip_id
    under the same filters (or more rows: a larger sum is still a ceiling)."""
    if "domain_id" not in keys or "sending_mta_ip_id" not in keys:
        return where, params
    floor = _floor(store, keys, where, params, limit)
    if floor is None or floor <= 0:
        return where, params
    source, pair_where, pair_params = pairs
    pair_where = f"{pair_where} AND counted" if pair_where else " WHERE counted"
    found = store.rows(f"""
        SELECT domain_id, sending_mta_ip_id FROM {source}{pair_where}
        GROUP BY domain_id, sending_mta_ip_id HAVING sum(failed_sessions) >= ?
        ORDER BY domain_id, sending_mta_ip_id LIMIT {MOST_PAIRS + 1}
    """, [*pair_params, floor])
    if len(found) > MOST_PAIRS:
        return where, params
    if not found:
        return f"{where} AND false", params
    values = ", ".join("(?, ?)" for _ in found)
    return (f"{where} AND (domain_id, sending_mta_ip_id) IN "
            f"(SELECT d, s FROM (VALUES {values}) AS v(d, s))",
            [*params, *(v for r in found for v in (r["domain_id"], r["sending_mta_ip_id"]))])


def _floor(store: Store, keys: list[str], where: str, params: list[Any],
           limit: int) -> int | None:
    """The ``limit``-th largest exact sum among the groups of the largest rows (None when
    they are fewer than ``limit`` groups)."""
    key_sql = ", ".join(keys)
    same = " AND ".join(f"x.{k} = t.{k}" for k in keys)
    row = store.rows(f"""
        SELECT count(*) AS n, min(failed_sessions) AS least FROM (
            SELECT sum(x.failed_sessions) AS failed_sessions
            FROM (SELECT * FROM rollup_failures{where}) AS x
            JOIN (SELECT DISTINCT {key_sql} FROM (
                      SELECT {key_sql} FROM rollup_failures{where}
                      ORDER BY failed_sessions DESC LIMIT {SAMPLE_ROWS}) AS r) AS t ON {same}
            GROUP BY {", ".join(f"x.{k}" for k in keys)}
            ORDER BY failed_sessions DESC LIMIT {int(limit)}) AS f
    """, [*params, *params])[0]
    return int(row["least"]) if row["n"] >= limit and row["least"] is not None else None
