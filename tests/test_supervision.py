"""``serve`` keeps its loader running and ``/healthz`` tells the truth about it."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import httpx

from tests.ingest.test_receivers import GZIP_TYPE, gz_report
from tests.serving import Serve


def health(server: Serve) -> tuple[int, dict[str, Any]]:
    reply = httpx.get(f"{server.http_url}/healthz", timeout=10)
    return reply.status_code, reply.json()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll ``check`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)
    return result


def healthy(server: Serve) -> bool:
    return health(server)[0] == 200


def loader_pid(server: Serve) -> int | None:
    return server.loader_pid()


def test_a_killed_loader_is_restarted_and_healthz_says_why_meanwhile(tmp_path: Path) -> None:
    with Serve(tmp_path, smtp="", http_rate_limit=0) as server:
        wait_for(lambda: healthy(server), "the loader runs")
        first = wait_for(lambda: loader_pid(server), "the loader process")
        os.kill(first, signal.SIGKILL)
        _, body = wait_for(lambda: (h := health(server))[0] == 503 and h,
                           "/healthz reports the dead loader")
        # Down (waiting to restart) or starting again: either way, it says what happened.
        assert body["status"] == "unavailable"
        assert "was killed by SIGKILL after" in body["reason"], body
        wait_for(lambda: healthy(server), "the loader is back")
        assert loader_pid(server) != first
        reply = httpx.post(f"{server.http_url}/v1/reports", content=gz_report("after-kill"),
                           headers=GZIP_TYPE, timeout=10)
        assert reply.status_code == 201
        server.wait_loaded()
        assert server.query("SELECT count(*) FROM reports WHERE report_id = 'after-kill'") \
            == [(1,)]
        assert server.stop() == 0
    restarts = [line for line in server.output if "restarting it in" in line]
    assert len(restarts) == 1 and "killed by SIGKILL" in restarts[0], restarts


def test_a_loader_that_keeps_dying_at_start_is_restarted_with_back_off(
        tmp_path: Path) -> None:
    """Killed again as soon as it is back, three times: the waits double, never a spin."""
    with Serve(tmp_path, smtp="", loader_restart_max=4) as server:
        pid = wait_for(lambda: loader_pid(server), "the loader starts")
        for _ in range(4):
            os.kill(pid, signal.SIGKILL)
            pid = wait_for(lambda old=pid: loader_pid(server) not in (None, old)
                           and loader_pid(server), "the next loader process")
        wait_for(lambda: healthy(server), "the loader is back")
        assert server.stop() == 0
    waits = [re.search(r"restarting it in (\S+) s", line) for line in server.output]
    assert [w.group(1) for w in waits if w] == ["1", "2", "4", "4"]


def test_healthz_is_503_while_the_spool_waits_too_long(tmp_path: Path) -> None:
    with Serve(tmp_path, smtp="", health_max_spool_age=1, lock_timeout=0.2) as server:
        wait_for(lambda: healthy(server), "the loader runs")
        # Another process holds the database's write lock: nothing can be loaded.
        holder = duckdb.connect(str(server.db))
        try:
            reply = httpx.post(f"{server.http_url}/v1/reports", content=gz_report("waits"),
                               headers=GZIP_TYPE, timeout=10)
            assert reply.status_code == 201
            _, body = wait_for(lambda: (h := health(server))[0] == 503 and h,
                               "/healthz reports the old spool")
            assert body["reason"].startswith("the oldest report in the spool has waited")
            assert "health_max_spool_age" in body["reason"] and body["spool_depth"] == 1
        finally:
            holder.close()
        wait_for(lambda: healthy(server), "the spool is loaded")
        assert server.query("SELECT count(*) FROM reports WHERE report_id = 'waits'") == [(1,)]
        assert server.stop() == 0
