"""Keeping the database small and safe: retention pruning, compaction, consistent copies,
the status of its schema, and the mark a running ``serve`` holds.

DuckDB does not give space back to the file system on DELETE (freed blocks are reused by
later writes), so after pruning the file is rewritten: a fresh copy (``COPY FROM DATABASE``)
made while this process holds the write lock, fsynced, and renamed over the old file
before the lock is let go.  Other processes open the path anew each time (the loader per
batch), so the next one gets the new file and nothing written is lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from tlswatch.dburl import DatabaseUrl
from tlswatch.durable import fsync_path
from tlswatch.errors import StoreError, StoreLockedError
from tlswatch.store import Store, now_utc
from tlswatch.store.migrations import MIGRATIONS

COUNTED_TABLES = ("reports", "policies", "failure_details", "report_raw", "quarantine",
                  "alerts")


@dataclass(frozen=True)
class Retention:
    """How long each kind of row is kept (0: forever)."""

    detail_days: int
    raw_days: int
    quarantine_days: int
    check_days: int = 0
    fetch_days: int = 0


@dataclass
class Pruned:
    """What one prune removed (or would remove, in a dry run), per kind."""

    today: date
    removed: dict[str, int] = field(default_factory=dict)
    before: dict[str, str] = field(default_factory=dict)  # kind -> first day (or time) kept


# kind -> (table, the condition on its rows, with ? the cutoff)
_PRUNE = {
    "failure_details": ("failure_details", "day < ?"),
    "report_raw": ("report_raw", "report_pk IN (SELECT report_pk FROM reports WHERE day < ?)"),
    "quarantine": ("quarantine", "received_at < ?"),
    "check_findings": ("check_findings", "checked_at < ?"),
    "check_runs": ("check_runs", "checked_at < ?"),
    "policy_fetches": ("policy_fetches", "fetched_at < ?"),
}
_BY_ARRIVAL = ("quarantine", "check_findings", "check_runs",  # cut by a time, not a report day
               "policy_fetches")


def prune(store: Store, retention: Retention, *, today: date, dry_run: bool) -> Pruned:
    """Delete failure details and raw reports of report days older than their retention,
    and quarantined inputs and check runs from before it; record each cutoff (``retention``)."""
    result = Pruned(today)
    cutoffs: dict[str, tuple[Any, int]] = {}
    for kind, days in (("failure_details", retention.detail_days),
                       ("report_raw", retention.raw_days),
                       ("quarantine", retention.quarantine_days),
                       ("check_findings", retention.check_days),
                       ("check_runs", retention.check_days),
                       ("policy_fetches", retention.fetch_days)):
        if days > 0:
            day = today - timedelta(days=days)
            cutoff = datetime.combine(day, datetime.min.time()) if kind in _BY_ARRIVAL else day
            cutoffs[kind] = (cutoff, days)
            result.before[kind] = day.isoformat()
    with contextlib.ExitStack() as stack:
        if not dry_run:
            stack.enter_context(store.transaction())
        for kind, (cutoff, days) in cutoffs.items():
            table, where = _PRUNE[kind]
            count = store.rows(f"SELECT count(*) AS n FROM {table} WHERE {where}",
                               [cutoff])[0]["n"]
            result.removed[kind] = int(count)
            if dry_run:
                continue
            store.execute(f"DELETE FROM {table} WHERE {where}", [cutoff])
            _record(store, kind, before=cutoff if isinstance(cutoff, date) else cutoff.date(),
                    keep_days=days, removed=int(count))
        if not dry_run:
            _record(store, "run", before=today, keep_days=0, removed=sum(result.removed.values()))
    return result


def _record(store: Store, kind: str, *, before: date, keep_days: int, removed: int) -> None:
    """The cutoff only moves forward: what an earlier, shorter retention removed stays gone."""
    store.execute("""
        INSERT INTO retention VALUES ($kind, $before, $days, $now, $removed)
        ON CONFLICT (kind) DO UPDATE SET before_day = greatest(retention.before_day,
                                                               excluded.before_day),
            keep_days = excluded.keep_days, pruned_at = excluded.pruned_at,
            removed = retention.removed + excluded.removed
    """, {"kind": kind, "before": before, "days": keep_days, "now": now_utc(),
          "removed": removed})


def pruned_before(store: Store) -> dict[str, dict[str, Any]]:
    """kind -> {before_day, keep_days, pruned_at, removed}: what retention pruning removed
    so far (``removed``: rows, over every prune)."""
    if not _has_table(store, "retention"):
        return {}
    return {r.pop("kind"): r for r in store.rows(
        "SELECT kind, before_day, keep_days, pruned_at, removed FROM retention")}


def uncompacted(store: Store) -> tuple[int, int]:
    """(rows pruned since the file was last compacted, rows left in the pruned tables)."""
    cumulative = {r["kind"]: int(r["removed"]) for r in store.rows(
        "SELECT kind, removed FROM retention WHERE kind IN ('run', 'compacted')")}
    left = sum(int(store.rows(f"SELECT count(*) AS n FROM {table}")[0]["n"])
               for table, _ in _PRUNE.values())
    return cumulative.get("run", 0) - cumulative.get("compacted", 0), left


def mark_compacted(store: Store) -> None:
    """Remember how many rows had been pruned when the file was compacted."""
    with store.transaction():
        store.execute("DELETE FROM retention WHERE kind = 'compacted'")
        store.execute("""
            INSERT INTO retention SELECT 'compacted', before_day, 0, $now, removed
            FROM retention WHERE kind = 'run'""", {"now": now_utc()})


def last_run(store: Store) -> datetime | None:
    return pruned_before(store).get("run", {}).get("pruned_at")


def file_size(path: Path) -> int:
    """Bytes of the database file and its write-ahead log."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}.wal")) if p.exists())


