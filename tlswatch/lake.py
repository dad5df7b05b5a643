"""``tlswatch export lake``: the store's tables as Parquet files partitioned by day.

The layout is Hive's, which DuckDB, pandas/pyarrow, Spark and Trino read as one dataset::

    DIR/failure_details/day=2026-11-25/part-0.parquet
    DIR/policies/day=2026-11-25/part-0.parquet
    DIR/names/part-0.parquet                  (tables without a day: written whole)
    DIR/_tlswatch_lake.json                   (what each day's file holds)

The day is in the folder name only, as Hive partitioning expects.  A later run writes the
days that are new, and rewrites a day whose rows changed in the store since (a late
report, a replaced duplicate): the manifest keeps each day's row count and the sums of its
integer columns, and the store's figures are compared with it.  Days the store no longer
has (pruned failure details) stay in the lake: it is also the archive.  Raw report bytes,
quarantined inputs and the delivery outbox are not exported.

Every file is written beside its final name, fsync'd and renamed over it, so a reader sees
the old file or the new one, never half of one.  Folder names come only from table names
(of our own schema) and dates, never from report content.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tlswatch.durable import fsync_path
from tlswatch.errors import StoreError, TlsWatchError
from tlswatch.store import Store
from tlswatch.store.copy import Column, tables

MANIFEST = "_tlswatch_lake.json"


class ExportError(TlsWatchError):
    """The lake could not be written where asked."""

# Not exported: raw bytes (report_raw, quarantine) and internal delivery state (outbox).
SKIPPED = ("report_raw", "quarantine", "outbox")
WHOLE = ("names", "retention", "check_runs", "check_findings")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_INTEGER = ("bigint", "integer", "smallint", "int8", "int4", "int2", "hugeint")


@dataclass
class LakeTable:
    table: str
    days_written: int = 0
    days_unchanged: int = 0
    rows_written: int = 0


@dataclass
class LakeRun:
    out: Path
    tables: list[LakeTable] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "tables": [vars(t) for t in self.tables]}


def export_lake(store: Store, out: Path) -> LakeRun:
    """Write the new and changed days of every exported table under ``out``."""
    try:
        return _export(store, out)
    except OSError as exc:  # a file in the way, no rights, a full disk
        raise ExportError(f"{out}: lake not written: {exc.strerror or exc} "
                          f"({exc.filename or out}); the days written before are kept, and "
                          "the next run writes the rest") from None


def _export(store: Store, out: Path) -> LakeRun:
    out.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out)
    run = LakeRun(out)
    for table, columns in tables(store).items():
        if table in SKIPPED or not _NAME.match(table):
            continue
        if any(c.name == "day" and c.kind == "date" for c in columns):
            run.tables.append(_export_days(store, out, table, columns,
                                           manifest.setdefault(table, {})))
        elif table in WHOLE:
            run.tables.append(_export_whole(store, out, table, columns))
        _write_json(out / MANIFEST, manifest)  # after each table: a crash redoes at most one
    return run


def _export_days(store: Store, out: Path, table: str, columns: list[Column],
                 known: dict[str, Any]) -> LakeTable:
    done = LakeTable(table)
    names = [c.name for c in columns if c.name != "day"]
    sums = [c.name for c in columns if c.kind in _INTEGER]
    figures = ", ".join(f"sum({c})::DECIMAL(38,0) AS s_{c}" for c in sums)
    rows = store.rows(f"SELECT day, count(*) AS n{', ' if figures else ''}{figures} "
                      f"FROM {table} WHERE day IS NOT NULL GROUP BY day ORDER BY day")
    order = _order(c for c in columns if c.name != "day")
    for row in rows:
        day: date = row.pop("day")
        stamp = {k: row[k] for k in sorted(row)}
        if known.get(day.isoformat()) == stamp:
            done.days_unchanged += 1
            continue
        data = _portable(store.arrow(f"SELECT {', '.join(names)} FROM {table} WHERE day = ? "
                                     f"ORDER BY {order}", [day]), f"{table}, day {day}")
        _write_parquet(out / table / f"day={day.isoformat()}" / "part-0.parquet", data)
        known[day.isoformat()] = stamp
        done.days_written += 1
        done.rows_written += data.num_rows
    return done


def _export_whole(store: Store, out: Path, table: str, columns: list[Column]) -> LakeTable:
    names = ", ".join(c.name for c in columns)
    data = _portable(store.arrow(f"SELECT {names} FROM {table} ORDER BY {_order(columns)}"),
                     table)
    _write_parquet(out / table / "part-0.parquet", data)
    return LakeTable(table, days_written=0, rows_written=data.num_rows)


def _portable(data: pa.Table, where: str) -> pa.Table:
    """``data`` with the same Arrow types from either engine: an integral decimal (DuckDB's
    sums of session counts, DECIMAL(38,0)) becomes int64, as PostgreSQL's rows already are,
    so one dataset never mixes the two.  Counts are bounded at ingest, far below 2**63; a
    value that does not fit is an ExportError, never a wrapped number."""
    for i, column in enumerate(data.schema):
        if pa.types.is_decimal(column.type) and column.type.scale == 0:
            try:
                cast = data.column(i).cast(pa.int64(), safe=True)
            except pa.ArrowInvalid:
                raise ExportError(f"{where}: a value of column {column.name} does not fit a "
                                  "64-bit integer; lake not written") from None
            data = data.set_column(i, pa.field(column.name, pa.int64(), column.nullable), cast)
    return data


def _order(columns: Iterable[Column]) -> str:
    """Every column but JSON ones (PostgreSQL cannot order JSON): a stable file."""
    return ", ".join(c.name for c in columns if c.kind not in ("json", "jsonb"))


def _write_parquet(path: Path, data: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(data, part, compression="zstd")
        fsync_path(part)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    fsync_path(path.parent)


def _read_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST
    if not path.exists():
        return {}
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: cannot read the lake's manifest ({exc}); move the folder "
                         "away or delete the manifest to write every day again") from exc
    if not isinstance(found, dict):
        raise StoreError(f"{path}: the lake's manifest is not a JSON object")
    return found


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    part = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    part.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str))
    fsync_path(part)
    os.replace(part, path)
