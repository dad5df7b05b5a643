"""The two engines behind ``Store``: DuckDB (a file, the default) and PostgreSQL (a URL).

Every query is written once, in SQL both accept (``?`` and ``$name`` placeholders).  What
differs lives here and only here: connecting, the placeholder syntax of psycopg, making an
Arrow table queryable (``scratch``), bulk appends, which errors mean "locked" or "cannot
write now", and the Python types of results (integral decimals are ints, JSON is text,
arrays are lists, timestamps naive UTC, on both engines).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from tlswatch.dburl import DatabaseUrl
from tlswatch.deferred import deferred
from tlswatch.errors import StoreError, StoreLockedError, StoreRowError, StoreWriteError

# psycopg (PostgreSQL only) and pyarrow (batch writes, scratch tables) are imported when
# first used: a read-only command on a DuckDB file never needs them.
if TYPE_CHECKING:
    import psycopg
    import pyarrow as pa
    from psycopg import errors as pgerrors
    from psycopg import sql as pgsql
    from psycopg.types import string as pgstring
else:
    psycopg = deferred("psycopg")
    pa = deferred("pyarrow")
    pgerrors = deferred("psycopg.errors")
    pgsql = deferred("psycopg.sql")
    pgstring = deferred("psycopg.types.string")

Params = Sequence[Any] | dict[str, Any]

# Writing transactions on PostgreSQL hold this transaction-scoped advisory lock (any
# 64-bit number; these are the bytes of "tlsw"), see ``Postgres.begin``.
WRITE_LOCK = 0x746C7377


def _plain(value: Any) -> Any:
    """An integral decimal as int; an aware timestamp as naive UTC."""
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _whole(value: Any) -> Any:
    """A DECIMAL(p,0) value (integral by its type) as int."""
    return None if value is None else int(value)


def _normalise(rows: list[tuple[Any, ...]], columns: list[int],
               whole: Sequence[int] = ()) -> list[tuple[Any, ...]]:
    """The same Python types from both engines: integral decimals (sums cast to
    DECIMAL(38,0), PostgreSQL's numeric sums) as int, timestamps with a time zone (now())
    as naive UTC.  ``columns``: the positions of the result's decimal and zoned columns;
    ``whole``: those of them whose type has no fraction (converted column by column: a
    summary's hundreds of thousands of sums)."""
    if not columns or not rows:
        return rows
    by_column = list(zip(*rows, strict=True))
    for i in columns:
        by_column[i] = tuple(map(_whole if i in whole else _plain, by_column[i]))
    return list(zip(*by_column, strict=True))


# Each commit is durable in the write-ahead log; folding the log into the file (a
# checkpoint) costs about half a second on a store of millions of rows whatever was
# written, and happens on close anyway.  At DuckDB's 16 MB default a long ingest paid it
# every three batches; at 64 MB once per 25,000 reports or so (a larger log holds more
# memory: 256 MB cost 30 MB more at the peak of a 20,000-report ingest).
_Config = dict[str, str | bool | int | float | list[str]]
_WRITING: _Config = {"checkpoint_threshold": "64MB"}
_READING: _Config = {}


class DuckDB:
    """One DuckDB database file."""

    name = "duckdb"
    Error: type[Exception] = duckdb.Error

    def __init__(self, con: duckdb.DuckDBPyConnection, where: Path) -> None:
        self.con = con
        self.where = where

    @classmethod
    def connect(cls, path: Path, *, read_only: bool, lock_timeout: float) -> DuckDB:
        """Open the file, waiting up to ``lock_timeout`` for another process's lock (DuckDB
        lets one process write a file at a time; its message names the PID in the way)."""
        if read_only and not path.exists():
            raise StoreError(f"{path}: no database here yet; load reports first with "
                             f"'tlswatch --db {path} ingest PATH'")
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + lock_timeout
        delay = 0.02
        while True:
            try:
                return cls(duckdb.connect(str(path), read_only=read_only,
                                          config=_READING if read_only else _WRITING), path)
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

    def query(self, sql: str, params: Params) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self.con.execute(sql, params)
        described = cur.description or []
        special = [i for i, d in enumerate(described)
                   if str(d[1]).startswith(("DECIMAL", "TIMESTAMP WITH TIME ZONE"))]
        whole = [i for i in special if str(described[i][1]).endswith(",0)")]
        return [d[0] for d in described], _normalise(cur.fetchall(), special, whole)

    def execute(self, sql: str, params: Params) -> None:
        self.con.execute(sql, params).fetchall()

    def script(self, sql: str) -> None:
        self.con.execute(sql).fetchall()

    def arrow(self, sql: str, params: Params) -> pa.Table:
        return self.con.sql(sql, params=params).to_arrow_table()

    @contextmanager
    def scratch(self, name: str, data: pa.Table) -> Iterator[None]:
        self.con.register(name, data)
        try:
            yield
        finally:
            self.con.unregister(name)

    @contextmanager
    def one_thread(self) -> Iterator[None]:
        threads = self.con.execute("SELECT current_setting('threads')").fetchone()
        self.con.execute("SET threads = 1")
        try:
            yield
        finally:
            self.con.execute(f"SET threads = {int(threads[0]) if threads else 1}")

    def insert(self, table: str, data: pa.Table) -> None:
        with self.scratch("_batch", data):
            columns = ", ".join(data.column_names)
            self.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM _batch", ())

    def begin(self, *, write: bool) -> None:
        self.con.begin()

    def commit(self) -> None:
        try:
            self.con.commit()
        except duckdb.Error as exc:  # values are checked as written: a commit fails on the file
            raise StoreWriteError(f"{self.where}: cannot write the database now: {exc}") from exc

    def rollback(self) -> None:
        self.con.rollback()

    def failure(self, exc: BaseException) -> StoreError | None:
        """The named error a failed statement in a transaction stands for, if any."""
        if isinstance(exc, duckdb.IOException):  # the file failed, not the values (disk full)
            return StoreWriteError(f"{self.where}: cannot write the database now: {exc}")
        return None

    def close(self) -> None:
        self.con.close()


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


# -- PostgreSQL ------------------------------------------------------------------------------
_TOKENS = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|::|\?|\$[A-Za-z_]\w*|%""")


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """``?`` and ``$name`` placeholders as psycopg's ``%s`` and ``%(name)s``; a literal
    ``%`` doubled (psycopg reads % everywhere, string literals included).  String literals,
    quoted names, comments and ``::`` casts are kept as written."""
    def one(match: re.Match[str]) -> str:
        token = match.group()
        if token == "?":
            return "%s"
        if token.startswith("$"):
            return f"%({token[1:]})s"
        return token.replace("%", "%%")
    return _TOKENS.sub(one, sql)


def _arrow_to_pg() -> list[tuple[Any, str]]:
    return [
        (pa.types.is_boolean, "BOOLEAN"), (pa.types.is_int8, "SMALLINT"),
        (pa.types.is_int16, "SMALLINT"), (pa.types.is_int32, "INTEGER"),
        (pa.types.is_int64, "BIGINT"), (pa.types.is_uint8, "SMALLINT"),
        (pa.types.is_uint16, "INTEGER"), (pa.types.is_uint32, "BIGINT"),
        (pa.types.is_uint64, "NUMERIC"), (pa.types.is_floating, "DOUBLE PRECISION"),
        (pa.types.is_decimal, "NUMERIC"), (pa.types.is_string, "VARCHAR"),
        (pa.types.is_large_string, "VARCHAR"), (pa.types.is_binary, "BYTEA"),
        (pa.types.is_large_binary, "BYTEA"), (pa.types.is_date, "DATE"),
        (pa.types.is_timestamp, "TIMESTAMP"), (pa.types.is_null, "VARCHAR"),
    ]


def pg_type(kind: pa.DataType) -> str:
    """The PostgreSQL column type holding an Arrow type (lists become arrays)."""
    if pa.types.is_dictionary(kind):
        return pg_type(kind.value_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pg_type(kind.value_type) + "[]"
    for test, name in _arrow_to_pg():
        if test(kind):
            return name
    raise StoreError(f"no PostgreSQL column type for the Arrow type {kind}")


@functools.cache
def _pg_to_arrow() -> dict[str, pa.DataType]:
    return {"int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(),
            "bool": pa.bool_(), "date": pa.date32(), "timestamp": pa.timestamp("us"),
            "timestamptz": pa.timestamp("us"),
            "bytea": pa.binary(), "float4": pa.float32(), "float8": pa.float64()}


_TEXT = ("text", "varchar", "json", "jsonb", "bpchar", "name")


class Postgres:
    """One connection to a PostgreSQL database, in autocommit mode between transactions."""

    name = "postgresql"

    @property
    def Error(self) -> type[Exception]:  # an attribute of DuckDB's
        return psycopg.Error

    def __init__(self, con: psycopg.Connection[tuple[Any, ...]], where: DatabaseUrl) -> None:
        self.con = con
        self.where = where

    @classmethod
    def connect(cls, url: DatabaseUrl, *, read_only: bool, lock_timeout: float) -> Postgres:
        """Connect; a server that is down or unreachable is a transient error (the spool
        keeps reports until it is back), a refused login or a missing database is not."""
        try:
            # No server-side prepared statements: a scratch table of the same name may
            # come back with other columns, which a prepared plan would not survive.
            con = psycopg.connect(url.secret, autocommit=True, connect_timeout=10,
                                  application_name="tlswatch", prepare_threshold=None)
        except psycopg.Error as exc:
            reason = _clean(exc, url)
            if _refused(reason):
                raise StoreError(f"{url}: PostgreSQL refused the connection: {reason}") from None
            if _away(reason):
                raise StoreWriteError(f"{url}: cannot reach PostgreSQL now: {reason}") from None
            raise StoreError(f"{url}: cannot connect to PostgreSQL with this URL: {reason}. "
                             "Correct the URL (a setting: retrying will not help)") from None
        for kind in ("json", "jsonb"):  # JSON columns read as text, as on DuckDB
            con.adapters.register_loader(kind, pgstring.TextLoader)
        # Timestamps are naive UTC; lock waits end after lock_timeout like DuckDB's.
        con.execute("SET TIME ZONE 'UTC'")
        con.execute(pgsql.SQL("SET lock_timeout = {}").format(
            pgsql.Literal(f"{max(1, round(lock_timeout * 1000))}ms")))
        if read_only:
            con.execute("SET default_transaction_read_only = on")
        return cls(con, url)

    def _run(self, sql: str, params: Params) -> psycopg.Cursor[tuple[Any, ...]]:
        try:
            return self.con.execute(translate(sql), params)
        except psycopg.OperationalError as exc:
            raise self.failure(exc) or exc from exc

    def query(self, sql: str, params: Params) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self._run(sql, params)
        described = cur.description or []
        rows = _normalise(cur.fetchall(), _special(described)) if described else []
        return [d.name for d in described], rows

    def execute(self, sql: str, params: Params) -> None:
        self._run(sql, params)

    def script(self, sql: str) -> None:
        """Several statements without parameters (a migration)."""
        try:
            self.con.execute(sql.encode())
        except psycopg.OperationalError as exc:
            raise self.failure(exc) or exc from exc

    def arrow(self, sql: str, params: Params) -> pa.Table:
        cur = self._run(sql, params)
        described = cur.description or []
        rows = _normalise(cur.fetchall(), _special(described))
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in described]
        return pa.table({d.name: pa.array(list(values), self._arrow_type(d.type_code))
                         for d, values in zip(described, columns, strict=True)})

    def _arrow_type(self, oid: int) -> pa.DataType | None:
        """The Arrow type of a result column; None lets Arrow choose (numeric sums, which
        are integral, become int64)."""
        info = self.con.adapters.types.get(oid)
        name = info.name if info is not None else ""
        kind = pa.string() if name in _TEXT else _pg_to_arrow().get(name)
        if info is not None and oid == info.array_oid:
            return pa.list_(kind) if kind is not None else None
        return kind

    @contextmanager
    def one_thread(self) -> Iterator[None]:
        yield  # the server's work is on the server's cores

    @contextmanager
    def scratch(self, name: str, data: pa.Table) -> Iterator[None]:
        """A TEMP table of the Arrow table's columns, filled with COPY, dropped after."""
        columns = pgsql.SQL(", ").join(
            pgsql.SQL("{} {}").format(pgsql.Identifier(f.name), pgsql.SQL(pg_type(f.type)))
            for f in data.schema)
        self._run_sql(pgsql.SQL("CREATE TEMP TABLE {} ({})").format(
            pgsql.Identifier(name), columns))
        try:
            self.insert(name, data)
            yield
        finally:
            if not self.con.closed and self.con.info.transaction_status in (
                    psycopg.pq.TransactionStatus.IDLE, psycopg.pq.TransactionStatus.INTRANS):
                self._run_sql(pgsql.SQL("DROP TABLE IF EXISTS {}").format(
                    pgsql.Identifier(name)))

    def insert(self, table: str, data: pa.Table) -> None:
        """Append with COPY (one round trip for the batch)."""
        if data.num_rows == 0:
            return
        statement = pgsql.SQL("COPY {} ({}) FROM STDIN").format(
            pgsql.Identifier(table),
            pgsql.SQL(", ").join(pgsql.Identifier(c) for c in data.column_names))
        columns = [column.to_pylist() for column in data.columns]
        written = 0  # rows handed to COPY: a row psycopg cannot send is the next one
        try:
            with self.con.cursor() as cur, cur.copy(statement) as copy:
                for row in zip(*columns, strict=True):
                    copy.write_row(row)
                    written += 1
        except psycopg.OperationalError as exc:
            raise self.failure(exc) or exc from exc
        except (psycopg.DataError, psycopg.IntegrityError) as exc:  # a row it cannot hold
            line = re.search(r"\bline (\d+)", exc.diag.context or "")
            raise StoreRowError(table, int(line.group(1)) - 1 if line else written,
                                _clean(exc, self.where)) from exc

    def _run_sql(self, statement: pgsql.Composed) -> None:
        try:
            self.con.execute(statement)
        except psycopg.OperationalError as exc:
            raise self.failure(exc) or exc from exc

    def begin(self, *, write: bool) -> None:
        """Start a transaction; a writing one first takes the one write lock.

        Several processes, on several machines, may write one database.  The loader's
        keys are max()+1, ``names`` numbers new strings after the largest id, and a report
        is checked for duplicates before it is inserted: all three are only right if no
        other writer does the same in between.  A transaction-scoped advisory lock
        (``pg_advisory_xact_lock``) makes writing transactions take turns, as DuckDB's
        file lock does; PostgreSQL releases it at commit or rollback, even when a process
        dies.  Readers never wait for it.  The wait is bounded by ``lock_timeout``."""
        self._run("BEGIN", ())
        if write:
            try:
                self._run("SELECT pg_advisory_xact_lock(?)", [WRITE_LOCK])
            except BaseException:
                self.rollback()  # the connection stays usable after a lock timeout
                raise

    def commit(self) -> None:
        try:
            self.con.execute("COMMIT")
        except psycopg.Error as exc:
            raise self.failure(exc) or StoreWriteError(
                f"{self.where}: cannot write the database now: {_clean(exc, self.where)}"
            ) from exc

    def rollback(self) -> None:
        if self.con.closed or self.con.broken:
            return
        self.con.execute("ROLLBACK")

    def failure(self, exc: BaseException) -> StoreError | None:
        """A lock wait that timed out, a conflict between writers, or a server that went
        away (or is shutting down, or full) is transient: the same work succeeds later."""
        if isinstance(exc, pgerrors.LockNotAvailable | pgerrors.TransactionRollback):
            return StoreLockedError(
                f"{self.where}: the database is busy with another writer and did not let go "
                f"in time ({_clean(exc, self.where)}); retry when it is done.")
        if isinstance(exc, psycopg.OperationalError):
            return StoreWriteError(f"{self.where}: cannot write the database now: "
                                   f"{_clean(exc, self.where)}")
        return None

    def close(self) -> None:
        self.con.close()


SPECIAL = (1700, 1184)  # PostgreSQL's type oids of numeric and timestamptz


def _special(described: Sequence[psycopg.Column]) -> list[int]:
    return [i for i, d in enumerate(described) if d.type_code in SPECIAL]


def _clean(exc: BaseException, url: DatabaseUrl) -> str:
    """psycopg's message on one line, without the password: the URL is shown redacted, and
    a quoted piece of the URL that the redacted form does not show (libpq quotes the token
    it could not parse, a bad percent escape in the password say) as "***"."""
    text = " ".join(str(exc).split()).replace(url.secret, str(url))
    shown = str(url)

    def hide(match: re.Match[str]) -> str:
        inner = match.group(2)
        if inner and inner not in shown and inner in url.secret:
            return f"{match.group(1)}***{match.group(1)}"
        return match.group(0)
    return _QUOTED.sub(hide, text)


_QUOTED = re.compile(r"""(["'])(.*?)\1""")


def _refused(reason: str) -> bool:
    """The server answered and said no: retrying will not help."""
    reason = reason.lower()
    return any(words in reason for words in (
        "authentication failed", "does not exist", "no password supplied",
        "no pg_hba.conf entry", "permission denied", "password authentication"))


def _away(reason: str) -> bool:
    """The server is not there now (down, starting, shutting down, full, unreachable): the
    same connection succeeds later.  Anything else (a malformed URL, an unknown option or
    value) is a setting to correct."""
    reason = reason.lower()
    return any(words in reason for words in (
        "connection refused", "no such file or directory", "timeout expired", "timed out",
        "the database system is", "too many clients", "remaining connection slots",
        "server closed the connection", "connection reset", "no route to host",
        "network is unreachable", "temporary failure in name resolution",
        "could not receive data", "could not send data", "cannot connect now"))
