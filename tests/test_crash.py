"""kill -9 of ``tlswatch serve`` at any moment loses no acknowledged report."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.conftest import GZIP_TYPE, gz_report
from tests.serving import Serve

SETTINGS = {"smtp": "", "batch_size": 15, "http_rate_limit": 0}


def test_kill_9_while_receiving_and_loading_keeps_every_acknowledged_report(
        tmp_path: Path) -> None:
    acked: list[str] = []
    lock = threading.Lock()
    mid_load: list[bool] = []  # per kill: did it land while the loader was at work?
    for round_ in range(3):
        server = Serve(tmp_path, **SETTINGS).start()
        done_before = len(os.listdir(server.spool / "done"))
        url = f"{server.http_url}/v1/reports"
        stop_sending = threading.Event()

        def post(i: int, url: str = url, stop: threading.Event = stop_sending,
                 round_: int = round_) -> None:
            if stop.is_set():
                return
            rid = f"crash-{round_}-{i}"
            try:
                reply = httpx.post(url, content=gz_report(rid), headers=GZIP_TYPE, timeout=10)
            except httpx.HTTPError:
                return  # not acknowledged: the sender would retry
            if reply.status_code == 201:
                with lock:
                    acked.append(rid)

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(post, i) for i in range(400)]
            # Kill once the loader has filed some entries and others still wait: mid-load.
            deadline = time.monotonic() + 60
            reached = False
            while not reached and time.monotonic() < deadline:
                loaded = len(os.listdir(server.spool / "done")) - done_before
                reached = loaded > 30 and bool(server.incoming())
                time.sleep(0.01)
            server.kill()
            assert server.proc is not None and server.proc.returncode == -9
            mid_load.append(reached)
            stop_sending.set()
            for future in futures:
                future.result()
    assert mid_load == [True, True, True], "each kill -9 landed with reports still waiting"
    assert len(acked) >= 60
    with Serve(tmp_path, **SETTINGS) as server:  # restart: the loader finishes the spool
        server.wait_loaded()
        rows = server.query("SELECT report_id, count(*) FROM reports GROUP BY report_id")
        quarantined = server.query("SELECT count(*) FROM quarantine")
        assert server.stop() == 0
    counts = dict(rows)
    missing = sorted(set(acked) - set(counts))
    assert not missing, f"acknowledged but lost: {missing[:10]}"
    assert all(n == 1 for n in counts.values()), "a report was stored twice"
    assert quarantined == [(0,)]
