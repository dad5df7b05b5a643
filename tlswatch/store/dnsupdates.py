"""The record of the DNS updates that publish hosted policies' ids (table ``dns_updates``,
one row per domain; see ``tlswatch.mtasts.dnsupdate``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from tlswatch.store import Store

COLUMNS = ("domain", "policy_id", "status", "error", "attempts", "attempted_at",
           "next_attempt")
SCHEMA = pa.schema([("domain", pa.string()), ("policy_id", pa.string()),
                    ("status", pa.string()), ("error", pa.string()),
                    ("attempts", pa.int32()), ("attempted_at", pa.timestamp("us")),
                    ("next_attempt", pa.timestamp("us"))])
MAX_BACKOFF = 3600.0  # seconds


@dataclass(frozen=True)
class Try:
    """One try to publish ``policy_id`` for ``domain``: published (``error`` None) or not."""

    domain: str
    policy_id: str
    error: str | None


def record(store: Store, tries: list[Try], *, now: datetime, retry_after: float
           ) -> dict[str, dict[str, Any]]:
    """Record the tries (one per domain) in one statement: the tries of the same id are
    counted, and a failed one is tried again after ``retry_after`` seconds, doubled with
    each failed try (at most an hour).  Returns the rows written, by domain."""
    domains = sorted({t.domain for t in tries})
    if not domains:
        return {}
    with store.transaction():
        before = {r["domain"]: r for r in store.rows(
            f"SELECT domain, policy_id, attempts FROM dns_updates WHERE domain IN "
            f"({', '.join('?' for _ in domains)}) ORDER BY domain", domains)}
        rows: list[dict[str, Any]] = []
        for t in tries:
            old = before.get(t.domain)
            attempts = old["attempts"] + 1 if old and old["policy_id"] == t.policy_id else 1
            rows.append({"domain": t.domain, "policy_id": t.policy_id,
                         "status": "failed" if t.error else "published", "error": t.error,
                         "attempts": attempts, "attempted_at": now,
                         "next_attempt": None if t.error is None else
                         now + _backoff(retry_after, attempts)})
        names = ", ".join(COLUMNS)
        with store.scratch("_dns_tries", pa.Table.from_pylist(rows, schema=SCHEMA)):
            store.execute(f"""
                INSERT INTO dns_updates ({names}) SELECT {names} FROM _dns_tries
                ON CONFLICT (domain) DO UPDATE SET policy_id = excluded.policy_id,
                    status = excluded.status, error = excluded.error,
                    attempts = excluded.attempts, attempted_at = excluded.attempted_at,
                    next_attempt = excluded.next_attempt
            """)
    return {r["domain"]: r for r in rows}


def rows(store: Store) -> dict[str, dict[str, Any]]:
    """Every domain's row, by domain (empty before the table exists)."""
    if not store.has_table("dns_updates"):
        return {}
    return {r["domain"]: r for r in store.rows(
        f"SELECT {', '.join(COLUMNS)} FROM dns_updates ORDER BY domain")}


def row(store: Store, domain: str) -> dict[str, Any] | None:
    if not store.has_table("dns_updates"):
        return None
    found = store.rows(f"SELECT {', '.join(COLUMNS)} FROM dns_updates WHERE domain = ?",
                       [domain])
    return found[0] if found else None


def _backoff(seconds: float, attempts: int) -> timedelta:
    return timedelta(seconds=min(seconds * 2 ** min(attempts - 1, 20), MAX_BACKOFF))