def database_size(store: Store) -> int:
    """The store's bytes: the DuckDB file and its log, or the PostgreSQL database's
    (``pg_database_size``: tables, indexes and their free space)."""
    if isinstance(store.path, Path):
        return file_size(store.path)
    return int(store.value("SELECT pg_database_size(current_database())"))


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def copy_into(store: Store, dest: Path) -> None:
    """Write a whole, consistent copy of the open database to the new file ``dest`` (this
    connection holds the database's lock meanwhile), fsynced.  From PostgreSQL the copy is
    made row by row in one snapshot (``db copy``), a DuckDB file all the same."""
    if store.engine == "postgresql":
        from tlswatch.store.copy import copy_store

        with Store.open(dest) as target:
            copy_store(store, target)
        fsync_path(dest)
        return
    name = store.rows("SELECT current_database() AS n")[0]["n"]
    store.con.execute(f"ATTACH {_quote(dest)} AS _tlswatch_copy (READ_WRITE)").fetchall()
    try:
        store.con.execute(f'COPY FROM DATABASE "{name}" TO _tlswatch_copy').fetchall()
    finally:
        store.con.execute("DETACH _tlswatch_copy").fetchall()
    fsync_path(dest)


def same_owner(new: Path, *, like: Path) -> None:
    """Give ``new`` the owner, group and mode of ``like`` before it replaces it: a prune or
    restore run by root must not leave a file that 'serve' (User=tlswatch) cannot write."""
    old = like.stat()
    os.chmod(new, old.st_mode & 0o7777)
    with contextlib.suppress(PermissionError):  # only root may give a file away
        os.chown(new, old.st_uid, old.st_gid)


def compact(path: Path, *, lock_timeout: float) -> tuple[int, int]:
    """Rewrite the database file without its free space, when the copy is smaller; return
    the size before and after."""
    tmp = path.with_name(f".{path.name}.compact-{os.getpid()}")
    with Store.open(path, lock_timeout=lock_timeout) as store:
        store.con.execute("CHECKPOINT").fetchall()  # the WAL is empty: nothing to lose
        before = file_size(path)
        tmp.unlink(missing_ok=True)
        try:
            copy_into(store, tmp)
            if tmp.stat().st_size < before:  # a small file can come out larger
                same_owner(tmp, like=path)
                os.replace(tmp, path)  # still under our lock: the next opener gets the copy
                fsync_path(path.parent)
        finally:
            tmp.unlink(missing_ok=True)
    return before, file_size(path)


def status(path: Path | DatabaseUrl, *, lock_timeout: float) -> dict[str, Any]:
    """The database's file, applied and pending migrations, row counts and report days."""
    with Store.open(path, read_only=True, lock_timeout=lock_timeout, pending_ok=True) as store:
        applied = store.rows("SELECT name, applied_at FROM schema_migrations ORDER BY name") \
            if _has_table(store, "schema_migrations") else []
        done = {r["name"] for r in applied}
        counts = {t: int(store.rows(f"SELECT count(*) AS n FROM {t}")[0]["n"])
                  for t in COUNTED_TABLES if _has_table(store, t)}
        days = store.rows("SELECT min(day) AS oldest, max(day) AS newest FROM reports")[0] \
            if _has_table(store, "reports") else {"oldest": None, "newest": None}
        pruned = pruned_before(store)
        size = database_size(store)
    return {"path": str(path),
            "size_bytes": size,
            "migrations": applied,
            "pending_migrations": [n for n, _ in MIGRATIONS if n not in done],
            "counts": counts, "oldest_report_day": days["oldest"],
            "newest_report_day": days["newest"],
            "last_prune": pruned.get("run", {}).get("pruned_at"),
            "pruned_before": {k: v["before_day"] for k, v in pruned.items()
                              if k not in ("run", "compacted")}}


def upgrade(path: Path | DatabaseUrl, *, lock_timeout: float) -> list[str]:
    """Apply the pending migrations of an existing database; return their names."""
    if isinstance(path, Path) and not path.exists():
        raise StoreError(f"{path}: no database here to upgrade")
    with Store.open(path, lock_timeout=lock_timeout) as store:
        return store.applied


def refuse_newer(path: Path | DatabaseUrl, *, lock_timeout: float) -> None:
    """Raise ``StoreError`` when a newer tlswatch migrated the database (checked at open);
    a database locked by a moment's writer is left to be checked by its next open."""
    if isinstance(path, DatabaseUrl) or path.exists():
        with contextlib.suppress(StoreLockedError), \
                Store.open(path, read_only=True, pending_ok=True, lock_timeout=lock_timeout):
            pass


def _has_table(store: Store, name: str) -> bool:
    return store.has_table(name)



def _mark_path(db: Path) -> Path:
    return db.with_name(f"{db.name}.serve.lock")


@contextlib.contextmanager
def serving_mark(db: Path | DatabaseUrl) -> Iterator[None]:
    """Held by 'serve' while it runs (a shared lock on a file beside the database, released
    by the kernel if it dies), so that 'restore' can refuse to swap the database under it."""
    if isinstance(db, DatabaseUrl):  # no file to swap on PostgreSQL
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(_mark_path(db), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"{db}: a restore is replacing this database now; start "
                             "'serve' again when it is done") from None
        yield


@contextlib.contextmanager
def no_serve(db: Path) -> Iterator[None]:
    """Hold off 'serve' for a restore; refuse when one runs on this database."""
    if not db.parent.exists():
        yield
        return
    with open(_mark_path(db), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"{db}: 'tlswatch serve' is running on this database; stop it "
                             "before restoring (systemctl stop tlswatch)") from None
        yield
