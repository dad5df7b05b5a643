"""The record of the DNS updates that publish hosted policies' ids (table ``dns_updates``,
one row per domain; see ``tlswatch.mtasts.dnsupdate``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tlswatch.store import Store

COLUMNS = "domain, policy_id, status, error, attempts, attempted_at, next_attempt"


def record(store: Store, *, domain: str, policy_id: str, error: str | None,
           now: datetime, retry_after: float) -> dict[str, Any]:
    """Record one try to publish ``policy_id`` for ``domain``: published (``error`` None)
    or failed, with the tries for this id counted and the next try after ``retry_after``
    seconds, doubled with each failed try (at most an hour).  Returns the row."""
    with store.transaction():
        before = store.rows("SELECT policy_id, attempts FROM dns_updates WHERE domain = ?",
                            [domain])
        attempts = 1
        if before and before[0]["policy_id"] == policy_id:
            attempts = before[0]["attempts"] + 1
        row: dict[str, Any] = {
            "domain": domain, "policy_id": policy_id,
            "status": "failed" if error else "published", "error": error,
            "attempts": attempts, "attempted_at": now,
            "next_attempt": None if error is None else now + _backoff(retry_after, attempts)}
        store.execute(f"""
            INSERT INTO dns_updates ({COLUMNS})
            VALUES ($domain, $policy_id, $status, $error, $attempts, $attempted_at,
                    $next_attempt)
            ON CONFLICT (domain) DO UPDATE SET policy_id = excluded.policy_id,
                status = excluded.status, error = excluded.error,
                attempts = excluded.attempts, attempted_at = excluded.attempted_at,
                next_attempt = excluded.next_attempt
        """, row)
    return row


def rows(store: Store) -> dict[str, dict[str, Any]]:
    """Every domain's row, by domain (empty before the table exists)."""
    if not store.has_table("dns_updates"):
        return {}
    return {r["domain"]: r for r in store.rows(
        f"SELECT {COLUMNS} FROM dns_updates ORDER BY domain")}


def row(store: Store, domain: str) -> dict[str, Any] | None:
    if not store.has_table("dns_updates"):
        return None
    found = store.rows(f"SELECT {COLUMNS} FROM dns_updates WHERE domain = ?", [domain])
    return found[0] if found else None


def _backoff(seconds: float, attempts: int) -> timedelta:
    return timedelta(seconds=min(seconds * 2 ** min(attempts - 1, 20), 3600.0))
