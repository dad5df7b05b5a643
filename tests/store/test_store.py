from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.conftest import VALID, Cli
from tlswatch.errors import StoreError, StoreLockedError
from tlswatch.store import Store
from tlswatch.store.migrations import MIGRATIONS, migration_sql


def test_migrations_are_recorded_and_applied_once(db: Path) -> None:
    with Store.open(db) as store:
        names = [r["name"] for r in store.rows("SELECT name FROM schema_migrations")]
        assert names == [name for name, _ in MIGRATIONS]
    with Store.open(db) as store:
        assert store.migrate() == []


def test_read_only_open_of_a_missing_database_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no database here yet; load reports first"):
        Store.open(tmp_path / "none.duckdb", read_only=True)


def test_raw_report_is_kept_so_tables_can_be_rebuilt(cli: Cli, db: Path) -> None:
    cli.json("ingest", str(VALID))
    with Store.open(db) as store:
        counts = store.rows("SELECT (SELECT count(*) FROM reports) AS reports, "
                            "(SELECT count(*) FROM report_raw) AS raw")[0]
    assert counts["reports"] == counts["raw"] == 22


@pytest.mark.duckdb_only
def test_a_new_store_keeps_gzip_bytes_as_they_are(cli: Cli, db: Path) -> None:
    # Raw reports and quarantined inputs are gzip already: a new DuckDB store declares their
    # columns uncompressed (DuckDB would try every compression at each checkpoint, in vain),
    # and each raw report reads back byte for byte.
    cli.json("ingest", str(VALID / "mailru"))
    con = duckdb.connect(str(db))
    declared = dict(con.execute("SELECT table_name, sql FROM duckdb_tables() WHERE "
                                "table_name IN ('report_raw', 'quarantine')").fetchall())
    raw = con.execute("SELECT raw_gzip FROM report_raw").fetchall()
    con.close()
    for table in ("report_raw", "quarantine"):
        assert "raw_gzip BLOB USING COMPRESSION Uncompressed NOT NULL" in declared[table]
    (sent,) = [p.read_bytes() for p in (VALID / "mailru").iterdir()]
    assert [gzip.decompress(r[0]) for r in raw] == [sent]


HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def hold_lock(db: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.duckdb_only
def test_locked_database_names_the_process_in_the_way(db: Path) -> None:
    Store.open(db).close()
    proc = hold_lock(db, 30)
    try:
        with pytest.raises(StoreLockedError) as caught:
            Store.open(db, lock_timeout=0.3)
        message = str(caught.value)
        assert "locked by another process" in message and str(proc.pid) in message
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.duckdb_only
def test_a_briefly_held_lock_is_waited_for(db: Path) -> None:
    Store.open(db).close()
    proc = hold_lock(db, 0.5)
    try:
        with Store.open(db, lock_timeout=20) as store:  # opens once the holder lets go
            assert store.migrate() == []
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.duckdb_only
def test_cli_reports_the_lock_cleanly(cli: Cli, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Store.open(db).close()
    proc = hold_lock(db, 30)
    monkeypatch.setenv("TLSWATCH_LOCK_TIMEOUT", "0.2")
    try:
        result = cli("ingest", str(VALID), code=75)  # EX_TEMPFAIL: transient, try again
        assert "is locked by another process" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.duckdb_only
def test_upgrade_recounts_stored_reports_by_the_senders_layout(db: Path) -> None:
    import duckdb

    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_migrations (name VARCHAR PRIMARY KEY, "
                "applied_at TIMESTAMP NOT NULL)")
    for name, sql in MIGRATIONS[:3]:  # a database of the release before the layout rule
        con.execute(migration_sql(sql, "duckdb"))
        con.execute("INSERT INTO schema_migrations VALUES (?, now())", [name])
    rows = [  # report 1: Microsoft, the same sessions twice; report 2: Postfix, all different
        (1, 1, "sts", 100, 7), (2, 1, "tlsa", 100, 7),
        (3, 2, "no-policy-found", 10, 0), (4, 2, "sts", 20, 0), (5, 2, "tlsa", 3, 2)]
    for pk, report, ptype, ok, failed in rows:
        con.execute("INSERT INTO policies VALUES (?, ?, 0, DATE '2026-11-25', 'O', ?, "
                    "'example.com', NULL, NULL, ?, ?, true, true)",
                    [pk, report, ptype, ok, failed])
    con.execute("INSERT INTO failure_details (report_pk, policy_pk, day, organization_name, "
                "policy_type, policy_domain, result_type, failed_session_count, counted, "
                "domain_id, organization_name_id, result_type_id) VALUES "
                "(1, 2, DATE '2026-11-25', 'O', 'tlsa', 'example.com', 'x', 7, true, 1, 1, 1)")
    con.close()
    with Store.open(db) as store:
        got = store.rows("SELECT report_pk, policy_type, counted, counting FROM policies "
                         "ORDER BY policy_pk")
        detail = store.rows("SELECT counted FROM failure_details")
    assert [(r["report_pk"], r["policy_type"], r["counted"], r["counting"]) for r in got] == [
        (1, "sts", True, "same-sessions"), (1, "tlsa", False, "same-sessions"),
        (2, "no-policy-found", True, "added"), (2, "sts", True, "added"),
        (2, "tlsa", True, "added")]
    assert detail == [{"counted": False}]  # it followed its policy row


@pytest.mark.duckdb_only
def test_a_truncated_database_file_is_refused_at_open(cli: Cli, db: Path) -> None:
    cli.json("ingest", str(VALID))
    size = db.stat().st_size
    with db.open("r+b") as fh:
        fh.truncate(size // 3)
    for read_only in (True, False):
        with pytest.raises(StoreError, match="the database file is truncated or damaged"):
            Store.open(db, read_only=read_only)
    out = cli("summary", code=1)
    assert "the database file is truncated or damaged" in out.stderr
