"""What retention pruning took away, said where it is missing (never silently empty)."""

from __future__ import annotations

from datetime import date

from tlswatch.store import Store
from tlswatch.store.maintenance import pruned_before

_WHAT = {"failure_details": ("failure details", "detail_keep_days"),
         "report_raw": ("raw reports", "raw_keep_days")}


def pruned_notes(store: Store, *, since: date | None = None,
                 day: date | None = None) -> dict[str, str]:
    """kind -> a sentence, for each kind pruned on the days asked about: a period starting
    ``since`` (None: from the start), or one report ``day``."""
    notes = {}
    for kind, info in pruned_before(store).items():
        if kind not in _WHAT:
            continue
        before = info["before_day"]
        first = day if day is not None else since
        if first is None or first < before:
            what, setting = _WHAT[kind]
            notes[kind] = (f"{what} of report days before {before} were pruned after "
                           f"{info['keep_days']} days (setting {setting}); the session "
                           "totals stay in 'tlswatch summary'")
    return notes
