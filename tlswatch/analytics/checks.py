"""The stored MTA-STS/TLS-RPT checks as page and listing data: a domain's last check, and
the history of runs with what changed since each domain's previous run."""

from __future__ import annotations

from datetime import date
from typing import Any

from tlswatch.store import Store
from tlswatch.store import checks as stored

COLUMNS = ["checked_at", "domain", "result", "errors", "warnings", "changes", "alerts"]
SEVERITY = {"error": 0, "warning": 1, "info": 2}


def check_history(store: Store, *, domain: str | None = None, since: date | None = None
                  ) -> list[dict[str, Any]]:
    """Each run (the latest of each domain first): when, the result, its errors and
    warnings (``problems``), ``new`` and ``gone`` since the domain's previous run (None for
    a domain's first run), ``changes`` in words, and the alert kinds it raised."""
    rows = stored.history(store, domain=domain.lower().rstrip(".") if domain else None,
                          since=since)
    for r in rows:
        r.pop("run_pk")
        r["checked_at"] = r["checked_at"].isoformat(sep=" ", timespec="seconds")
        r["changes"] = _changes(r["new"], r["gone"])
    return rows


def _changes(new: list[str] | None, gone: list[str] | None) -> str:
    if new is None:
        return "first check"
    words = ([f"new: {', '.join(new)}"] if new else []) + \
        ([f"gone: {', '.join(gone)}"] if gone else [])
    return "; ".join(words) or "no change"


def last_check(store: Store, domain: str) -> dict[str, Any] | None:
    """The domain's latest check: when, the result, and its findings (errors first), or
    None when it was never checked."""
    run = stored.latest_run(store, domain.lower().rstrip("."))
    if run is None:
        return None
    return {"checked_at": run["checked_at"].isoformat(sep=" ", timespec="seconds"),
            "result": run["result"], "errors": run["errors"], "warnings": run["warnings"],
            "findings": sorted(run["findings"], key=lambda f: SEVERITY.get(f["severity"], 3)),
            "alerts": run["alerts"] or []}
