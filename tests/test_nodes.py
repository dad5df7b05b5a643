"""Several real 'serve' nodes sharing one PostgreSQL: every acknowledged report stored once
(a node killed mid-burst included), the once-a-day work done once, each message sent once."""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

from tests.conftest import (
    GZIP_TYPE,
    Cli,
    detail,
    gz_report,
    make_report,
    policy,
    report_mail,
    write_json,
)
from tests.pg import Cluster
from tests.serving import CLI, Serve
from tests.test_delivery import Hook, webhook  # noqa: F401  (the fixture)
from tlswatch import jobs
from tlswatch.analytics.freshness import DayFigures
from tlswatch.cluster import turn
from tlswatch.config import Settings, load_settings
from tlswatch.ingest.batch import tabulate
from tlswatch.ingest.loader import IngestResult, _write_reports, load
from tlswatch.ingest.prepare import prepare
from tlswatch.ingest.sources import Input
from tlswatch.revisions import DayRecord, ExportState, due_days
from tlswatch.store import Store, now_utc

NODE = {"batch_size": 10, "http_rate_limit": 0, "loader_interval": 0.05}


def wait_for(what: str, done: Callable[[], object], timeout: float = 60,
             servers: list[Serve] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            told = "".join(f"\n--- {s.root.name}:\n" + "".join(s.output) for s in servers or [])
            raise AssertionError(f"not in {timeout:g} s: {what}{told}")
        time.sleep(0.02)


def node(root: Path, db: str, **settings: Any) -> Serve:
    root.mkdir(parents=True, exist_ok=True)
    return Serve(root, db=db, **{**NODE, **settings})


def post(server: Serve, rid: str) -> bool:
    """POST a report; True once the node acknowledged it (201)."""
    try:
        reply = httpx.post(f"{server.http_url}/v1/reports", content=gz_report(rid),
                           headers=GZIP_TYPE, timeout=10)
    except httpx.HTTPError:
        return False
    return reply.status_code == 201


def mail(server: Serve, rid: str) -> bool:
    """Mail a report (SMTP); True once the node answered 250 to the message."""
    try:
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as smtp:
            smtp.sendmail("noreply@reporter.example", ["tlsrpt@reports.example"],
                          report_mail(rid))
    except (OSError, smtplib.SMTPException):
        return False
    return True


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str) -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for server in started:
        server.kill()


def test_two_nodes_store_every_acknowledged_report_once_through_a_kill_9(
        tmp_path: Path, pg_url: str, nodes: list[Serve]) -> None:
    a = node(tmp_path / "a", pg_url, node_name="a").start(own_group=True)
    b = node(tmp_path / "b", pg_url, node_name="b").start(own_group=True)
    nodes += [a, b]
    acked: dict[str, int] = {}
    lock = threading.Lock()

    def send(rid: str, how: Callable[[Serve, str], bool], server: Serve) -> None:
        if how(server, rid):
            with lock:
                acked[rid] = acked.get(rid, 0) + 1

    with ThreadPoolExecutor(8) as pool:
        # The same report to both nodes at once: their loaders race on its key.
        both = [pool.submit(send, "same-to-both", post, a),
                pool.submit(send, "same-to-both", post, b)]
        burst = [pool.submit(send, f"r{i:03d}", post if i % 2 else mail, a if i % 2 else b)
                 for i in range(200)]
        # kill -9 of node b (serve, loader, worker) once it has loaded some and others wait.
        wait_for("node b loading mid-burst",
                 lambda: len(os.listdir(b.spool / "done")) > 5 and b.incoming())
        b.kill_group()
        for future in [*both, *burst]:
            future.result()
    assert acked["same-to-both"] == 2
    lost_to_kill = [f"r{i:03d}" for i in range(0, 200, 2) if f"r{i:03d}" not in acked]
    b.start(own_group=True)  # restarted on its spool: its loader loads what it had acked
    for rid in lost_to_kill:  # the senders try again what was not acknowledged
        send(rid, mail, b)
    a.wait_loaded()
    b.wait_loaded()
    for server in (a, b):  # each node tells of itself and of the store they share
        health = httpx.get(f"{server.http_url}/healthz").json()
        assert health["node"] == server.root.name and health["store"]["reachable"] is True
        assert health["spool_depth"] == 0
        metrics = httpx.get(f"{server.http_url}/metrics").text
        assert f'tlswatch_node_info{{engine="postgresql",node="{server.root.name}"}} 1.0' \
            in metrics and "tlswatch_store_up 1.0" in metrics
    assert a.stop() == 0 and b.stop() == 0
    counts = dict(a.query("SELECT report_id, count(*) FROM reports GROUP BY report_id"))
    assert len(acked) == 201 and not [r for r in acked if r not in counts], "lost"
    assert set(counts.values()) == {1} and len(counts) == 201, "stored twice"
    assert a.query("SELECT count(*) FROM quarantine") == [(0,)]
    assert os.listdir(a.spool / "failed") == os.listdir(b.spool / "failed") == []


