"""`tlswatch db copy`: a whole store to the other engine and back, losing nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from tests.conftest import Cli, make_report, write_json
from tests.pg import Cluster
from tlswatch.cli import app
from tlswatch.store import Store
from tlswatch.store.copy import copy_between, tables

SAMPLES = Path(__file__).resolve().parents[2] / "sample_reports"


def contents(where: Path | str) -> dict[str, list[str]]:
    """Every table's rows (and the migrations and sequences), in a comparable form."""
    with Store.open(where, read_only=True) as store:
        found = {t: sorted(repr(tuple(bytes(v) if isinstance(v, memoryview) else v
                                      for v in row.values()))
                           for row in store.rows(f"SELECT * FROM {t}"))
                 for t in tables(store)}
        found["schema_migrations"] = [r["name"] for r in store.rows(
            "SELECT name FROM schema_migrations ORDER BY name")]
    return found


def build(db: Path) -> None:
    cli = Cli(db)
    cli("ingest", str(SAMPLES), code=None)
    with Store.open(db) as store:  # a delivery group handed out, so the sequence has moved
        for _ in range(3):
            store.next_outbox_batch()


def test_round_trip_duckdb_postgresql_duckdb(tmp_path: Path, pg_url: str) -> None:
    first, last = tmp_path / "first.duckdb", tmp_path / "last.duckdb"
    build(first)
    before = contents(first)
    assert before["reports"] and before["report_raw"] and before["quarantine"]

    out = CliRunner().invoke(app, ["db", "copy", str(first), pg_url], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "report_raw" in out.stdout and "verified" in out.stdout
    assert contents(pg_url) == before

    copy_between(pg_url, str(last))
    assert contents(last) == before
    with Store.open(last) as store:  # the next delivery group continues after the source's
        assert store.next_outbox_batch() == 4


def test_refuses_a_store_that_holds_data(tmp_path: Path) -> None:
    first, other = tmp_path / "first.duckdb", tmp_path / "other.duckdb"
    build(first)
    Cli(other)("ingest", str(SAMPLES / "valid" / "company-x"), code=None)
    kept = contents(other)
    assert kept["reports"]
    out = CliRunner().invoke(app, ["db", "copy", str(first), str(other)])
    assert out.exit_code == 1
    assert "is not empty" in out.stderr and str(other) in out.stderr
    assert contents(other) == kept


def test_refuses_copying_a_store_onto_itself(tmp_path: Path) -> None:
    first = tmp_path / "first.duckdb"
    build(first)
    out = CliRunner().invoke(app, ["db", "copy", str(first), str(tmp_path / "." / "first.duckdb")])
    assert out.exit_code == 1 and "the same store" in out.stderr


def test_password_never_shown(tmp_path: Path, pg_cluster: Cluster) -> None:
    first = tmp_path / "first.duckdb"
    build(first)
    name = pg_cluster.create()
    try:
        url = pg_cluster.url(name, user="tlswatch_pw:s3cret-pw")
        out = CliRunner().invoke(app, ["db", "copy", str(first), url])
        assert out.exit_code == 0, out.output
        assert "s3cret-pw" not in out.output and "***" in out.stdout
        wrong = pg_cluster.url(name, user="tlswatch_pw:not-the-pw")
        out = CliRunner().invoke(app, ["db", "copy", str(first), wrong])
        assert out.exit_code != 0 and "not-the-pw" not in out.output
    finally:
        pg_cluster.drop(name)




def test_checksum_sees_one_changed_value_but_not_row_order() -> None:
    from datetime import date

    import pyarrow as pa

    from tlswatch.store.copy import _Digest

    def digest(rows: list[tuple[int, str, list[str] | None, date]]) -> str:
        d = _Digest()
        d.add(pa.table({"k": [r[0] for r in rows], "s": [r[1] for r in rows],
                        "l": [r[2] for r in rows], "d": [r[3] for r in rows]}))
        return d.hexdigest()

    rows = [(1, "a", ["x", "y"], date(2026, 11, 1)), (2, "b", None, date(2026, 11, 2))]
    assert digest(rows) == digest(rows[::-1])
    assert digest(rows) != digest([rows[0], (2, "b", None, date(2026, 11, 3))])
    assert digest(rows) != digest([(1, "a", ["x", "z"], date(2026, 11, 1)), rows[1]])


def test_a_copy_cut_short_by_a_full_disk_leaves_no_store(tmp_path: Path) -> None:
    from bench.summary_bench import build
    from tests.conftest import tmpfs

    src = tmp_path / "big.duckdb"
    build(src, 60_000)
    for disk in tmpfs(tmp_path / "disk", "1m"):
        out = CliRunner().invoke(app, ["db", "copy", str(src), str(disk / "copy.duckdb")])
        assert out.exit_code == 1, out.output
        assert "copy.duckdb" in out.stderr
        assert list(disk.iterdir()) == []  # neither the store nor a part of it


def test_a_failed_copy_into_postgresql_leaves_the_database_empty(tmp_path: Path,
                                                                  pg_url: str) -> None:
    """PostgreSQL text cannot hold NUL, which a DuckDB string can (ingest refuses it now, but
    a store written by an older version may hold one): the copy fails, names the table and
    the row, and leaves no table behind (not even the migrations' record)."""
    first = tmp_path / "first.duckdb"
    write_json(tmp_path / "r.json", make_report(rid="r-nul"))
    Cli(first)("ingest", str(tmp_path / "r.json"))
    with duckdb.connect(str(first)) as con:
        con.execute("UPDATE reports SET contact_info = 'tls' || chr(0) || '@tester.example'")
    out = CliRunner().invoke(app, ["db", "copy", str(first), pg_url])
    assert out.exit_code == 1, out.output
    assert "Traceback" not in out.output
    assert "table reports" in out.stderr and "report_pk 1" in out.stderr, out.stderr
    with Store.open(pg_url, read_only=True, pending_ok=True) as store:
        assert not store.has_table("schema_migrations") and not tables(store)


def test_a_copy_to_a_place_it_cannot_write_is_one_line(tmp_path: Path) -> None:
    """A read-only mount (root writes anywhere else): one clear line, exit 1."""
    first = tmp_path / "first.duckdb"
    build(first)
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        out = CliRunner().invoke(app, ["db", "copy", str(first), str(mount / "x.duckdb")])
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    assert out.exit_code == 1, out.output
    assert not isinstance(out.exception, OSError), out.exception
    assert "x.duckdb" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_copy_into_a_missing_folder_is_refused(tmp_path: Path) -> None:
    first = tmp_path / "first.duckdb"
    build(first)
    out = CliRunner().invoke(app, ["db", "copy", str(first), str(tmp_path / "nope" / "x.duckdb")])
    assert out.exit_code == 1 and "nope" in out.stderr and "does not exist" in out.stderr
    assert not (tmp_path / "nope").exists()
