"""Every alert kind fires once for a corpus made to trigger it, and never twice."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from tests.conftest import Cli, detail, make_report, policy, write_json
from tlswatch.analytics.alerts import KINDS, evaluate
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
    with Store.open(db) as store:
        found = evaluate(store, days, today=today)
        new = store.record_alerts(found)
        again = store.record_alerts(evaluate(store, days, today=today))
    kinds = {}
    for alert in found:
        kinds.setdefault(alert.kind, []).append(alert)
    assert set(kinds) == set(KINDS)
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
