"""`tlswatch export daily`: every format, numbers equal to `summary` for that day."""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import date, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests import test_delivery
from tests.conftest import VALID, Cli, detail, fill, make_report, policy, write_json
from tlswatch import jobs
from tlswatch.config import load_settings
from tlswatch.outbox import deliver_due

DAY = "2026-11-26"


def test_daily_files_match_summary_for_the_day(cli: Cli, tmp_path: Path) -> None:
    cli.json("ingest", str(VALID))
    out = tmp_path / "out"
    written = cli("export", "daily", "--date", DAY, "--out", str(out)).stdout.split()
    assert sorted(Path(p).name for p in written) == sorted(
        f"tlswatch-summary-{DAY}.{ext}" for ext in ("md", "html", "csv", "json", "parquet"))
    summary = cli.json("summary", "--since", DAY, "--until", DAY)
    expected = {d["policy_domain"]: (d["reports"], d["successful_sessions"],
                                     d["failed_sessions"], d["failures_by_result_type"])
                for d in summary["domains"]}
    data = json.loads((out / f"tlswatch-summary-{DAY}.json").read_text())
    assert {d["policy_domain"]: (d["reports"], d["successful_sessions"], d["failed_sessions"],
                                 d["failures_by_result_type"]) for d in data["domains"]} == expected
    assert data["day"] == DAY and all(d["paragraph"] for d in data["domains"])
    rows = list(csv.DictReader(io.StringIO((out / f"tlswatch-summary-{DAY}.csv").read_text())))
    assert {r["policy_domain"]: (int(r["successful_sessions"]), int(r["failed_sessions"]))
            for r in rows} == {k: (v[1], v[2]) for k, v in expected.items()}
    parquet = duckdb.sql(f"SELECT policy_domain, successful_sessions, failed_sessions FROM "
                         f"'{out / f'tlswatch-summary-{DAY}.parquet'}'").fetchall()
    assert {r[0]: (r[1], r[2]) for r in parquet} == {k: (v[1], v[2]) for k, v in expected.items()}
    md = (out / f"tlswatch-summary-{DAY}.md").read_text()
    assert f"# TLS report summary for {DAY}" in md and "## example.com" in md
    page = (out / f"tlswatch-summary-{DAY}.html").read_text()
    assert "<svg" in page and "example.net" in page
    assert "http://" not in page and "https://" not in page.replace(
        "https://mta-sts.example.net", "")  # self-contained: nothing to fetch


def test_rerun_replaces_files_and_leaves_no_temporaries(cli: Cli, tmp_path: Path) -> None:
    cli.json("ingest", str(VALID))
    out = tmp_path / "out"
    cli("export", "daily", "--date", DAY, "--out", str(out), "--format", "json,csv")
    first = (out / f"tlswatch-summary-{DAY}.json").read_text()
    extra = make_report(org="Late Reporter", rid="late", day=DAY,
                        policies=[policy("example.com", 1000, 0)])
    cli.json("ingest", str(write_json(tmp_path / "late.json", extra)))
    cli("export", "daily", "--date", DAY, "--out", str(out), "--format", "json,csv")
    second = json.loads((out / f"tlswatch-summary-{DAY}.json").read_text())
    assert first != json.dumps(second)
    assert sorted(p.name for p in out.iterdir()) == [f"tlswatch-summary-{DAY}.csv",
                                                     f"tlswatch-summary-{DAY}.json"]


