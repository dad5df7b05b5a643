"""SQL over the store, with the counting rule built in.

A report lists one entry per policy it applied; whether two entries are the same sessions
depends on the sender's layout (Microsoft lists the same sessions under ``sts`` and
``tlsa``, Postfix lists each session once).  The loader decides that per report and marks
the policy rows and failure details that count (``counted``; see ingest/counting.py), so
every query here is one filtered scan, and all figures come from one consistent choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

from tlswatch.analytics.narrowing import narrowed
from tlswatch.store import Store
from tlswatch.tenants.scope import EVERYTHING, Scope

FAILURE_DIMENSIONS = (
    "policy_domain", "organization_name", "result_type", "receiving_mx_hostname",
    "receiving_ip", "sending_mta_ip", "policy_type",
)


@dataclass(frozen=True)
class Filters:
    """Row filters shared by every query; dates are inclusive UTC report days."""

    since: date | None = None
    until: date | None = None
    domains: tuple[str, ...] = ()
    organizations: tuple[str, ...] = ()
    result_types: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()
    sending_ips: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    scope: Scope = EVERYTHING  # a tenant's view: only the domains it owns

    def day_clauses(self) -> tuple[list[str], list[Any]]:
        """The conditions on the report day (inclusive) and their parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.since is not None:
            clauses.append("day >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("day <= ?")
            params.append(self.until)
        return clauses, params

    def where(self, *, failure_rows: bool) -> tuple[str, list[Any]]:
        """A WHERE clause and its parameters for the policies or failure_details table."""
        clauses, params = self.day_clauses()
        columns = [("policy_domain", [d.lower().rstrip(".") for d in self.domains]),
                   ("organization_name", list(self.organizations))]
        if failure_rows:
            columns += [("result_type", list(self.result_types)),
                        ("receiving_mx_hostname", list(self.mx_hosts)),
                        ("sending_mta_ip", list(self.sending_ips))]
        for column, values in columns:
            if values:
                clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
                params.extend(values)
        _scoped(clauses, params, *self.scope.clause("policy_domain"))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def with_dates(self, since: date | None, until: date | None) -> Filters:
        return replace(self, since=since, until=until, extra={})


def _scoped(clauses: list[str], params: list[Any], clause: str | None,
            values: list[str]) -> None:
    """Add a scope's condition (see ``Scope.clause``), if it has one."""
    if clause is not None:
        clauses.append(clause)
        params.extend(values)


def session_totals(store: Store, filters: Filters) -> list[dict[str, Any]]:
    """Per policy domain: reports, organisations, successful and failed sessions."""
    where, params = filters.where(failure_rows=False)
    return store.rows(f"""
        SELECT policy_domain, CAST(sum(reports) AS BIGINT) AS reports,
               array_agg(DISTINCT organization_name ORDER BY organization_name)
                   AS organizations,
               sum(successful_sessions)::DECIMAL(38,0) AS successful_sessions,
               sum(failed_sessions)::DECIMAL(38,0) AS failed_sessions
        FROM rollup_days{where}
        GROUP BY policy_domain ORDER BY policy_domain
    """, params)


def seen(alias: str = "failure_details") -> str:
    """A SQL condition on failure details: the failures a report *shows*, for finding problems
    (alerts, advice) rather than counting them.  These are the rows that count, and also the
    rows of a policy type left out as the same sessions (see ingest/counting.py) whose result
    type the counted type does not show: an MTA-STS policy fetch error reported under ``sts``
    stays visible when ``tlsa`` (with more failures) is the type that counts.  The rollups
    keep this as their ``seen`` flag."""
    return (f"({alias}.counted OR NOT EXISTS (SELECT 1 FROM failure_details c "
            f"WHERE c.report_pk = {alias}.report_pk AND c.policy_domain = {alias}.policy_domain "
            f"AND c.result_type = {alias}.result_type AND c.counted))")


def failed_by_policy(store: Store, filters: Filters) -> list[dict[str, Any]]:
    """Per policy domain, policy type and policy text: the failed sessions that count, and
    of those counted under ``sts``, how many DANE also failed (when the report lists the
    same sessions under ``tlsa``): mail that DANE failed was not delivered, whatever the
    MTA-STS mode.  The per-report pairing is done at load (``rollup_policies.dane_failed``)."""
    where, params = filters.where(failure_rows=False)
    where = f"{where} AND counted" if where else " WHERE counted"
    return store.rows(f"""
        SELECT policy_domain, policy_type, policy_string,
               sum(failed_sessions)::DECIMAL(38,0) AS failed_sessions,
               sum(dane_failed)::DECIMAL(38,0) AS dane_failed
        FROM rollup_policies{where}
        GROUP BY policy_domain, policy_type, policy_string
        HAVING sum(failed_sessions) > 0
        ORDER BY policy_domain, policy_type, policy_string
    """, params)


def failure_groups(
    store: Store, filters: Filters, dimensions: tuple[str, ...], *, limit: int | None = None,
    top_per_domain: int | None = None, details: bool = False, example_code: bool = False,
) -> list[dict[str, Any]]:
    """Failed sessions grouped by ``dimensions`` (any of FAILURE_DIMENSIONS), most first,
    from the daily rollups.

    Grouping by ``policy_type`` gives the per-type figures (no counting rule); otherwise
    only the rows that count are summed.  ``top_per_domain`` keeps the largest N groups of
    each policy domain; ``details`` adds the number of reports, first and last day and up
    to three failure reason codes (from the rollup rows); ``example_code`` adds one reason code.
    """
    if details and limit and not top_per_domain and not example_code:
        return _top_detailed(store, filters, dimensions, limit)
    unknown = set(dimensions) - set(FAILURE_DIMENSIONS)
    if unknown:
        raise ValueError(f"cannot group failures by {sorted(unknown)}")
    dims = list(dict.fromkeys(dimensions))
    if top_per_domain and "policy_domain" not in dims:
        raise ValueError("top_per_domain needs policy_domain among the dimensions")
    keys = [_ID_COLUMN.get(d, d) for d in dims]
    key_sql = ", ".join(keys)
    where, params = rollup_where(filters)
    source = "rollup_failures" if details else rollup_table(filters, dims)
    if set(dims) == {"policy_domain", "sending_mta_ip"} and not (details or example_code):
        source, where, params = by_month_source(filters)
    if "policy_type" not in dims:
        where = f"{where} AND counted" if where else " WHERE counted"
    # Reports: each rollup row counts its reports once; a group spanning several rows of
    # one report (the same failure listed under two policy types that both count) counts
    # it once per row.  Reason codes: the largest of each row, up to three.
    extra = (", CAST(sum(reports) AS BIGINT) AS reports, min(day) AS first_day, "
             "max(day) AS last_day, array_agg(DISTINCT failure_reason_code ORDER BY "
             "failure_reason_code) FILTER (WHERE failure_reason_code IS NOT NULL) "
             "AS failure_reason_codes") if details else ""
    if example_code:
        extra += ", max(failure_reason_code) AS failure_reason_code"
    joins = "".join(f" LEFT JOIN names n{i} ON n{i}.name_id = g.{key}"
                    for i, key in enumerate(keys) if key in _ID_COLUMN.values())
    names = ", ".join(f"n{i}.value AS {dim}" if key in _ID_COLUMN.values() else f"g.{dim}"
                      for i, (dim, key) in enumerate(zip(dims, keys, strict=True)))
    order = f"g.failed_sessions DESC, {', '.join(dims)}"
    limit_sql = f" LIMIT {int(limit)}" if limit else ""
    outs = (", g.reports, g.first_day, g.last_day, g.failure_reason_codes" if details
            else "") + (", g.failure_reason_code" if example_code else "")
    top = f"""
            SELECT {key_sql}, sum(failed_sessions)::DECIMAL(38,0) AS failed_sessions{extra}
            FROM {source}{where}
            GROUP BY {key_sql}"""
    if top_per_domain:
        top = _top_per_domain(top, keys, int(top_per_domain), few=bool(filters.domains))
    rows = store.rows(f"""
        SELECT {names}, g.failed_sessions{outs}
        FROM ({top}) AS g{joins}
        ORDER BY {order}{limit_sql}
    """, params)
    if details:
        for row in rows:
            codes = row["failure_reason_codes"]
            row["failure_reason_codes"] = codes[:3] if codes else None
    return rows


def _top_per_domain(groups: str, keys: list[str], n: int, *, few: bool = False) -> str:
    """The ``n`` largest of the ``groups`` (a query with domain_id and failed_sessions) in
    each domain, ties in the order of ``keys``.  Only the groups with at least the domain's
    n-th largest *distinct* figure are ranked: there are at least n of them, so the first
    n are among them, and on a store with many small groups (a sending IP per report) that
    ranks a few thousand rows instead of every group.  ``few`` (the groups of a few named
    domains): every group ranked, which is then quicker than finding that figure."""
    ordered = ", ".join(f"s.{k}" for k in keys)
    if few:
        return f"""
        SELECT * FROM (
            SELECT s.*, row_number() OVER (PARTITION BY s.domain_id
                                           ORDER BY s.failed_sessions DESC, {ordered}) AS rank
            FROM ({groups}) AS s) AS r
        WHERE rank <= {n}"""
    return f"""
        WITH s AS MATERIALIZED ({groups}),
        least AS (
            SELECT domain_id, min(failed_sessions) AS least FROM (
                SELECT domain_id, failed_sessions, row_number() OVER (
                    PARTITION BY domain_id ORDER BY failed_sessions DESC) AS n
                FROM (SELECT DISTINCT domain_id, failed_sessions FROM s) AS v) AS d
            WHERE n <= {n} GROUP BY domain_id)
        SELECT * FROM (
            SELECT s.*, row_number() OVER (PARTITION BY s.domain_id
                                           ORDER BY s.failed_sessions DESC, {ordered}) AS rank
            FROM s JOIN least ON least.domain_id = s.domain_id
                 AND s.failed_sessions >= least.least) AS r
        WHERE rank <= {n}"""


GROUPS_PER_PASS = 2_000_000  # rollup rows a `failures` pass groups at once (its memory)


def _top_detailed(store: Store, filters: Filters, dimensions: tuple[str, ...],
                  limit: int) -> list[dict[str, Any]]:
    """``failure_groups(..., limit=limit, details=True)`` without grouping every rollup row
    twice: first the failed sessions of each group (ids only), which picks the groups that
    can be among the first ``limit`` (those with at least the ``limit``-th largest figure,
    ties included); then reports, days and reason codes of those groups alone.  Rows of no
    such group are left out first (see ``narrowing``).  A large
    rollup is summed in passes over a share of the domains each (a group has one domain),
    so that no pass holds every group in memory."""
    unknown = set(dimensions) - set(FAILURE_DIMENSIONS)
    if unknown:
        raise ValueError(f"cannot group failures by {sorted(unknown)}")
    dims = list(dict.fromkeys(dimensions))
    keys = [_ID_COLUMN.get(d, d) for d in dims]
    where, params = rollup_where(filters)
    if "policy_type" not in dims:
        where = f"{where} AND counted" if where else " WHERE counted"
        where, params = narrowed(store, keys, where, params, limit, by_month_source(filters))
    passes = 1
    if "domain_id" in keys:
        rows = int(store.value(f"SELECT count(*) FROM rollup_failures{where}", params))
        passes = 1 + rows // GROUPS_PER_PASS
    top, top_params = _top_sums(keys, where, limit), params
    if passes > 1:
        found: list[dict[str, Any]] = []
        for share in range(passes):
            found += store.rows(_top_sums(keys, f"{where} AND domain_id % {passes} = {share}",
                                          limit), params)
        least = sorted((r["failed_sessions"] for r in found), reverse=True)[:limit][-1:]
        chosen = [r for r in found if least and r["failed_sessions"] >= least[0]]
        if len(chosen) <= 1_000:  # else (ties) the one statement below
            values = ", ".join("(" + ", ".join("?" for _ in keys) + ")" for _ in chosen)
            top = (f"SELECT * FROM (VALUES {values}) AS v({', '.join(keys)})" if chosen
                   else f"SELECT {', '.join(keys)} FROM rollup_failures WHERE false")
            top_params = [r[k] for r in chosen for k in keys]
    return _with_details(store, dims, keys, top, top_params, where, params, limit)


def _top_sums(keys: list[str], where: str, limit: int) -> str:
    """The groups of rollup rows ``where`` chooses with at least the ``limit``-th largest
    sum of failed sessions (ties included), with those sums."""
    key_sql = ", ".join(keys)
    return f"""
        WITH sums AS (
            SELECT {key_sql}, sum(failed_sessions) AS failed_sessions
            FROM rollup_failures{where} GROUP BY {key_sql}
        )
        SELECT s.* FROM sums s
        WHERE s.failed_sessions >= (SELECT min(failed_sessions) FROM (
            SELECT failed_sessions FROM sums ORDER BY failed_sessions DESC
            LIMIT {int(limit)}) AS f)
    """


def _with_details(store: Store, dims: list[str], keys: list[str], top: str,
                  top_params: list[Any], where: str, params: list[Any],
                  limit: int) -> list[dict[str, Any]]:
    """The groups ``top`` selects (key columns) with their failed sessions, reports, days
    and reason codes from the rollup rows ``where`` chooses, named and ordered."""
    same = " AND ".join(f"x.{k} = t.{k}" for k in keys)
    joins = "".join(f" LEFT JOIN names n{i} ON n{i}.name_id = g.{key}"
                    for i, key in enumerate(keys) if key in _ID_COLUMN.values())
    names = ", ".join(f"n{i}.value AS {dim}" if key in _ID_COLUMN.values() else f"g.{dim}"
                      for i, (dim, key) in enumerate(zip(dims, keys, strict=True)))
    tkeys = ", ".join(f"t.{k}" for k in keys)
    rows = store.rows(f"""
        WITH g AS (
            SELECT {tkeys}, sum(x.failed_sessions)::DECIMAL(38,0) AS failed_sessions,
                   CAST(sum(x.reports) AS BIGINT) AS reports, min(x.day) AS first_day,
                   max(x.day) AS last_day,
                   array_agg(DISTINCT x.failure_reason_code ORDER BY x.failure_reason_code)
                       FILTER (WHERE x.failure_reason_code IS NOT NULL)
                       AS failure_reason_codes
            FROM ({top}) AS t JOIN (SELECT * FROM rollup_failures{where}) AS x ON {same}
            GROUP BY {tkeys}
        )
        SELECT {names}, g.failed_sessions, g.reports, g.first_day, g.last_day,
               g.failure_reason_codes
        FROM g{joins}
        ORDER BY g.failed_sessions DESC, {', '.join(dims)} LIMIT {int(limit)}
    """, top_params + params)
    for row in rows:
        codes = row["failure_reason_codes"]
        row["failure_reason_codes"] = codes[:3] if codes else None
    return rows


def by_month_source(filters: Filters) -> tuple[str, str, list[Any]]:
    """FROM, WHERE and parameters for failed sessions per domain and sending IP: the
    whole months of the period from ``rollup_ips``, the days at its ends from
    ``rollup_failures`` (columns domain_id, sending_mta_ip_id, failed_sessions, counted)."""
    if filters.organizations or filters.result_types or filters.mx_hosts or filters.sending_ips:
        where, params = rollup_where(filters)
        return "rollup_failures", where, params
    first, last = whole_months(filters.since, filters.until)
    if first is not None and last is not None and first > last:
        where, params = rollup_where(filters)
        return "rollup_failures", where, params
    months, month_params = rollup_where(Filters(domains=filters.domains))
    days, day_params = rollup_where(filters)
    covered: list[str] = []  # the days the whole months hold
    for clause, value, day_clause, day_value in (
            ("month >= ?", first, "day >= ?", first),
            ("month <= ?", last, "day < ?", _next_month(last) if last else None)):
        if value is not None:
            months = f"{months} AND {clause}" if months else f" WHERE {clause}"
            month_params.append(value)
            covered.append(day_clause)
            day_params.append(day_value)
    ends = f"NOT ({' AND '.join(covered)})" if covered else "false"
    days = f"{days} AND {ends}" if days else f" WHERE {ends}"
    return (f"""(SELECT domain_id, sending_mta_ip_id, failed_sessions, true AS counted
                FROM rollup_ips{months}
                UNION ALL
                SELECT domain_id, sending_mta_ip_id, failed_sessions, counted
                FROM rollup_failures{days}) AS u""", "", month_params + day_params)


def whole_months(since: date | None, until: date | None) -> tuple[date | None, date | None]:
    """The first and last month (their first days) that lie wholly in since..until (None:
    unbounded on that side)."""
    first = None if since is None else (
        since if since.day == 1 else _next_month(since.replace(day=1)))
    last = None
    if until is not None:
        last = until.replace(day=1)
        if (until + timedelta(days=1)).day != 1:  # until is not its month's last day
            last = _previous_month(last)
    return first, last


def _next_month(month: date) -> date:
    if (month.year, month.month) == (date.max.year, 12):  # no month after: none lies wholly
        return date.max                                  # in the period from here on
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _previous_month(month: date) -> date:
    return date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)


