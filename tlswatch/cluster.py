"""Several 'serve' nodes sharing one PostgreSQL: the once-a-day work (the daily summary and
its alerts, the scheduled MTA-STS checks, the daily prune) runs on one node at a time, and
what it did is recorded in the database, so the next node to look finds nothing due.

Each scheduled task runs under its own session-level advisory lock
(``pg_try_advisory_lock``), held on a connection of its own for as long as the task runs.
A node that finds the lock taken skips the task this round (it looks again 30 s later,
and then finds the work done).  PostgreSQL releases the lock when the holder's connection
ends: a node killed or stopped lets go at once; a machine that vanishes is noticed by the
server's TCP keepalives (``KEEPALIVES``, about two minutes).  On DuckDB one machine writes
the file and every task runs as before.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from tlswatch.config import Settings
from tlswatch.dburl import is_url
from tlswatch.deferred import deferred
from tlswatch.errors import StoreError, StoreLockedError, StoreWriteError
from tlswatch.store import Store, now_utc

if TYPE_CHECKING:
    import pyarrow as pa
    from prometheus_client import CollectorRegistry
else:
    pa = deferred("pyarrow")  # imported by the first write

log = logging.getLogger(__name__)

LOCK_CLASS = 0x746C7377  # "tlsw": the first of the two keys of every task's lock
# The server drops a lock holder whose machine stopped answering after 60 + 6 x 10 s.
KEEPALIVES = (("tcp_keepalives_idle", 60), ("tcp_keepalives_interval", 10),
              ("tcp_keepalives_count", 6))

Task = Callable[[Settings, datetime], object]


def node_name(settings: Settings) -> str:
    """This node's name: the ``node_name`` setting, or the host name."""
    return settings.node_name or socket.gethostname()


def shared(settings: Settings) -> bool:
    """Whether several nodes may share the store (PostgreSQL)."""
    return is_url(settings.db)


def task_key(task: str) -> int:
    """The second key of a task's advisory lock (a positive 32-bit number)."""
    return zlib.crc32(task.encode()) & 0x7FFFFFFF


@contextmanager
def turn(settings: Settings, task: str) -> Iterator[bool]:
    """Hold the cluster-wide lock of ``task`` for the block and yield True, or yield False
    when another node holds it.  On DuckDB always True (one machine writes the file)."""
    if not shared(settings):
        yield True
        return
    with Store.open(settings.db, read_only=True, pending_ok=True,
                    lock_timeout=settings.lock_timeout) as store:
        for name, value in KEEPALIVES:
            store.execute(f"SET {name} = {int(value)}")
        mine = bool(store.value(
            "SELECT pg_try_advisory_lock(CAST(? AS INTEGER), CAST(? AS INTEGER))",
            [LOCK_CLASS, task_key(task)]))
        # Closing the connection (leaving the block) lets go of the lock.
        yield mine


def once_per_cluster(name: str, task: Task) -> Task:
    """``task`` run only while this node holds the task's cluster-wide lock; the task then
    decides from the database whether anything is due."""
    def run(settings: Settings, now: datetime) -> object:
        if not shared(settings):  # DuckDB: as it always ran
            return task(settings, now)
        try:
            with turn(settings, name) as mine:
                if not mine:
                    log.debug("%s: another node runs it now", name)
                    return None
                return task(settings, now)
        except (StoreWriteError, StoreLockedError) as exc:  # the store is away: next round
            log.warning("%s waits: %s", name, exc)
            return None
    return run


def read_days(settings: Settings, task: str) -> dict[date, Any] | None:
    """The days recorded for ``task`` and each one's record (JSON, None when it has none);
    None when the database has no such record yet."""
    with Store.open(settings.db, read_only=True, pending_ok=True,
                    lock_timeout=settings.lock_timeout) as store:
        if not store.has_table("cluster_days"):
            return None
        rows = store.rows("SELECT day, record FROM cluster_days WHERE task = ? ORDER BY day",
                          [task])
    if not rows:
        return None
    return {r["day"]: None if r["record"] is None else json.loads(r["record"]) for r in rows}