def test_untrusted_strings_are_escaped_and_csv_is_formula_safe(cli: Cli, tmp_path: Path) -> None:
    doc = make_report(org="=cmd|'/C calc'!A0 <script>alert(1)</script>", day=DAY,
                      policies=[policy("evil.example", 1, 2, [detail("certificate-expired", 2)])])
    cli.json("ingest", str(write_json(tmp_path / "evil.json", doc)))
    out = tmp_path / "out"
    cli("export", "daily", "--date", DAY, "--out", str(out))
    page = (out / f"tlswatch-summary-{DAY}.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<script>" not in (out / f"tlswatch-summary-{DAY}.md").read_text()
    row = next(csv.DictReader(io.StringIO((out / f"tlswatch-summary-{DAY}.csv").read_text())))
    assert row["organizations"].startswith("'=cmd")


def test_unknown_format_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    cli.json("ingest", str(VALID))
    result = cli("export", "daily", "--date", DAY, "--out", str(tmp_path), "--format", "pdf",
                 code=2)
    assert "unknown format(s) pdf" in result.stderr


def _dataset(cli: Cli, tmp_path: Path) -> tuple[Path, list[str]]:
    """Daily files for four days: the 24th empty (its files come first in a listing), the
    25th and 26th with example.com, the 27th adding a domain the others lack, with a result
    type of the registry and one outside it."""
    (tmp_path / "in").mkdir()
    docs = [make_report(rid="a", day="2026-11-25", policies=[
                policy("example.com", 90, 10, [detail("certificate-expired", 10)])]),
            make_report(rid="b", day="2026-11-26", policies=[policy("example.com", 40, 0)]),
            make_report(rid="c", day="2026-11-27", policies=[
                policy("example.com", 5, 3, [detail("starttls-not-supported", 3)]),
                policy("only-here.example", 1, 7, [detail("sts-webpki-invalid", 4),
                                                   detail("tls-handshake-timeout", 3)])])]
    for doc in docs:
        write_json(tmp_path / "in" / f"{doc['report-id']}.json", doc)
    cli.json("ingest", str(tmp_path / "in"))
    out = tmp_path / "daily"
    days = ["2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27"]
    for day in days:
        cli("export", "daily", "--date", day, "--out", str(out), "--format", "csv,json,parquet")
    return out, days


def _expected(cli: Cli, since: str, until: str) -> dict[str, tuple[int, int, int]]:
    summary = cli.json("summary", "--since", since, "--until", until)
    return {d["policy_domain"]: (d["reports"], d["successful_sessions"], d["failed_sessions"])
            for d in summary["domains"]}


def test_daily_files_read_as_one_table_with_duckdb_and_pandas(cli: Cli, tmp_path: Path) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    out, days = _dataset(cli, tmp_path)
    expected = _expected(cli, days[0], days[-1])
    headers = {(out / f"tlswatch-summary-{d}.csv").read_text().splitlines()[0] for d in days}
    assert len(headers) == 1 and "other_result_types" in headers.pop()  # empty day too
    schemas = {str(pq.read_schema(out / f"tlswatch-summary-{d}.parquet")) for d in days}
    assert len(schemas) == 1
    per_domain = ("SELECT policy_domain, sum(reports)::BIGINT, sum(successful_sessions)::BIGINT, "
                  "sum(failed_sessions)::BIGINT FROM {} GROUP BY ALL")
    for source in (f"read_csv('{out}/*.csv', union_by_name=false)",
                   f"read_parquet('{out}/*.parquet')"):
        rows = duckdb.sql(per_domain.format(source)).fetchall()
        assert {r[0]: r[1:] for r in rows} == expected, source
    csv_all = pd.concat([pd.read_csv(out / f"tlswatch-summary-{d}.csv") for d in days])
    parquet_all = pd.concat([pd.read_parquet(out / f"tlswatch-summary-{d}.parquet")
                             for d in days])
    for frame in (csv_all, parquet_all):
        sums = frame.groupby("policy_domain")[["reports", "successful_sessions",
                                               "failed_sessions"]].sum()
        assert {k: tuple(int(x) for x in v) for k, v in sums.iterrows()} == expected
    by_type = cli.json("summary", "--since", days[0], "--until", days[-1])["domains"]
    assert {d["policy_domain"]: d["failures_by_result_type"] for d in by_type} == {
        "example.com": {"certificate-expired": 10, "starttls-not-supported": 3},
        "only-here.example": {"sts-webpki-invalid": 4, "tls-handshake-timeout": 3}}
    totals = csv_all[["certificate-expired", "starttls-not-supported", "sts-webpki-invalid",
                      "other_result_types"]].sum()
    assert [int(n) for n in totals] == [10, 3, 4, 3]
    empty = json.loads((out / "tlswatch-summary-2026-11-24.json").read_text())
    assert (empty["day"], empty["domains"]) == ("2026-11-24", [])
    assert pq.read_metadata(out / "tlswatch-summary-2026-11-24.parquet").num_rows == 0


def test_unusable_out_is_a_clear_error(cli: Cli, tmp_path: Path) -> None:
    cli.json("ingest", str(VALID))
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for out, reason in ((afile, "not a folder"), (afile / "sub", "Not a directory")):
        result = cli("export", "daily", "--date", DAY, "--out", str(out), code=1)
        assert result.stderr == f"tlswatch: {out}: cannot write the daily files there: " \
                                f"{reason}\n"
        assert result.stdout == ""


def test_full_disk_is_a_clear_error_and_leaves_no_temporary(cli: Cli, tiny_disk: Path) -> None:
    cli.json("ingest", str(VALID))
    fill(tiny_disk)
    result = cli("export", "daily", "--date", DAY, "--out", str(tiny_disk), code=1)
    assert result.stderr == (f"tlswatch: {tiny_disk}/tlswatch-summary-{DAY}.md: cannot write "
                             "the daily file: No space left on device\n")
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


webhook = test_delivery.webhook  # a real receiver on loopback


def _file_figures(folder: Path, day: str) -> dict[str, tuple[int, int, int]]:
    data = json.loads((folder / f"tlswatch-summary-{day}.json").read_text())
    return {d["policy_domain"]: (d["reports"], d["successful_sessions"], d["failed_sessions"])
            for d in data["domains"]}


def _ingest(cli: Cli, folder: Path, doc: dict[str, Any]) -> None:
    cli.json("ingest", str(write_json(folder / f"{doc['report-id']}.json", doc)))


def test_late_reports_rewrite_the_day_and_send_a_revised_summary(
        cli: Cli, db: Path, tmp_path: Path, webhook: test_delivery.Hook) -> None:
    cli.json("ingest", str(VALID))  # the 26th: 3 reports, 58 failed sessions
    out = tmp_path / "daily"
    settings = load_settings(None, environ={}, db=db, export_dir=str(out), webhook_url=webhook.url,
                             export_formats=("json", "csv"), summary_max_revisions=2)
    morning = datetime(2026, 11, 27, 6, 0)

    def run(at: datetime, *, max_revisions: int = 2) -> list[date]:
        done = jobs.run_schedule(settings.replace(summary_max_revisions=max_revisions), at)
        deliver_due(settings)
        assert _file_figures(out, DAY) == _expected(cli, DAY, DAY)  # numbers = summary
        return done

    assert run(morning) == [date(2026, 11, 26)]
    assert _file_figures(out, DAY)["example.com"] == (3, 12803, 58)
    assert [p["revised"] for p in webhook.delivered if "day" in p] == [False]
    assert run(morning + timedelta(minutes=1)) == []  # nothing new: nothing rewritten
    _ingest(cli, tmp_path, make_report(org="Postfix Site", rid="late-1", day=DAY, policies=[
        policy("example.com", 0, 500, [detail("certificate-expired", 500)])]))
    assert run(morning + timedelta(hours=4)) == [date(2026, 11, 26)]
    assert _file_figures(out, DAY)["example.com"] == (4, 12803, 558)
    revised = [p for p in webhook.delivered if p.get("revised")]
    assert len(revised) == 1 and revised[0]["text"].startswith(
        "TLS report summary for 2026-11-26 (revised)")
    assert revised[0]["changes"] == [{"policy_domain": "example.com", "sessions_before": 12861,
                                      "sessions_after": 13361, "failed_before": 58,
                                      "failed_after": 558}]
    assert "12,861 sessions, 58 failed before; now 13,361 sessions, 558 failed" in \
        revised[0]["text"].replace("\u200b", "")
    _ingest(cli, tmp_path, make_report(rid="late-2", day=DAY, policies=[
        policy("example.com", 9, 0)]))  # 9 more sessions: not material
    assert run(morning + timedelta(hours=5)) == [date(2026, 11, 26)]
    assert len([p for p in webhook.delivered if p.get("revised")]) == 1
    _ingest(cli, tmp_path, make_report(rid="late-3", day=DAY, policies=[
        policy("new.example", 1, 0)]))  # a domain new for the day: material
    assert run(morning + timedelta(hours=6)) == [date(2026, 11, 26)]
    revised = [p for p in webhook.delivered if p.get("revised")]
    assert len(revised) == 2 and revised[1]["domains"] == ["new.example"]
    _ingest(cli, tmp_path, make_report(rid="late-4", day=DAY, policies=[
        policy("example.com", 0, 5000)]))  # material, but the day had its 2 revisions
    assert run(morning + timedelta(hours=7)) == [date(2026, 11, 26)]
    assert len([p for p in webhook.delivered if p.get("revised")]) == 2
    assert run(morning + timedelta(hours=7), max_revisions=3) == []  # recorded as written
    _ingest(cli, tmp_path, make_report(rid="late-5", day=DAY, policies=[
        policy("example.com", 0, 5000)]))
    before = (out / f"tlswatch-summary-{DAY}.json").read_text()
    assert date(2026, 11, 26) not in jobs.run_schedule(settings, datetime(2026, 12, 4, 6, 0))
    assert (out / f"tlswatch-summary-{DAY}.json").read_text() == before  # 8 days back: kept


def test_schedule_waits_quietly_for_the_database(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(None, environ={}, db=tmp_path / "none.duckdb",
                             export_dir=str(tmp_path / "daily"))
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert jobs.run_schedule(settings, datetime(2026, 11, 27, 7, 0)) == []
    (line,) = caplog.records
    assert line.getMessage() == (f"daily summary waits: no database at {tmp_path}/none.duckdb "
                                 "yet (it is made when the first report is loaded)")
    assert not (tmp_path / "daily").exists() and not (tmp_path / "none.duckdb").exists()


smtp_sink = test_delivery.smtp_sink  # a real SMTP server with STARTTLS and login


def test_revised_mail_goes_to_the_owners_of_the_changed_domain(
        cli: Cli, db: Path, tmp_path: Path, smtp_sink: Any, webhook: test_delivery.Hook,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sink, controller, ca = smtp_sink
    cli.json("ingest", str(VALID))
    settings = test_delivery.settings_for(db, controller.port, ca, webhook.url, monkeypatch,
                                          export_dir=str(tmp_path / "daily"),
                                          export_formats=("json",))

    def mails() -> dict[tuple[str, ...], Message]:
        return {tuple(sorted(r)): message_from_bytes(m) for r, m in sink.messages
                if b"(revised)" in m}

    jobs.run_schedule(settings, datetime(2026, 11, 27, 7, 0))
    test_delivery.deliver_until(settings, lambda: len(sink.messages) >= 3)
    assert mails() == {}
    _ingest(cli, tmp_path, make_report(rid="late-org", day=DAY, policies=[
        policy("example.org", 0, 300, [detail("certificate-expired", 300)])]))
    assert jobs.run_schedule(settings, datetime(2026, 11, 27, 11, 0)) == [date(2026, 11, 26)]
    test_delivery.deliver_until(settings, lambda: bool(mails()))
    (recipients, message), = mails().items()  # one mail: both get the same domains
    assert recipients == ("all@example.net", "org-owner@example.org")  # not com-owner
    assert message["Subject"] == f"TLS report summary for {DAY} (revised)"
    text, page = (p.get_payload(decode=True).decode() for p in message.get_payload())
    assert text.startswith("Revised: example.org: 61 sessions, 1 failed before; now 361 "
                           "sessions, 301 failed.\r\nexample.org: ") and "example.com:" not in text
    assert "<h2>Revised</h2>" in page and 'id="example.org"' in page
    assert 'id="example.com"' not in page


def test_a_late_report_also_rewrites_the_next_day_whose_change_it_moves(
        cli: Cli, db: Path, tmp_path: Path) -> None:
    for rid, day, failed in (("d25", "2026-11-25", 10), ("d26", "2026-11-26", 20)):
        _ingest(cli, tmp_path, make_report(rid=rid, day=day, policies=[
            policy("example.com", 100, failed)]))
    out = tmp_path / "daily"
    settings = load_settings(None, environ={}, db=db, export_dir=str(out),
                             export_formats=("csv",))
    for day in (26, 27):
        assert jobs.run_schedule(settings, datetime(2026, 11, day, 7, 0)) == [
            date(2026, 11, day - 1)]
    _ingest(cli, tmp_path, make_report(rid="late", day="2026-11-25", policies=[
        policy("example.com", 0, 50)]))
    assert jobs.run_schedule(settings, datetime(2026, 11, 27, 9, 0)) == [
        date(2026, 11, 25), date(2026, 11, 26)]
    (row,) = csv.DictReader(io.StringIO((out / "tlswatch-summary-2026-11-26.csv").read_text()))
    (expected,) = cli.json("summary", "--since", DAY, "--until", DAY)["domains"]
    assert int(row["change_failed_sessions"]) == expected["change_failed_sessions"] == -40


def test_schedule_with_an_unusable_export_dir_logs_one_line(
        cli: Cli, db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cli.json("ingest", str(VALID))
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    settings = load_settings(None, environ={}, db=db, export_dir=str(afile))
    for _ in range(3):
        assert jobs.run_schedule(settings, datetime(2026, 11, 27, 7, 0)) == []
    (line,) = [r for r in caplog.records if r.name == "tlswatch.jobs"]
    assert (line.levelname, line.getMessage()) == (
        "ERROR", f"daily summary not written (tried again every 30 s): {afile}: cannot write "
                 "the daily files there: not a folder")


def test_send_with_nowhere_to_send_says_so(cli: Cli, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """From cron, '--send' with no mail or webhook set up sent nothing and exited 0."""
    cli.json("ingest", str(VALID))
    out = tmp_path / "daily"
    for key in ("MAIL_SMTP", "MAIL_TO", "MAIL_TO_DOMAINS", "WEBHOOK_URL"):
        monkeypatch.delenv(f"TLSWATCH_{key}", raising=False)
    refused = cli("export", "daily", "--date", "2026-11-25", "--out", str(out), "--send",
                  code=2)
    assert "nothing to send with: set mail_smtp and mail_to (or mail_to_domains), or " \
           "webhook_url" in refused.stderr
    assert not out.exists()
    monkeypatch.setenv("TLSWATCH_MAIL_SMTP", "127.0.0.1:1")
    assert "nothing to send with" in cli("export", "daily", "--out", str(out), "--send",
                                         code=2).stderr
