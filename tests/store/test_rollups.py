"""Daily rollups: kept by every load and replacement, equal to a from-scratch computation,
untouched by pruning, and rebuilt by `db rebuild-rollups`."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VALID, Cli, detail, make_report, policy, write_json
from tests.ingest.test_poison import keys, mail
from tlswatch.analytics import narrowing, queries
from tlswatch.analytics.queries import Filters, failure_groups
from tlswatch.ingest.loader import load
from tlswatch.ingest.prepare import Options
from tlswatch.ingest.sources import Input
from tlswatch.store import Store
from tlswatch.store.rollups import rebuild

TABLES = {
    "rollup_days": "day, policy_domain, organization_name",
    "rollup_policies": "day, policy_domain, organization_name, policy_type, "
                       "CAST(policy_string AS VARCHAR), counted",
    "rollup_failures": "day, domain_id, organization_name_id, policy_type, result_type_id, "
                       "receiving_mx_hostname_id, receiving_ip_id, sending_mta_ip_id, counted, "
                       "seen",
    "rollup_results": "day, domain_id, organization_name_id, policy_type, result_type_id, "
                      "receiving_mx_hostname_id, receiving_ip_id, counted, seen",
    "rollup_ips": "month, domain_id, sending_mta_ip_id",
}
TODAY = datetime.now(UTC).date()
OLD = TODAY - timedelta(days=200)


def _rollups(db: Path | str) -> dict[str, list[dict[str, Any]]]:
    with Store.open(db, read_only=True) as store:
        return {t: store.rows(f"SELECT * FROM {t} ORDER BY {order}")
                for t, order in TABLES.items()}


def _corpus(folder: Path) -> None:
    folder.mkdir()
    same = [policy("dual.example", 90, 10, [detail("certificate-expired", 10)]),
            policy("dual.example", 88, 12, [detail("dane-required", 12),
                                            detail("sts-policy-fetch-error", 3)], ptype="tlsa")]
    write_json(folder / "same.json", make_report(rid="same", policies=same))
    added = [policy("post.example", 5, 2, [detail("starttls-not-supported", 2, sip="192.0.2.9")]),
             policy("post.example", 7, 1, [detail("tlsa-invalid", 1)], ptype="tlsa"),
             policy("post.example", 3, 4, [detail("validation-failure", 4, mx="mx2.example.com")],
                    ptype="no-policy-found")]
    write_json(folder / "added.json", make_report(org="Postfix", rid="added", policies=added))
    for i in range(3):
        old = make_report(rid=f"old{i}", day=OLD.isoformat(), policies=[
            policy("post.example", 10 + i, i, [detail("certificate-expired", i)] if i else None)])
        write_json(folder / f"old{i}.json", old)


def _load_varied(cli: Cli, tmp_path: Path) -> None:
    cli.json("ingest", str(VALID), code=None)
    _corpus(tmp_path / "more")
    cli.json("ingest", str(tmp_path / "more"))
    late = make_report(rid="late", day=(TODAY - timedelta(days=20)).isoformat(),
                       policies=[policy("dual.example", 1, 1, [detail("certificate-expired", 1)])])
    write_json(tmp_path / "late.json", late)
    cli.json("ingest", str(tmp_path / "late.json"))
    # The same report again with other content: the stored one is replaced (or refused).
    conflicting = make_report(rid="same", policies=[policy("dual.example", 50, 5, [
        detail("certificate-host-mismatch", 5, sip="198.51.100.7")])])
    write_json(tmp_path / "conflict.json", conflicting)
    cli("ingest", str(tmp_path / "conflict.json"), code=None)


def assert_rollups_equal_a_rebuild(db: Path | str, cli: Cli) -> None:
    """The rollups as loads left them equal those rebuilt from the detail tables (by the
    library and by 'tlswatch db rebuild-rollups')."""
    incremental = _rollups(db)
    assert all(incremental[t] for t in ("rollup_failures", "rollup_policies", "rollup_ips"))
    with Store.open(db) as store:
        rebuild(store)
    assert _rollups(db) == incremental
    assert "rollups rebuilt:" in cli("db", "rebuild-rollups").stdout
    assert _rollups(db) == incremental


def test_incremental_rollups_equal_a_rebuild(cli: Cli, db: Path | str, tmp_path: Path) -> None:
    _load_varied(cli, tmp_path)
    assert_rollups_equal_a_rebuild(db, cli)


def test_loads_after_a_rebuild_add_to_its_rows(cli: Cli, db: Path | str, tmp_path: Path) -> None:
    """A rebuild puts a new failure table in place of the old one: loads afterwards still
    add to its rows (its primary key is back) and keep the rollups equal to a rebuild."""
    cli.json("ingest", str(VALID), code=None)
    cli("db", "rebuild-rollups")
    _corpus(tmp_path / "more")
    cli.json("ingest", str(tmp_path / "more"))
    again = json.loads((tmp_path / "more" / "same.json").read_text())
    again["report-id"] = "again"  # another report with the same failures adds to their rows
    write_json(tmp_path / "again.json", again)
    cli("db", "rebuild-rollups")
    before = _rollups(db)["rollup_failures"]
    assert cli.json("ingest", str(tmp_path / "again.json"))["accepted"] == 1
    after = _rollups(db)["rollup_failures"]
    assert len(after) == len(before)
    assert sum(r["reports"] for r in after) > sum(r["reports"] for r in before)
    assert_rollups_equal_a_rebuild(db, cli)


@pytest.mark.duckdb_only  # pruning speaks DuckDB only
def test_pruning_leaves_the_rollups_and_a_rebuild_keeps_pruned_days(
        cli: Cli, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _load_varied(cli, tmp_path)
    incremental = _rollups(db)
    monkeypatch.setenv("TLSWATCH_DETAIL_KEEP_DAYS", "100")
    monkeypatch.setenv("TLSWATCH_SPOOL", str(tmp_path / "spool"))
    cli("prune")
    with Store.open(db, read_only=True) as store:
        assert store.value("SELECT count(*) FROM failure_details WHERE day = ?", [OLD]) == 0
    assert _rollups(db) == incremental
    out = cli("db", "rebuild-rollups").stdout
    assert "rollups rebuilt:" in out and "were pruned" in out
    assert _rollups(db) == incremental


def test_a_displaced_report_leaves_the_rollups(tmp_path: Path) -> None:
    options = Options(dnsfunc=keys)
    forged = make_report(rid="same", policies=[
        policy("example.com", 1, 9, [detail("certificate-expired", 9, sip="203.0.113.9")]),
        policy("other.example", 4, 0)])
    real = make_report(rid="same", policies=[
        policy("example.com", 10, 1, [detail("certificate-expired", 1)])])
    for doc in (forged, real):
        doc["contact-info"] = "tlsrpt@reporter.example"
    db = tmp_path / "t.duckdb"
    with Store.open(db) as store:
        load([Input("forged.eml", mail(forged, sign=False))], store, options=options)
        second = load([Input("real.eml", mail(real, sign=True))], store, options=options)
        assert second.conflicts == 1
        days = store.rows("SELECT policy_domain, successful_sessions, failed_sessions "
                          "FROM rollup_days ORDER BY policy_domain")
        failed = store.value("SELECT sum(failed_sessions)::DECIMAL(38,0) FROM rollup_failures")
    assert days == [{"policy_domain": "example.com", "successful_sessions": 10,
                     "failed_sessions": 1}]
    assert failed == 1
    incremental = _rollups(db)
    with Store.open(db) as store:
        rebuild(store)
    assert _rollups(db) == incremental


def _ips_from_details(store: Store, since: date | None, until: date | None
                      ) -> list[dict[str, Any]]:
    """Failed sessions that count per domain and sending IP, summed from the details."""
    rows = store.rows("""
        SELECT policy_domain, sending_mta_ip,
               sum(failed_session_count)::DECIMAL(38,0) AS failed_sessions
        FROM failure_details WHERE counted AND day >= ? AND day <= ?
        GROUP BY policy_domain, sending_mta_ip
    """, [since or date(1970, 1, 1), until or date(9999, 12, 31)])
    return sorted(rows, key=lambda r: (-r["failed_sessions"], r["policy_domain"],
                                       r["sending_mta_ip"] is None, r["sending_mta_ip"] or ""))


def test_sending_ips_of_any_period_equal_the_details(cli: Cli, db: Path | str,
                                                      tmp_path: Path) -> None:
    """Whole months come from rollup_ips, the days at a period's ends from rollup_failures:
    every period gives the sums of the details, whatever its ends."""
    _load_varied(cli, tmp_path)
    month = OLD.replace(day=1)
    month_end = (month + timedelta(days=40)).replace(day=1) - timedelta(days=1)
    periods = [(None, None), (OLD, TODAY), (month, None), (None, month_end),
               (month, month_end), (OLD + timedelta(days=1), TODAY - timedelta(days=1)),
               (TODAY - timedelta(days=20), TODAY - timedelta(days=20)), (None, OLD)]
    with Store.open(db, read_only=True) as store:
        assert store.value("SELECT count(*) FROM rollup_ips") > 0
        for since, until in periods:
            got = failure_groups(store, Filters(since=since, until=until),
                                 ("policy_domain", "sending_mta_ip"), top_per_domain=50)
            assert got == _ips_from_details(store, since, until), (since, until)
        one = Filters(since=month, until=TODAY, domains=("post.example",))
        got = failure_groups(store, one, ("policy_domain", "sending_mta_ip"), top_per_domain=50)
        assert got == [r for r in _ips_from_details(store, month, TODAY)
                       if r["policy_domain"] == "post.example"]


@pytest.mark.parametrize("per_pass", [queries.GROUPS_PER_PASS, 3])
def test_the_first_failure_groups_are_those_of_the_whole_list(
        cli: Cli, db: Path | str, tmp_path: Path, per_pass: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`failures --limit N` picks its groups by failed sessions first, summing a large
    rollup in several passes (here: a pass per 3 rollup rows): the same rows, ties
    included, as the whole list cut at N."""
    monkeypatch.setattr(queries, "GROUPS_PER_PASS", per_pass)
    _load_varied(cli, tmp_path)
    _assert_first_groups_are_the_whole_lists(db, Filters(domains=("post.example",)))


