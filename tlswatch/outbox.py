"""Delivering the outbox: claim due messages, send each once, record what happened.

The database is locked only to claim and to record outcomes, never while a mail server
or webhook is being waited for.  A failed attempt is tried again after an exponential
back-off (``delivery_backoff`` seconds, doubling, at most an hour); after
``delivery_attempts`` attempts the message is marked failed and logged, so nothing is
retried for ever.  A worker that dies mid-send leaves its claim to expire: the message is
sent again later (at least once, never lost).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tlswatch.config import Settings
from tlswatch.deferred import deferred
from tlswatch.notify import destination, send
from tlswatch.store import Store, now_utc

if TYPE_CHECKING:
    import pyarrow as pa
else:
    pa = deferred("pyarrow")  # imported by the first write

log = logging.getLogger(__name__)

BACKOFF_MAX = 3600.0  # seconds: the longest wait between two attempts
CLAIM = 300.0  # seconds a claimed message is hidden from other workers (sends time out at 30)


@dataclass(frozen=True)
class Delivery:
    """The outcome of one attempt at one outbox message."""

    outbox_pk: int
    batch: int
    destination: str
    status: str  # delivered, pending (tried again at next_try_at) or failed (given up)
    attempts: int
    error: str | None = None
    next_try_at: datetime | None = None

    def describe(self) -> str:
        if self.status == "delivered":
            return f"{self.destination}: delivered"
        then = (f"tried again at {self.next_try_at:%Y-%m-%d %H:%M:%S} UTC"
                if self.status == "pending" else "given up")
        return f"{self.destination}: {self.error} (attempt {self.attempts}; {then})"


def backoff(attempts: int, base: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt."""
    return min(BACKOFF_MAX, base * 2 ** max(0, attempts - 1))


def deliver_due(settings: Settings, *, batches: Sequence[int] | None = None,
                limit: int = 100) -> list[Delivery]:
    """Send the messages that are due (only those of ``batches`` if given), once each."""
    with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
        now = now_utc()
        rows = store.claim_outbox(now=now, until=now + timedelta(seconds=CLAIM), limit=limit,
                                  batches=batches)
    if not rows:
        return []
    done = [_attempt(settings, row) for row in rows]
    finished = now_utc()
    results = pa.table({
        "outbox_pk": pa.array([d.outbox_pk for d in done], pa.int64()),
        "status": pa.array([d.status for d in done], pa.string()),
        "next_try_at": pa.array([d.next_try_at or finished for d in done], pa.timestamp("us")),
        "delivered_at": pa.array([finished if d.status == "delivered" else None for d in done],
                                 pa.timestamp("us")),
        "last_error": pa.array([d.error for d in done], pa.string()),
    })
    with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store, \
            store.transaction():
        store.settle_outbox(results)
    for d in done:
        if d.status == "failed":
            log.error("not delivered, given up: %s", d.describe())
        elif d.status == "pending":
            log.warning("not delivered: %s", d.describe())
    return done


def _attempt(settings: Settings, row: dict[str, Any]) -> Delivery:
    channel, recipient = str(row["channel"]), str(row["recipient"])
    where = destination(settings, channel, recipient)
    attempts = int(row["attempts"])
    body = json.loads(row["body"])
    try:
        send(settings, channel, recipient, row["subject"], body)
    except Exception as exc:  # any failure is recorded and retried, none is fatal
        error = f"{type(exc).__name__}: {exc}"[:500]
        if attempts >= settings.delivery_attempts:
            return Delivery(row["outbox_pk"], row["batch"], where, "failed", attempts, error)
        wait = timedelta(seconds=backoff(attempts, settings.delivery_backoff))
        return Delivery(row["outbox_pk"], row["batch"], where, "pending", attempts, error,
                        now_utc() + wait)
    return Delivery(row["outbox_pk"], row["batch"], where, "delivered", attempts)