def rollup_table(filters: Filters, dimensions: Sequence[str] = ()) -> str:
    """``rollup_results`` (no sending IP, far fewer rows) unless the sending IP is asked for."""
    return ("rollup_failures" if filters.sending_ips or "sending_mta_ip" in dimensions
            else "rollup_results")


def rollup_where(filters: Filters) -> tuple[str, list[Any]]:
    """``Filters.where`` for ``rollup_failures``, whose names are ids (0 for none)."""
    clauses, params = filters.day_clauses()
    for column, values in (("domain_id", [d.lower().rstrip(".") for d in filters.domains]),
                           ("organization_name_id", list(filters.organizations)),
                           ("result_type_id", list(filters.result_types)),
                           ("receiving_mx_hostname_id", list(filters.mx_hosts)),
                           ("sending_mta_ip_id", list(filters.sending_ips))):
        if values:
            clauses.append(f"{column} IN (SELECT name_id FROM names WHERE value IN "
                           f"({', '.join('?' for _ in values)}))")
            params.extend(values)
    clause, names = filters.scope.clause("value")
    if clause is not None:
        _scoped(clauses, params, f"domain_id IN (SELECT name_id FROM names WHERE {clause})",
                names)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


_ID_COLUMN = {
    "policy_domain": "domain_id",
    "organization_name": "organization_name_id",
    "result_type": "result_type_id",
    "receiving_mx_hostname": "receiving_mx_hostname_id",
    "receiving_ip": "receiving_ip_id",
    "sending_mta_ip": "sending_mta_ip_id",
}


def day_bounds(store: Store, filters: Filters) -> tuple[date | None, date | None]:
    """The first and last report day that the filters (dates aside) select."""
    where, params = filters.with_dates(None, None).where(failure_rows=False)
    row = store.rows(f"SELECT min(day) AS first, max(day) AS last FROM rollup_days{where}",
                     params)[0]
    return row["first"], row["last"]
