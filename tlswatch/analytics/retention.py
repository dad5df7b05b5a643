"""What retention pruning took away, said where it is missing (never silently empty)."""

from __future__ import annotations

from datetime import date, timedelta

from tlswatch.store import Store
from tlswatch.store.maintenance import pruned_before

# kind -> (what, its setting, the rows whose days had some of it: a day with failed
# sessions had failure details, every report its raw bytes)
_WHAT = {"failure_details": ("failure details", "detail_keep_days",
                             "SELECT 1 AS found FROM policies WHERE failed_sessions > 0"),
         "report_raw": ("raw reports", "raw_keep_days",
                        "SELECT 1 AS found FROM reports WHERE 1 = 1")}


def pruned_notes(store: Store, *, since: date | None = None, until: date | None = None,
                 day: date | None = None) -> dict[str, str]:
    """kind -> a sentence, for each kind pruning actually removed from the days asked about:
    a period from ``since`` to ``until`` (None: open), or one report ``day``.  A prune that
    removed nothing, or only from days outside the period, is not mentioned."""
    first, last = (day, day) if day is not None else (since, until)
    notes = {}
    for kind, info in pruned_before(store).items():
        if kind not in _WHAT or not info.get("removed"):
            continue
        before = info["before_day"]
        if first is not None and first >= before:
            continue
        what, setting, rows = _WHAT[kind]
        end = before if last is None else min(before, last + timedelta(days=1))
        sql, params = f"{rows} AND day < ?", [end]
        if first is not None:
            sql, params = sql + " AND day >= ?", [end, first]
        if not store.rows(sql + " LIMIT 1", params):
            continue
        notes[kind] = (f"{what} of report days before {before} were pruned after "
                       f"{info['keep_days']} days (setting {setting}); the session "
                       "totals stay in 'tlswatch summary'")
    return notes