def write_days(settings: Settings, task: str, days: dict[date, Any], *,
               forget_before: date) -> None:
    """Record ``days`` (day -> JSON-able record, or None) for ``task`` in one transaction;
    records of days before ``forget_before`` are dropped (the days stay marked done)."""
    table = pa.table({
        "day": pa.array(sorted(days), pa.date32()),
        "record": pa.array([None if days[d] is None else json.dumps(days[d])
                            for d in sorted(days)], pa.string()),
    })
    with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store, \
            store.transaction(), store.scratch("_days", table):
        store.execute("""
            INSERT INTO cluster_days (task, day, done_at, node, record)
            SELECT $task, day, $now, $node, record FROM _days
            ON CONFLICT (task, day) DO UPDATE SET done_at = excluded.done_at,
                node = excluded.node, record = excluded.record
        """, {"task": task, "now": now_utc(), "node": node_name(settings)})
        store.execute("UPDATE cluster_days SET record = NULL WHERE task = ? AND day < ? "
                      "AND record IS NOT NULL", [task, forget_before])


class StoreProbe:
    """For /healthz and /metrics of a node: whether the shared store answers.

    Asked at most every ``every`` seconds, in a thread of its own after the first time, so
    a server that does not answer never holds up a health check (the answer given is the
    last one known, with its age).  /healthz answers anyone who asks: it tells only whether
    the server is away or refused this node; the reason, which names the database's user,
    host or socket, goes to the node's log (once per change)."""

    def __init__(self, settings: Settings, *, every: float = 5.0) -> None:
        self.settings = settings
        self.every = every
        self.lock = threading.Lock()
        self.error: str | None = "not asked yet"
        self.detail: str | None = None  # the error's text, for the log only
        self.asked_at = float("-inf")  # monotonic
        self.asking = False

    def _ask(self) -> None:
        error: str | None
        detail: str | None
        try:
            with Store.open(self.settings.db, read_only=True, pending_ok=True,
                            lock_timeout=2.0) as store:
                store.value("SELECT 1")
            error = detail = None
        except (StoreWriteError, StoreLockedError) as exc:
            error, detail = "the database server does not answer now", str(exc)
        except StoreError as exc:
            error, detail = ("the database refused this node or cannot be used (the reason "
                             "is in the node's log)"), str(exc)
        with self.lock:
            told, self.detail = self.detail, detail
            self.error, self.asked_at, self.asking = error, time.monotonic(), False
        if detail is not None and detail != told:
            log.warning("the store does not answer this node: %s", detail)

    def refresh(self) -> None:
        """Ask now (the first time) or in the background (when the answer is old)."""
        with self.lock:
            first = self.asked_at == float("-inf") and not self.asking
            stale = time.monotonic() - self.asked_at >= self.every and not self.asking
            if first or stale:
                self.asking = True
        if first:
            self._ask()
        elif stale:
            threading.Thread(target=self._ask, name="tlswatch-store-probe", daemon=True).start()

    def up(self) -> float:
        """1 when the store answered last time, else 0 (a /metrics gauge)."""
        self.refresh()
        return 1.0 if self.error is None else 0.0

    def about(self) -> dict[str, Any]:
        """What /healthz adds on a node of several: its name and the store's state."""
        self.refresh()
        store: dict[str, Any] = {"engine": "postgresql", "reachable": self.error is None}
        if self.error is not None:
            store["error"] = self.error
        store["checked_seconds_ago"] = round(max(0.0, time.monotonic() - self.asked_at), 1)
        return {"node": node_name(self.settings), "store": store}


def node_metrics(registry: CollectorRegistry, settings: Settings, probe: StoreProbe) -> None:
    """``tlswatch_node_info{node=...}`` and ``tlswatch_store_up`` on a node's /metrics."""
    from prometheus_client import Gauge, Info  # only 'serve' has metrics

    Info("tlswatch_node", "This serve node, one of several sharing a PostgreSQL store.",
         registry=registry).info({"node": node_name(settings), "engine": "postgresql"})
    Gauge("tlswatch_store_up", "1 while the shared store answers this node, 0 when it did "
          "not at the last try (the node keeps taking reports into its spool).",
          registry=registry).set_function(probe.up)
