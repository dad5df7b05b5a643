"""The dashboard's overview: every domain's figures, the worst first, a page at a time.

The ranking and the totals take every domain (one row each, from ``rollup_days``); the
per-day rates and the top failure, the costly part, are read for the domains of the page
shown only, so a provider with thousands of domains gets its first page as fast as a
user with a hundred.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from tlswatch.analytics.queries import Filters, failure_groups, session_totals
from tlswatch.analytics.series import daily_sessions
from tlswatch.analytics.summary import percent, rate
from tlswatch.store import Store

PAGE_SIZE = 100  # domains on one page of the overview


def worst_first(row: dict[str, Any]) -> tuple[Any, ...]:
    """The overview's order: the lowest success rate first, then the most failed sessions,
    then the name; domains without sessions in the period last."""
    return (row["success_rate"] is None, row["success_rate"] or 0.0,
            -row["failed_sessions"], row["policy_domain"])


def overview(store: Store, filters: Filters, *, page: int = 1,
             per_page: int = PAGE_SIZE) -> dict[str, Any]:
    """One page of domains (``page`` counts from 1; past the last page, the last page),
    worst first, each with its figures, its daily success rates over the filters' period
    and its most frequent failure; and the totals over all domains."""
    domains = []
    for r in session_totals(store, filters):
        ok, failed = int(r["successful_sessions"]), int(r["failed_sessions"])
        domains.append({"policy_domain": r["policy_domain"], "sessions": ok + failed,
                        "successful_sessions": ok, "failed_sessions": failed,
                        "success_rate": rate(ok, failed),
                        "reporters": len(r["organizations"])})
    domains.sort(key=worst_first)
    pages = max(1, -(-len(domains) // per_page))
    page = min(max(1, page), pages)
    shown = domains[(page - 1) * per_page:page * per_page]
    if shown:
        _add_details(store, replace(filters, domains=tuple(d["policy_domain"] for d in shown)),
                     shown)
    ok = sum(d["successful_sessions"] for d in domains)
    failed = sum(d["failed_sessions"] for d in domains)
    return {"domains": shown, "page": page, "pages": pages, "per_page": per_page,
            "first": (page - 1) * per_page + 1 if shown else 0,
            "last": (page - 1) * per_page + len(shown),
            "totals": {"domains": len(domains), "sessions": ok + failed,
                       "successful_sessions": ok, "failed_sessions": failed,
                       "success_rate": rate(ok, failed),
                       "rate_text": percent(rate(ok, failed), failures=failed)}}


def overview_of_nothing(per_page: int = PAGE_SIZE) -> dict[str, Any]:
    """The overview of a store that does not exist yet: no domains, one empty page."""
    return {"domains": [], "page": 1, "pages": 1, "per_page": per_page, "first": 0,
            "last": 0, "totals": {"domains": 0, "sessions": 0, "successful_sessions": 0,
                                  "failed_sessions": 0, "success_rate": None,
                                  "rate_text": percent(None)}}


def _add_details(store: Store, filters: Filters, shown: list[dict[str, Any]]) -> None:
    """Each shown domain's daily success rates (None for a day without sessions), its rate
    as text and its most frequent failure (the first in name order among equals)."""
    since, until = filters.since, filters.until
    assert since is not None and until is not None
    per_day: dict[str, dict[date, dict[str, Any]]] = {}
    for r in daily_sessions(store, filters):
        per_day.setdefault(r["policy_domain"], {})[r["day"]] = r
    top: dict[str, str] = {}
    for r in failure_groups(store, filters, ("policy_domain", "result_type")):
        top.setdefault(r["policy_domain"], r["result_type"])  # most first, then by name
    days = (until - since).days + 1
    for d in shown:
        rows = per_day.get(d["policy_domain"], {})
        rates: list[float | None] = []
        for i in range(days):
            row = rows.get(since + timedelta(days=i))
            total = (row["successful_sessions"] + row["failed_sessions"]) if row else 0
            rates.append(row["successful_sessions"] / total if row and total else None)
        d["rate_text"] = percent(d["success_rate"], failures=d["failed_sessions"])
        d["top_failure"] = top.get(d["policy_domain"])
        d["daily_success_rate"] = rates
