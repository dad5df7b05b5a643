"""One real run: sys4 tlsrpt-reporter reports the sessions of ``sessions.LAYOUTS`` to a real
``tlswatch serve`` (mail to its SMTP port, HTTPS POSTs to its receiver), then every process
is stopped and the stored numbers are read back with the real CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.senders.reporter import Reporter
from tests.senders.sessions import LAYOUTS
from tests.serving import CLI, Serve


@dataclass
class Delivered:
    """What went in and what came out of one reporter run."""

    summary: dict[str, dict[str, Any]]  # `tlswatch summary --format json`, by policy domain
    reports: dict[str, dict[str, Any]]  # the JSON reports tlsrpt-reportd built, by domain
    delivery: dict[str, str]  # tlsrpt-reportd's delivery status, by domain
    smtp_replies: list[str]
    http_replies: list[tuple[int, str]]
    spool_failed: dict[str, str]  # inputs serve refused or quarantined: file -> reason
    quarantine: list[tuple[Any, ...]]  # (source, reason) rows in the store
    logs: str


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Delivered]:
    pytest.importorskip("tlsrpt_reporter", reason="pip install -e '.[dev]' installs it")
    trustme = pytest.importorskip("trustme")
    if shutil.which("curl") is None:
        pytest.skip("curl (tlsrpt-reportd's default HTTPS uploader) is not installed")
    root = tmp_path_factory.mktemp("rpt")
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(root / "server.pem"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    (root / "serve").mkdir()
    server = Serve(root / "serve", tls_cert=str(root / "server.pem"),
                   tls_key=str(root / "server.pem"))
    reporter: Reporter | None = None
    try:
        server.start()
        assert server.http_url is not None and server.http_url.startswith("https://")
        reporter = Reporter(root, smtp_port=server.smtp_port, cafile=root / "ca.pem")
        reporter.start_collectd()
        reporter.send([d for layout in LAYOUTS for d in layout.datagrams(server.http_url)])
        reporter.roll_over()
        reporter.deliver(len(LAYOUTS))
        server.wait_loaded()
        assert server.stop() == 0, "".join(server.output)
        quarantine = server.query("SELECT source, reason FROM quarantine ORDER BY source")
        summary = subprocess.run([*CLI, "--db", str(server.db), "summary", "--format", "json"],
                                 capture_output=True, text=True, check=True, timeout=60)
        yield Delivered(
            summary={d["policy_domain"]: d for d in json.loads(summary.stdout)["domains"]},
            reports=reporter.reports(), delivery=reporter.delivery_status(),
            smtp_replies=reporter.smtp_replies(), http_replies=reporter.http_replies(),
            spool_failed={p.stem: p.read_text()
                          for p in (server.spool / "failed").glob("*.reason")},
            quarantine=quarantine, logs=reporter.logs() + "\n--- serve\n" + "".join(server.output))
    finally:
        if reporter is not None:
            reporter.stop()
        if server.proc is not None and server.proc.poll() is None:
            try:
                server.stop()
            except subprocess.TimeoutExpired:
                server.kill()
