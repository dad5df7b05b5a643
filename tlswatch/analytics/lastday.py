"""The figures of the last complete report day, per domain, for monitoring (/metrics).

The *last complete report day* is the newest report day strictly before today (UTC): a
report's day is the UTC date of its ``start-datetime``, and senders send a day's report
during the next day, so today's day is never whole yet.  The figures of that day can still
grow while late reports for it arrive.

Domain names and result types come from reports (untrusted) and become label values: the
figures are bounded in count (the domains with the most failed sessions first; the result
types with the most failed sessions first, the rest summed as ``other``) and in length (a
value longer than ``MAX_LABEL`` characters, or a result type that is not a token of
letters, digits, ``.``, ``_`` and ``-``, is left off, or counted as ``other``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from tlswatch.analytics.queries import Filters
from tlswatch.analytics.series import daily_failures, daily_sessions
from tlswatch.store import Store

MAX_LABEL = 253  # the longest DNS name; no RFC 8460 result type comes near it
OTHER = "other"
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class DomainDay:
    policy_domain: str
    successful_sessions: int
    failed_sessions: int
    failures: dict[str, int] = field(default_factory=dict)  # result type -> failed sessions


@dataclass(frozen=True)
class DayFigures:
    day: date
    domains: list[DomainDay]
    domains_left_off: int = 0
    result_types_left_off: int = 0


def last_complete_day(store: Store, today: date) -> date | None:
    """The newest report day strictly before ``today``, or None."""
    day: date | None = store.rows("SELECT max(day) AS d FROM reports WHERE day < ?",
                                  [today])[0]["d"]
    return day


def _fits(value: str) -> bool:
    # Tokens as RFC 8460 result types are: the shipped alert rules put the label into
    # Alertmanager's notifications, unescaped (no '<!channel>', links or markup from a sender).
    return 0 < len(value) <= MAX_LABEL and _TOKEN.fullmatch(value) is not None


def day_figures(store: Store, today: date, *, max_domains: int,
                max_result_types: int) -> DayFigures | None:
    """Per domain of the last complete report day: sessions and failures by result type
    (the counting rule applied), bounded as the module says; None without such a day."""
    day = last_complete_day(store, today)
    if day is None:
        return None
    filters = Filters(since=day, until=day)
    rows = daily_sessions(store, filters)  # one row per domain: the filter is one day
    sessions = [r for r in rows if _fits(r["policy_domain"])]
    failures = daily_failures(store, filters)
    sessions.sort(key=lambda r: (-r["failed_sessions"],
                                 -(r["successful_sessions"] + r["failed_sessions"]),
                                 r["policy_domain"]))
    kept = sessions[:max(0, max_domains)]
    totals: dict[str, int] = {}
    for r in failures:
        if _fits(r["result_type"]):
            totals[r["result_type"]] = totals.get(r["result_type"], 0) + int(r["failed_sessions"])
    ranked = sorted(totals, key=lambda t: (-totals[t], t))
    named = set(ranked[:max(0, max_result_types)])
    by_domain: dict[str, dict[str, int]] = {}
    for r in failures:
        label = r["result_type"] if r["result_type"] in named else OTHER
        types = by_domain.setdefault(r["policy_domain"], {})
        types[label] = types.get(label, 0) + int(r["failed_sessions"])
    domains = [DomainDay(r["policy_domain"], int(r["successful_sessions"]),
                         int(r["failed_sessions"]), by_domain.get(r["policy_domain"], {}))
               for r in kept]
    all_types = {r["result_type"] for r in failures}
    return DayFigures(day, domains, domains_left_off=len(rows) - len(kept),
                      result_types_left_off=len(all_types - named))
