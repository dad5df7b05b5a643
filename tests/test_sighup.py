"""SIGHUP to a real ``tlswatch serve``: a new certificate for new STARTTLS and HTTPS
handshakes, no listener closed, no session or report dropped, a broken key refused."""

from __future__ import annotations

import signal
import smtplib
import ssl
import time
from pathlib import Path

import httpx
import pytest
import trustme

from tests.conftest import report_mail
from tests.serving import Serve, toml_value
from tlswatch.config import Settings
from tlswatch.reload import plan_reload


def install(leaf: trustme.LeafCert, cert: Path, key: Path) -> bytes:
    """Write ``leaf`` where serve reads its certificate; return its DER form."""
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def hangup(serve: Serve, until: str) -> None:
    """SIGHUP, then poll until serve logged a line holding ``until`` after it."""
    assert serve.proc is not None
    seen = len(serve.output)
    serve.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while not any(until in line for line in serve.output[seen:]):
        assert serve.proc.poll() is None, "serve stopped on SIGHUP:\n" + "".join(serve.output)
        assert time.monotonic() < deadline, "no reload logged:\n" + "".join(serve.output)
        time.sleep(0.02)


def starttls(port: int, client: ssl.SSLContext) -> tuple[smtplib.SMTP, bytes]:
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
    smtp.starttls(context=client)
    sock = smtp.sock
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return smtp, der


def smtp_cert(port: int, client: ssl.SSLContext) -> bytes:
    smtp, der = starttls(port, client)
    smtp.quit()
    return der


def https_cert(url: str, client: ssl.SSLContext) -> bytes:
    with httpx.Client(verify=client) as http, http.stream("GET", f"{url}/healthz") as resp:
        assert resp.status_code == 200
        der = resp.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(True)
    assert isinstance(der, bytes)
    return der


@pytest.fixture
def pki(tmp_path: Path) -> tuple[trustme.CA, ssl.SSLContext, Path, Path]:
    ca = trustme.CA()
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return ca, client, tmp_path / "fullchain.pem", tmp_path / "privkey.pem"


def test_sighup_loads_a_new_certificate_without_dropping_anything(
        tmp_path: Path, pki: tuple[trustme.CA, ssl.SSLContext, Path, Path]) -> None:
    ca, client, cert, key = pki
    first = install(ca.issue_cert("127.0.0.1"), cert, key)
    with Serve(tmp_path, tls_cert=str(cert), tls_key=str(key), http_idle_timeout=120) as serve:
        assert serve.http_url is not None and serve.http_url.startswith("https://")
        assert smtp_cert(serve.smtp_port, client) == first
        assert https_cert(serve.http_url, client) == first

        # Sessions in progress across the reload: TLS set up with the old certificate.
        session, der = starttls(serve.smtp_port, client)
        assert der == first
        session.ehlo()
        session.mail("noreply@reporter.example")
        session.rcpt("tlsrpt@reports.example.com")
        kept = httpx.Client(verify=client)  # an HTTPS keep-alive connection
        assert kept.get(f"{serve.http_url}/healthz").status_code == 200

        second = install(ca.issue_cert("127.0.0.1"), cert, key)
        assert second != first
        hangup(serve, "TLS certificate loaded")

        code, reply = session.data(report_mail("across-the-reload"))
        assert code == 250, reply
        session.quit()
        with kept.stream("GET", f"{serve.http_url}/healthz") as resp:  # the same connection
            assert resp.status_code == 200
            ssl_object = resp.extensions["network_stream"].get_extra_info("ssl_object")
            assert ssl_object.getpeercert(True) == first
        kept.close()
        assert smtp_cert(serve.smtp_port, client) == second
        assert https_cert(serve.http_url, client) == second

        # A broken key: logged, the running certificate stays, serve keeps serving.
        key.write_text("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
        hangup(serve, "the running certificate stays")
        assert any(f"{key}: no PEM private key in it" in line for line in serve.output)
        ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(key))  # another's key
        hangup(serve, "does not belong to the certificate")
        assert smtp_cert(serve.smtp_port, client) == second
        assert https_cert(serve.http_url, client) == second

        serve.wait_loaded()
        assert serve.query("SELECT report_id FROM reports") == [("across-the-reload",)]
        assert serve.stop() == 0


def test_sighup_takes_safe_settings_and_names_the_rest(
        tmp_path: Path, pki: tuple[trustme.CA, ssl.SSLContext, Path, Path]) -> None:
    ca, client, cert, key = pki
    install(ca.issue_cert("127.0.0.1"), cert, key)
    with Serve(tmp_path, tls_cert=str(cert), tls_key=str(key)) as serve:
        text = serve.config.read_text()
        serve.config.write_text(text + f"alert_success_threshold = 0.5\n"
                                       f"smtp_timeout = 30\n"
                                       f"policy_dir = {toml_value(str(tmp_path / 'p'))}\n")
        hangup(serve, "reload: took alert_success_threshold")
        assert any("taken only by a restart (the running values stay): smtp_timeout, "
                   "policy_dir" in line for line in serve.output), "".join(serve.output)
        deadline = time.monotonic() + 30  # the loader starts again with the new settings
        while sum("loader process" in line and "started" in line for line in serve.output) < 2:
            assert time.monotonic() < deadline, "".join(serve.output)
            time.sleep(0.02)
        assert smtp_cert(serve.smtp_port, client)  # still listening
        session = smtplib.SMTP("127.0.0.1", serve.smtp_port, timeout=30)
        session.starttls(context=client)
        assert session.sendmail("a@reporter.example", ["tlsrpt@reports.example.com"],
                                report_mail("after-reload")) == {}
        session.quit()
        serve.wait_loaded()
        assert serve.query("SELECT report_id FROM reports") == [("after-reload",)]

        serve.config.write_text("not = [valid toml")
        hangup(serve, "the running settings stay")
        assert serve.stop() == 0


def test_plan_keeps_what_needs_a_restart() -> None:
    running = Settings(tls_cert="/a.pem", domains=("example.com",))
    plan = plan_reload(running, running.replace(tls_cert="/b.pem", alert_silent_days=7,
                                                domains=("example.org",), smtp="0.0.0.0:25"))
    assert plan.reloaded == ("tls_cert", "alert_silent_days")
    assert plan.needs_restart == ("domains", "smtp")
    assert plan.settings == running.replace(tls_cert="/b.pem", alert_silent_days=7)
    # TLS on or off changes the listeners: a restart.
    off = plan_reload(running, running.replace(tls_cert=""))
    assert off.needs_restart == ("tls_cert",) and off.settings == running


def test_readme_lists_every_reloaded_setting() -> None:
    from tests.conftest import ROOT
    from tlswatch.reload import RELOADABLE

    readme = (ROOT / "README.md").read_text()
    section = readme.split("#### Reloading")[1].split("everything else needs a restart")[0]
    for name in sorted(RELOADABLE):
        assert f"`{name}`" in section or f"`{name.split('_')[0]}_*`" in section, name
