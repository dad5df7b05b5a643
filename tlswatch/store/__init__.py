"""The store: opening (with lock waits), migrations, batch writes, read queries.

Two engines: a DuckDB file (a path, the default) or a PostgreSQL database (a
``postgresql://`` URL).  Every query is written once, in SQL both accept; what differs
lives in ``tlswatch.store.engine``.  DuckDB lets one process write a file at a time: a
command that finds the file locked waits up to ``lock_timeout`` seconds and then names the
process in the way.  On PostgreSQL writers take turns on an advisory lock instead.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlswatch.dburl import DatabaseUrl, location
from tlswatch.deferred import deferred
from tlswatch.errors import StoreError
from tlswatch.store.engine import DuckDB, Params, Postgres
from tlswatch.store.migrations import MIGRATIONS, migration_sql

if TYPE_CHECKING:
    import pyarrow as pa
else:
    pa = deferred("pyarrow")  # imported by the first write: readers do without it

log = logging.getLogger(__name__)

# The failure-detail strings numbered in ``names`` (see migrations.py).
NAMED_COLUMNS = ("policy_domain", "organization_name", "result_type", "receiving_mx_hostname",
                 "receiving_ip", "sending_mta_ip")

_HAS_TABLE = ("SELECT count(*) FROM information_schema.tables WHERE table_name = ? "
              "AND table_schema = current_schema() AND table_catalog = current_database()")


class Store:
    """One open database: a DuckDB file or a PostgreSQL database."""

    def __init__(self, db: DuckDB | Postgres, *, read_only: bool) -> None:
        self._db = db
        self.path: Path | DatabaseUrl = db.where
        self.read_only = read_only
        self.engine = db.name  # "duckdb" or "postgresql"
        self.applied: list[str] = []  # the migrations this open applied

    @property
    def con(self) -> Any:
        """The engine's own connection (DuckDB-only maintenance uses it)."""
        return self._db.con

    @classmethod
    def open(cls, path: Path | str, *, read_only: bool = False, lock_timeout: float = 10.0,
             pending_ok: bool = False, migrate: bool = True) -> Store:
        """Open (creating and migrating when writable), waiting for another writer's lock.

        A database written by a newer tlswatch (a migration this code does not know) is
        refused; ``pending_ok`` lets a read-only open see a database not yet migrated, and
        ``migrate`` False a writable open leave the migrations to the caller."""
        where = location(path)
        db = (Postgres.connect(where, read_only=read_only, lock_timeout=lock_timeout)
              if isinstance(where, DatabaseUrl)
              else DuckDB.connect(where, read_only=read_only, lock_timeout=lock_timeout))
        store = cls(db, read_only=read_only)
        try:
            store._check_whole()
            store._check_known()
            if read_only and not pending_ok:
                store._check_migrated()
            elif not read_only and migrate:
                store.applied = store.migrate()
        except BaseException:
            db.close()  # or this process could not open the file differently later
            raise
        return store

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------
    def migrate(self, *, within: bool = False) -> list[str]:
        """Apply the migrations not yet recorded; return their names.  Each one is applied
        under the write lock after looking again, so two processes starting at once on
        one PostgreSQL database apply it once.  ``within``: all in the caller's transaction
        (PostgreSQL: a failure after it undoes them too)."""
        step = nullcontext if within else self.transaction
        if not self.has_table("schema_migrations"):
            with step():
                self.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                             "(name VARCHAR PRIMARY KEY, applied_at TIMESTAMP NOT NULL)")
        done = {r["name"] for r in self.rows("SELECT name FROM schema_migrations")}
        applied = []
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            with step():
                if self.value("SELECT count(*) FROM schema_migrations WHERE name = ?", [name]):
                    continue
                self._db.script(migration_sql(sql, self.engine))
                self.execute("INSERT INTO schema_migrations VALUES (?, ?)", [name, _now()])
            log.info("applied migration %s to %s", name, self.path)
            applied.append(name)
        return applied

    def has_table(self, name: str) -> bool:
        """Whether the database has this table (on both engines)."""
        return bool(self.value(_HAS_TABLE, [name]))

    def _check_whole(self) -> None:
        """Read the migrations table now, so a cut or damaged file (a copy cut short, a full
        disk during a restore) is refused at open, not in the middle of some command."""
        try:
            self.value("SELECT count(*) FROM information_schema.tables")
            if self.has_table("schema_migrations"):
                self.rows("SELECT * FROM schema_migrations")
        except self._db.Error as exc:
            self._db.close()
            if "read enough bytes" in str(exc) or "truncat" in str(exc).lower():
                raise StoreError(f"{self.path}: the database file is truncated or damaged "
                                 f"({exc}). Restore it from a backup, then load spool/done/ "
                                 "again (it keeps recent arrivals)") from exc
            raise StoreError(f"{self.path}: the database cannot be read ({exc})") from exc

    def _check_known(self) -> None:
        """Refuse a database that a newer tlswatch migrated: this code would misread it."""
        if not self.has_table("schema_migrations"):
            return
        known = {name for name, _ in MIGRATIONS}
        unknown = sorted(r["name"] for r in self.rows("SELECT name FROM schema_migrations")
                         if r["name"] not in known)
        if unknown:
            raise StoreError(
                f"{self.path}: this database was migrated by a newer tlswatch (migrations "
                f"this version does not know: {', '.join(unknown)}); it is not used. Upgrade "
                "tlswatch to the version that wrote it, or restore a backup made with this "
                "version ('tlswatch restore')")

    def _check_migrated(self) -> None:
        if not self.has_table("schema_migrations"):
            if self.engine == "postgresql":
                raise StoreError(f"{self.path}: no tlswatch tables here yet; load reports "
                                 f"first with 'tlswatch --db {self.path} ingest PATH'")
            raise StoreError(f"{self.path}: not a tlswatch database (no schema_migrations "
                             "table)")
        names = {r["name"] for r in self.rows("SELECT name FROM schema_migrations")}
        missing = [name for name, _ in MIGRATIONS if name not in names]
        if missing:
            raise StoreError(f"{self.path}: database needs migrations {missing}; run any "
                             "writing command (e.g. 'tlswatch ingest') to apply them")

    # -- writing (used by ingest.loader only) ---------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; a writing one holds the engine's write lock (see engine.py)."""
        self._db.begin(write=not self.read_only)
        try:
            yield
        except BaseException as exc:
            self._db.rollback()
            named = self._db.failure(exc) if isinstance(exc, self._db.Error) else None
            if named is not None:
                raise named from exc
            raise
        self._db.commit()

    def next_pk(self, table: str, column: str) -> int:
        return int(self.value(f"SELECT coalesce(max({column}), 0) + 1 FROM {table}"))

    def insert(self, table: str, data: pa.Table) -> None:
        """Append an Arrow table whose columns are named like the table's."""
        if data.num_rows:
            self._db.insert(table, data)

    def existing_reports(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str],
                                                                        dict[str, Any]]:
        """The stored reports among these (organization_name, report_id) keys: their key,
        content digest, DKIM result and source."""
        if not keys:
            return {}
        probe = pa.table({"organization_name": [k[0] for k in keys],
                          "report_id": [k[1] for k in keys]})
        with self.scratch("_probe", probe):
            rows = self.rows(
                "SELECT DISTINCT r.report_pk, r.organization_name, r.report_id, "
                "r.content_sha256, r.dkim_result, r.source, r.dkim_domain, r.contact_info "
                "FROM reports r "
                "JOIN _probe p ON p.organization_name = r.organization_name "
                "AND p.report_id = r.report_id")
        return {(r["organization_name"], r["report_id"]): r for r in rows}

    def remove_reports(self, pks: Sequence[int]) -> list[dict[str, Any]]:
        """Delete reports with all their rows; return each one's source and raw report."""
        if not pks:
            return []
        marks = ", ".join("?" for _ in pks)
        removed = self.rows("SELECT r.report_pk, r.source, w.raw_gzip FROM reports r LEFT "
                            "JOIN report_raw w ON w.report_pk = r.report_pk "
                            f"WHERE r.report_pk IN ({marks}) ORDER BY r.report_pk", list(pks))
        for row in removed:  # its raw bytes may have been pruned (raw_keep_days)
            row["raw_gzip"] = bytes(row["raw_gzip"] or gzip.compress(b""))
        for table in ("failure_details", "policies", "report_raw", "reports"):
            self.execute(f"DELETE FROM {table} WHERE report_pk IN ({marks})", list(pks))
        return removed

    def insert_failure_details(self, data: pa.Table) -> None:
        """Append failure details, numbering their names in ``names`` (in SQL, vectorised)."""
        if data.num_rows == 0:
            return
        with self.scratch("_batch", data):
            self.execute(f"""
                INSERT INTO names (name_id, value)
                SELECT (SELECT coalesce(max(name_id), 0) FROM names)
                       + row_number() OVER (ORDER BY value), value
                FROM (SELECT DISTINCT unnest(ARRAY[{", ".join(NAMED_COLUMNS)}]) AS value
                      FROM _batch) AS fresh
                WHERE value IS NOT NULL AND value NOT IN (SELECT value FROM names)
            """)
            joins = "".join(f" LEFT JOIN names n{i} ON n{i}.value = b.{column}"
                            for i, column in enumerate(NAMED_COLUMNS))
            ids = ", ".join(f"n{i}.name_id" for i in range(len(NAMED_COLUMNS)))
            columns = ", ".join(data.column_names)
            id_columns = ", ".join(f"{c}_id" if c != "policy_domain" else "domain_id"
                                   for c in NAMED_COLUMNS)
            self.execute(
                f"INSERT INTO failure_details ({columns}, {id_columns}) "
                f"SELECT {', '.join(f'b.{c}' for c in data.column_names)}, {ids} "
                f"FROM _batch b{joins}")

    # -- alerts and the outbox (written by the jobs beside the loader) --------------------
    def record_alerts(self, alerts: Sequence[dict[str, Any]] | pa.Table, *, cap: int,
                      batch: int, more_kind: str, more_message: str, now: datetime
                      ) -> list[dict[str, Any]]:
        """Store the alerts not recorded before (per domain, kind, day).

        ``alerts`` (rows, or an Arrow table) have policy_domain, kind, day, message, details
        (JSON text) and rank (lower goes first).  At most ``cap`` alerts are kept per day;
        the rest of a day are counted by one ``more_kind`` alert whose message is
        ``more_message`` with ``{more}`` and ``{day}`` filled in (updated, not repeated, when
        later checks find more).  Returns the rows this call created, tagged with
        ``batch``.  Call inside a transaction.
        The alerts reach the database as array parameters, not as an Arrow table: building
        one from Python values loads pandas, a quarter of a second of every check.
        """
        if not isinstance(alerts, Sequence):
            alerts = alerts.to_pylist()
        if not alerts:
            return []
        candidates, values = _unnested(alerts, {
            "policy_domain": "VARCHAR", "kind": "VARCHAR", "day": "DATE", "message": "VARCHAR",
            "details": "VARCHAR", "rank": "BIGINT"})
        ranked = self.rows(f"""
            WITH have AS (
                SELECT day, count(*) AS n FROM alerts WHERE kind <> ? GROUP BY day
            )
            SELECT c.policy_domain, c.kind, c.day, c.message, c.details,
                   coalesce(h.n, 0)
                   + row_number() OVER (PARTITION BY c.day ORDER BY c.rank) AS n
            FROM ({candidates}) AS c LEFT JOIN have h ON h.day = c.day
            WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE a.policy_domain =
                              c.policy_domain AND a.kind = c.kind AND a.day = c.day)
        """, [more_kind, *values])
        chosen = [{k: r[k] for k in _ALERT_COLUMNS} for r in ranked if r["n"] <= cap]
        over: dict[Any, int] = {}
        for r in ranked:
            if r["n"] > cap:
                over[r["day"]] = over.get(r["day"], 0) + 1
        chosen += [{"policy_domain": "*", "kind": more_kind, "day": day,
                    "message": more_message.replace("{more}", f"{more:,}")
                                           .replace("{day}", day.isoformat()),
                    "details": json.dumps({"more_alerts": more, "cap": cap},
                                          separators=(",", ":"))}
                   for day, more in sorted(over.items())]
        if not chosen:
            return []
        chosen.sort(key=lambda r: (r["day"], r["policy_domain"], r["kind"]))
        first = self.next_pk("alerts", "alert_pk")
        for pk, r in enumerate(chosen, start=first):
            r["alert_pk"] = pk
        rows_sql, values = _unnested(chosen, {
            "alert_pk": "BIGINT", "policy_domain": "VARCHAR", "kind": "VARCHAR", "day": "DATE",
            "message": "VARCHAR", "details": "VARCHAR"})
        rows = self.rows(f"""
            INSERT INTO alerts (alert_pk, policy_domain, kind, day, message, details,
                                created_at, outbox_batch)
            SELECT alert_pk, policy_domain, kind, day, message, CAST(details AS JSON),
                   ?, ?
            FROM ({rows_sql}) AS c
            ON CONFLICT (policy_domain, kind, day)
            DO UPDATE SET message = excluded.message, details = excluded.details
            RETURNING policy_domain, kind, day, message, details, outbox_batch
        """, [now, batch, *values])  # in the order of the text
        rows.sort(key=lambda r: (r["day"], r["policy_domain"], r["kind"]))
        return [r for r in rows if r.pop("outbox_batch") == batch]  # not the updated ones

    def next_outbox_batch(self) -> int:
        """A new number grouping the deliveries of one event (an alert check, a summary)."""
        return int(self.value("SELECT nextval('outbox_batches')"))

    def enqueue(self, messages: pa.Table, *, now: datetime) -> None:
        """Add deliveries (batch, kind, channel, recipient, subject, body) due now."""
        if messages.num_rows == 0:
            return
        ordered = messages.append_column("_order", pa.array(range(messages.num_rows), pa.int64()))
        with self.scratch("_messages", ordered):
            self.execute("""
                INSERT INTO outbox (outbox_pk, batch, kind, channel, recipient, subject, body,
                                    created_at, status, attempts, next_try_at)
                SELECT (SELECT coalesce(max(outbox_pk), 0) FROM outbox)
                       + row_number() OVER (ORDER BY _order),
                       batch, kind, channel, recipient, subject, CAST(body AS JSON), $now,
                       'pending', 0, $now
                FROM _messages
            """, {"now": now})

    def claim_outbox(self, *, now: datetime, until: datetime, limit: int,
                     batches: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Take up to ``limit`` due deliveries: count the attempt and hide them from other
        workers until ``until`` (so a worker that dies mid-send only delays them).

        The outer WHERE repeats the due test: on PostgreSQL a worker that waited for
        another's claim of the same row sees it no longer due and leaves it."""
        params: dict[str, Any] = {"now": now, "until": until, "limit": limit}
        only = ""
        if batches is not None:
            if not batches:
                return []
            params |= {f"b{i}": b for i, b in enumerate(batches)}
            only = f"AND batch IN ({', '.join(f'$b{i}' for i in range(len(batches)))})"
        rows = self.rows(f"""
            UPDATE outbox SET attempts = attempts + 1, next_try_at = $until
            WHERE outbox_pk IN (SELECT outbox_pk FROM outbox
                                WHERE status = 'pending' AND next_try_at <= $now {only}
                                ORDER BY next_try_at, outbox_pk LIMIT $limit)
              AND status = 'pending' AND next_try_at <= $now
            RETURNING outbox_pk, batch, kind, channel, recipient, subject, body, attempts
        """, params)
        return sorted(rows, key=lambda r: r["outbox_pk"])

    def settle_outbox(self, results: pa.Table) -> None:
        """Record outcomes (outbox_pk, status, next_try_at, delivered_at, last_error) and
        carry them onto the alerts each delivery announced."""
        if results.num_rows == 0:
            return
        with self.scratch("_results", results):
            self.execute("""
                UPDATE outbox SET status = r.status, next_try_at = r.next_try_at,
                       delivered_at = r.delivered_at, last_error = r.last_error
                FROM _results r WHERE outbox.outbox_pk = r.outbox_pk
            """)
            self.execute("""
                UPDATE alerts SET delivered_at = s.done, delivery_error = s.errors
                FROM (SELECT batch,
                             CASE WHEN bool_and(status = 'delivered')
                                  THEN max(delivered_at) END AS done,
                             string_agg(channel || ' ' || recipient || ': ' || last_error, '; '
                                        ORDER BY outbox_pk)
                                 FILTER (WHERE status <> 'delivered' AND last_error IS NOT NULL)
                                 AS errors
                      FROM outbox
                      WHERE batch IN (SELECT o.batch FROM outbox o
                                      JOIN _results r ON o.outbox_pk = r.outbox_pk)
                      GROUP BY batch) s
                WHERE alerts.outbox_batch = s.batch
            """)

    def existing_quarantine(self, digests: Sequence[str]) -> set[str]:
        if not digests:
            return set()
        with self.scratch("_probe", pa.table({"sha256": list(digests)})):
            rows = self.rows("SELECT q.sha256 FROM quarantine q "
                             "JOIN _probe p ON p.sha256 = q.sha256")
        return {r["sha256"] for r in rows}

    # -- the portable query surface (every module outside store/ uses only these) ---------
    def execute(self, sql: str, params: Params = ()) -> None:
        """Run one statement whose result is not needed."""
        self._db.execute(sql, params)

    def value(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row (None when there is no row)."""
        _, rows = self._db.query(sql, params)
        return rows[0][0] if rows else None

    def arrow(self, sql: str, params: Params = ()) -> pa.Table:
        """A query's result as an Arrow table (for exports and copies)."""
        return self._db.arrow(sql, params)

    @contextmanager
    def one_thread(self) -> Iterator[None]:
        """Inside the block the embedded engine works on one thread (while worker processes
        have the other cores); a no-op on a database server."""
        with self._db.one_thread():
            yield

    @contextmanager
    def scratch(self, name: str, data: pa.Table) -> Iterator[None]:
        """Make an Arrow table queryable as ``name`` inside the block (on PostgreSQL a
        TEMP table filled with COPY)."""
        with self._db.scratch(name, data):
            yield

    # -- reading ----------------------------------------------------------------------------
    def rows(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        names, rows = self._db.query(sql, params)
        return [dict(zip(names, row, strict=True)) for row in rows]


_ALERT_COLUMNS = ("policy_domain", "kind", "day", "message", "details")


def _unnested(rows: Sequence[dict[str, Any]], columns: dict[str, str]) -> tuple[str, list[Any]]:
    """A SELECT of ``rows`` (the ``columns``: name and SQL type) from one array parameter per
    column, unnested side by side (both engines zip several unnests in one SELECT list)."""
    select = ", ".join(f"unnest(CAST(? AS {kind}[])) AS {name}"
                       for name, kind in columns.items())
    return f"SELECT {select}", [[r[name] for r in rows] for name in columns]


def exists(db: Path | str) -> bool:
    """Whether there is a database to open: a DuckDB file that exists, or any PostgreSQL URL
    (opening it tells whether the server answers and has tables)."""
    where = location(db)
    return isinstance(where, DatabaseUrl) or where.exists()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def now_utc() -> datetime:
    """The current time as naive UTC, the form timestamps are stored in."""
    return _now()
