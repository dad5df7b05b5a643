"""Certificates by ACME for the hosted mta-sts names, against a real ACME server (pebble),
the tests' loopback DNS and a real 'serve'."""

from __future__ import annotations

import signal
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from dnslib.server import DNSLogger, DNSServer  # type: ignore[import-untyped]

from tests.conftest import Cli
from tests.mtasts.fixtures import Zone
from tests.mtasts.pebble import Pebble
from tests.serving import Serve
from tlswatch.config import Settings
from tlswatch.mtasts.acme import KIND, renew_certificates
from tlswatch.mtasts.acme_records import certificates, save_certificate
from tlswatch.mtasts.hosting import init_policy
from tlswatch.store import Store

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/pebble").exists(), reason="needs Debian's pebble (make system-deps)")


def _hosting(tmp_path: Path) -> Settings:
    """Settings for the hosted policies, with a store of their own in the test's folder
    (the default store is a file in the working directory)."""
    return Settings(policy_dir=tmp_path / "policies", db=tmp_path / "policies.duckdb")


@pytest.fixture
def zone() -> Iterator[tuple[Zone, str]]:
    zone = Zone()
    server = DNSServer(zone, port=0, address="127.0.0.1", logger=DNSLogger(logf=lambda _: None))
    server.start_thread()
    try:
        yield zone, f"127.0.0.1:{server.server.server_address[1]}"
    finally:
        server.stop()


def host(settings: Settings, zone: Zone, domain: str, address: str) -> None:
    """A hosted policy for ``domain`` whose mta-sts name resolves to ``address``."""
    init_policy(settings, domain, mx=[f"mx.{domain}"], mode="testing", max_age=86400)
    zone.add(f"mta-sts.{domain}", "A", address)


def short_lived(ca: trustme.CA, db: Path | str, name: str, days: int) -> str:
    """Put a certificate for ``name`` from another CA, expiring in ``days``, in the store."""
    now = datetime.now(UTC)
    cert = ca.issue_cert(name, not_before=now - timedelta(days=80),
                         not_after=now + timedelta(days=days))
    pem = "".join(c.bytes().decode() for c in cert.cert_chain_pems)
    with Store.open(db) as store:
        save_certificate(store, name, pem, cert.private_key_pem.bytes().decode(),
                         (now + timedelta(days=days)).replace(tzinfo=None, microsecond=0),
                         now.replace(tzinfo=None) - timedelta(days=80))
    return pem


def fetch(port: int, name: str, cafile: Path) -> tuple[x509.Certificate, str]:
    """GET the policy over TLS with SNI ``name``, verifying the chain against ``cafile``."""
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        tls.sendall(f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {name}\r\n"
                    "Connection: close\r\n\r\n".encode())
        body = b""
        while chunk := tls.recv(65536):
            body += chunk
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der), body.decode()


def poll(what: str, check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except (ssl.SSLError, OSError):
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_serve_obtains_renews_and_serves_by_sni(tmp_path: Path, db: Path | str,
                                                 zone: tuple[Zone, str]) -> None:
    names, dns = zone
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    own = ca.issue_cert("localhost")  # tls_cert: served to every other name
    own.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.pem"))
    own.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    settings = _hosting(tmp_path)
    host(settings, names, "good.example", "127.0.0.1")
    host(settings, names, "renew.example", "127.0.0.1")
    host(settings, names, "far.example", "192.0.2.10")  # hosted, but served elsewhere
    old = short_lived(ca, db, "mta-sts.renew.example", days=10)
    serve = Serve(tmp_path, db=db, tls_cert=str(tmp_path / "tls.pem"),
                  tls_key=str(tmp_path / "tls.key"), acme_http="127.0.0.1:0",
                  policy_dir=str(settings.policy_dir), check_nameserver=dns,
                  acme_addresses=["127.0.0.1"], acme_ca_bundle=str(tmp_path / "ca.pem"),
                  acme_refresh=0.2).start()
    pebble = None
    try:
        served = next(line for line in serve.output if line.startswith("tlswatch serving"))
        acme_port = int(served.split("acme=")[1].split()[0].rsplit(":", 1)[1])
        https_port = int(str(serve.http_url).rsplit(":", 1)[1])
        pebble = Pebble(tmp_path, ca=ca, dns=dns, http_port=acme_port, tls_port=https_port)
        (tmp_path / "pebble-root.pem").write_text(pebble.root_pem())
        # ACME turned on while serving: SIGHUP restarts the worker with it.
        with serve.config.open("a") as config:
            config.write(f'acme_directory = "{pebble.directory}"\n')
        assert serve.proc is not None
        serve.proc.send_signal(signal.SIGHUP)

        def issued() -> dict[str, Any] | None:
            rows = {r[0]: r for r in serve.query(
                "SELECT name, cert_pem, attempts FROM acme_certificates ORDER BY name")}
            good, renew = rows.get("mta-sts.good.example"), rows.get("mta-sts.renew.example")
            done = good and good[1] and renew and renew[1] != old
            return rows if done else None

        rows = poll("the certificates from pebble", issued)
        assert "mta-sts.far.example" not in rows  # not this deployment's: never asked

        root = tmp_path / "pebble-root.pem"
        for name in ("mta-sts.good.example", "mta-sts.renew.example"):
            cert, answer = poll(f"{name} served by SNI", lambda n=name: fetch(https_port, n,
                                                                              root))
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            assert sans.value.get_values_for_type(x509.DNSName) == [name]
            assert cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=365)
            assert answer.startswith("HTTP/1.1 200")
            assert "version: STSv1\r\nmode: testing\r\nmx: mx." in answer
        # Any other name still gets tls_cert.
        cert, _ = fetch(https_port, "localhost", tmp_path / "ca.pem")
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert sans.value.get_values_for_type(x509.DNSName) == ["localhost"]
        assert serve.stop() == 0
    finally:
        serve.kill()
        if pebble is not None:
            pebble.stop()


