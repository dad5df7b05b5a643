"""Copy a whole store into an empty one, on either engine (``tlswatch db copy``).

Every table is copied as it is (keys, raw reports, the migrations record), in batches of
rows read through the store's Arrow surface.  A half copy can never look complete: into
PostgreSQL everything is one transaction; a DuckDB destination is written as a new file
beside its final name and renamed into place once complete and verified.  After the copy
each table is read back from the destination and compared with the source by row count
and an order-free checksum of its rows.

The one thing the two engines do differently here is a sequence's position (the numbers
that group deliveries): read and set with each engine's own catalog, in ``_sequences``
and ``_set_sequence``.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tlswatch.dburl import is_url, location
from tlswatch.durable import fsync_path
from tlswatch.errors import StoreError, StoreRowError
from tlswatch.store import Store

BATCH_ROWS = 20_000
DUCKDB_MEMORY = "64MB"  # per DuckDB store while copying; larger tables spill to disk
_INTEGER = ("bigint", "integer", "smallint", "int8", "int4", "int2", "hugeint")


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # the engine's type name, lower case


@dataclass
class TableCopy:
    """What was copied into one table, and whether the destination matches the source."""

    table: str
    rows: int
    checksum: str
    verified: bool = False


def tables(store: Store) -> dict[str, list[Column]]:
    """The store's tables (but the migrations record) and their columns, in order."""
    rows = store.rows(
        "SELECT t.table_name AS t, c.column_name AS c, lower(c.data_type) AS k "
        "FROM information_schema.tables t JOIN information_schema.columns c "
        "ON c.table_schema = t.table_schema AND c.table_name = t.table_name "
        "WHERE t.table_schema = current_schema() AND t.table_type = 'BASE TABLE' "
        "AND t.table_name <> 'schema_migrations' "
        "ORDER BY t.table_name, c.ordinal_position")
    found: dict[str, list[Column]] = {}
    for row in rows:
        found.setdefault(row["t"], []).append(Column(row["c"], row["k"]))
    return found


def copy_store(src: Store, dst: Store, *, batch_rows: int = BATCH_ROWS,
               progress: Callable[[TableCopy], None] | None = None) -> list[TableCopy]:
    """Copy every row of ``src`` into the empty ``dst``, then verify each table; raise
    StoreError when something does not match.  A PostgreSQL ``dst`` is migrated, filled and
    verified in one transaction (open it with ``migrate=False``): a copy that fails leaves
    the database as it was, without tables that would make it look like an empty store."""
    # DuckDB holds a transaction's rows in memory, so a DuckDB destination (a file not yet
    # in its place, see copy_between) is migrated at open and commits batch by batch.
    whole = dst.transaction() if dst.engine == "postgresql" else nullcontext()
    with whole:
        if dst.engine == "postgresql":
            dst.migrate(within=True)
        layout = _same_layout(src, dst)
        _refuse_non_empty(dst, layout)
        copied = _copy_rows(src, dst, layout, batch_rows)
        _verify(src, dst, layout, copied, batch_rows, progress)
    return copied


def _copy_rows(src: Store, dst: Store, layout: dict[str, list[Column]],
               batch_rows: int) -> list[TableCopy]:
    copied: list[TableCopy] = []
    each = nullcontext if dst.engine == "postgresql" else dst.transaction
    with src.transaction():  # one snapshot of the source, also while it is written
        if src.engine == "postgresql" and src.read_only:
            src.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for table, columns in layout.items():
            digest = _Digest()
            for batch in _pages(src, table, columns, batch_rows):
                digest.add(batch)
                try:
                    with each():
                        dst.insert(table, batch)
                except StoreRowError as exc:
                    raise StoreError(
                        f"{dst.path}: {_which_row(table, columns, batch, exc.index)} of "
                        f"{src.path} cannot be copied: {exc.reason}. Nothing was copied "
                        "(the destination is left as it was)") from None
            copied.append(TableCopy(table, digest.rows, digest.hexdigest()))
        with each():
            for name, position in _sequences(src).items():
                _set_sequence(dst, name, position)
    return copied


def _which_row(table: str, columns: list[Column], batch: pa.Table, index: int) -> str:
    """``table reports, row report_pk 12``: the row by its key (or first column)."""
    key = _page_key(columns) or columns[0]
    if not 0 <= index < batch.num_rows:
        return f"table {table}"
    value = batch.column(key.name)[index].as_py()
    return f"table {table}, row {key.name} {value if isinstance(value, int) else repr(value)}"


