"""The DuckDB store: opening (with lock waits), migrations, batch writes, read queries.

DuckDB lets one process write a file at a time.  A command that finds the file locked
waits up to ``lock_timeout`` seconds and then names the process in the way (DuckDB's own
message says which PID holds the lock).
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from tlswatch.errors import StoreError, StoreLockedError, StoreWriteError
from tlswatch.store.migrations import MIGRATIONS

log = logging.getLogger(__name__)

# The failure-detail strings numbered in ``names`` (see migrations.py).
NAMED_COLUMNS = ("policy_domain", "organization_name", "result_type", "receiving_mx_hostname",
                 "receiving_ip", "sending_mta_ip")


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


class Store:
    """One open DuckDB database file."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, *, read_only: bool) -> None:
        self.con = con
        self.path = path
        self.read_only = read_only
        self.applied: list[str] = []  # the migrations this open applied

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False, lock_timeout: float = 10.0,
             pending_ok: bool = False) -> Store:
        """Open (creating and migrating when writable), waiting for another writer's lock.

        A database written by a newer tlswatch (a migration this code does not know) is
        refused; ``pending_ok`` lets a read-only open see a database not yet migrated."""
        path = Path(path)
        if read_only and not path.exists():
            raise StoreError(f"{path}: no database here yet; load reports first with "
                             f"'tlswatch --db {path} ingest PATH'")
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + lock_timeout
        delay = 0.02
        while True:
            try:
                con = duckdb.connect(str(path), read_only=read_only)
                break
            except duckdb.Error as exc:
                if not _is_lock_error(exc):
                    raise StoreError(f"{path}: cannot open the database: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"{path}: the database is locked by another process and was not "
                        f"released within {lock_timeout:g}s ({exc}). Stop that process or "
                        "retry when it is done.") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        store = cls(con, path, read_only=read_only)
        try:
            store._check_whole()
            store._check_known()
            if read_only and not pending_ok:
                store._check_migrated()
            elif not read_only:
                store.applied = store.migrate()
        except BaseException:
            con.close()  # or this process could not open the file differently later
            raise
        return store

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Apply the migrations not yet recorded; return their names."""
        self.con.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                         "(name VARCHAR PRIMARY KEY, applied_at TIMESTAMP NOT NULL)").fetchall()
        done = {row[0] for row in self.con.execute("SELECT name FROM schema_migrations").fetchall()}
        applied = []
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            with self.transaction():
                self.con.execute(sql).fetchall()
                self.con.execute("INSERT INTO schema_migrations VALUES (?, ?)",
                                 [name, _now()]).fetchall()
            log.info("applied migration %s to %s", name, self.path)
            applied.append(name)
        return applied

    def _check_whole(self) -> None:
        """Read the migrations table now, so a cut or damaged file (a copy cut short, a full
        disk during a restore) is refused at open, not in the middle of some command."""
        try:
            self.con.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
            if self.con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = "
                                "'schema_migrations'").fetchall()[0][0]:
                self.con.execute("SELECT * FROM schema_migrations").fetchall()
        except duckdb.Error as exc:
            self.con.close()
            if "read enough bytes" in str(exc) or "truncat" in str(exc).lower():
                raise StoreError(f"{self.path}: the database file is truncated or damaged "
                                 f"({exc}). Restore it from a backup, then load spool/done/ "
                                 "again (it keeps recent arrivals)") from exc
            raise StoreError(f"{self.path}: the database cannot be read ({exc})") from exc

    def _check_known(self) -> None:
        """Refuse a database that a newer tlswatch migrated: this code would misread it."""
        if not self.con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = "
                                "'schema_migrations'").fetchall()[0][0]:
            return
        known = {name for name, _ in MIGRATIONS}
        unknown = sorted(r[0] for r in self.con.execute(
            "SELECT name FROM schema_migrations").fetchall() if r[0] not in known)
        if unknown:
            raise StoreError(
                f"{self.path}: this database was migrated by a newer tlswatch (migrations "
                f"this version does not know: {', '.join(unknown)}); it is not used. Upgrade "
                "tlswatch to the version that wrote it, or restore a backup made with this "
                "version ('tlswatch restore')")

    def _check_migrated(self) -> None:
        try:
            rows = self.con.execute("SELECT name FROM schema_migrations").fetchall()
        except duckdb.Error as exc:
            raise StoreError(f"{self.path}: not a tlswatch database ({exc})") from exc
        names = {r[0] for r in rows}
        missing = [name for name, _ in MIGRATIONS if name not in names]
        if missing:
            raise StoreError(f"{self.path}: database needs migrations {missing}; run any "
                             "writing command (e.g. 'tlswatch ingest') to apply them")

    # -- writing (used by ingest.loader only) ---------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.begin()
        try:
            yield
        except duckdb.IOException as exc:  # the file failed, not the values (disk full)
            self.con.rollback()
            raise StoreWriteError(f"{self.path}: cannot write the database now: {exc}") from exc
        except BaseException:
            self.con.rollback()
            raise
        try:
            self.con.commit()
        except duckdb.Error as exc:  # values are checked as written: a commit fails on the file
            raise StoreWriteError(f"{self.path}: cannot write the database now: {exc}") from exc

    def next_pk(self, table: str, column: str) -> int:
        rows = self.con.execute(f"SELECT coalesce(max({column}), 0) + 1 FROM {table}").fetchall()
        return int(rows[0][0])

    def insert(self, table: str, data: pa.Table) -> None:
        """Append an Arrow table whose columns are named like the table's."""
        if data.num_rows == 0:
            return
        self.con.register("_batch", data)
        try:
            columns = ", ".join(data.column_names)
            self.con.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM _batch").fetchall()
        finally:
            self.con.unregister("_batch")

    def existing_reports(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str],
                                                                        dict[str, Any]]:
        """The stored reports among these (organization_name, report_id) keys: their key,
        content digest, DKIM result and source."""
        if not keys:
            return {}
        probe = pa.table({"organization_name": [k[0] for k in keys],
                          "report_id": [k[1] for k in keys]})
        self.con.register("_probe", probe)
        try:
            rows = self.rows(
                "SELECT DISTINCT r.report_pk, r.organization_name, r.report_id, "
                "r.content_sha256, r.dkim_result, r.source, r.dkim_domain, r.contact_info "
                "FROM reports r "
                "JOIN _probe p USING (organization_name, report_id)")
        finally:
            self.con.unregister("_probe")
        return {(r["organization_name"], r["report_id"]): r for r in rows}

    def remove_reports(self, pks: Sequence[int]) -> list[dict[str, Any]]:
        """Delete reports with all their rows; return each one's source and raw report."""
        if not pks:
            return []
        marks = ", ".join("?" for _ in pks)
        removed = self.rows("SELECT r.report_pk, r.source, w.raw_gzip FROM reports r LEFT "
                            f"JOIN report_raw w USING (report_pk) WHERE r.report_pk IN ({marks})",
                            list(pks))
        for row in removed:  # its raw bytes may have been pruned (raw_keep_days)
            row["raw_gzip"] = row["raw_gzip"] or gzip.compress(b"")
        for table in ("failure_details", "policies", "report_raw", "reports"):
            self.con.execute(f"DELETE FROM {table} WHERE report_pk IN ({marks})",
                             list(pks)).fetchall()
        return removed

    def insert_failure_details(self, data: pa.Table) -> None:
        """Append failure details, numbering their names in ``names`` (in SQL, vectorised)."""
        if data.num_rows == 0:
            return
        self.con.register("_batch", data)
        try:
            self.con.execute(f"""
                INSERT INTO names
                SELECT (SELECT coalesce(max(name_id), 0) FROM names)
                       + row_number() OVER (ORDER BY value), value
                FROM (SELECT DISTINCT unnest([{", ".join(NAMED_COLUMNS)}]) AS value FROM _batch)
                WHERE value IS NOT NULL AND value NOT IN (SELECT value FROM names)
            """).fetchall()
            joins = "".join(f" LEFT JOIN names n{i} ON n{i}.value = b.{column}"
                            for i, column in enumerate(NAMED_COLUMNS))
            ids = ", ".join(f"n{i}.name_id" for i in range(len(NAMED_COLUMNS)))
            columns = ", ".join(data.column_names)
            id_columns = ", ".join(f"{c}_id" if c != "policy_domain" else "domain_id"
                                   for c in NAMED_COLUMNS)
            self.con.execute(
                f"INSERT INTO failure_details ({columns}, {id_columns}) "
                f"SELECT {', '.join(f'b.{c}' for c in data.column_names)}, {ids} "
                f"FROM _batch b{joins}").fetchall()
        finally:
            self.con.unregister("_batch")

    # -- alerts and the outbox (written by the jobs beside the loader) --------------------
    def record_alerts(self, alerts: pa.Table, *, cap: int, batch: int, more_kind: str,
                      more_message: str, now: datetime) -> list[dict[str, Any]]:
        """Store, in one statement, the alerts not recorded before (per domain, kind, day).

        ``alerts`` has policy_domain, kind, day, message, details (JSON text) and rank (lower
        goes first).  At most ``cap`` alerts are kept per day; the rest of a day are counted
        by one ``more_kind`` alert whose message is ``more_message`` with ``{more}`` and
        ``{day}`` filled in (updated, not repeated, when later checks find more).  Returns
        the rows this call created, tagged with ``batch``.
        """
        if alerts.num_rows == 0:
            return []
        self.con.register("_alerts", alerts)
        try:
            cur = self.con.execute("""
                INSERT INTO alerts (alert_pk, policy_domain, kind, day, message, details,
                                    created_at, outbox_batch)
                WITH have AS (
                    SELECT day, count(*) AS n FROM alerts WHERE kind <> $more_kind GROUP BY day
                ), ranked AS (
                    SELECT c.*, coalesce(h.n, 0)
                           + row_number() OVER (PARTITION BY c.day ORDER BY c.rank) AS n
                    FROM _alerts c LEFT JOIN have h USING (day)
                    WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE a.policy_domain =
                                      c.policy_domain AND a.kind = c.kind AND a.day = c.day)
                ), chosen AS (
                    SELECT policy_domain, kind, day, message, details FROM ranked
                    WHERE n <= $cap
                    UNION ALL
                    SELECT '*', $more_kind, day,
                           replace(replace($more_message, '{more}', format('{:,}', count(*))),
                                   '{day}', day::VARCHAR),
                           json_object('more_alerts', count(*), 'cap', $cap)::VARCHAR
                    FROM ranked WHERE n > $cap GROUP BY day
                )
                SELECT (SELECT coalesce(max(alert_pk), 0) FROM alerts)
                       + row_number() OVER (ORDER BY day, policy_domain, kind),
                       policy_domain, kind, day, message, details, $now, $batch
                FROM chosen
                ON CONFLICT (policy_domain, kind, day)
                DO UPDATE SET message = excluded.message, details = excluded.details
                RETURNING policy_domain, kind, day, message, details, outbox_batch
            """, {"cap": cap, "batch": batch, "more_kind": more_kind,
                  "more_message": more_message, "now": now})
            names = [d[0] for d in cur.description or []]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        finally:
            self.con.unregister("_alerts")
        return [r for r in rows if r.pop("outbox_batch") == batch]  # not the updated ones

    def next_outbox_batch(self) -> int:
        """A new number grouping the deliveries of one event (an alert check, a summary)."""
        return int(self.con.execute("SELECT nextval('outbox_batches')").fetchall()[0][0])

    def enqueue(self, messages: pa.Table, *, now: datetime) -> None:
        """Add deliveries (batch, kind, channel, recipient, subject, body) due now."""
        if messages.num_rows == 0:
            return
        self.con.register("_messages", messages)
        try:
            self.con.execute("""
                INSERT INTO outbox (outbox_pk, batch, kind, channel, recipient, subject, body,
                                    created_at, status, attempts, next_try_at)
                SELECT (SELECT coalesce(max(outbox_pk), 0) FROM outbox) + row_number() OVER (),
                       batch, kind, channel, recipient, subject, body, $now, 'pending', 0, $now
                FROM _messages
            """, {"now": now}).fetchall()
        finally:
            self.con.unregister("_messages")

    def claim_outbox(self, *, now: datetime, until: datetime, limit: int,
                     batches: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Take up to ``limit`` due deliveries: count the attempt and hide them from other
        workers until ``until`` (so a worker that dies mid-send only delays them)."""
        only = "AND list_contains($batches, batch)" if batches is not None else ""
        cur = self.con.execute(f"""
            UPDATE outbox SET attempts = attempts + 1, next_try_at = $until
            WHERE outbox_pk IN (SELECT outbox_pk FROM outbox
                                WHERE status = 'pending' AND next_try_at <= $now {only}
                                ORDER BY next_try_at, outbox_pk LIMIT $limit)
            RETURNING outbox_pk, batch, kind, channel, recipient, subject, body, attempts
        """, {"now": now, "until": until, "limit": limit,
              **({"batches": list(batches)} if batches is not None else {})})
        names = [d[0] for d in cur.description or []]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        return sorted(rows, key=lambda r: r["outbox_pk"])

    def settle_outbox(self, results: pa.Table) -> None:
        """Record outcomes (outbox_pk, status, next_try_at, delivered_at, last_error) and
        carry them onto the alerts each delivery announced."""
        if results.num_rows == 0:
            return
        self.con.register("_results", results)
        try:
            self.con.execute("""
                UPDATE outbox SET status = r.status, next_try_at = r.next_try_at,
                       delivered_at = r.delivered_at, last_error = r.last_error
                FROM _results r WHERE outbox.outbox_pk = r.outbox_pk
            """).fetchall()
            self.con.execute("""
                UPDATE alerts SET delivered_at = s.done, delivery_error = s.errors
                FROM (SELECT batch,
                             CASE WHEN bool_and(status = 'delivered')
                                  THEN max(delivered_at) END AS done,
                             string_agg(channel || ' ' || recipient || ': ' || last_error, '; ')
                                 FILTER (status <> 'delivered' AND last_error IS NOT NULL)
                                 AS errors
                      FROM outbox
                      WHERE batch IN (SELECT o.batch FROM outbox o
                                      JOIN _results r ON o.outbox_pk = r.outbox_pk)
                      GROUP BY batch) s
                WHERE alerts.outbox_batch = s.batch
            """).fetchall()
        finally:
            self.con.unregister("_results")

    def existing_quarantine(self, digests: Sequence[str]) -> set[str]:
        if not digests:
            return set()
        self.con.register("_probe", pa.table({"sha256": list(digests)}))
        try:
            rows = self.con.execute(
                "SELECT q.sha256 FROM quarantine q JOIN _probe USING (sha256)").fetchall()
        finally:
            self.con.unregister("_probe")
        return {r[0] for r in rows}

    # -- the portable query surface (every module outside store/ uses only these) ---------
    engine = "duckdb"

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> None:
        """Run one statement whose result is not needed."""
        self.con.execute(sql, params).fetchall()

    def value(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        """The first column of the first row (None when there is no row)."""
        row = self.con.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def arrow(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> pa.Table:
        """A query's result as an Arrow table (for exports and copies)."""
        return self.con.execute(sql, params).to_arrow_table()

    @contextmanager
    def scratch(self, name: str, data: pa.Table) -> Iterator[None]:
        """Make an Arrow table queryable as ``name`` inside the block."""
        self.con.register(name, data)
        try:
            yield
        finally:
            self.con.unregister(name)

    # -- reading ----------------------------------------------------------------------------
    def rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        cur = self.con.execute(sql, params)
        names = [d[0] for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def now_utc() -> datetime:
    """The current time as naive UTC, the form timestamps are stored in."""
    return _now()