def _assert_first_groups_are_the_whole_lists(db: Path | str, *more: Filters) -> None:
    """For every period or selection, ``--limit n`` gives the whole list cut at n."""
    dims = ("policy_domain", "organization_name", "result_type", "receiving_mx_hostname",
            "receiving_ip", "sending_mta_ip")
    with Store.open(db, read_only=True) as store:
        for filters in (Filters(), Filters(since=TODAY - timedelta(days=30)), *more):
            whole = failure_groups(store, filters, dims, details=True)
            assert len(whole) > 1, filters
            for n in range(1, len(whole) + 2):
                assert failure_groups(store, filters, dims, limit=n, details=True) \
                    == whole[:n], (filters, n)


@pytest.mark.parametrize(("sample", "most_pairs"), [(1, 5_000), (2, 5_000), (1_000, 1),
                                                    (1_000, 5_000)])
def test_failure_groups_left_out_by_the_bounds_are_never_among_the_first(
        cli: Cli, db: Path | str, tmp_path: Path, sample: int, most_pairs: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`failures --limit N` leaves out the rows of (domain, sending IP) pairs below a floor
    taken from the groups of the largest rows: with a floor from one row or two, and when
    too many pairs reach it (no narrowing), the first N are those of the whole list."""
    monkeypatch.setattr(narrowing, "SAMPLE_ROWS", sample)
    monkeypatch.setattr(narrowing, "MOST_PAIRS", most_pairs)
    _load_varied(cli, tmp_path)
    _assert_first_groups_are_the_whole_lists(db, Filters(organizations=("Postfix",)))
