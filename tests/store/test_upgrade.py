"""Upgrades: `db status` lists migrations, `db upgrade` applies them, and a database a
newer tlswatch migrated is refused by every command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb
import pytest

from tests.conftest import VALID, Cli
from tests.serving import CLI
from tlswatch.store.migrations import MIGRATIONS, migration_sql

pytestmark = pytest.mark.duckdb_only  # older and newer databases are made as DuckDB files

NEWER = "0099_from_a_newer_tlswatch"


def _mark_newer(db: Path) -> None:
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO schema_migrations VALUES (?, now()::TIMESTAMP)", [NEWER])
    con.close()


COMMANDS = [
    ["summary"], ["failures"], ["reports"], ["report", "show", "1"], ["alerts"],
    ["ingest", str(VALID / "google.json")], ["validate", str(VALID / "google.json")],
    ["export", "daily", "--out", "{tmp}/out", "--date", "2026-11-25"], ["prune"],
    ["prune", "--dry-run"], ["backup", "{tmp}/bk2"], ["restore", "{tmp}/bk"], ["db", "status"],
    ["db", "upgrade"], ["serve", "--smtp", "", "--http", "127.0.0.1:0"],
]


def test_a_database_from_a_newer_tlswatch_is_refused_by_every_command(
        cli: Cli, db: Path, tmp_path: Path) -> None:
    cli.json("ingest", str(VALID))
    cli("backup", str(tmp_path / "bk"))  # a backup that this version could restore
    _mark_newer(db)
    before = db.read_bytes()
    for command in COMMANDS:
        args = [a.replace("{tmp}", str(tmp_path)) for a in command]
        if command[0] == "validate":  # reads no database: nothing to refuse
            continue
        proc = subprocess.run([*CLI, "--db", str(db), *args], capture_output=True, text=True,
                              timeout=60, env={"PATH": "/usr/bin:/bin",
                                               "TLSWATCH_SPOOL": str(tmp_path / "spool")})
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr, command
        assert f"migrated by a newer tlswatch (migrations this version does not know: " \
               f"{NEWER}); it is not used. Upgrade tlswatch" in proc.stderr, \
            (command, proc.stderr)
        assert "or restore a backup" in proc.stderr
    assert db.read_bytes() == before  # never written


def test_a_backup_from_a_newer_tlswatch_is_not_restored(cli: Cli, db: Path,
                                                          tmp_path: Path) -> None:
    cli.json("ingest", str(VALID))
    _mark_newer(db)
    con = duckdb.connect(str(db))  # what the newer version's backup would say
    con.execute("DELETE FROM schema_migrations WHERE name = ?", [NEWER])
    con.close()
    cli("backup", str(tmp_path / "bk"))
    manifest = (tmp_path / "bk" / "manifest.json")
    manifest.write_text(manifest.read_text().replace('"0001_initial"',
                                                     f'"0001_initial", "{NEWER}"'))
    refused = Cli(tmp_path / "other.duckdb")("restore", str(tmp_path / "bk"), code=1)
    assert f"migrations this version does not know: {NEWER}" in refused.stderr


def _older_database(db: Path) -> None:
    """A database as the previous release left it: every migration but the last."""
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_migrations (name VARCHAR PRIMARY KEY, "
                "applied_at TIMESTAMP NOT NULL)")
    for name, sql in MIGRATIONS[:-1]:
        con.execute(migration_sql(sql, "duckdb"))
        con.execute("INSERT INTO schema_migrations VALUES (?, TIMESTAMP '2026-01-02 03:04:05')",
                    [name])
    con.close()


def test_db_status_lists_migrations_and_db_upgrade_applies_the_pending(cli: Cli,
                                                                       db: Path) -> None:
    _older_database(db)
    last = MIGRATIONS[-1][0]
    status = cli.json("db", "status")
    assert [m["name"] for m in status["migrations"]] == [n for n, _ in MIGRATIONS[:-1]]
    assert status["migrations"][0]["applied_at"] == "2026-01-02T03:04:05"
    assert status["pending_migrations"] == [last]
    assert status["counts"]["reports"] == 0 and status["size_bytes"] > 0
    read = cli("summary", code=1)  # read-only commands do not migrate
    assert f"needs migrations ['{last}']" in read.stderr and "run any writing command" in \
        read.stderr

    upgraded = cli("db", "upgrade")
    assert upgraded.stdout == f"applied {last}\n"
    assert cli("db", "upgrade").stdout == f"{db}: up to date, no migration pending\n"
    cli.json("ingest", str(VALID))
    status = cli.json("db", "status")
    assert status["pending_migrations"] == []
    assert status["counts"]["reports"] == 22
    assert (status["oldest_report_day"], status["newest_report_day"]) == \
        ("2026-11-20", "2026-11-26")
    table = cli("db", "status", "--format", "table").stdout
    assert f"migration {last}" in table and "pending migrations" in table


def test_db_status_of_no_database_says_so(cli: Cli, db: Path) -> None:
    assert "no database here yet" in cli("db", "status", code=1).stderr
    assert "no database here to upgrade" in cli("db", "upgrade", code=1).stderr
    assert not db.exists()


