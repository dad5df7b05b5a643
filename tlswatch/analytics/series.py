"""Per-day figures for charts and daily files, with the counting rule (``counted`` rows)."""

from __future__ import annotations

from typing import Any

from tlswatch.analytics.queries import Filters
from tlswatch.store import Store


def daily_sessions(store: Store, filters: Filters) -> list[dict[str, Any]]:
    """day, policy_domain, reports, successful_sessions, failed_sessions, oldest day first."""
    where, params = filters.where(failure_rows=False)
    return store.rows(f"""
        SELECT day, policy_domain, count(DISTINCT report_pk) AS reports,
               coalesce(sum(successful_sessions) FILTER (counted), 0)::HUGEINT
                   AS successful_sessions,
               coalesce(sum(failed_sessions) FILTER (counted), 0)::HUGEINT
                   AS failed_sessions
        FROM policies{where}
        GROUP BY day, policy_domain ORDER BY day, policy_domain
    """, params)


def daily_failures(store: Store, filters: Filters) -> list[dict[str, Any]]:
    """day, policy_domain, result_type, failed_sessions."""
    where, params = filters.where(failure_rows=True)
    where = f"{where} AND counted" if where else " WHERE counted"
    return store.rows(f"""
        SELECT day, policy_domain, result_type, sum(failed_session_count)::HUGEINT
                   AS failed_sessions
        FROM failure_details{where}
        GROUP BY day, policy_domain, result_type ORDER BY day, policy_domain, result_type
    """, params)


def by_organization(store: Store, filters: Filters) -> list[dict[str, Any]]:
    """Per reporting organisation: reports, sessions, success rate, last day."""
    where, params = filters.where(failure_rows=False)
    return store.rows(f"""
        SELECT organization_name, count(DISTINCT report_pk) AS reports,
               coalesce(sum(successful_sessions) FILTER (counted), 0)::HUGEINT
                   AS successful_sessions,
               coalesce(sum(failed_sessions) FILTER (counted), 0)::HUGEINT
                   AS failed_sessions,
               max(day) AS last_day
        FROM policies{where}
        GROUP BY organization_name
        ORDER BY sum(successful_sessions + failed_sessions) DESC, organization_name
    """, params)


def policy_strings(store: Store, filters: Filters) -> list[dict[str, Any]]:
    """The policies senders reported applying: who still uses which version, and when."""
    where, params = filters.where(failure_rows=False)
    return store.rows(f"""
        SELECT policy_type, policy_string,
               list(DISTINCT organization_name ORDER BY organization_name) AS organizations,
               count(DISTINCT report_pk) AS reports, min(day) AS first_day, max(day) AS last_day
        FROM policies{where}
        GROUP BY policy_type, policy_string
        ORDER BY last_day DESC, reports DESC
    """, params)
