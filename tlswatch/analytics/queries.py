"""SQL over the store, with the counting rule of DESIGN.md built in.

A report lists one entry per policy it applied, and some senders (Microsoft) report the
same sessions under both ``sts`` and ``tlsa``.  So, per report and policy domain, sessions
are summed within a policy type and the largest sum across policy types is taken; failure
counts likewise per result type (and per any finer grouping asked for).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from tlswatch.store import Store

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

    def where(self, *, failure_rows: bool) -> tuple[str, list[Any]]:
        """A WHERE clause and its parameters for the policies or failure_details table."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.since is not None:
            clauses.append("day >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("day <= ?")
            params.append(self.until)
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
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def with_dates(self, since: date | None, until: date | None) -> Filters:
        return Filters(since, until, self.domains, self.organizations, self.result_types,
                       self.mx_hosts, self.sending_ips)


def session_totals(store: Store, filters: Filters) -> list[dict[str, Any]]:
    """Per policy domain: reports, organisations, successful and failed sessions."""
    where, params = filters.where(failure_rows=False)
    return store.rows(f"""
        WITH per_type AS (
            SELECT report_pk, policy_domain, policy_type,
                   any_value(organization_name) AS organization_name,
                   sum(successful_sessions) AS ok, sum(failed_sessions) AS failed
            FROM policies{where}
            GROUP BY report_pk, policy_domain, policy_type
        ), per_report AS (
            SELECT report_pk, policy_domain, any_value(organization_name) AS organization_name,
                   max(ok) AS ok, max(failed) AS failed
            FROM per_type GROUP BY report_pk, policy_domain
        )
        SELECT policy_domain, count(*) AS reports,
               list(DISTINCT organization_name ORDER BY organization_name) AS organizations,
               sum(ok)::BIGINT AS successful_sessions, sum(failed)::BIGINT AS failed_sessions
        FROM per_report GROUP BY policy_domain ORDER BY policy_domain
    """, params)


def failure_groups(
    store: Store, filters: Filters, dimensions: tuple[str, ...], *, limit: int | None = None
) -> list[dict[str, Any]]:
    """Failed sessions grouped by ``dimensions`` (any of FAILURE_DIMENSIONS), most first."""
    unknown = set(dimensions) - set(FAILURE_DIMENSIONS)
    if unknown:
        raise ValueError(f"cannot group failures by {sorted(unknown)}")
    dims = list(dict.fromkeys(dimensions))
    # The rule works per report and policy domain whatever the caller groups by.
    base = ["report_pk", "policy_domain", *[d for d in dims if d not in ("policy_domain",
                                                                         "policy_type")]]
    inner = ", ".join([*base, "policy_type"])
    outer = ", ".join([*base, "policy_type"] if "policy_type" in dims else base)
    final = ", ".join(dims)
    where, params = filters.where(failure_rows=True)
    limit_sql = f" LIMIT {int(limit)}" if limit else ""
    return store.rows(f"""
        WITH per_type AS (
            SELECT {inner}, sum(failed_session_count) AS n, min(day) AS first_day,
                   max(day) AS last_day,
                   list(DISTINCT failure_reason_code) FILTER (failure_reason_code IS NOT NULL)
                       AS codes
            FROM failure_details{where}
            GROUP BY {inner}
        ), per_report AS (
            SELECT {outer}, max(n) AS n, min(first_day) AS first_day,
                   max(last_day) AS last_day, flatten(list(codes)) AS codes
            FROM per_type GROUP BY {outer}
        )
        SELECT {final}, sum(n)::BIGINT AS failed_sessions, count(DISTINCT report_pk) AS reports,
               min(first_day) AS first_day, max(last_day) AS last_day,
               list_distinct(flatten(list(codes)))[1:3] AS failure_reason_codes
        FROM per_report GROUP BY {final}
        ORDER BY failed_sessions DESC, {final}{limit_sql}
    """, params)


def day_bounds(store: Store, filters: Filters) -> tuple[date | None, date | None]:
    """The first and last report day that the filters (dates aside) select."""
    where, params = filters.with_dates(None, None).where(failure_rows=False)
    rows = store.con.execute(f"SELECT min(day), max(day) FROM policies{where}", params).fetchall()
    return rows[0][0], rows[0][1]