def queue(db: str, count: int) -> None:
    """``count`` webhook messages in the outbox, due now."""
    with Store.open(db) as store, store.transaction():
        store.enqueue(pa.table({
            "batch": pa.array([store.next_outbox_batch()] * count, pa.int64()),
            "kind": ["test"] * count, "channel": ["webhook"] * count,
            "recipient": ["webhook"] * count, "subject": [f"m{i}" for i in range(count)],
            "body": [json.dumps({"message": i}) for i in range(count)]}), now=now_utc())


def test_each_message_is_sent_once_and_the_daily_prune_runs_once_with_two_nodes(
        tmp_path: Path, pg_url: str, nodes: list[Serve], webhook: Hook) -> None:  # noqa: F811
    Cli(pg_url)("ingest", str(write_json(tmp_path / "r.json", make_report())))
    queue(pg_url, 60)  # both nodes' delivery workers find them due at start
    common = {"smtp": "", "webhook_url": webhook.url, "delivery_interval": 0.01}
    nodes += [node(tmp_path / n, pg_url, **common).start() for n in ("a", "b")]
    wait_for("the queued messages delivered", lambda: len(webhook.received) >= 60,
             servers=nodes)
    with Store.open(pg_url, read_only=True) as store:
        wait_for("the outbox settled", lambda: store.value(
            "SELECT count(*) FROM outbox WHERE status <> 'delivered'") == 0)
        pruned = store.rows("SELECT pruned_at FROM retention WHERE kind = 'run'")
    # What either node's worker does in its next round: nothing is due any more.
    again = load_settings(None, environ={}, db=pg_url, webhook_url=webhook.url)
    for name, task in jobs.scheduled(again):
        assert task(again, datetime.now(UTC)) in (None, []), name
    for server in nodes:
        assert server.stop() == 0
    assert sorted(p["message"] for p in webhook.received) == list(range(60)), "sent twice"
    assert len(pruned) == 1 and pruned[0]["pruned_at"].date() == datetime.now(UTC).date()



def test_the_daily_summary_and_its_alerts_are_sent_once_by_two_nodes(
        tmp_path: Path, pg_url: str, nodes: list[Serve], webhook: Hook) -> None:  # noqa: F811
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    doc = make_report(rid="y-1", day=yesterday.isoformat(), policies=[
        policy("example.com", 10, 90, [detail("certificate-expired", 90)])])
    Cli(pg_url)("ingest", str(write_json(tmp_path / "y.json", doc)))
    common = {"smtp": "", "export_time": "00:00", "webhook_url": webhook.url,
              "delivery_interval": 0.05}
    nodes += [node(tmp_path / n, pg_url, export_dir=str(tmp_path / n / "out"),
                   **common).start() for n in ("a", "b")]

    def posted(key: str) -> list[dict[str, Any]]:
        return [p for p in webhook.delivered if key in p]

    wait_for("the summary and the alerts delivered",
             lambda: posted("day") and posted("alerts"), servers=nodes)
    again = load_settings(None, environ={}, db=pg_url, export_time="00:00",
                          export_dir=str(tmp_path / "b" / "out"), webhook_url=webhook.url)
    for name, task in jobs.scheduled(again):
        assert task(again, datetime.now(UTC)) in (None, []), name
    with Store.open(pg_url, read_only=True) as store:
        wait_for("the outbox settled", lambda: store.value(
            "SELECT count(*) FROM outbox WHERE status <> 'delivered'") == 0)
        days = store.rows("SELECT day FROM cluster_days ORDER BY day")
    for server in nodes:
        assert server.stop() == 0
    assert [d["day"] for d in days] == [yesterday]
    assert len(posted("day")) == 1 and len(posted("alerts")) == 1
    written = [n for n in ("a", "b") if (tmp_path / n / "out").is_dir()
               and os.listdir(tmp_path / n / "out")]
    assert len(written) == 1, f"the day's files were written by {written}"


def test_every_node_reads_the_summary_record_from_the_database(tmp_path: Path,
                                                               pg_url: str) -> None:
    day = datetime.now(UTC).date() - timedelta(days=1)
    state = ExportState(day, {day: DayRecord(DayFigures(), {"example.com": (10, 2)}, 1)})
    mine, other = (load_settings(None, environ={}, db=pg_url, export_dir=str(tmp_path / n))
                   for n in ("a", "b"))
    state.write(mine, keep_since=day)
    seen = ExportState.read(other)
    assert (seen.last_day, seen.days) == (day, state.days)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert due_days(other, datetime.now(UTC)) == []


HOLD = """
import sys
from tlswatch.cluster import turn
from tlswatch.config import load_settings
with turn(load_settings(None, environ={}, db=sys.argv[1]), "daily summary") as mine:
    print("held" if mine else "refused", flush=True)
    sys.stdin.read()
"""


