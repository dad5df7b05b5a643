"""The store on both engines: the same writes, the same rows and Python types.

Run on DuckDB by default and on PostgreSQL with TLSWATCH_TEST_ENGINE=postgresql (the
``db`` fixture); the tests taking ``pg_url`` always run on the tests' own PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import INVALID, VALID, Cli, make_report, policy, write_json
from tlswatch.store import Store
from tlswatch.store.engine import translate
from tlswatch.store.quarantine import (
    delete_quarantine,
    quarantine_row,
    quarantine_rows,
    quarantine_with_sources,
    set_quarantine_reason,
)

NOW = datetime(2026, 11, 28, 6, 0, 0)


def test_placeholders_become_psycopg_ones_outside_literals_and_casts() -> None:
    sql = ("SELECT '?', '$x', '100%', \"a?\", x::VARCHAR, ? AS a, $name AS b, "
           "v LIKE 'a%' -- what? $no\nFROM t WHERE p % 2 = ?")
    assert translate(sql) == (
        "SELECT '?', '$x', '100%%', \"a?\", x::VARCHAR, %s AS a, %(name)s AS b, "
        "v LIKE 'a%%' -- what? $no\nFROM t WHERE p %% 2 = %s")
    assert translate("SELECT 'it''s ?'") == "SELECT 'it''s ?'"


@pytest.mark.duckdb_only
@pytest.mark.parametrize(("command", "absent"), [
    (["summary", "--format", "json"], ["numpy", "pandas", "psycopg", "pyarrow"]),
    (["failures", "--limit", "100", "--format", "json"], ["numpy", "pandas", "psycopg",
                                                         "pyarrow"]),
    (["alerts", "--check", "--format", "json"], ["httpx", "jinja2", "numpy", "pandas",
                                                 "prometheus_client", "psycopg", "pyarrow"])])
def test_reading_a_duckdb_store_loads_no_module_it_does_not_use(
        cli: Cli, db: Path, command: list[str], absent: list[str]) -> None:
    """PostgreSQL's driver is loaded only for a postgresql:// store, pyarrow (and numpy)
    only to write, the daily files' jinja2 and pandas not for alerts, nor the webhook's
    httpx or the metrics' prometheus_client: each costs a command a twentieth of a second
    or more."""
    cli.json("ingest", str(VALID))
    probe = ("import sys; from tlswatch.cli import main\n"
             f"sys.argv = ['tlswatch', '--db', {str(db)!r}, *{command!r}]\n"
             "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & "
             f"{set(absent)!r}), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip().startswith(("{", "[")), done.stdout
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr


def test_reports_load_once_and_name_their_strings(cli: Cli, db: Path | str) -> None:
    first = cli.json("ingest", str(VALID))
    again = cli.json("ingest", str(VALID))
    assert (first["accepted"], again["accepted"], again["duplicates"]) == (22, 0, 22)
    with Store.open(db, read_only=True) as store:
        assert store.value("SELECT count(*) FROM reports") == 22
        assert store.value("SELECT count(DISTINCT report_pk) FROM report_raw") == 22
        # every failure detail found its numbered names, and each name is numbered once
        assert store.value("SELECT count(*) FROM failure_details f JOIN names n "
                           "ON n.name_id = f.domain_id AND n.value = f.policy_domain") == \
            store.value("SELECT count(*) FROM failure_details")
        assert store.value("SELECT count(*) FROM names") == \
            store.value("SELECT max(name_id) FROM names")
        raw = store.value("SELECT raw_gzip FROM report_raw ORDER BY report_pk LIMIT 1")
        assert isinstance(raw, bytes) and raw[:2] == b"\x1f\x8b"


def test_results_have_the_same_python_types_on_both_engines(cli: Cli, db: Path | str) -> None:
    cli.json("ingest", str(VALID))
    with Store.open(db, read_only=True) as store:
        row = store.rows("""
            SELECT sum(failed_session_count)::DECIMAL(38,0) AS failed, count(*) AS n,
                   min(day) AS day, max(day) = max(day) AS same,
                   CAST(min(organization_name) AS VARCHAR) AS org, now() AS now
            FROM failure_details
        """)[0]
        report = store.rows("SELECT warnings, received_at FROM reports "
                            "WHERE warnings IS NOT NULL ORDER BY report_pk LIMIT 1")[0]
    assert [type(row[k]) for k in ("failed", "n", "day", "same", "org", "now")] == \
        [int, int, date, bool, str, datetime]
    assert row["now"].tzinfo is None and abs(row["now"] - datetime.now(UTC).replace(
        tzinfo=None)) < timedelta(hours=1)  # naive UTC
    assert isinstance(report["warnings"], list)
    assert isinstance(report["received_at"], datetime) and report["received_at"].tzinfo is None


def test_scratch_tables_and_arrow_results(db: Path | str) -> None:
    table = pa.table({"k": pa.array([2, 1], pa.int64()), "s": ["b%", "a?"],
                      "d": pa.array([date(2026, 11, 2), date(2026, 11, 1)], pa.date32()),
                      "t": pa.array([NOW, None], pa.timestamp("us")),
                      "l": pa.array([["x", "y"], []], pa.list_(pa.string())),
                      "b": pa.array([b"\x00\x01", b""], pa.binary())})
    with Store.open(db) as store, store.scratch("_things", table):
        got = store.rows("SELECT k, s, d, t, l, b FROM _things WHERE s LIKE '%' || ? "
                         "ORDER BY k", ["?"])
        assert got == [{"k": 1, "s": "a?", "d": date(2026, 11, 1), "t": None, "l": [],
                        "b": b""}]
        back = store.arrow("SELECT k, s, d, t, l FROM _things ORDER BY k")
    assert back.column("k").to_pylist() == [1, 2]
    assert back.column("l").to_pylist() == [[], ["x", "y"]]
    assert back.schema.field("d").type == pa.date32()
    assert back.schema.field("t").type == pa.timestamp("us")


def _alerts(n: int, day: date) -> pa.Table:
    return pa.table({
        "policy_domain": [f"d{i}.example" for i in range(n)], "kind": ["low-success"] * n,
        "day": pa.array([day] * n, pa.date32()), "message": [f"m{i}" for i in range(n)],
        "details": [json.dumps({"i": i}) for i in range(n)],
        "rank": pa.array(range(n), pa.int64())})


def test_alerts_are_capped_per_day_and_recorded_once(db: Path | str) -> None:
    day = date(2026, 11, 27)
    record = {"cap": 2, "more_kind": "more", "now": NOW,
              "more_message": "{more} more alert(s) for {day}"}
    with Store.open(db) as store:
        with store.transaction():
            first = store.record_alerts(_alerts(5, day), batch=1, **record)  # type: ignore[arg-type]
        assert [(r["policy_domain"], r["message"]) for r in first] == [
            ("*", "3 more alert(s) for 2026-11-27"), ("d0.example", "m0"), ("d1.example", "m1")]
        assert json.loads(first[0]["details"]) == {"more_alerts": 3, "cap": 2}
        assert first[1]["day"] == day
        with store.transaction():
            again = store.record_alerts(_alerts(1205, day), batch=2, **record)  # type: ignore[arg-type]
        assert again == []  # the 'more' alert was updated, not repeated
        assert store.value("SELECT message FROM alerts WHERE kind = 'more'") == \
            "1,203 more alert(s) for 2026-11-27"
        assert store.value("SELECT count(*) FROM alerts") == 3
        assert store.rows("SELECT alert_pk FROM alerts ORDER BY alert_pk") == \
            [{"alert_pk": 1}, {"alert_pk": 2}, {"alert_pk": 3}]


def _messages(batch: int, n: int) -> pa.Table:
    return pa.table({"batch": pa.array([batch] * n, pa.int64()), "kind": ["alerts"] * n,
                     "channel": ["mail"] * n, "recipient": [f"r{i}@example.com" for i in range(n)],
                     "subject": ["s"] * n, "body": [json.dumps({"n": i}) for i in range(n)]})


def test_outbox_claims_hide_deliveries_and_settling_reaches_the_alerts(db: Path | str) -> None:
    with Store.open(db) as store:
        with store.transaction():
            batch = store.next_outbox_batch()
            store.record_alerts(_alerts(1, date(2026, 11, 27)), cap=5, batch=batch,
                                more_kind="more", more_message="", now=NOW)
            store.enqueue(_messages(batch, 3), now=NOW)
            store.enqueue(_messages(batch + 1, 1), now=NOW)
        later = NOW + timedelta(minutes=5)
        claimed = store.claim_outbox(now=NOW, until=later, limit=2, batches=[batch])
        assert [(r["outbox_pk"], r["attempts"], r["recipient"]) for r in claimed] == \
            [(1, 1, "r0@example.com"), (2, 1, "r1@example.com")]
        assert json.loads(claimed[0]["body"]) == {"n": 0}
        rest = store.claim_outbox(now=NOW, until=later, limit=10)
        assert [r["outbox_pk"] for r in rest] == [3, 4]
        assert store.claim_outbox(now=NOW, until=later, limit=10) == []  # all hidden
        assert store.claim_outbox(now=NOW, until=later, limit=10, batches=[]) == []
        results = pa.table({
            "outbox_pk": pa.array([1, 2, 3], pa.int64()),
            "status": ["delivered", "delivered", "pending"],
            "next_try_at": pa.array([later] * 3, pa.timestamp("us")),
            "delivered_at": pa.array([later, later, None], pa.timestamp("us")),
            "last_error": [None, None, "421 busy"]})
        with store.transaction():
            store.settle_outbox(results)
        alert = store.rows("SELECT delivered_at, delivery_error FROM alerts")[0]
    assert alert == {"delivered_at": None,
                     "delivery_error": "mail r2@example.com: 421 busy"}


def test_quarantine_rows_are_kept_listed_changed_and_removed(cli: Cli, db: Path | str,
                                                             tmp_path: Path) -> None:
    bad = write_json(tmp_path / "bad.json", {"organization-name": "x"})
    cli("ingest", "--format", "json", str(bad), str(INVALID / "array.json"), code=1)
    cli("ingest", "--format", "json", str(bad), code=1)  # the same refusal is kept once
    with Store.open(db) as store:
        rows = quarantine_rows(store)
        assert [r["source"] for r in rows] == [str(bad), str(INVALID / "array.json")]
        one = quarantine_row(store, rows[0]["quarantine_pk"])
        assert one is not None and isinstance(one["raw_gzip"], bytes)
        assert [r["quarantine_pk"] for r in quarantine_with_sources(store, [str(bad)])] == \
            [rows[0]["quarantine_pk"]]
        with store.transaction():
            set_quarantine_reason(store, rows[0]["quarantine_pk"], "still 100% wrong")
        assert quarantine_rows(store)[0]["reason"] == "still 100% wrong"
        with store.transaction():
            assert delete_quarantine(store, [r["quarantine_pk"] for r in rows]) == 2
        assert quarantine_rows(store) == []


def test_a_report_with_new_content_displaces_the_unsigned_one(cli: Cli, db: Path | str,
                                                              tmp_path: Path) -> None:
    doc = make_report(rid="r-9", policies=[policy("example.com", 10, 0)])
    write_json(tmp_path / "a.json", doc)
    cli.json("ingest", str(tmp_path / "a.json"))
    doc["policies"] = [policy("example.com", 11, 0)]
    write_json(tmp_path / "b.json", doc)
    out = cli.json("ingest", str(tmp_path / "b.json"), code=None)
    assert out["conflicts"] == 1
    with Store.open(db, read_only=True) as store:
        assert store.value("SELECT count(*) FROM reports") == 1
        assert store.value("SELECT count(*) FROM quarantine") == 1
