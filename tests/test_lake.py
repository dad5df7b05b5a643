"""`tlswatch export lake`: Parquet by day that DuckDB and pyarrow read as one dataset."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.conftest import VALID, Cli, detail, make_report, policy, write_json
from tlswatch.store import Store

DAY = pa.schema([("day", pa.date32())])


def store_rows(db: Path | str, table: str) -> list[tuple[Any, ...]]:
    with Store.open(db, read_only=True) as store:
        rows = store.rows(f"SELECT * FROM {table}")
    return sorted((tuple(r.values()) for r in rows), key=repr)


def duckdb_rows(lake: Path, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    got = duckdb.sql(f"SELECT {', '.join(columns)} FROM read_parquet("
                     f"'{lake}/{table}/**/*.parquet', hive_partitioning = true)").fetchall()
    return sorted(got, key=repr)


def pyarrow_rows(lake: Path, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    data = ds.dataset(lake / table, format="parquet",
                      partitioning=ds.partitioning(DAY, flavor="hive")).to_table()
    return sorted(zip(*(data.column(c).to_pylist() for c in columns), strict=True), key=repr)


def columns(db: Path | str, table: str) -> list[str]:
    with Store.open(db, read_only=True) as store:
        return [str(k) for k in store.rows(f"SELECT * FROM {table} LIMIT 1")[0]]


def test_lake_reads_back_as_the_store_with_duckdb_and_pyarrow(cli: Cli, db: Path | str,
                                                              tmp_path: Path) -> None:
    cli("ingest", str(VALID))
    lake = tmp_path / "lake"
    run = cli.json("export", "lake", "--out", str(lake))
    written = {t["table"]: t for t in run["tables"]}
    assert written["failure_details"]["days_written"] >= 2
    for table in ("reports", "policies", "failure_details"):
        names = columns(db, table)
        expected = store_rows(db, table)
        assert duckdb_rows(lake, table, names) == expected, table
        assert pyarrow_rows(lake, table, names) == expected, table
    names_file = duckdb.sql(f"SELECT * FROM '{lake}/names/part-0.parquet'").fetchall()
    assert sorted(names_file, key=repr) == store_rows(db, "names")
    # Only table folders and day folders: nothing named after report content.
    for path in lake.rglob("*"):
        part = path.relative_to(lake).parts
        assert re.fullmatch(r"[a-z_]+(\.json)?", part[0]), path
        if len(part) == 3:
            assert re.fullmatch(r"day=\d{4}-\d\d-\d\d", part[1]), path


def test_later_runs_write_only_new_and_changed_days(cli: Cli, db: Path | str,
                                                    tmp_path: Path) -> None:
    inbox, lake = tmp_path / "in", tmp_path / "lake"
    inbox.mkdir()
    write_json(inbox / "a.json", make_report(rid="a", day="2026-11-20", policies=[
        policy("example.com", 5, 2, [detail("certificate-expired", 2)])]))
    cli("ingest", str(inbox / "a.json"))
    cli.json("export", "lake", "--out", str(lake))
    old = lake / "failure_details" / "day=2026-11-20" / "part-0.parquet"
    old_inode = old.stat().st_ino

    again = {t["table"]: t for t in cli.json("export", "lake", "--out", str(lake))["tables"]}
    assert again["failure_details"]["days_written"] == 0
    assert again["failure_details"]["days_unchanged"] == 1

    write_json(inbox / "b.json", make_report(rid="b", day="2026-11-21", policies=[
        policy("example.com", 1, 3, [detail("dane-required", 3)])]))
    cli("ingest", str(inbox / "b.json"))
    new = {t["table"]: t for t in cli.json("export", "lake", "--out", str(lake))["tables"]}
    assert (new["failure_details"]["days_written"], new["reports"]["days_written"]) == (1, 1)
    assert old.stat().st_ino == old_inode  # the old day's file was left alone

    # A late report for a day already in the lake: that day is rewritten with it.
    write_json(inbox / "c.json", make_report(rid="c", org="Late Org", day="2026-11-20",
                                             policies=[policy("example.org", 0, 1, [
                                                 detail("starttls-not-supported", 1)])]))
    cli("ingest", str(inbox / "c.json"))
    late = {t["table"]: t for t in cli.json("export", "lake", "--out", str(lake))["tables"]}
    assert late["failure_details"]["days_written"] == 1
    names = columns(db, "failure_details")
    assert pyarrow_rows(lake, "failure_details", names) == store_rows(db, "failure_details")
    assert not list(lake.rglob(".*.tmp"))


def test_a_lake_that_cannot_be_written_is_one_clear_line(cli: Cli, tmp_path: Path) -> None:
    cli("ingest", str(VALID))
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    refused = cli("export", "lake", "--out", str(in_the_way), code=1)
    assert refused.stderr.startswith(f"tlswatch: {in_the_way}: lake not written: ")
    assert "Traceback" not in refused.stderr + refused.stdout


def _schemas(lake: Path) -> dict[str, pa.Schema]:
    """Each table's Parquet schema (every file of a table must have the same one)."""
    found: dict[str, pa.Schema] = {}
    for path in sorted(lake.rglob("*.parquet")):
        table = path.relative_to(lake).parts[0]
        schema = pq.read_schema(path).remove_metadata()
        assert found.setdefault(table, schema) == schema, (path, schema, found[table])
    return found


def test_both_engines_write_the_same_schema(tmp_path: Path, pg_url: str) -> None:
    duck, pg = Cli(tmp_path / "lake.duckdb"), Cli(pg_url)  # type: ignore[arg-type]
    for cli, name in ((duck, "duck"), (pg, "pg")):
        cli("ingest", str(VALID))
        cli.json("export", "lake", "--out", str(tmp_path / name))
    duck_schemas, pg_schemas = _schemas(tmp_path / "duck"), _schemas(tmp_path / "pg")
    assert set(duck_schemas) == set(pg_schemas)
    for table, schema in duck_schemas.items():
        assert schema == pg_schemas[table], (table, schema, pg_schemas[table])
        assert not [f.name for f in schema if pa.types.is_decimal(f.type)], (table, schema)
    # Files from both engines read as one frame with integer counts (not objects).
    files = [next((tmp_path / name / "rollup_days").rglob("*.parquet")) for name in ("duck", "pg")]
    frame = pd.concat([pq.read_table(f).to_pandas() for f in files])
    assert frame["failed_sessions"].dtype.kind == "i", frame.dtypes


@pytest.mark.duckdb_only
def test_a_count_past_64_bits_is_refused_not_wrapped(cli: Cli, db: Path,
                                                     tmp_path: Path) -> None:
    cli("ingest", str(VALID))
    with duckdb.connect(str(db)) as con:  # a store written before counts were bounded
        con.execute("UPDATE rollup_days SET failed_sessions = 10::DECIMAL(38,0) ^ 20")
    refused = cli("export", "lake", "--out", str(tmp_path / "lake"), code=1)
    assert "rollup_days, day 20" in refused.stderr
    assert "failed_sessions does not fit a 64-bit integer" in refused.stderr
