"""The DuckDB store: opening (with lock waits), migrations, batch writes, read queries.

DuckDB lets one process write a file at a time.  A command that finds the file locked
waits up to ``lock_timeout`` seconds and then names the process in the way (DuckDB's own
message says which PID holds the lock).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from tlswatch.errors import StoreError, StoreLockedError
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

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False, lock_timeout: float = 10.0) -> Store:
        """Open (creating and migrating when writable), waiting for another writer's lock."""
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
        if read_only:
            store._check_migrated()
        else:
            store.migrate()
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
        except BaseException:
            self.con.rollback()
            raise
        self.con.commit()

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
                "r.content_sha256, r.dkim_result, r.source FROM reports r "
                "JOIN _probe p USING (organization_name, report_id)")
        finally:
            self.con.unregister("_probe")
        return {(r["organization_name"], r["report_id"]): r for r in rows}

    def remove_reports(self, pks: Sequence[int]) -> list[dict[str, Any]]:
        """Delete reports with all their rows; return each one's source and raw report."""
        if not pks:
            return []
        marks = ", ".join("?" for _ in pks)
        removed = self.rows("SELECT r.report_pk, r.source, w.raw_gzip FROM reports r JOIN "
                            f"report_raw w USING (report_pk) WHERE r.report_pk IN ({marks})",
                            list(pks))
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

    def record_alerts(self, alerts: Sequence[Any]) -> list[Any]:
        """Store alerts not recorded before (per domain, kind and day); return those."""
        if not alerts:
            return []
        known = {(r[0], r[1], r[2]) for r in self.con.execute(
            "SELECT policy_domain, kind, day FROM alerts").fetchall()}
        new = [a for a in alerts if a.key not in known]
        if new:
            first = self.next_pk("alerts", "alert_pk")
            now = _now()
            self.con.executemany(
                "INSERT INTO alerts (alert_pk, policy_domain, kind, day, message, details, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(first + i, a.policy_domain, a.kind, a.day, a.message,
                  json.dumps(a.details, default=str), now) for i, a in enumerate(new)])
        return new

    def mark_delivered(self, keys: Sequence[tuple[str, str, Any]], error: str | None) -> None:
        for domain, kind, day in keys:
            self.con.execute(
                "UPDATE alerts SET delivered_at = CASE WHEN ? IS NULL THEN ? ELSE delivered_at "
                "END, delivery_error = ? WHERE policy_domain = ? AND kind = ? AND day = ?",
                [error, _now(), error, domain, kind, day]).fetchall()

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
