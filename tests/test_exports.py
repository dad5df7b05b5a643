"""`tlswatch export daily`: every format, numbers equal to `summary` for that day."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import duckdb

from tests.conftest import VALID, Cli, detail, make_report, policy, write_json

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
