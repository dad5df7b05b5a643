"""The queries on the ``quarantine`` table (reports the loader refused, bytes gzipped).

The loader adds rows (``ingest.loader``); these read them and, for ``tlswatch quarantine
retry`` and ``delete``, change or remove them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tlswatch.store import Store

_COLUMNS = "quarantine_pk, sha256, source, reason, received_at, size"


def quarantine_rows(store: Store) -> list[dict[str, Any]]:
    """Every quarantined report without its bytes, oldest first."""
    return store.rows(f"SELECT {_COLUMNS} FROM quarantine ORDER BY received_at, quarantine_pk")


def quarantine_row(store: Store, pk: int) -> dict[str, Any] | None:
    """One quarantined report with its gzipped bytes (``raw_gzip``), or None."""
    rows = store.rows(f"SELECT {_COLUMNS}, raw_gzip FROM quarantine WHERE quarantine_pk = ?",
                      [pk])
    return rows[0] if rows else None


def quarantine_with_sources(store: Store, sources: Sequence[str]) -> list[dict[str, Any]]:
    """The quarantined reports whose source is one of ``sources`` (without bytes)."""
    if not sources:
        return []
    marks = ", ".join("?" for _ in sources)
    return store.rows(f"SELECT {_COLUMNS} FROM quarantine WHERE source IN ({marks}) "
                      "ORDER BY quarantine_pk", list(sources))


def delete_quarantine(store: Store, pks: Sequence[int]) -> int:
    """Remove these rows; return how many there were."""
    if not pks:
        return 0
    marks = ", ".join("?" for _ in pks)
    return len(store.rows(f"DELETE FROM quarantine WHERE quarantine_pk IN ({marks}) "
                          "RETURNING quarantine_pk", list(pks)))


def set_quarantine_reason(store: Store, pk: int, reason: str) -> None:
    """Record the reason of the latest refusal (after a retry)."""
    store.execute("UPDATE quarantine SET reason = ? WHERE quarantine_pk = ?", [reason, pk])
