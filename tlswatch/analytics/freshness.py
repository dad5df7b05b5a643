"""What a report day's figures are made of, so files written from them can be seen to be
out of date: one cheap scan per check, not a summary.

Postfix sites spread their reports over the hours after midnight and retry for days, so a
day keeps changing after its daily files were written.  Comparing these figures with the
ones a file was written from tells whether the file still matches ``tlswatch summary``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from tlswatch.store import Store


@dataclass(frozen=True)
class DayFigures:
    """One day's reports and counted sessions, and a digest of which reports they are
    (an added, removed or replaced report changes it even when the totals stay)."""

    reports: int = 0
    last_report_pk: int = 0
    successful_sessions: int = 0
    failed_sessions: int = 0
    digest: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DayFigures:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def day_figures(store: Store, since: date, until: date) -> dict[date, DayFigures]:
    """Figures for each day from ``since`` to ``until`` (inclusive) that has reports."""
    rows = store.rows("""
        WITH r AS (
            SELECT day, count(*) AS reports, max(report_pk) AS last_report_pk,
                   md5(string_agg(organization_name || '|' || report_id || '|'
                                  || coalesce(content_sha256, ''), ','
                                  ORDER BY organization_name, report_id)) AS digest
            FROM reports WHERE day BETWEEN ? AND ? GROUP BY day
        ), p AS (
            SELECT day,
                   coalesce(sum(successful_sessions) FILTER (WHERE counted), 0)::DECIMAL(38,0)
                       AS ok,
                   coalesce(sum(failed_sessions) FILTER (WHERE counted), 0)::DECIMAL(38,0)
                       AS failed
            FROM policies WHERE day BETWEEN ? AND ? GROUP BY day
        )
        SELECT r.day, r.reports, r.last_report_pk, r.digest, coalesce(p.ok, 0) AS ok,
               coalesce(p.failed, 0) AS failed
        FROM r LEFT JOIN p USING (day) ORDER BY day
    """, [since, until, since, until])
    return {r["day"]: DayFigures(int(r["reports"]), int(r["last_report_pk"]), int(r["ok"]),
                                 int(r["failed"]), r["digest"][:16])
            for r in rows}
