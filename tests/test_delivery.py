"""Summaries and alerts by mail (STARTTLS + login) and webhook; failures retried, not fatal."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.conftest import VALID, Cli
from tests.serving import BoundController
from tlswatch import jobs
from tlswatch.config import Settings, load_settings
from tlswatch.notify import recipients


@dataclass
class Sink:
    """A real SMTP server that keeps what it receives (STARTTLS and AUTH required)."""

    messages: list[tuple[list[str], bytes]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password == b"mail-pw"
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok)


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[tuple[Sink, int, Path]]:
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    sink = Sink()
    controller = BoundController(sink, hostname="127.0.0.1", port=0, tls_context=context,
                                 require_starttls=True, authenticator=sink.authenticate,
                                 auth_require_tls=True)
    controller.start()
    try:
        yield sink, controller.port, tmp_path / "ca.pem"
    finally:
        controller.stop()


@pytest.fixture
def webhook() -> Iterator[tuple[list[dict[str, Any]], str]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received, f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def settings_for(db: Path, port: int, ca: Path, hook: str, monkeypatch: pytest.MonkeyPatch,
                 **more: Any) -> Settings:
    monkeypatch.setenv("TLSWATCH_TEST_MAIL_PW", "mail-pw")
    return load_settings(None, environ={}, db=db, mail_smtp=f"127.0.0.1:{port}",
                         mail_username="tlswatch", mail_password_env="TLSWATCH_TEST_MAIL_PW",
                         mail_ca_bundle=str(ca), mail_from="tlswatch@reports.example",
                         mail_to=("all@example.net",),
                         mail_to_domains={"example.org": ("org-owner@example.org",),
                                          "example.com": ("com-owner@example.com",)},
                         webhook_url=hook, **more)


def test_daily_summary_is_mailed_per_domain_and_posted(
        cli: Cli, db: Path, tmp_path: Path, smtp_sink: Any, webhook: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sink, port, ca = smtp_sink
    posted, hook = webhook
    cli.json("ingest", str(VALID))
    settings = settings_for(db, port, ca, hook, monkeypatch)
    written = jobs.run_daily(settings, date(2026, 11, 26), tmp_path / "daily")
    assert len(written) == 5
    by_rcpt = {tuple(r): message_from_bytes(m) for r, m in sink.messages
               if b"TLS report summary" in m}
    assert set(by_rcpt) == {("all@example.net",), ("org-owner@example.org",),
                            ("com-owner@example.com",)}
    theirs = by_rcpt[("org-owner@example.org",)]
    text = theirs.get_payload()[0].get_payload(decode=True).decode()
    assert "example.org:" in text and "example.com:" not in text
    page = theirs.get_payload()[1].get_payload(decode=True).decode()
    assert 'id="example.org"' in page and 'id="example.com"' not in page
    everyone = by_rcpt[("all@example.net",)].get_payload()[1].get_payload(decode=True).decode()
    assert all(f'id="example.{tld}"' in everyone for tld in ("com", "net", "org"))
    assert sink.logins and set(sink.logins) == {"tlswatch"}
    summary = [p for p in posted if p.get("day") == "2026-11-26"]
    assert summary and summary[0]["text"].startswith("TLS report summary for 2026-11-26")
    alerts = [p for p in posted if "alerts" in p]
    assert alerts and all(a["kind"] for a in alerts[0]["alerts"])


def test_failed_delivery_is_retried_recorded_and_not_fatal(
        cli: Cli, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.json("ingest", str(VALID))
    dead = "http://127.0.0.1:9/hook"  # nothing listens on the discard port
    settings = load_settings(None, environ={}, db=db, webhook_url=dead, delivery_attempts=2)
    new = jobs.check_alerts(settings, [date(2026, 11, 26)], today=date(2026, 11, 27))
    assert new
    rows = cli.json("alerts")
    assert rows and all(r["delivered_at"] is None and "ConnectError" in r["delivery_error"]
                        for r in rows)


def test_recipients_per_domain() -> None:
    settings = load_settings(None, environ={}, mail_to=("ops@x",),
                             mail_to_domains={"a.example": ("a@x",), "b.example": ("ops@x",)})
    assert recipients(settings, ["a.example", "b.example"]) == {
        ("a.example", "b.example"): ["ops@x"], ("a.example",): ["a@x"]}


def test_schedule_catches_up_missed_days(cli: Cli, db: Path, tmp_path: Path) -> None:
    cli.json("ingest", str(VALID))
    out = tmp_path / "daily"
    settings = load_settings(None, environ={}, db=db, export_dir=str(out),
                             export_time="06:00", export_formats=("json",))
    assert jobs.run_schedule(settings, datetime(2026, 11, 24, 7, 0)) == [date(2026, 11, 23)]
    assert jobs.run_schedule(settings, datetime(2026, 11, 24, 8, 0)) == []  # done already
    assert jobs.run_schedule(settings, datetime(2026, 11, 27, 5, 59)) == [
        date(2026, 11, 24), date(2026, 11, 25)]  # 26th not due before 06:00 on the 27th
    assert jobs.run_schedule(settings, datetime(2026, 11, 27, 6, 0)) == [date(2026, 11, 26)]
    assert sorted(p.name for p in out.glob("tlswatch-summary-*.json")) == [
        f"tlswatch-summary-2026-11-{d}.json" for d in (23, 24, 25, 26)]


