"""The counting rule (it depends on the sender's layout), checked through the CLI a user runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import Cli, detail, make_report, policy, write_json


def domain(summary: dict, name: str) -> dict:
    (row,) = [d for d in summary["domains"] if d["policy_domain"] == name]
    return row


def npf(domain: str | None, ok: int, failed: int = 0,
        details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A no-policy-found entry; ``None`` leaves policy-domain out, as Postfix does."""
    entry = policy(domain or "", ok, failed, details, ptype="no-policy-found")
    del entry["policy"]["policy-string"]
    if domain is None:
        del entry["policy"]["policy-domain"]
    return entry


def figures(cli: Cli, name: str = "example.com") -> tuple[int, int, dict[str, int]]:
    row = domain(cli.json("summary"), name)
    return row["successful_sessions"], row["failed_sessions"], row["failures_by_result_type"]


def test_microsoft_layout_same_sessions_under_sts_and_tlsa_count_once(
        cli: Cli, tmp_path: Path) -> None:
    fails = [detail("starttls-not-supported", 7)]
    doc = make_report(org="Microsoft Corporation", policies=[
        policy("example.com", 100, 7, fails, ptype="sts"),
        policy("example.com", 100, 7, fails, ptype="tlsa"),
    ])
    cli.json("ingest", str(write_json(tmp_path / "ms.json", doc)))
    assert figures(cli) == (100, 7, {"starttls-not-supported": 7})
    assert domain(cli.json("summary"), "example.com")["success_rate"] == round(100 / 107, 6)
    assert [f["failed_sessions"] for f in cli.json("failures")] == [7]


def test_postfix_layout_entries_are_different_sessions_and_add_up(
        cli: Cli, tmp_path: Path) -> None:
    doc = make_report(org="mail.sender.example", policies=[
        npf(None, 10),
        policy("example.com", 20, 0, ptype="sts"),
        policy("example.com", 3, 2, [detail("tlsa-invalid", 2)], ptype="tlsa"),
    ])
    cli.json("ingest", str(write_json(tmp_path / "postfix.json", doc)))
    assert figures(cli) == (33, 2, {"tlsa-invalid": 2})


def test_mta_sts_started_mid_day_adds_the_sessions_before_it(cli: Cli, tmp_path: Path) -> None:
    doc = make_report(policies=[npf("example.com", 5),
                                policy("example.com", 8, 2, [detail("certificate-expired", 2)])])
    cli.json("ingest", str(write_json(tmp_path / "r.json", doc)))
    assert figures(cli) == (13, 2, {"certificate-expired": 2})


def test_same_sessions_take_failures_and_details_from_one_type(cli: Cli, tmp_path: Path) -> None:
    # 5 sessions under both policies: DANE failed all of them, MTA-STS none.
    doc = make_report(policies=[
        policy("example.com", 5, 0, [], ptype="sts"),
        policy("example.com", 0, 5, [detail("tlsa-invalid", 5)], ptype="tlsa"),
    ])
    cli.json("ingest", str(write_json(tmp_path / "r.json", doc)))
    assert figures(cli) == (0, 5, {"tlsa-invalid": 5})
    shown = cli.json("report", "show", "r-1")
    rules = {p["policy_type"]: (p["counted"], p["counting_rule"]) for p in shown["policies"]}
    assert rules["tlsa"][0] is True and rules["sts"][0] is False
    assert "same sessions" in rules["sts"][1]


def test_one_type_is_summed_within_then_unequal_totals_are_added(
        cli: Cli, tmp_path: Path) -> None:
    doc = make_report(policies=[
        policy("example.com", 40, 1, [detail("certificate-expired", 1, mx="mx1.example.com")]),
        policy("example.com", 50, 2, [detail("certificate-expired", 2, mx="mx2.example.com")]),
        policy("example.com", 80, 0, [], ptype="tlsa"),
        npf("example.com", 4, 1, [detail("starttls-not-supported", 1)]),
        policy("other.example", 5, 0),
    ])
    cli.json("ingest", str(write_json(tmp_path / "r.json", doc)))
    assert figures(cli) == (174, 4, {"certificate-expired": 3, "starttls-not-supported": 1})
    assert figures(cli, "other.example") == (5, 0, {})


def test_equal_totals_across_sts_entries_and_one_tlsa_are_the_same_sessions(
        cli: Cli, tmp_path: Path) -> None:
    doc = make_report(policies=[
        policy("example.com", 40, 1, [detail("certificate-expired", 1)]),
        policy("example.com", 50, 2, [detail("certificate-expired", 2)]),
        policy("example.com", 93, 0, [], ptype="tlsa"),
        npf("example.com", 4),
    ])
    cli.json("ingest", str(write_json(tmp_path / "r.json", doc)))
    assert figures(cli) == (94, 3, {"certificate-expired": 3})


def test_per_policy_type_figures_stay_available(cli: Cli, tmp_path: Path) -> None:
    fails = [detail("starttls-not-supported", 7)]
    doc = make_report(policies=[policy("example.com", 100, 7, fails, ptype="sts"),
                                policy("example.com", 100, 7, fails, ptype="tlsa")])
    cli.json("ingest", str(write_json(tmp_path / "ms.json", doc)))
    shown = cli.json("report", "show", "r-1")
    assert [(p["policy_type"], p["successful_sessions"], p["failed_sessions"])
            for p in shown["policies"]] == [("sts", 100, 7), ("tlsa", 100, 7)]


