"""Summaries and alerts by mail (STARTTLS + login) and webhook from the outbox: retried with
back-off, given up after their attempts, never fatal; chat text that no report can abuse."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.conftest import VALID, Cli, detail, make_report, policy, write_json
from tests.serving import BoundController, Serve
from tlswatch import jobs
from tlswatch.config import Settings, load_settings
from tlswatch.notify import chat_text, recipients
from tlswatch.outbox import Delivery, backoff, deliver_due


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
def smtp_sink(tmp_path: Path) -> Iterator[tuple[Sink, BoundController, Path]]:
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
        yield sink, controller, tmp_path / "ca.pem"
    finally:
        if controller._thread is not None:
            controller.stop()


@dataclass
class Hook:
    """A real webhook receiver on loopback that answers 500 to its first ``fail`` posts."""

    url: str
    fail: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)

    @property
    def delivered(self) -> list[dict[str, Any]]:
        return [p for p, a in zip(self.received, self.answers, strict=True) if a == 204]


@pytest.fixture
def webhook() -> Iterator[Hook]:
    hook = Hook("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            hook.received.append(json.loads(self.rfile.read(length)))
            answer = 500 if len(hook.answers) < hook.fail else 204
            hook.answers.append(answer)
            self.send_response(answer)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
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


def deliver_until(settings: Settings, done: Any, timeout: float = 30) -> None:
    """Run delivery rounds, as the worker in 'serve' does, until ``done()`` holds."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not delivered in time"
        deliver_due(settings)
        time.sleep(0.02)


