"""Every alert kind fires once for a corpus made to trigger it, and never twice; a storm of
failing domains is capped and recorded in one statement."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from tests.conftest import Cli, detail, make_report, policy, write_json
from tlswatch import jobs
from tlswatch.analytics.alerts import KINDS, MORE, evaluate
from tlswatch.config import load_settings
from tlswatch.store import Store

START = date(2026, 11, 1)


def corpus(folder: Path) -> list[str]:
    """a.example: Google reports daily 1..20 with a few certificate-expired failures; on
    day 18 a spike and a low rate; on day 19 a new result type and an MTA-STS fetch error.
    Microsoft reports daily 1..15, then goes silent."""
    folder.mkdir()
    paths = []
    for i in range(20):
        day = (START + timedelta(days=i)).isoformat()
        failures = [detail("certificate-expired", 2)]
        ok = 5000
        if i == 17:
            failures = [detail("certificate-expired", 400)]
            ok = 1000
        if i == 18:
            failures = [detail("certificate-expired", 2), detail("dane-required", 1),
                        detail("sts-policy-fetch-error", 3)]
        total = sum(f["failed-session-count"] for f in failures)
        doc = make_report(org="Google Inc.", rid=f"g{i}", day=day,
                          policies=[policy("a.example", ok, total, failures)])
        paths.append(str(write_json(folder / f"g{i}.json", doc)))
        if i < 15:
            ms = make_report(org="Microsoft Corporation", rid=f"m{i}", day=day,
                             policies=[policy("a.example", 3000, 0, [])])
            paths.append(str(write_json(folder / f"m{i}.json", ms)))
    return paths


def test_each_kind_fires_once(cli: Cli, tmp_path: Path, db: Path) -> None:
    cli.json("ingest", *corpus(tmp_path / "in"))
    days = [START + timedelta(days=i) for i in range(20)]
    today = START + timedelta(days=19)
    settings = load_settings(None, environ={}, db=db)
    with Store.open(db) as store:
        found = evaluate(store, days, today=today)
        new = jobs.record(store, settings, found).alerts
        again = jobs.record(store, settings, evaluate(store, days, today=today)).alerts
    kinds = {}
    for alert in found:
        kinds.setdefault(alert.kind, []).append(alert)
    assert set(kinds) == set(KINDS) - {"conflicting_duplicate"}  # see tests/ingest/test_poison.py
    assert [(a.day.day, a.details["result_type"]) for a in kinds["new_result_type"]] == \
        [(1, "certificate-expired"), (19, "dane-required")]  # the 19th merges two new types
    assert "sts-policy-fetch-error" in kinds["new_result_type"][1].message
    assert [a.day.day for a in kinds["low_success_rate"]] == [18]
    assert [a.day.day for a in kinds["failure_spike"]] == [18]
    assert [a.day.day for a in kinds["sts_policy_problem"]] == [19]
    (silent,) = kinds["reporter_silent"]
    assert silent.day.day == 16 and "Microsoft" in silent.message
    assert len(new) == len(found) and again == []


def test_alerts_command_checks_and_lists(cli: Cli, tmp_path: Path) -> None:
    cli.json("ingest", *corpus(tmp_path / "in"))
    rows = cli.json("alerts", "--check")
    assert {r["kind"] for r in rows} >= {"new_result_type", "low_success_rate",
                                          "failure_spike", "sts_policy_problem"}
    assert cli.json("alerts", "--check") == rows  # nothing raised twice
    only = cli.json("alerts", "--domain", "a.example", "--since", "2026-11-19",
                    "--until", "2026-11-19")
    assert {r["kind"] for r in only} == {"new_result_type", "sts_policy_problem"}


def storm(folder: Path, domains: int, day: str) -> list[str]:
    """A hostile sender makes ``domains`` domains fail on one day (100 reports of 100)."""
    folder.mkdir()
    paths = []
    for i in range(0, domains, 100):
        doc = make_report(org=f"Storm {i}", rid=f"s{i}", day=day, policies=[
            policy(f"d{n}.storm.example", 0, 5, [detail("certificate-expired", 5)])
            for n in range(i, min(i + 100, domains))])
        paths.append(str(write_json(folder / f"s{i}.json", doc)))
    return paths


def write_statements(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """The writing statements of the transaction that wrote ``table``, from DuckDB's log."""
    rows = con.execute("SELECT transaction_id, message FROM duckdb_logs "
                       "WHERE type = 'QueryLog' ORDER BY timestamp").fetchall()
    words = [(t, " ".join(m.split())) for t, m in rows]
    (txn,) = {t for t, m in words if m.upper().startswith(f"INSERT INTO {table.upper()} ")}
    return [m for t, m in words if t == txn and m.split()[0].upper() in
            ("INSERT", "UPDATE", "DELETE", "COPY")]


@pytest.mark.duckdb_only  # counts the statements in DuckDB's query log
def test_storm_is_capped_and_recorded_in_one_statement(cli: Cli, tmp_path: Path,
                                                       db: Path) -> None:
    cli.json("ingest", *storm(tmp_path / "in", 10_000, "2026-11-20"))
    day = date(2026, 11, 20)
    settings = load_settings(None, environ={}, db=db, webhook_url="http://127.0.0.1:9/hook")
    with Store.open(db) as store:
        found = evaluate(store, [day], today=day)
        assert len(found) == 20_000  # a low success rate and a new result type per domain
        store.con.execute("CALL enable_logging('QueryLog')").fetchall()
        recorded = jobs.record(store, settings, found)
        writes = write_statements(store.con, "alerts")
        rows = store.rows("SELECT kind, details FROM alerts")
        outbox = store.rows("SELECT channel, body FROM outbox")
    cap = settings.max_alerts_per_day
    assert len(rows) == len(recorded.alerts) == cap + 1
    assert [w.split()[:3] for w in writes] == [["INSERT", "INTO", "alerts"],
                                              ["INSERT", "INTO", "outbox"]]
    (more,) = [r for r in rows if r["kind"] == MORE]
    assert '"more_alerts":19950' in more["details"].replace(" ", "")
    assert {r["kind"] for r in rows} == {"low_success_rate", MORE}  # the worse kind first
    assert len(outbox) == 1  # one post announces them all

    # The next load finds the same storm: nothing new is recorded or queued.
    again = jobs.check_alerts(settings, [day], today=day)
    assert again.alerts == []
    with Store.open(db, read_only=True) as store:
        assert store.rows("SELECT count(*) AS n FROM alerts")[0]["n"] == cap + 1
        assert store.rows("SELECT count(*) AS n FROM outbox")[0]["n"] == 1
