"""SMTP/LMTP and HTTP intake of a real ``tlswatch serve``, spoken to by smtplib and httpx."""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import smtplib
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GZIP_TYPE, VALID, fill, gz_report, make_report, report_mail
from tests.serving import CLI, Serve
from tlswatch.ingest.spool import MAGIC, Entry, Spool

GOOGLE = (VALID / "google" / "example.com-2026-11-20.eml").read_bytes()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    root = tmp_path_factory.mktemp("serve")
    with Serve(root, report_addresses=["tlsrpt@reports.example.com", "*@tls.example.net"],
               max_input_bytes=200_000, max_inflated_bytes=2_000_000) as running:
        yield running


def stored(server: Serve, rid: str) -> list[tuple[object, ...]]:
    server.wait_loaded()
    return server.query(f"SELECT organization_name, received_via, dkim_result FROM reports "
                        f"WHERE report_id = '{rid}'")


def test_smtp_report_is_spooled_before_250_and_loaded(server: Serve) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp:
        code, capabilities = smtp.ehlo()
        assert code == 250 and b"SIZE 200000" in capabilities
        assert smtp.sendmail("n@google.com", ["tlsrpt@reports.example.com"], GOOGLE) == {}
    assert stored(server, "2026-11-20T00:00:00Z_example.com") == [
        ("Google Inc.", "smtp", "none")]  # the sample carries no DKIM signature


def test_smtp_recipients_are_checked(server: Serve) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp:
        smtp.ehlo()
        smtp.mail("n@reporter.example")
        code, text = smtp.rcpt("postmaster@elsewhere.example")
        assert code == 550 and b"not a TLS report address here" in text
        assert smtp.rcpt("anything@tls.example.net")[0] == 250
        assert smtp.data(report_mail("wildcard-rcpt"))[0] == 250
    assert stored(server, "wildcard-rcpt") == [("Tester Inc.", "smtp", "none")]


def test_smtp_size_limit(server: Serve) -> None:
    big = report_mail("big") + b"X" * 250_000
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp, \
            pytest.raises(smtplib.SMTPException) as caught:
        smtp.sendmail("n@reporter.example", ["tlsrpt@reports.example.com"], big)
    assert "552" in str(caught.value)


def test_smtp_message_without_report_is_refused_and_kept(server: Serve) -> None:
    note = b"From: a@example.com\r\nSubject: hello\r\n\r\nno report\r\n"
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp, \
            pytest.raises(smtplib.SMTPDataError) as caught:
        smtp.sendmail("a@example.com", ["tlsrpt@reports.example.com"], note)
    assert caught.value.smtp_code == 550
    assert b"no TLS-RPT report in message" in caught.value.smtp_error
    reasons = [p.read_text() for p in (server.spool / "failed").glob("*.reason")]
    assert any("no TLS-RPT report in message" in r for r in reasons)