def test_daily_summary_is_mailed_per_domain_and_posted(
        cli: Cli, db: Path, tmp_path: Path, smtp_sink: Any, webhook: Hook,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sink, controller, ca = smtp_sink
    cli.json("ingest", str(VALID))
    settings = settings_for(db, controller.port, ca, webhook.url, monkeypatch)
    written, failed = jobs.send_daily(settings, date(2026, 11, 26), tmp_path / "daily")
    assert len(written) == 5 and failed == []
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
    summary = [p for p in webhook.received if p.get("day") == "2026-11-26"]
    assert summary and summary[0]["text"].startswith("TLS report summary for 2026-11-26")
    alerts = [p for p in webhook.received if "alerts" in p]
    assert alerts and all(a["kind"] for a in alerts[0]["alerts"])
    assert {r["delivery"] for r in cli.json("alerts")} == {"delivered"}


def test_webhook_failing_twice_gets_one_delivery_after_backoff(
        cli: Cli, db: Path, webhook: Hook) -> None:
    webhook.fail = 2
    cli.json("ingest", str(VALID))
    settings = load_settings(None, environ={}, db=db, webhook_url=webhook.url,
                             delivery_backoff=0.05)
    recorded = jobs.check_alerts(settings, [date(2026, 11, 26)], today=date(2026, 11, 27))
    assert recorded.alerts and webhook.received == []  # recording sends nothing
    (first,) = deliver_due(settings)
    assert first.status == "pending" and "500" in (first.error or "")
    (queued,) = cli.json("alerts", "--outbox")  # the attempt and the next try are recorded
    assert (queued["status"], queued["attempts"]) == ("pending", 1)
    assert queued["next_try_at"] == first.next_try_at.isoformat() if first.next_try_at else False
    assert "500" in queued["last_error"]
    deliver_until(settings, lambda: webhook.delivered)
    assert webhook.answers == [500, 500, 204] and len(webhook.delivered) == 1
    (row,) = cli.json("alerts", "--outbox")
    assert (row["status"], row["attempts"], row["channel"]) == ("delivered", 3, "webhook")
    assert {r["delivery"] for r in cli.json("alerts")} == {"delivered"}
    assert deliver_due(settings) == []  # delivered once, never again


def test_delivery_gives_up_after_its_attempts(cli: Cli, db: Path, webhook: Hook,
                                              caplog: pytest.LogCaptureFixture) -> None:
    webhook.fail = 100
    cli.json("ingest", str(VALID))
    settings = load_settings(None, environ={}, db=db, webhook_url=webhook.url,
                             delivery_attempts=3, delivery_backoff=0.01)
    jobs.check_alerts(settings, [date(2026, 11, 26)], today=date(2026, 11, 27))
    outcomes: list[Delivery] = []
    deadline = time.monotonic() + 30
    while not any(d.status == "failed" for d in outcomes):
        assert time.monotonic() < deadline
        outcomes += deliver_due(settings)
        time.sleep(0.02)
    assert [d.attempts for d in outcomes] == [1, 2, 3] and len(webhook.received) == 3
    assert "given up" in caplog.text and "webhook at 127.0.0.1" in caplog.text
    assert deliver_due(settings) == []  # never retried for ever
    rows = cli.json("alerts")
    assert {r["delivery"] for r in rows} == {"failed"}
    assert all("500" in r["delivery_error"] for r in rows)


def test_export_daily_send_exits_1_when_the_mail_server_is_down(
        cli: Cli, db: Path, tmp_path: Path, smtp_sink: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, controller, ca = smtp_sink
    controller.stop()  # the mail server is down: its port refuses connections
    cli.json("ingest", str(VALID))
    for name, value in {"MAIL_SMTP": f"127.0.0.1:{controller.port}", "MAIL_TO": "all@x.example",
                        "MAIL_CA_BUNDLE": str(ca)}.items():
        monkeypatch.setenv(f"TLSWATCH_{name}", value)
    result = cli("export", "daily", "--out", str(tmp_path / "out"), "--date", "2026-11-26",
                 "--format", "json", "--send", code=1)
    assert "tlswatch-summary-2026-11-26.json" in result.stdout  # the files are written
    assert "not delivered: mail to all@x.example: ConnectionRefusedError" in result.stderr
    queued = cli.json("alerts", "--outbox")
    assert {(r["status"], r["attempts"]) for r in queued} == {("pending", 1)}  # kept, retried


HOSTILE_ORGS = ["<!channel> *URGENT* wire money", "<@U123ABC> <https://evil.example|fix>",
                "@here _now_ ~gone~ `x` [click](https://evil.example) &lt;!here&gt;",
                "Evil\n# Forged headline\n> quote", "www.evil.example @channel #general"]


def test_hostile_org_names_cannot_mention_or_link_in_chat(cli: Cli, db: Path, tmp_path: Path,
                                                          webhook: Hook) -> None:
    (tmp_path / "in").mkdir()
    for i, org in enumerate(HOSTILE_ORGS):
        doc = make_report(org=org, rid=f"h{i}", day="2026-11-26", policies=[
            policy("example.com", 1, 9, [detail("certificate-expired", 9)])])
        write_json(tmp_path / "in" / f"h{i}.json", doc)
    cli.json("ingest", str(tmp_path / "in"))
    settings = load_settings(None, environ={}, db=db, webhook_url=webhook.url)
    _, failed = jobs.send_daily(settings.replace(export_formats=("json",)),
                                date(2026, 11, 26), tmp_path / "out")
    assert failed == [] and len(webhook.delivered) == 2  # the summary and the alerts
    for posted in webhook.delivered:
        text = posted["text"]
        assert "Forged" in text or "URGENT" in text or "wire" in text  # the names are there
        for bad in ("<", ">", "|", "*", "_", "~", "`", "@here", "@channel", "](", "\n#",
                    "\n>", "https://", "www.evil", "evil.example"):
            assert bad not in text, (bad, text)
        assert "&lt;!channel&gt;" in text  # shown as text, as Slack requires


def test_backoff_doubles_up_to_an_hour() -> None:
    assert [backoff(n, 30.0) for n in (1, 2, 3, 8, 20)] == [30, 60, 120, 3600, 3600]


def test_chat_text_escapes_slack_control_characters() -> None:
    assert chat_text("a & b <!channel> c > d") == "a &amp; b &lt;!channel&gt; c &gt; d"
    assert chat_text("plain words, 99 percent") == "plain words, 99 percent"


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




def test_serve_delivers_alerts_from_its_own_worker_with_backoff(tmp_path: Path,
                                                                 webhook: Hook) -> None:
    webhook.fail = 2
    doc = make_report(rid="serve-1", day="2026-11-26", policies=[
        policy("example.com", 10, 30, [detail("certificate-expired", 30)])])
    with Serve(tmp_path, smtp="", webhook_url=webhook.url, delivery_interval=0.1,
               delivery_backoff=0.1) as server:
        reply = httpx.post(f"{server.http_url}/v1/reports", content=json.dumps(doc).encode(),
                           headers={"Content-Type": "application/tlsrpt+json"})
        assert reply.status_code in (200, 201, 202), reply.text
        deadline = time.monotonic() + 60
        while not webhook.delivered:
            assert time.monotonic() < deadline, "".join(server.output)
            time.sleep(0.05)
        assert server.stop() == 0
    assert webhook.answers == [500, 500, 204]
    assert webhook.delivered[0]["alerts"][0]["policy_domain"] == "example.com"
    assert server.query("SELECT status, attempts FROM outbox") == [("delivered", 3)]
