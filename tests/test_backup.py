"""Backup while 'serve' runs, restore into another place: the same figures come back."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import GZIP_TYPE, gz_report
from tests.serving import Serve, toml_value
from tlswatch.cli import app
from tlswatch.jobs import STATE


def tlswatch(config: Path, *args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(app, ["--config", str(config), *args], catch_exceptions=False)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def summary(config: Path) -> Any:
    return json.loads(tlswatch(config, "summary", "--format", "json").stdout)


def place(root: Path, db: str | None = None) -> Path:
    """A config naming every place below ``root`` (the database too, unless ``db``)."""
    root.mkdir(parents=True, exist_ok=True)
    settings = {"db": db or root / "db" / "tlswatch.duckdb", "spool": root / "spool",
                "policy_dir": root / "policies", "export_dir": root / "exports",
                "smtp": "", "http": "127.0.0.1:0", "loader_interval": 0.1}
    config = root / "tlswatch.toml"
    config.write_text("".join(f"{k} = {toml_value(str(v) if isinstance(v, Path) else v)}\n"
                              for k, v in settings.items()))
    return config


def post(server: Serve, rids: list[str]) -> None:
    for rid in rids:
        reply = httpx.post(f"{server.http_url}/v1/reports", content=gz_report(rid),
                           headers=GZIP_TYPE, timeout=10)
        assert reply.status_code == 201, reply.text


def test_backup_while_serving_restores_the_same_summary(tmp_path: Path) -> None:
    a = place(tmp_path / "a")
    tlswatch(a, "policy", "init", "example.com", "--mx", "mx.example.com")
    (tmp_path / "a" / "exports").mkdir()
    (tmp_path / "a" / "exports" / STATE).write_text('{"last_day": "2026-11-25"}')
    server = Serve(tmp_path / "a", smtp="", db=str(tmp_path / "a" / "db" / "tlswatch.duckdb"),
                   policy_dir=str(tmp_path / "a" / "policies"),
                   export_dir=str(tmp_path / "a" / "exports"), http_rate_limit=0)
    server.db = tmp_path / "a" / "db" / "tlswatch.duckdb"
    with server:
        post(server, [f"before-{i}" for i in range(30)])
        server.wait_loaded()
        sending = threading.Thread(target=post, args=(server, [f"during-{i}"
                                                               for i in range(60)]))
        sending.start()  # the loader writes batches while backups copy
        made = []
        while sending.is_alive() or not made:
            dest = tmp_path / f"bk{len(made)}"
            made.append(json.loads(tlswatch(a, "backup", str(dest), "--format",
                                            "json").stdout))
            assert len(made) < 100
        sending.join()
        server.wait_loaded()
        refused = tlswatch(a, "restore", str(tmp_path / "bk0"), "--force", code=1)
        assert "'tlswatch serve' is running on this database" in refused.stderr
        assert server.stop() == 0
    for backup in made:  # each copy is whole: counts as listed, no report without policies
        con = duckdb.connect(str(Path(backup["to"]) / "tlswatch.duckdb"), read_only=True)
        assert con.execute("SELECT count(*) FROM reports").fetchall()[0][0] == \
            backup["counts"]["reports"]
        assert con.execute("SELECT count(*) FROM reports r WHERE NOT EXISTS (SELECT 1 FROM "
                           "policies p WHERE p.report_pk = r.report_pk)").fetchall() == [(0,)]
        con.close()
    # the one taken while most was being written
    chosen = min(made, key=lambda b: abs(b["counts"]["reports"] - 60))
    bk = Path(chosen["to"])
    paths = {f["path"] for f in chosen["files"]}
    assert {"tlswatch.duckdb", "policies/example.com.json", "state/export-state.json"} <= paths
    assert 30 <= chosen["counts"]["reports"] <= 90

    b = place(tmp_path / "b")  # another machine: other paths
    tlswatch(b, "restore", str(bk))
    con = duckdb.connect(str(tmp_path / "b" / "db" / "tlswatch.duckdb"), read_only=True)
    restored = {r[0] for r in con.execute("SELECT report_id FROM reports").fetchall()}
    whole = con.execute("SELECT count(*) FROM reports r WHERE NOT EXISTS (SELECT 1 FROM "
                        "policies p WHERE p.report_pk = r.report_pk)").fetchall()
    con.close()
    assert len(restored) == chosen["counts"]["reports"] and whole == [(0,)]
    assert {f"before-{i}" for i in range(30)} <= restored

    after_backup = [f"during-{i}" for i in range(60) if f"during-{i}" not in restored]
    assert summary(a)["domains"][0]["reports"] == 30 + 60
    original = summary(a)
    for domain in original["domains"]:  # what arrived after the backup, taken out
        domain["reports"] -= len(after_backup)
        domain["successful_sessions"] -= 7 * len(after_backup)
        domain["failed_sessions"] -= len(after_backup)
    copy = summary(b)
    assert [(d["reports"], d["successful_sessions"], d["failed_sessions"])
            for d in copy["domains"]] == \
        [(d["reports"], d["successful_sessions"], d["failed_sessions"])
         for d in original["domains"]]
    assert (tmp_path / "b" / "policies" / "example.com.json").read_bytes() == \
        (tmp_path / "a" / "policies" / "example.com.json").read_bytes()
    assert (tmp_path / "b" / "exports" / STATE).read_bytes() == \
        (bk / "state" / "export-state.json").read_bytes()  # serve moves it on


def test_a_quiet_backup_restores_identical_summary_json(tmp_path: Path) -> None:
    a = place(tmp_path / "a")
    server = Serve(tmp_path / "a", smtp="", db=str(tmp_path / "a" / "db" / "tlswatch.duckdb"))
    server.db = tmp_path / "a" / "db" / "tlswatch.duckdb"
    with server:
        post(server, [f"r-{i}" for i in range(20)])
        server.wait_loaded()
        tlswatch(a, "backup", str(tmp_path / "bk"))  # serve still runs
        original = summary(a)
        assert server.stop() == 0
    b = place(tmp_path / "b")
    tlswatch(b, "restore", str(tmp_path / "bk"))
    assert summary(b) == original and original["domains"]


def test_restore_refuses_damage_and_a_database_with_reports(tmp_path: Path) -> None:
    a = place(tmp_path / "a")
    b = place(tmp_path / "b")
    server = Serve(tmp_path / "a", smtp="", db=str(tmp_path / "a" / "db" / "tlswatch.duckdb"))
    server.db = tmp_path / "a" / "db" / "tlswatch.duckdb"
    with server:
        post(server, ["one", "two"])
        server.wait_loaded()
        assert server.stop() == 0
    tlswatch(a, "backup", str(tmp_path / "bk"))
    again = tlswatch(a, "backup", str(tmp_path / "bk"), code=1)
    assert "exists and is not an empty folder" in again.stderr

    refused = tlswatch(a, "restore", str(tmp_path / "bk"), code=1)
    assert "holds 2 reports; restoring would replace them. Give --force" in refused.stderr
    tlswatch(a, "restore", str(tmp_path / "bk"), "--force")

    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    manifest["files"][0]["sha256"] = "0" * 64
    (tmp_path / "bk" / "manifest.json").write_text(json.dumps(manifest))
    damaged = tlswatch(b, "restore", str(tmp_path / "bk"), code=1)
    assert "tlswatch.duckdb: does not match the manifest" in damaged.stderr
    assert not (tmp_path / "b" / "db" / "tlswatch.duckdb").exists()
    manifest["files"][0]["path"] = "policies/../../../outside"
    (tmp_path / "bk" / "manifest.json").write_text(json.dumps(manifest))
    outside = tlswatch(b, "restore", str(tmp_path / "bk"), code=1)
    assert "file 'policies/../../../outside' is not a place a backup writes to" in \
        outside.stderr
    missing = tlswatch(b, "restore", str(tmp_path / "nothing"), code=1)
    assert "no manifest.json: not a tlswatch backup folder" in missing.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_restore_by_root_keeps_the_owner_of_the_database(tmp_path: Path) -> None:
    """Restored over the service user's database, the file stays theirs and its mode."""
    a = place(tmp_path / "a")
    server = Serve(tmp_path / "a", smtp="", db=str(tmp_path / "a" / "db" / "tlswatch.duckdb"))
    server.db = tmp_path / "a" / "db" / "tlswatch.duckdb"
    with server:
        post(server, ["one"])
        server.wait_loaded()
        assert server.stop() == 0
    tlswatch(a, "backup", str(tmp_path / "bk"))
    os.chown(server.db, 65534, 65534)
    server.db.chmod(0o640)
    tlswatch(a, "restore", str(tmp_path / "bk"), "--force")
    after = server.db.stat()
    assert (after.st_uid, after.st_gid, after.st_mode & 0o777) == (65534, 65534, 0o640)


