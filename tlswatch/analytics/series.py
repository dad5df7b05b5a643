"""Per-day figures for charts and daily files, with the counting rule (``counted`` rows)."""

from __future__ import annotations

from typing import Any

from tlswatch.analytics.queries import Filters, rollup_table, rollup_where
from tlswatch.store import Store


def daily_sessions(store: Store, filters: Filters) -> list[dict[str, Any]]:
    """day, policy_domain, reports, successful_sessions, failed_sessions, oldest day first."""
    where, params = filters.where(failure_rows=False)
    return store.rows(f"""
        SELECT day, policy_domain, CAST(sum(reports) AS BIGINT) AS reports,
               sum(successful_sessions)::DECIMAL(38,0) AS successful_sessions,
               sum(failed_sessions)::DECIMAL(38,0) AS failed_sessions
        FROM rollup_days{where}
        GROUP BY day, policy_domain ORDER BY day, policy_domain
    """, params)


def daily_failures(store: Store, filters: Filters) -> list[dict[str, Any]]:
    """day, policy_domain, result_type, failed_sessions."""
    where, params = rollup_where(filters)
    where = f"{where} AND counted" if where else " WHERE counted"
    return store.rows(f"""
        SELECT g.day, d.value AS policy_domain, t.value AS result_type, g.failed_sessions
        FROM (SELECT day, domain_id, result_type_id,
                     sum(failed_sessions)::DECIMAL(38,0) AS failed_sessions
              FROM {rollup_table(filters)}{where}
              GROUP BY day, domain_id, result_type_id) AS g
        JOIN names d ON d.name_id = g.domain_id JOIN names t ON t.name_id = g.result_type_id
        ORDER BY g.day, d.value, t.value
    """, params)


def by_organization(store: Store, filters: Filters) -> list[dict[str, Any]]:
    """Per reporting organisation: reports, sessions, success rate, last day."""
    where, params = filters.where(failure_rows=False)
    return store.rows(f"""
        SELECT organization_name, CAST(sum(reports) AS BIGINT) AS reports,
               sum(successful_sessions)::DECIMAL(38,0) AS successful_sessions,
               sum(failed_sessions)::DECIMAL(38,0) AS failed_sessions,
               max(day) AS last_day
        FROM rollup_days{where}
        GROUP BY organization_name
        ORDER BY sum(listed_sessions) DESC, organization_name
    """, params)


def policy_strings(store: Store, filters: Filters) -> list[dict[str, Any]]:
    """The policies senders reported applying: who still uses which version, and when.
    (``reports`` counts a report once per policy domain: exact for one domain's page.)"""
    where, params = filters.where(failure_rows=False)
    return store.rows(f"""
        SELECT policy_type, policy_string,
               array_agg(DISTINCT organization_name ORDER BY organization_name)
                   AS organizations,
               CAST(sum(reports) AS BIGINT) AS reports, min(day) AS first_day,
               max(day) AS last_day
        FROM rollup_policies{where}
        GROUP BY policy_type, policy_string
        ORDER BY last_day DESC, reports DESC, policy_type, policy_string
    """, params)