def test_a_failing_order_backs_off_and_alerts_near_expiry(
        tmp_path: Path, db: Path | str, zone: tuple[Zone, str], cli: Cli) -> None:
    names, dns = zone
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    # Nothing answers HTTP-01 where pebble looks: a port bound but not listening.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    pebble = Pebble(tmp_path, ca=ca, dns=dns, http_port=dead.getsockname()[1], tls_port=1)
    try:
        settings = Settings(db=db, policy_dir=tmp_path / "policies", check_nameserver=dns,
                            acme_directory=pebble.directory,
                            acme_ca_bundle=str(tmp_path / "ca.pem"),
                            acme_addresses=("127.0.0.1",), acme_retry_min=60,
                            acme_retry_max=3600, acme_alert_days=14)
        host(settings, names, "broken.example", "127.0.0.1")
        name = "mta-sts.broken.example"
        old = short_lived(ca, db, name, days=5)
        now = datetime.now(UTC).replace(microsecond=0)

        first = renew_certificates(settings, now)
        record = certificates(settings)[name]
        assert [(a.name, a.error == record.last_error) for a in first] == [(name, True)]
        assert record.attempts == 1
        assert record.next_attempt == now.replace(tzinfo=None) + timedelta(seconds=60)
        assert "validation failed" in str(record.last_error)
        assert record.cert_pem == old  # the certificate in service stays

        # Before the next attempt is due: no attempt at all.
        assert renew_certificates(settings, now + timedelta(seconds=30)) == []
        assert certificates(settings)[name].attempts == 1

        later = now + timedelta(seconds=61)
        renew_certificates(settings, later)
        record = certificates(settings)[name]
        assert record.attempts == 2
        assert record.next_attempt == later.replace(tzinfo=None) + timedelta(seconds=120)

        with Store.open(db, read_only=True) as store:
            alerts = store.rows("SELECT policy_domain, kind, message FROM alerts "
                                "ORDER BY alert_pk")
        assert [(a["policy_domain"], a["kind"]) for a in alerts] == \
            [("broken.example", KIND)]  # once a day, however many attempts fail
        assert "mta-sts.broken.example expires" in alerts[0]["message"]
        assert "keeps failing" in alerts[0]["message"]

        config = tmp_path / "tlswatch.toml"
        config.write_text(f'policy_dir = "{settings.policy_dir}"\n')
        shown = cli.json("--config", str(config), "acme", "status")
        assert [(r["name"], r["state"], r["attempts"]) for r in shown] == \
            [(name, "failing", 2)]
        assert "validation failed" in shown[0]["last_error"]
    finally:
        pebble.stop()
        dead.close()


def test_acme_off_by_default_asks_nothing(tmp_path: Path, db: Path | str) -> None:
    settings = Settings(db=db, policy_dir=tmp_path / "policies")
    init_policy(settings, "good.example", mx=["mx.good.example"], mode="testing",
                max_age=86400)
    assert renew_certificates(settings, datetime.now(UTC)) == []
    assert certificates(settings) == {}
