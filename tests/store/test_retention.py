"""Retention: prune keeps the daily figures, says what it removed, and shrinks the file."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Cli, detail, make_report, policy, write_json
from tests.serving import Serve
from tlswatch.config import load_settings
from tlswatch.store import Store
from tlswatch.store.maintenance import uncompacted
from tlswatch.upkeep import daily_prune

# Pruning and compaction (store/maintenance.py) still speak DuckDB only.
pytestmark = pytest.mark.duckdb_only

TODAY = datetime.now(UTC).date()
OLD = TODAY - timedelta(days=200)
RECENT = TODAY - timedelta(days=3)


def _reports(folder: Path, day: date, n: int, *, details: int = 3, noise: int = 0) -> None:
    """``n`` reports of ``day``; ``noise`` bytes of random text in each failure detail make
    them as incompressible as real ones (DuckDB compresses repeated values to nothing)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        found = [{**detail("certificate-expired", 2, ip=f"192.0.2.{k % 250}",
                           sip=f"198.51.100.{i % 250}"),
                  **({"additional-information": os.urandom(noise // 2).hex()} if noise else {})}
                 for k in range(details)]
        doc = make_report(rid=f"{day}-{i}", day=day.isoformat(), policies=[
            policy("example.com", 100 + i, details * 2, found),
            policy("example.org", 50, 1, [detail("starttls-not-supported", 1)])])
        write_json(folder / f"{day}-{i}.json", doc)


def _totals(summary: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(d["policy_domain"], d["reports"], d["organizations"], d["successful_sessions"],
             d["failed_sessions"], d["success_rate"]) for d in summary["domains"]]


@pytest.fixture
def loaded(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    _reports(tmp_path / "in", OLD, 4)
    _reports(tmp_path / "in", RECENT, 2)
    cli.json("ingest", str(tmp_path / "in"))
    monkeypatch.setenv("TLSWATCH_DETAIL_KEEP_DAYS", "100")
    monkeypatch.setenv("TLSWATCH_RAW_KEEP_DAYS", "150")
    monkeypatch.setenv("TLSWATCH_SPOOL", str(tmp_path / "spool"))
    return cli


def test_prune_keeps_session_totals_and_says_what_it_removed(loaded: Cli) -> None:
    old = ("--since", OLD.isoformat(), "--until", OLD.isoformat())
    before = loaded.json("summary", *old)
    everything = loaded.json("summary")
    dry = loaded.json("prune", "--dry-run")
    assert dry["removed"]["failure_details"] == 4 * 4 and dry["removed"]["report_raw"] == 4
    assert loaded.json("failures", *old) != []  # a dry run changes nothing

    done = loaded.json("prune")
    assert done["removed"]["failure_details"] == 16 and done["removed"]["report_raw"] == 4
    assert done["kept_from"]["failure_details"] == (TODAY - timedelta(days=100)).isoformat()
    assert _totals(loaded.json("summary", *old)) == _totals(before)
    assert _totals(loaded.json("summary")) == _totals(everything)

    # The pruned day keeps its failed sessions and reports (daily rollups).
    failures = loaded("failures", *old, "--format", "json")
    listed = json.loads(failures.stdout)
    assert sum(r["failed_sessions"] for r in listed) == 4 * (3 * 2 + 1)
    assert {(r["reports"], r["failure_reason_codes"]) for r in listed} == {(1, None), (4, None)}
    assert (f"failure details of report days before {TODAY - timedelta(days=100)} were "
            "pruned after 100 days (setting detail_keep_days)") in failures.stderr
    recent = loaded("failures", "--since", RECENT.isoformat(), "--format", "json")
    assert recent.stdout.strip() != "[]" and "pruned" not in recent.stderr

    shown = loaded("report", "show", f"{OLD}-1", "--format", "json")
    assert '"raw_report": null' in shown.stdout
    assert "raw reports of report days before" in shown.stderr
    assert "pruned after 150 days (setting raw_keep_days)" in shown.stderr
    table = loaded("report", "show", f"{OLD}-1", "--format", "table")
    assert "pruned after 100 days" in table.stderr and "Traceback" not in table.stdout
    assert loaded.json("prune")["removed"]["failure_details"] == 0  # nothing left to do


def test_prune_removes_old_check_history(loaded: Cli, db: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    loaded("db", "upgrade")
    with Store.open(db) as store:
        for pk, age in ((1, 500), (2, 10)):
            at = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=age)
            store.con.execute("INSERT INTO check_runs (run_pk, domain, checked_at, result, "
                              "errors, warnings) VALUES (?, 'example.com', ?, 'ok', 0, 0)",
                              [pk, at])
            store.con.execute("INSERT INTO check_findings VALUES (?, 'example.com', ?, 0, "
                              "'info', 'ok', '', 'fine', '')", [pk, at])
    monkeypatch.setenv("TLSWATCH_CHECK_KEEP_DAYS", "400")
    done = loaded.json("prune")
    assert done["removed"]["check_runs"] == 1 and done["removed"]["check_findings"] == 1
    assert [r["checked_at"][:10] for r in loaded.json("checks")["runs"]] == [
        (TODAY - timedelta(days=10)).isoformat()]


def test_prune_compacts_the_file(cli: Cli, db: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _reports(tmp_path / "in", OLD, 1000, details=20, noise=200)
    _reports(tmp_path / "in", RECENT, 100, details=20, noise=200)
    cli.json("ingest", str(tmp_path / "in"))
    monkeypatch.setenv("TLSWATCH_DETAIL_KEEP_DAYS", "30")
    monkeypatch.setenv("TLSWATCH_RAW_KEEP_DAYS", "30")
    monkeypatch.setenv("TLSWATCH_SPOOL", str(tmp_path / "spool"))
    done = cli.json("prune")
    assert done["compacted"] is True
    assert done["size_after"] < done["size_before"] * 0.7  # the daily rollups stay
    assert db.stat().st_size == done["size_after"]
    with Store.open(db) as store:  # the compacted file is whole and still writable
        assert store.rows("SELECT count(*) AS n FROM reports")[0]["n"] == 1100
        assert store.next_outbox_batch() >= 1
    assert cli.json("summary")["domains"][0]["reports"] == 1100


def test_the_daily_prune_runs_once_a_day(loaded: Cli, db: Path) -> None:
    settings = load_settings(db=db)
    now = datetime.now(UTC)
    first = daily_prune(settings, now)
    assert first is not None and first.removed["failure_details"] == 16
    assert daily_prune(settings, now) is None  # done today: recorded in the database
    assert daily_prune(settings, now + timedelta(days=1)) is not None


def test_the_daily_prune_compacts_only_once_enough_was_pruned(loaded: Cli, db: Path) -> None:
    """A compaction copies the whole file under the write lock: the daily prune waits until
    the rows pruned since the last one are a share (compact_min_share) of what is left."""
    now = datetime.now(UTC)

    def pending() -> int:
        with Store.open(db, read_only=True) as store:
            return uncompacted(store)[0]

    daily_prune(load_settings(db=db, compact_min_share=5.0), now)
    assert pending() == 16 + 4  # details and raw reports pruned, the file not rewritten
    daily_prune(load_settings(db=db, compact_min_share=1.0), now + timedelta(days=1))
    assert pending() == 0  # 20 pruned since, 10 rows left: compacted
    loaded.json("prune")
    assert pending() == 0


def test_serve_prunes_by_itself(loaded: Cli, db: Path, tmp_path: Path) -> None:
    with Serve(tmp_path, smtp="", detail_keep_days=100) as server:
        assert server.db == db
        deadline = time.monotonic() + 60
        while not server.query("SELECT count(*) FROM duckdb_tables() WHERE table_name = "
                               "'retention'")[0][0] or \
                not server.query("SELECT count(*) FROM retention WHERE kind = 'run'")[0][0]:
            assert time.monotonic() < deadline, "".join(server.output)
            time.sleep(0.1)
        assert server.query(f"SELECT count(*) FROM failure_details WHERE day = '{OLD}'"
                            )[0][0] == 0
        assert server.query(f"SELECT count(*) FROM policies WHERE day = '{OLD}'")[0][0] == 8
        pk = server.query(f"SELECT report_pk FROM reports WHERE report_id = '{OLD}-1'")[0][0]
        page = httpx.get(f"{server.http_url}/reports/{pk}")
        assert page.status_code == 200
        assert "raw reports of report days before" in page.text
        assert "pruned after 150 days (setting raw_keep_days)" in page.text
        raw = httpx.get(f"{server.http_url}/reports/{pk}/raw.json")
        assert raw.status_code == 404 and "pruned (setting raw_keep_days)" in raw.text
        assert server.stop() == 0


def test_prune_of_a_missing_database_creates_none(cli: Cli, db: Path) -> None:
    """A wrong --db (or the default ./tlswatch.duckdb in the wrong folder) is refused."""
    for args in (["prune"], ["prune", "--dry-run"]):
        result = cli(*args, code=1)
        assert f"{db}: no database here" in result.stderr
        assert not db.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_prune_by_root_keeps_the_owner_of_the_database(
        cli: Cli, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compaction replaces the file: as root it must stay the service user's, else 'serve'
    (User=tlswatch) can no longer write it."""
    _reports(tmp_path / "in", OLD, 200, details=20, noise=200)
    _reports(tmp_path / "in", RECENT, 5)
    cli.json("ingest", str(tmp_path / "in"))
    os.chown(db, 65534, 65534)
    db.chmod(0o640)
    monkeypatch.setenv("TLSWATCH_DETAIL_KEEP_DAYS", "30")
    monkeypatch.setenv("TLSWATCH_RAW_KEEP_DAYS", "30")
    monkeypatch.setenv("TLSWATCH_SPOOL", str(tmp_path / "spool"))
    assert cli.json("prune")["compacted"] is True
    after = db.stat()
    assert (after.st_uid, after.st_gid, after.st_mode & 0o777) == (65534, 65534, 0o640)


def test_the_pruned_notice_only_where_something_was_pruned(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _reports(tmp_path / "new", RECENT, 2)
    cli.json("ingest", str(tmp_path / "new"))
    monkeypatch.setenv("TLSWATCH_DETAIL_KEEP_DAYS", "100")
    monkeypatch.setenv("TLSWATCH_RAW_KEEP_DAYS", "150")
    monkeypatch.setenv("TLSWATCH_SPOOL", str(tmp_path / "spool"))
    assert cli.json("prune")["removed"]["failure_details"] == 0
    for args in (("failures",), ("report", "show", f"{RECENT}-1"),
                 ("export", "daily", "--out", str(tmp_path / "out"), "--date",
                  RECENT.isoformat())):
        assert "pruned" not in cli(*args, "--format", "json").stderr, args

    _reports(tmp_path / "old", OLD, 1)  # late reports of an old day, then a prune
    cli.json("ingest", str(tmp_path / "old"))
    assert cli.json("prune")["removed"]["failure_details"] == 4
    notice = "failure details of report days before"
    assert notice in cli("failures", "--format", "json").stderr
    assert notice in cli("failures", "--until", OLD.isoformat(), "--format", "json").stderr
    for since, until in ((OLD - timedelta(days=30), OLD - timedelta(days=1)),
                         (OLD + timedelta(days=1), TODAY - timedelta(days=101))):
        quiet = cli("failures", "--since", since.isoformat(), "--until", until.isoformat(),
                    "--format", "json")
        assert notice not in quiet.stderr, (since, until)