def test_backup_to_a_place_it_cannot_write_is_one_line(tmp_path: Path) -> None:
    """Not a traceback: the folder, the reason and what to do."""
    a = place(tmp_path / "a")
    server = Serve(tmp_path / "a", smtp="", db=str(tmp_path / "a" / "db" / "tlswatch.duckdb"))
    server.db = tmp_path / "a" / "db" / "tlswatch.duckdb"
    with server:
        post(server, ["one"])
        server.wait_loaded()
        assert server.stop() == 0
    (tmp_path / "afile").write_text("")
    refused = tlswatch(a, "backup", str(tmp_path / "afile" / "bk"), code=1)
    assert refused.stderr == (f"tlswatch: {tmp_path}/afile/bk: cannot write the backup there: "
                              "Not a directory; give a folder the user running tlswatch may "
                              "write (e.g. install -d -o tlswatch -g tlswatch "
                              "/var/backups/tlswatch)\n")


def test_restore_refuses_a_crafted_backup_that_writes_or_reads_outside(tmp_path: Path) -> None:
    a = place(tmp_path / "a")
    report = tmp_path / "r.json.gz"
    report.write_bytes(gz_report("crafted"))
    tlswatch(a, "ingest", str(report))
    tlswatch(a, "backup", str(tmp_path / "bk"))
    bk = tmp_path / "bk"
    clean = json.loads((bk / "manifest.json").read_text())

    def craft(path: str, file: Path) -> Any:
        manifest = {**clean, "files": [*clean["files"], {
            "path": path, "size": file.stat().st_size, "sha256": hashlib.sha256(
                file.read_bytes()).hexdigest()}]}
        (bk / "manifest.json").write_text(json.dumps(manifest))
        return tlswatch(place(tmp_path / "b"), "restore", "--force", str(bk), code=1)

    # "policies//abs/path": no '..', starts with policies/, yet names an absolute place.
    victim = tmp_path / "victim.txt"
    inside = bk / "policies" / str(victim).lstrip("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("written by a crafted backup\n")
    refused = craft(f"policies/{victim}", inside)
    assert "is not a place a backup writes to" in refused.stderr
    assert not victim.exists()
    # A symlink in the backup reads a file from elsewhere into policy_dir.
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the backup\n")
    (bk / "policies" / "leak.json").symlink_to(secret)
    linked = craft("policies/leak.json", secret)
    assert "is a symbolic link" in linked.stderr
    assert not (tmp_path / "b" / "policies" / "leak.json").exists()
    # A manifest that leaves the database out would have it restored unchecked.
    (bk / "manifest.json").write_text(json.dumps({**clean, "files": []}))
    unlisted = tlswatch(place(tmp_path / "b"), "restore", "--force", str(bk), code=1)
    assert "does not list tlswatch.duckdb" in unlisted.stderr


def test_backup_and_restore_of_a_postgresql_store(tmp_path: Path, pg_cluster: Any) -> None:
    """A PostgreSQL store backs up to a DuckDB file (the same backup folder as ever), which
    restores into an empty PostgreSQL database, or into a DuckDB file."""
    first, second = pg_cluster.create(), pg_cluster.create()
    try:
        a = place(tmp_path / "a", pg_cluster.url(first))
        tlswatch(a, "ingest", str(Path(__file__).parent.parent / "sample_reports" / "valid"))
        tlswatch(a, "backup", str(tmp_path / "bk"))
        original = summary(a)
        assert original["domains"]

        # the target needs a password (scram-sha-256): the restore logs in with it
        b = place(tmp_path / "b", pg_cluster.url(second, user="tlswatch_pw:s3cret-pw"))
        tlswatch(b, "restore", str(tmp_path / "bk"))
        assert summary(b) == original
        refused = tlswatch(b, "restore", str(tmp_path / "bk"), "--force", code=1)
        assert "needs an empty database" in refused.stderr

        c = place(tmp_path / "c")  # and back into a DuckDB file
        tlswatch(c, "restore", str(tmp_path / "bk"))
        assert summary(c) == original
    finally:
        pg_cluster.drop(first)
        pg_cluster.drop(second)
