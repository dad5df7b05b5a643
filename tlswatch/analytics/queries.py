"""SQL over the store, with the counting rule built in.

A report lists one entry per policy it applied; whether two entries are the same sessions
depends on the sender's layout (Microsoft lists the same sessions under ``sts`` and
``tlsa``, Postfix lists each session once).  The loader decides that per report and marks
the policy rows and failure details that count (``counted``; see ingest/counting.py), so
every query here is one filtered scan, and all figures come from one consistent choice.
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
        SELECT policy_domain, count(DISTINCT report_pk) AS reports,
               list(DISTINCT organization_name ORDER BY organization_name) AS organizations,
               coalesce(sum(successful_sessions) FILTER (counted), 0)::HUGEINT
                   AS successful_sessions,
               coalesce(sum(failed_sessions) FILTER (counted), 0)::HUGEINT
                   AS failed_sessions
        FROM policies{where}
        GROUP BY policy_domain ORDER BY policy_domain
    """, params)


def seen(alias: str = "failure_details") -> str:
    """A SQL condition on failure details: the failures a report *shows*, for finding problems
    (alerts, advice) rather than counting them.  These are the rows that count, and also the
    rows of a policy type left out as the same sessions (see ingest/counting.py) whose result
    type the counted type does not show: an MTA-STS policy fetch error reported under ``sts``
    stays visible when ``tlsa`` (with more failures) is the type that counts."""
    return (f"({alias}.counted OR NOT EXISTS (SELECT 1 FROM failure_details c "
            f"WHERE c.report_pk = {alias}.report_pk AND c.policy_domain = {alias}.policy_domain "
            f"AND c.result_type = {alias}.result_type AND c.counted))")


def failed_by_policy(store: Store, filters: Filters) -> list[dict[str, Any]]:
    """Per policy domain, policy type and policy text: the failed sessions that count, and
    of those counted under ``sts``, how many DANE also failed (when the report lists the
    same sessions under ``tlsa``): mail that DANE failed was not delivered, whatever the
    MTA-STS mode."""
    where, params = filters.where(failure_rows=False)
    return store.rows(f"""
        WITH p AS (SELECT * FROM policies{where}),
        counted AS (
            SELECT report_pk, policy_domain, policy_type, policy_string,
                   sum(failed_sessions) AS failed_sessions
            FROM p WHERE counted AND failed_sessions > 0 GROUP BY ALL
        ),
        dane AS (
            SELECT report_pk, policy_domain, sum(failed_sessions) AS failed_sessions
            FROM p WHERE policy_type = 'tlsa' AND NOT counted GROUP BY ALL
        )
        SELECT c.policy_domain, c.policy_type, c.policy_string,
               sum(c.failed_sessions) AS failed_sessions,
               sum(CASE WHEN c.policy_type = 'sts'
                        THEN least(c.failed_sessions, coalesce(d.failed_sessions, 0))
                        ELSE 0 END) AS dane_failed
        FROM counted c LEFT JOIN dane d USING (report_pk, policy_domain)
        GROUP BY c.policy_domain, c.policy_type, c.policy_string
        ORDER BY c.policy_domain, c.policy_type
    """, params)


def failure_groups(
    store: Store, filters: Filters, dimensions: tuple[str, ...], *, limit: int | None = None,
    top_per_domain: int | None = None, details: bool = False, example_code: bool = False,
) -> list[dict[str, Any]]:
    """Failed sessions grouped by ``dimensions`` (any of FAILURE_DIMENSIONS), most first.

    Grouping by ``policy_type`` gives the per-type figures (no counting rule); otherwise
    only the rows that count are summed.  ``top_per_domain`` keeps the largest N groups of
    each policy domain; ``details`` adds the number of reports, first and last day and up
    to three failure reason codes; ``example_code`` (cheaper) adds one reason code.
    """
    unknown = set(dimensions) - set(FAILURE_DIMENSIONS)
    if unknown:
        raise ValueError(f"cannot group failures by {sorted(unknown)}")
    dims = list(dict.fromkeys(dimensions))
    if top_per_domain and "policy_domain" not in dims:
        raise ValueError("top_per_domain needs policy_domain among the dimensions")
    # Group by the integer ids, keep the top groups, then read their strings from names.
    keys = [_ID_COLUMN.get(d, d) for d in dims]
    key_sql = ", ".join(keys)
    where, params = filters.where(failure_rows=True)
    if "policy_type" not in dims:
        where = f"{where} AND counted" if where else " WHERE counted"
    extra = ""
    if details:
        extra += (", count(DISTINCT report_pk) AS reports, min(day) AS first_day, "
                  "max(day) AS last_day, list_distinct(list(failure_reason_code) FILTER "
                  "(failure_reason_code IS NOT NULL))[1:3] AS failure_reason_codes")
    qualify = ""
    if top_per_domain:
        qualify = (" QUALIFY row_number() OVER (PARTITION BY domain_id ORDER BY "
                   f"sum(failed_session_count) DESC, {key_sql}) <= {int(top_per_domain)}")
    joins = "".join(f" LEFT JOIN names n{i} ON n{i}.name_id = g.{key}"
                    for i, key in enumerate(keys) if key in _ID_COLUMN.values())
    names = ", ".join(f"n{i}.value AS {dim}" if key in _ID_COLUMN.values() else f"g.{dim}"
                      for i, (dim, key) in enumerate(zip(dims, keys, strict=True)))
    code_cte = code_join = code = ""
    if example_code:  # one reason code for each kept group, from rows that carry one
        match = " AND ".join(f"f.{k} IS NOT DISTINCT FROM g.{k}" for k in keys)
        code_cte = (f", codes AS (SELECT {', '.join(f'g.{k}' for k in keys)}, "
                    "max(f.failure_reason_code) AS failure_reason_code "
                    f"FROM failure_details f JOIN g ON {match} "
                    "WHERE f.failure_reason_code IS NOT NULL AND f.counted "
                    f"GROUP BY {', '.join(f'g.{k}' for k in keys)})")
        code_join = " LEFT JOIN codes c ON " + " AND ".join(
            f"c.{k} IS NOT DISTINCT FROM g.{k}" for k in keys)
        code = ", c.failure_reason_code"
    limit_sql = f" LIMIT {int(limit)}" if limit else ""
    extra_out = "".join(f", g.{c}" for c in ("reports", "first_day", "last_day",
                                              "failure_reason_codes") if details)
    return store.rows(f"""
        WITH g AS (
            SELECT {key_sql}, sum(failed_session_count)::HUGEINT AS failed_sessions{extra}
            FROM failure_details{where}
            GROUP BY {key_sql}{qualify}
        ){code_cte}
        SELECT {names}, g.failed_sessions{extra_out}{code}
        FROM g{joins}{code_join}
        ORDER BY g.failed_sessions DESC, {", ".join(dims)}{limit_sql}
    """, params)


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
    row = store.rows(f"SELECT min(day) AS first, max(day) AS last FROM policies{where}", params)[0]
    return row["first"], row["last"]