def _verify(src: Store, dst: Store, layout: dict[str, list[Column]], copied: list[TableCopy],
            batch_rows: int, progress: Callable[[TableCopy], None] | None) -> None:
    """Read each table back from ``dst``: the same row count and checksum as copied."""
    for done in copied:
        again = _Digest()
        for batch in _pages(dst, done.table, layout[done.table], batch_rows):
            again.add(batch)
        done.verified = (again.rows, again.hexdigest()) == (done.rows, done.checksum)
        if progress is not None:
            progress(done)
        if not done.verified:
            raise StoreError(f"{dst.path}: table {done.table} does not match {src.path} after "
                             f"the copy ({again.rows:,} rows read back, {done.rows:,} copied)")
    if _sequences(dst) != _sequences(src):
        raise StoreError(f"{dst.path}: the sequence positions differ from {src.path} after "
                         "the copy")


def _same_layout(src: Store, dst: Store) -> dict[str, list[Column]]:
    """The tables to copy; the two stores must have the same migrations and tables."""
    done = {r["name"] for r in src.rows("SELECT name FROM schema_migrations")}
    there = {r["name"] for r in dst.rows("SELECT name FROM schema_migrations")}
    if done != there:
        raise StoreError(f"{src.path} and {dst.path} have different migrations "
                         f"({sorted(done ^ there)}); run 'tlswatch db upgrade' on the older "
                         "one first")
    layout, other = tables(src), tables(dst)
    if sorted(layout) != sorted(other) or any(
            [c.name for c in layout[t]] != [c.name for c in other[t]] for t in layout):
        raise StoreError(f"{src.path} and {dst.path} have different tables or columns "
                         "although their migrations match; the copy is not made")
    return layout


def _refuse_non_empty(dst: Store, layout: dict[str, list[Column]]) -> None:
    for table in layout:
        rows = int(dst.value(f"SELECT count(*) FROM {table}"))
        if rows:
            raise StoreError(f"{dst.path}: is not empty ({table} has {rows:,} rows); "
                             "'db copy' only writes into an empty store, so that nothing "
                             "is mixed or overwritten. Name a new file or database.")


def _page_key(columns: list[Column]) -> Column | None:
    """The column batches are cut along: a row key, else the day (or month) of a rollup,
    else a numeric id, else a day, else none (a small table read whole).  Rollups (the
    tables with a ``domain_id``) are cut by day, then by ranges of domain ids, so the copy
    keeps them in day and domain order, as reads of a few days expect."""
    numeric = [c for c in columns if c.kind in _INTEGER]
    dated = next((c for c in columns if c.name in ("day", "month") and c.kind == "date"), None)
    rollup = any(c.name == "domain_id" for c in columns)  # cut by day, then domain ranges
    return (next((c for c in numeric if c.name.endswith("_pk")), None)
            or (dated if rollup else None)
            or next((c for c in numeric if c.name.endswith("_id")), None)
            or dated)


def _pages(store: Store, table: str, columns: list[Column], batch: int) -> Iterator[pa.Table]:
    """The table's rows in bounded batches (by ranges of the page key; a rollup's days by
    ranges of their domain ids, in order)."""
    names = ", ".join(c.name for c in columns)
    key = _page_key(columns)
    if key is None:
        yield store.arrow(f"SELECT {names} FROM {table}")
        return
    if key.kind != "date":
        yield from _ranges(store, f"SELECT {names} FROM {table}", key.name, batch)
        return
    days = [r["d"] for r in store.rows(f"SELECT DISTINCT {key.name} AS d FROM {table} "
                                       f"ORDER BY {key.name}")]
    domain = any(c.name == "domain_id" for c in columns)
    for day in days:
        if domain:
            yield from _ranges(store, f"SELECT {names} FROM {table} WHERE {key.name} = ?",
                               "domain_id", batch, [day])
        else:
            yield store.arrow(f"SELECT {names} FROM {table} WHERE {key.name} = ?", [day])
    nulls = store.arrow(f"SELECT {names} FROM {table} WHERE {key.name} IS NULL")
    if nulls.num_rows:
        yield nulls


def _ranges(store: Store, select: str, key: str, batch: int,
            params: list[Any] | None = None) -> Iterator[pa.Table]:
    """The rows of ``select`` (a SELECT with a WHERE clause or none) by ranges of the
    numeric ``key`` of about ``batch`` rows each, in key order, then those without one."""
    params = params or []
    joined = " AND " if " WHERE " in select else " WHERE "
    bounds = store.rows(f"SELECT min({key}) AS lo, max({key}) AS hi, count(*) AS n "
                        f"FROM ({select}) AS s", params)[0]
    if not bounds["n"]:
        return
    lo, hi, n = int(bounds["lo"] or 0), int(bounds["hi"] or 0), int(bounds["n"])
    step = max(1, math.ceil((hi - lo + 1) * batch / n))
    for start in range(lo, hi + 1, step):
        page = store.arrow(f"{select}{joined}{key} >= ? AND {key} < ? ORDER BY {key}",
                           [*params, start, start + step])
        if page.num_rows:
            yield page
    nulls = store.arrow(f"{select}{joined}{key} IS NULL", params)
    if nulls.num_rows:
        yield nulls


