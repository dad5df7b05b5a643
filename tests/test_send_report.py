"""`make run`'s example sender (tools/send_report.py): every run adds a new report."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from tests.serving import CLI, Serve

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "send_report.py"


def test_each_run_sends_a_report_not_loaded_before(tmp_path: Path) -> None:
    with Serve(tmp_path, smtp="") as server:
        for _ in range(2):
            sent = subprocess.run([sys.executable, str(SCRIPT), "--url", server.http_url,
                                   "--db", str(server.db)], capture_output=True, text=True)
            assert sent.returncode == 0, sent.stderr
            server.wait_loaded()
        day = str((datetime.now(UTC) - timedelta(days=1)).date())
        assert f"for example.com, day {day}: 100 sessions" in sent.stdout
        assert f"{server.http_url}/domains/example.com" in sent.stdout
        summary = json.loads(subprocess.run(
            [*CLI, "--db", str(server.db), "summary", "--since", day, "--until", day,
             "--format", "json"], check=True, capture_output=True, text=True).stdout)
        (com,) = summary["domains"]
        assert (com["reports"], com["successful_sessions"], com["failed_sessions"]) == \
            (2, 190, 10)
        overview = httpx.get(f"{server.http_url}/?format=json").json()
        assert [(d["policy_domain"], d["sessions"]) for d in overview["domains"]] == \
            [("example.com", 200)]
    refused = subprocess.run([sys.executable, str(SCRIPT), "--url", server.http_url],
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "is 'make run' serving there?" in refused.stderr