def test_a_report_seen_twice_counts_once(cli: Cli, tmp_path: Path) -> None:
    doc = make_report(policies=[policy("example.com", 10, 1, [detail("certificate-expired", 1)])])
    a = write_json(tmp_path / "a.json", doc)
    b = write_json(tmp_path / "b.json.gz", doc, gz=True)
    first = cli.json("ingest", str(a), str(b))
    assert (first["accepted"], first["duplicates"]) == (1, 1)
    assert first["duplicate_reports"][0]["source"] == str(b)
    again = cli.json("ingest", str(a))
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, 1, 0)
    row = domain(cli.json("summary"), "example.com")
    assert (row["reports"], row["successful_sessions"], row["failed_sessions"]) == (1, 10, 1)


def test_same_report_id_from_two_organisations_is_two_reports(cli: Cli, tmp_path: Path) -> None:
    one = write_json(tmp_path / "1.json", make_report(org="A", rid="same"))
    two = write_json(tmp_path / "2.json", make_report(org="B", rid="same"))
    assert cli.json("ingest", str(one), str(two))["accepted"] == 2


def test_period_filters_and_change_from_previous_period(cli: Cli, tmp_path: Path) -> None:
    files = []
    for i, (day, ok, failed) in enumerate([("2026-11-20", 90, 10), ("2026-11-21", 95, 5),
                                           ("2026-11-22", 99, 1), ("2026-11-23", 100, 0)]):
        doc = make_report(rid=f"d{i}", day=day, policies=[
            policy("example.com", ok, failed, [detail("certificate-expired", failed)])])
        files.append(str(write_json(tmp_path / f"{i}.json", doc)))
    cli.json("ingest", *files)
    out = cli.json("summary", "--since", "2026-11-22", "--until", "2026-11-23")
    assert (out["since"], out["until"]) == ("2026-11-22", "2026-11-23")
    row = domain(out, "example.com")
    assert (row["reports"], row["successful_sessions"], row["failed_sessions"]) == (2, 199, 1)
    prev = row["previous"]
    assert (prev["since"], prev["until"]) == ("2026-11-20", "2026-11-21")
    assert (prev["successful_sessions"], prev["failed_sessions"]) == (185, 15)
    assert row["change_failed_sessions"] == -14
    assert row["change_success_rate"] == round(199 / 200 - 185 / 200, 6)
    whole = cli.json("summary")
    assert domain(whole, "example.com")["reports"] == 4
    assert domain(whole, "example.com")["previous"] is None


def test_report_day_is_the_utc_date_of_the_start(cli: Cli, tmp_path: Path) -> None:
    doc = make_report()
    doc["date-range"] = {"start-datetime": "2026-11-25T23:30:00-02:00",
                         "end-datetime": "2026-11-26T23:29:59-02:00"}
    cli.json("ingest", str(write_json(tmp_path / "r.json", doc)))
    assert cli.json("summary", "--since", "2026-11-26", "--until", "2026-11-26")["domains"]
    assert not cli.json("summary", "--since", "2026-11-25", "--until", "2026-11-25")["domains"]


def sts_testing(domain: str, ok: int, failed: int,
                details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    entry = policy(domain, ok, failed, details)
    entry["policy"]["policy-string"] = ["version: STSv1", "mode: testing", "mx: mx.example.com",
                                        "max_age: 86400"]
    return entry


def test_dane_failures_on_the_same_sessions_were_not_delivered_even_in_testing(
        cli: Cli, tmp_path: Path) -> None:
    fails = [detail("starttls-not-supported", 7)]
    doc = make_report(org="Microsoft Corporation", policies=[
        sts_testing("example.com", 100, 7, fails), policy("example.com", 100, 7, fails, "tlsa")])
    cli.json("ingest", str(write_json(tmp_path / "ms.json", doc)))
    row = domain(cli.json("summary"), "example.com")
    assert row["delivery_impact"] == {"deferred_or_bounced": 7}
    text = cli("summary", "--format", "text").stdout
    assert "7 failed sessions were not delivered" in text and "delivered anyway" not in text


def test_a_policy_problem_under_the_type_left_out_still_shows_in_advice_and_alerts(
        cli: Cli, tmp_path: Path) -> None:
    # The same 100 sessions: MTA-STS could not fetch the policy for 10, DANE failed 20.
    # tlsa counts (more failures), yet the broken policy host must not be hidden.
    day = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    files = []
    for org in ("Microsoft Corporation", "Other Sender"):
        doc = make_report(org=org, rid=f"{org}-1", day=day, policies=[
            sts_testing("e.example", 90, 10, [detail("sts-policy-fetch-error", 10)]),
            policy("e.example", 80, 20, [detail("tlsa-invalid", 20)], "tlsa")])
        files.append(str(write_json(tmp_path / f"{org}.json", doc)))
    cli.json("ingest", *files)
    assert figures(cli, "e.example") == (160, 40, {"tlsa-invalid": 40})
    advice = cli.json("policy", "advise", "e.example")
    assert advice["enforce"] is False
    assert [b["result_type"] for b in advice["blockers"]] == ["sts-policy-fetch-error"]
    cli("alerts", "--check", code=None)
    kinds = {a["kind"] for a in cli.json("alerts", "--domain", "e.example")}
    assert "sts_policy_problem" in kinds