class _Digest:
    """A row count and an order-free checksum: the sum (mod 2**64) of each row's hash,
    computed column-wise by pandas (lists joined to text first), so both engines' Arrow
    results of the same rows give the same figure."""

    def __init__(self) -> None:
        self.rows = 0
        self.total = 0

    def add(self, batch: pa.Table) -> None:
        if not batch.num_rows:
            return
        columns = {}
        for name, column in zip(batch.column_names, batch.columns, strict=True):
            if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
                column = pc.binary_join(pc.cast(column, pa.list_(pa.string())), "\x1f")
            elif pa.types.is_integer(column.type) or pa.types.is_decimal(column.type):
                column = pc.cast(column, pa.string())  # DuckDB's DECIMAL(38,0) is an int
            columns[name] = column
        frame = pa.table(columns).to_pandas()
        hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        self.total = (self.total + int(hashes.sum(dtype="uint64"))) % 2**64
        self.rows += batch.num_rows

    def hexdigest(self) -> str:
        return f"{self.total:016x}"


def _sequences(store: Store) -> dict[str, int | None]:
    """Each sequence's last number handed out (None when it has handed out none)."""
    if store.engine == "duckdb":
        rows = store.rows("SELECT sequence_name AS name, last_value AS last "
                          "FROM duckdb_sequences() WHERE schema_name = current_schema() "
                          "ORDER BY sequence_name")
        return {r["name"]: r["last"] for r in rows}
    names = [r["n"] for r in store.rows(
        "SELECT sequence_name AS n FROM information_schema.sequences "
        "WHERE sequence_schema = current_schema() ORDER BY sequence_name")]
    found: dict[str, int | None] = {}
    for name in names:
        row = store.rows(f"SELECT last_value AS last, is_called AS called FROM {name}")[0]
        found[name] = int(row["last"]) if row["called"] else None
    return found


def _set_sequence(store: Store, name: str, last: int | None) -> None:
    """Make ``name`` continue after ``last`` (as if it had handed out ``last``)."""
    if last is None:
        return
    if store.engine == "duckdb":  # DuckDB cannot move a sequence: make it anew
        store.execute(f"DROP SEQUENCE {name}")
        store.execute(f"CREATE SEQUENCE {name} START {int(last)}")
        store.execute(f"SELECT nextval('{name}')")
    else:
        store.execute("SELECT setval(?, ?)", [name, int(last)])


def copy_between(src: str | Path, dst: str | Path, *, lock_timeout: float = 10.0,
                 progress: Callable[[TableCopy], None] | None = None) -> list[TableCopy]:
    """Open the source read-only and the (new, empty) destination, and copy."""
    if str(location(src)) == str(location(dst)) or (
            not is_url(src) and not is_url(dst) and Path(src).resolve() == Path(dst).resolve()):
        raise StoreError(f"{location(src)}: the source and the destination are the same store")
    if is_url(dst):
        with (Store.open(src, read_only=True, lock_timeout=lock_timeout) as source,
              Store.open(dst, lock_timeout=lock_timeout, migrate=False) as target):
            _limit_memory(source)
            return copy_store(source, target, progress=progress)
    final = Path(dst)
    if not final.parent.is_dir():
        raise StoreError(f"{final}: the folder {final.parent} does not exist; 'db copy' does "
                         "not create folders: create it (with the owner and mode the store "
                         "needs) and copy again")
    try:
        return _copy_to_file(src, final, lock_timeout=lock_timeout, progress=progress)
    except OSError as exc:
        raise StoreError(f"{final}: cannot write the copy here: "
                         f"{exc.strerror or exc}") from None


def _copy_to_file(src: str | Path, final: Path, *, lock_timeout: float,
                  progress: Callable[[TableCopy], None] | None) -> list[TableCopy]:
    """A DuckDB destination is written beside its final name and put in place when complete
    and verified: a copy cut short leaves no file that looks like a store."""
    if final.exists():
        with Store.open(final, lock_timeout=lock_timeout) as target:
            _refuse_non_empty(target, tables(target))
    part = final.with_name(f"{final.name}.copying")
    leftovers = (part, part.with_name(part.name + ".wal"))
    _remove(leftovers)
    try:
        with (Store.open(src, read_only=True, lock_timeout=lock_timeout) as source,
              Store.open(part, lock_timeout=lock_timeout) as target):
            _limit_memory(source)
            _limit_memory(target)
            done = copy_store(source, target, progress=progress)
            target.execute("CHECKPOINT")
        fsync_path(part)
        os.replace(part, final)
        fsync_path(final.parent)
    finally:
        with contextlib.suppress(OSError):  # the error that stopped the copy is the news
            _remove(leftovers)
    return done


def _remove(paths: tuple[Path, ...]) -> None:
    for path in paths:
        if path.exists():
            path.unlink()


def _limit_memory(store: Store) -> None:
    if store.engine == "duckdb":  # DuckDB would otherwise cache up to 80% of RAM
        store.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
