"""A real 'serve': a report for yesterday that arrives after yesterday's files were written
gets them rewritten, and a revised summary reaches a real webhook receiver."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests import test_delivery
from tests.conftest import Cli, detail, make_report, policy, write_json
from tests.serving import Serve

webhook = test_delivery.webhook  # a real receiver on loopback


def _wait(server: Serve, what: str, done: Callable[[], bool], timeout: float = 120) -> None:
    """Poll until ``done()``; the worker checks the schedule every 30 s."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what}:\n" + "".join(server.output)
        time.sleep(0.1)


def _figures(path: Path) -> dict[str, tuple[int, int, int]]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {d["policy_domain"]: (d["reports"], d["successful_sessions"], d["failed_sessions"])
            for d in data["domains"]}


def test_late_report_rewrites_yesterday_and_posts_a_revised_summary(
        tmp_path: Path, webhook: test_delivery.Hook) -> None:
    day = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    cli = Cli(tmp_path / "tlswatch.duckdb")
    first = make_report(org="Early Reporter", rid="early", day=day, policies=[
        policy("example.com", 100, 5, [detail("certificate-expired", 5)])])
    cli.json("ingest", str(write_json(tmp_path / "early.json", first)))
    out = tmp_path / "daily"
    daily = out / f"tlswatch-summary-{day}.json"

    def summaries(*, revised: bool) -> list[dict[str, Any]]:
        return [p for p in webhook.delivered if p.get("day") == day and
                p.get("revised") is revised]

    with Serve(tmp_path, smtp="", webhook_url=webhook.url, export_dir=str(out),
               export_time="00:00", export_formats=["json", "csv", "parquet"],
               delivery_interval=0.1) as server:
        _wait(server, "yesterday's files and summary", lambda: bool(summaries(revised=False)))
        assert _figures(daily) == {"example.com": (1, 100, 5)}
        late = make_report(org="Postfix Site", rid="late", day=day, policies=[
            policy("example.com", 20, 400, [detail("certificate-expired", 400)])])
        reply = httpx.post(f"{server.http_url}/v1/reports", content=json.dumps(late).encode(),
                           headers={"Content-Type": "application/tlsrpt+json"})
        assert reply.status_code in (200, 201, 202), reply.text
        _wait(server, "the revised summary", lambda: bool(summaries(revised=True)))
        assert _figures(daily) == {"example.com": (2, 120, 405)}
        summary = cli.json("summary", "--since", day, "--until", day)
        assert _figures(daily) == {d["policy_domain"]: (d["reports"], d["successful_sessions"],
                                                        d["failed_sessions"])
                                   for d in summary["domains"]}
        assert server.stop() == 0
    (revised,) = summaries(revised=True)
    assert revised["changes"] == [{"policy_domain": "example.com", "sessions_before": 105,
                                   "sessions_after": 525, "failed_before": 5,
                                   "failed_after": 405}]
    assert revised["text"].startswith(f"TLS report summary for {day} (revised)")
    assert len(summaries(revised=False)) == 1
    assert any(f"rewrote the daily files of {day}: 2 report(s), 405 failed session(s)" in line
               for line in server.output)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        f"tlswatch-summary-{day}.{ext}" for ext in ("csv", "json", "parquet")]


def test_serve_with_export_dir_waits_for_the_database_in_one_line(tmp_path: Path) -> None:
    with Serve(tmp_path, smtp="", export_dir=str(tmp_path / "daily"),
               export_time="00:00") as server:
        _wait(server, "the waiting line", lambda: any(
            "daily summary waits: no database" in line for line in server.output))
        assert server.stop() == 0
    assert "Traceback" not in "".join(server.output)
    assert sum("daily summary waits" in line for line in server.output) == 1


def test_serve_logs_each_day_it_writes_in_one_line(tmp_path: Path) -> None:
    """An admin sees in the journal when 'serve' wrote a day's files, not only rewrites."""
    day = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    cli = Cli(tmp_path / "tlswatch.duckdb")
    report = make_report(org="Early Reporter", rid="early", day=day, policies=[
        policy("example.com", 100, 5, [detail("certificate-expired", 5)])])
    cli.json("ingest", str(write_json(tmp_path / "early.json", report)))
    out = tmp_path / "daily"
    with Serve(tmp_path, smtp="", export_dir=str(out), export_time="00:00",
               export_formats=["json"], verbose=False) as server:
        _wait(server, "the line for the day written", lambda: any(
            f"wrote the daily files of {day}" in line for line in server.output))
        assert server.stop() == 0
    line = next(x for x in server.output if f"wrote the daily files of {day}" in x)
    assert line.startswith("INFO tlswatch.jobs:")
    assert f"into {out}: 1 report(s), 5 failed session(s)" in line
