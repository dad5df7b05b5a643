"""Recorded policy fetches: the bounded buffer, the batch files, storing them, pruning them,
and a database that is away (the answers go on; what cannot wait is dropped and counted)."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import pytest

from tests.conftest import Cli
from tests.serving import Serve
from tlswatch import policyfetches
from tlswatch.config import Settings
from tlswatch.dburl import location
from tlswatch.mtasts.hosting import init_policy
from tlswatch.store import Store
from tlswatch.upkeep import run_prune
from tlswatch.web.fetchlog import FetchLog


def _hosting(tmp_path: Path) -> Settings:
    """Settings for the hosted policies, with a store of their own in the test's folder
    (the default store is a file in the working directory)."""
    return Settings(policy_dir=tmp_path / "policies", db=tmp_path / "policies.duckdb")


def dropped(log: FetchLog, reason: str) -> float:
    return log.dropped.labels(reason)._value.get()


def test_the_buffer_is_bounded_and_the_backlog_too(tmp_path: Path) -> None:
    log = FetchLog(Settings(spool=tmp_path, policy_fetch_buffer=2, policy_fetch_backlog=1,
                            policy_fetch_flush=3600, node_name="n1"))
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        log.record("a.example", ip, "id1", 200)
    assert dropped(log, "buffer_full") == 1
    assert log.flush() == 2
    [batch] = policyfetches.pending(tmp_path)
    assert [r[1:] for r in policyfetches.read_batch(batch)] == [
        ("a.example", "192.0.2.1", "id1", 200, "n1"), ("a.example", "192.0.2.2", "id1", 200, "n1")]
    log.record("a.example", "192.0.2.4", None, 404)
    assert log.flush() == 0  # one batch waits for the loader already
    assert dropped(log, "backlog_full") == 1
    log.stop()


def test_a_client_past_its_rate_is_answered_but_not_recorded(tmp_path: Path) -> None:
    log = FetchLog(Settings(spool=tmp_path, policy_fetch_ip_rate=2, policy_fetch_flush=3600))
    for ip in ("192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.2",
               "2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8:1::1"):  # a /64 is one
        log.record("a.example", ip, "id1", 200)
    assert dropped(log, "ip_rate") == 2
    assert log.flush() == 6


def test_a_batch_that_cannot_be_written_is_counted(tmp_path: Path) -> None:
    (tmp_path / "fetches").write_text("a file where the folder should be")
    log = FetchLog(Settings(spool=tmp_path, policy_fetch_flush=3600))
    log.record("a.example", "192.0.2.1", "id1", 200)
    assert log.flush() == 0
    assert dropped(log, "write_failed") == 1


def test_no_recording_with_no_buffer(tmp_path: Path) -> None:
    log = FetchLog(Settings(spool=tmp_path, policy_fetch_buffer=0))
    log.record("a.example", "192.0.2.1", "id1", 200)
    assert log.flush() == 0 and log.thread is None


def test_stored_then_pruned_after_their_days(tmp_path: Path, db: Path | str) -> None:
    spool = tmp_path / "spool"
    old = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=40)
    policyfetches.folder(spool).mkdir(parents=True)
    policyfetches.write_batch(spool, [
        [old.isoformat(), "a.example", "192.0.2.1", "id1", 200, "n1"],
        [datetime.now(UTC).replace(tzinfo=None).isoformat(), "a.example", "192.0.2.2", "id1",
         200, "n1"],
        ["not a time", "a.example", "192.0.2.3", "id1", 200, "n1"]], name="0001")
    assert policyfetches.load_pending(spool, db, lock_timeout=5) == 2
    assert policyfetches.pending(spool) == []
    settings = Settings(db=location(db), spool=spool, policy_fetch_keep_days=30)
    run = run_prune(settings, today=datetime.now(UTC).date())
    assert run.removed["policy_fetches"] == 1
    with Store.open(db, read_only=True) as store:
        assert [r["client_ip"] for r in store.rows(
            "SELECT client_ip FROM policy_fetches ORDER BY client_ip")] == ["192.0.2.2"]
    cli = Cli(db)  # type: ignore[arg-type]
    rows = cli.json("policy", "fetches", "a.example", "--since",
                    (date.today() - timedelta(days=60)).isoformat())
    assert [(r["client_ip"], r["sender"], r["policy_id"], r["status"], r["node"])
            for r in rows] == [("192.0.2.2", None, "id1", 200, "n1")]
    empty = cli("policy", "fetches", "b.example", "--format", "table").stdout
    assert empty.startswith("No policy fetches of b.example from ")


@pytest.mark.duckdb_only
def test_answers_go_on_while_the_database_is_away(tmp_path: Path) -> None:
    """The database locked by another process: fetches are answered at once, the batches
    wait up to policy_fetch_backlog, the rest is dropped and counted in /metrics; once
    the lock goes the waiting ones are stored."""
    hosted = init_policy(_hosting(tmp_path), "a.example",
                         mx=["mx.a.example"], mode="testing", max_age=86400)
    (tmp_path / "srv").mkdir()
    server = Serve(tmp_path / "srv", smtp="", policy_dir=str(tmp_path / "policies"),
                   policy_fetch_flush=0.05, policy_fetch_backlog=1, lock_timeout=0.5)
    with server:
        url = server.http_url
        Store.open(server.db).close()  # migrated, then held by this process:
        holder = duckdb.connect(str(server.db))
        try:
            assert httpx.get(f"{url}/.well-known/mta-sts.txt",
                             headers={"Host": "mta-sts.a.example"}).text == hosted.text
            deadline = time.monotonic() + 30
            while not policyfetches.pending(server.spool):
                assert time.monotonic() < deadline, "no batch written"
                time.sleep(0.05)
            while True:  # each fetch its own batch, past the backlog of one
                assert httpx.get(f"{url}/.well-known/mta-sts.txt", headers={
                    "Host": "mta-sts.a.example"}).status_code == 200
                metrics = httpx.get(f"{url}/metrics").text
                if 'tlswatch_policy_fetches_dropped_total{reason="backlog_full"}' in metrics:
                    break
                assert time.monotonic() < deadline, metrics
                time.sleep(0.1)
        finally:
            holder.close()
        while not server.query("SELECT count(*) FROM policy_fetches")[0][0]:
            assert time.monotonic() < deadline + 30, "".join(server.output[-20:])
            time.sleep(0.1)