def test_a_task_runs_on_one_node_at_a_time_and_a_killed_node_lets_go(pg_url: str) -> None:
    settings = load_settings(None, environ={}, db=pg_url)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, pg_url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with turn(settings, "daily summary") as mine, turn(settings, "daily prune") as other:
            assert (mine, other) == (False, True)
        holder.kill()  # kill -9: the server ends its session and the lock with it
        holder.wait(30)
        wait_for("the lock let go", lambda: _takes(settings))
    finally:
        holder.kill()
        holder.wait(30)


def _takes(settings: Settings) -> bool:
    with turn(settings, "daily summary") as mine:
        return mine


def test_a_node_whose_store_is_gone_says_so_and_keeps_taking_reports(
        tmp_path: Path, pg_url: str, pg_cluster: Cluster, nodes: list[Serve]) -> None:
    server = node(tmp_path / "a", pg_url, smtp="", log_repeat_interval=0).start()
    nodes.append(server)
    assert httpx.get(f"{server.http_url}/healthz").json()["store"]["reachable"] is True
    pg_cluster.drop(pg_url.split("@/")[1].split("?")[0])  # the database is gone
    wait_for("/healthz tells the store is gone", lambda: httpx.get(
        f"{server.http_url}/healthz").json()["store"]["reachable"] is False)
    health = httpx.get(f"{server.http_url}/healthz")
    assert health.status_code == 200 and "refused this node" in health.json()["store"]["error"]
    # the reason names the database's user and socket: the node's log has it, /healthz not
    socket = pg_url.split("host=")[1]
    assert socket not in health.text and f"{pg_cluster.role}@" not in health.text
    wait_for("the reason is logged", lambda: any(
        "does not exist" in line and socket in line for line in server.output),
        servers=[server])
    assert "tlswatch_store_up 0.0" in httpx.get(f"{server.http_url}/metrics").text
    # Acknowledged: they wait in this node's spool, none filed as failed (the database is
    # at fault, not they).
    assert all(post(server, f"while-gone-{i}") for i in range(3))
    tried = sum("loader failed" in line for line in server.output)
    wait_for("the loader tried again", lambda: sum(
        "loader failed" in line for line in server.output) >= tried + 2, servers=[server])
    assert len(server.incoming()) == 3 and os.listdir(server.spool / "failed") == []
    assert server.stop() == 0


def test_a_report_stored_by_another_writer_meanwhile_is_a_duplicate_not_a_failure(
        pg_url: str) -> None:
    """The last guard under the write lock: should anything store a report between the
    loader's look-up and its insert, the unique key refuses the insert and the loader
    counts a duplicate (it neither quarantines the report nor stops)."""
    item = Input("http:one", gz_report("raced"), via="http")
    with Store.open(pg_url) as first, Store.open(pg_url) as other:
        first._db.begin(write=False)  # a writer that skips the write lock
        _write_reports(first, tabulate(prepare(item)[0])[0], [0])
        loaded: list[IngestResult] = []
        thread = threading.Thread(target=lambda: loaded.append(load([item], other)))
        thread.start()
        wait_for("the loader waits on the report's unique key", lambda: first.value(
            "SELECT count(*) FROM pg_locks WHERE NOT granted") > 0)
        first._db.commit()
        thread.join(30)
    assert (loaded[0].accepted, loaded[0].duplicates, loaded[0].rejected) == (0, 1, 0)


def test_a_node_starts_and_takes_reports_while_the_database_does_not_answer(
        tmp_path: Path, nodes: list[Serve]) -> None:
    (tmp_path / "nobody").mkdir()  # a socket folder where no server listens
    server = node(tmp_path / "a", f"postgresql://tlswatch@/tlswatch?host={tmp_path}/nobody",
                  smtp="").start()
    nodes.append(server)
    assert post(server, "while-down") and server.incoming()
    health = httpx.get(f"{server.http_url}/healthz").json()
    assert health["status"] == "ok" and health["store"]["reachable"] is False
    assert health["store"]["error"] == "the database server does not answer now"
    assert str(tmp_path) not in json.dumps(health)
    assert server.stop() == 0
    assert any("receiving into the spool until it answers" in line for line in server.output)


def test_a_second_serve_on_the_same_spool_is_refused(tmp_path: Path, pg_url: str,
                                                     nodes: list[Serve]) -> None:
    first = node(tmp_path / "a", pg_url, smtp="").start()
    nodes.append(first)
    second = node(tmp_path / "b", pg_url, smtp="", spool=str(first.spool))
    assert first.proc is not None
    done = subprocess.run([*CLI, "--config", str(second.config), "serve"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"{first.spool}: another 'tlswatch serve' (pid {first.proc.pid} on " in done.stderr
    assert post(first, "still-served")  # the first one goes on
    assert first.stop() == 0
    third = node(tmp_path / "c", pg_url, smtp="", spool=str(first.spool)).start()
    nodes.append(third)  # once the first one stopped, the spool is free again
    assert third.stop() == 0