def _attachment(ctype: str, body: bytes, filename: str = "report.json.gz") -> bytes:
    return (f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="{filename}"\r\n\r\n').encode() + \
        body + b"\r\n"


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _mail(*parts: bytes) -> bytes:
    head = (b"From: noreply@reporter.example\r\nSubject: Report Domain: example.com\r\n"
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="outer"\r\n\r\n')
    return head + b"".join(b"--outer\r\n" + part for part in parts) + b"--outer--\r\n"


def _nested(depth: int) -> bytes:
    """A report at the bottom of ``depth`` nested multiparts."""
    opening = closing = b""
    for level in range(depth):
        boundary = f"level-{level}".encode()
        opening += (b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n--' +
                    boundary + b"\r\n")
        closing = b"--" + boundary + b"--\r\n" + closing
    report = _attachment("application/tlsrpt+gzip", _b64(gz_report("deep")))
    return b"From: noreply@reporter.example\r\nMIME-Version: 1.0\r\n" + opening + report + \
        closing


HOSTILE_MAIL = {  # what the message is: (its bytes, the reason it is refused with)
    "no report, only an attachment": (
        _mail(_attachment("application/octet-stream", _b64(b"%PDF-1.4 an invoice"),
                          "invoice.pdf")), "not valid JSON"),
    "gzip bomb": (_mail(_attachment("application/tlsrpt+gzip",
                                    _b64(gzip.compress(b"\0" * 3_000_000)))),
                  "inflates to more than 2,000,000 bytes"),
    "broken base64": (_mail(_attachment("application/tlsrpt+gzip",
                                        b"This is not base64 at all!!!")),
                      "broken base64: characters outside the base64 alphabet"),
    "MIME nested 1,000 deep": (_nested(1000), "MIME parts nested more than 20 levels deep"),
}


@pytest.mark.parametrize("case", list(HOSTILE_MAIL))
def test_smtp_refuses_mail_without_a_loadable_report_and_keeps_it(server: Serve,
                                                                  case: str) -> None:
    message, reason = HOSTILE_MAIL[case]
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp, \
            pytest.raises(smtplib.SMTPDataError) as caught:
        smtp.sendmail("n@reporter.example", ["tlsrpt@reports.example.com"], message)
    assert caught.value.smtp_code == 550
    assert reason.encode() in caught.value.smtp_error
    spool = Spool(server.spool)
    kept = [p.with_suffix("") for p in spool.failed.glob("*.reason") if reason in p.read_text()]
    assert message in [spool.read(Entry(p.name, p))[1] for p in kept], \
        "the refused bytes are kept in spool/failed with the reason"


def test_bad_spool_entries_do_not_stop_loading(tmp_path: Path) -> None:
    with Serve(tmp_path, smtp="") as server:
        incoming = server.spool / "incoming"
        stamp = f"{time.time_ns() - 60 * 10**9:020d}"  # received a minute ago: due first
        (incoming / f"{stamp}-a-directory").mkdir()
        header = MAGIC + b'{"via":"http","size":4000}\n'
        (incoming / f"{stamp}-b-truncated").write_bytes(header + gz_report("cut")[:50])
        reply = httpx.post(f"{server.http_url}/v1/reports", content=gz_report("after-bad"),
                           headers=GZIP_TYPE)
        assert reply.status_code == 201
        assert stored(server, "after-bad") == [("Tester Inc.", "http", None)]
        reasons = {p.name.split("-", 1)[1]: p.read_text()
                   for p in (server.spool / "failed").glob(f"{stamp}-*.reason")}
    assert "a directory, not a spool file" in reasons["a-directory.reason"]
    assert "truncated spool file: 50 of 4,000 bytes" in reasons["b-truncated.reason"]


def test_http_post_is_spooled_then_loaded(server: Serve) -> None:
    reply = httpx.post(f"{server.http_url}/v1/reports", content=gz_report("http-1"),
                       headers=GZIP_TYPE)
    assert reply.status_code == 201
    assert reply.json()["report_ids"] == ["http-1"]
    assert (server.spool / "incoming" / reply.json()["id"]).exists() or \
        (server.spool / "done" / reply.json()["id"]).exists()
    assert stored(server, "http-1") == [("Tester Inc.", "http", None)]
    plain = httpx.post(f"{server.http_url}/v1/reports",
                       content=gzip.decompress(gz_report("http-2")),
                       headers={"Content-Type": "application/tlsrpt+json"})
    assert plain.status_code == 201


def test_http_refusals(server: Serve) -> None:
    url = f"{server.http_url}/v1/reports"
    wrong_type = httpx.post(url, content=b"{}", headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415 and "Content-Type must be one of" in \
        wrong_type.json()["error"]
    too_big = httpx.post(url, content=b"x" * 200_001, headers=GZIP_TYPE)
    assert too_big.status_code == 413 and "over the limit" in too_big.json()["error"]

    def stream() -> Iterator[bytes]:  # no Content-Length: refused once the stream passes it
        for _ in range(100):
            yield b"y" * 10_000

    streamed = httpx.post(url, content=stream(), headers=GZIP_TYPE)
    assert streamed.status_code == 413
    doc = make_report(rid="bad-count")
    doc["policies"][0]["summary"]["total-failure-session-count"] = "many"
    invalid = httpx.post(url, json=doc)
    assert invalid.status_code == 400
    assert invalid.json() == {"error": "policies[0].summary.total-failure-session-count: must "
                              'be a non-negative integer, got "many"'}
    truncated = httpx.post(url, content=gz_report("t")[:-8], headers=GZIP_TYPE)
    assert truncated.status_code == 400 and "truncated gzip data" in truncated.json()["error"]
    kept = [p.with_suffix("") for p in (server.spool / "failed").glob("*.reason")
            if "truncated gzip data" in p.read_text()]
    assert gz_report("t")[:-8] in [Spool(server.spool).read(Entry(p.name, p))[1] for p in kept]


def test_health_and_metrics(server: Serve) -> None:
    health = httpx.get(f"{server.http_url}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    httpx.post(f"{server.http_url}/v1/reports", content=b"{}", headers={"Content-Type": "x/y"})
    text = httpx.get(f"{server.http_url}/metrics").text
    for name in ('tlswatch_received_total{via="http"}',
                 'tlswatch_rejected_total{reason="unsupported_media_type",via="http"}',
                 "tlswatch_loaded_reports_total", "tlswatch_spool_depth",
                 "tlswatch_loader_lag_seconds", "tlswatch_duplicate_reports_total"):
        assert name in text


def test_read_commands_work_while_serving(server: Serve) -> None:
    for i in range(30):
        httpx.post(f"{server.http_url}/v1/reports", content=gz_report(f"busy-{i}"),
                   headers=GZIP_TYPE)
    done = subprocess.run([*CLI, "--db", str(server.db), "summary", "--format", "json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["domains"]


def test_rate_limit_per_client(tmp_path: Path) -> None:
    with Serve(tmp_path, smtp="", http_rate_limit=1, http_rate_burst=2) as server:
        url = f"{server.http_url}/v1/reports"
        codes = [httpx.post(url, content=gz_report(f"r{i}"), headers=GZIP_TYPE)
                 for i in range(3)]
        assert [r.status_code for r in codes] == [201, 201, 429]
        assert int(codes[2].headers["Retry-After"]) >= 1


def test_lmtp_answers_once_per_recipient(tmp_path: Path) -> None:
    with Serve(tmp_path, http="", lmtp=True) as server:
        lmtp = smtplib.LMTP("127.0.0.1", server.smtp_port, timeout=30)
        try:
            assert lmtp.ehlo()[0] == 250  # smtplib.LMTP sends LHLO
            lmtp.mail("n@reporter.example")
            lmtp.rcpt("a@example.com")
            lmtp.rcpt("b@example.com")
            first = lmtp.data(report_mail("lmtp-1"))
            second = lmtp.getreply()
            assert first[0] == 250 and second[0] == 250
        finally:
            lmtp.close()
        assert stored(server, "lmtp-1") == [("Tester Inc.", "lmtp", "none")]


def test_starttls_and_https_with_a_configured_certificate(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with Serve(tmp_path, tls_cert=str(tmp_path / "server.pem"),
               tls_key=str(tmp_path / "server.pem")) as server:
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp:
            smtp.ehlo()
            assert smtp.has_extn("starttls")
            smtp.starttls(context=context)
            smtp.ehlo()
            assert smtp.sendmail("n@reporter.example", ["x@example.com"],
                                 report_mail("over-tls")) == {}
        assert server.http_url is not None and server.http_url.startswith("https://")
        reply = httpx.post(f"{server.http_url}/v1/reports", content=gz_report("https-1"),
                           headers=GZIP_TYPE, verify=context)
        assert reply.status_code == 201
        assert stored(server, "over-tls") == [("Tester Inc.", "smtp", "none")]


def test_full_disk_answers_retry_later_and_loses_nothing(tmp_path: Path,
                                                         tiny_disk: Path) -> None:
    with Serve(tmp_path, spool=str(tiny_disk / "spool")) as server:
        fill(tiny_disk)
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp, \
                pytest.raises(smtplib.SMTPDataError) as caught:
            smtp.sendmail("n@reporter.example", ["x@example.com"], report_mail("full-1"))
        assert caught.value.smtp_code == 451
        busy = httpx.post(f"{server.http_url}/v1/reports", content=gz_report("full-2"),
                          headers=GZIP_TYPE)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "60"
        (tiny_disk / "filler").unlink()  # the sender retries once there is room
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp:
            assert smtp.sendmail("n@reporter.example", ["x@example.com"],
                                 report_mail("full-1")) == {}
        assert stored(server, "full-1") == [("Tester Inc.", "smtp", "none")]


def test_reports_for_other_domains_are_refused(tmp_path: Path) -> None:
    with Serve(tmp_path, domains=["example.com"]) as server:
        ours = httpx.post(f"{server.http_url}/v1/reports", content=gz_report("ours"),
                          headers=GZIP_TYPE)
        theirs = httpx.post(f"{server.http_url}/v1/reports",
                            content=gz_report("theirs", domain="stranger.example"),
                            headers=GZIP_TYPE)
        assert ours.status_code == 201
        assert theirs.status_code == 400
        assert "not one of our domains: stranger.example" in theirs.json()["error"]
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp, \
                pytest.raises(smtplib.SMTPDataError) as caught:
            smtp.sendmail("n@reporter.example", ["x@example.com"],
                          report_mail("theirs-mail", domain="stranger.example"))
        assert caught.value.smtp_code == 550  # the same door as HTTP: refused, not queued
        assert b"not one of our domains: stranger.example" in caught.value.smtp_error
        server.wait_loaded()
        reasons = [p.read_text() for p in (server.spool / "failed").glob("*.reason")]
        assert sum("not one of our domains: stranger.example" in r for r in reasons) == 2
        assert server.query("SELECT report_id FROM reports") == [("ours",)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_whole_group_stops_cleanly(tmp_path: Path, sig: int) -> None:
    """Ctrl-C in a terminal (SIGINT) and systemd's stop (SIGTERM) reach every process of
    the group, the loader too: serve must still finish its work and exit 0."""
    server = Serve(tmp_path).start(own_group=True)
    try:
        children = server.children()
        assert children, "the loader process is running"
        reply = httpx.post(f"{server.http_url}/v1/reports", content=gz_report("grouped"),
                           headers=GZIP_TYPE)
        assert reply.status_code == 201
        server.wait_loaded()
        server.wait_loader_idle()  # waiting for work: the case that used to hang
        assert server.proc is not None
        os.killpg(server.proc.pid, sig)
        try:
            code = server.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("serve still running 60 s after the signal:\n" + "".join(server.output))
        assert code == 0
        assert "tlswatch stopped" in "".join(server.output)
        deadline = time.monotonic() + 15  # the loader, and multiprocessing's resource tracker
        while any(Path(f"/proc/{c}").exists() for c in children):
            left = {c: Path(f"/proc/{c}/cmdline").read_bytes()[:80] for c in children
                    if Path(f"/proc/{c}").exists()}
            assert time.monotonic() < deadline, f"left running: {left}"
            time.sleep(0.05)
    finally:
        server.kill()


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    server = Serve(tmp_path).start()
    try:
        httpx.post(f"{server.http_url}/v1/reports", content=gz_report("last"),
                   headers=GZIP_TYPE)
        assert server.stop() == 0
        assert "tlswatch stopped" in "".join(server.output)
    finally:
        server.kill()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = subprocess.run([*CLI, "--db", str(tmp_path / "db.duckdb"), "serve", "--smtp", "",
                               "--http", f"127.0.0.1:{port}", "--spool", str(tmp_path / "s")],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot listen" in done.stderr and "Address already in use" in done.stderr
    assert "Traceback" not in done.stderr
