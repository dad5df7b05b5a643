"""Loopback fixtures for `tlswatch check`: an authoritative DNS server (dnslib), an HTTPS
policy server and STARTTLS MX servers (aiosmtpd), all with a test CA (trustme)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dnslib import MX, QTYPE, RR, TXT, A, DNSRecord  # type: ignore[import-untyped]
from dnslib.server import BaseResolver, DNSLogger, DNSServer  # type: ignore[import-untyped]

from tests.serving import BoundController


class Zone(BaseResolver):  # type: ignore[misc]
    """Answers from a dict {(name, type): [values]}; TXT values are lists of strings."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[Any]] = {}

    def add(self, name: str, kind: str, *values: Any) -> None:
        self.records.setdefault((name.lower().rstrip("."), kind), []).extend(values)

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        kind = QTYPE[request.q.qtype]
        for value in self.records.get((name, kind), []):
            if kind == "A":
                rdata = A(value)
            elif kind == "MX":
                rdata = MX(value[0], value[1])
            else:
                rdata = TXT(value if isinstance(value, list) else [value])
            reply.add_answer(RR(request.q.qname, getattr(QTYPE, kind), rdata=rdata, ttl=60))
        if not reply.rr and not any(n == name for n, _ in self.records):
            reply.header.rcode = 3  # NXDOMAIN
        return reply


@dataclass
class Policies:
    """What the HTTPS policy server answers, per Host."""

    answers: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)


def _policy_handler(policies: Policies) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host = (self.headers.get("Host") or "").split(":")[0].lower()
            status, headers, body = policies.answers.get(host, (404, {}, b"not here"))
            self.send_response(status)
            for key, value in {"Content-Type": "text/plain", **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class NullHandler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


@dataclass
class World:
    zone: Zone
    dns: str
    https_port: int
    smtp_port: int
    ca_bundle: Path
    policies: Policies
    mx_ip: dict[str, str]
    ca: Any = None


MX_SERVERS = {  # host -> (loopback address, certificate kind)
    "mx1.good.example": ("127.0.0.2", "valid"),
    "mx2.good.example": ("127.0.0.3", "valid"),
    "mx.expired.example": ("127.0.0.4", "expired"),
    "a.b.wild.example": ("127.0.0.5", "valid"),
    "mx.plain.example": ("127.0.0.6", "none"),
    "mx.wrongname.example": ("127.0.0.7", "wrongname"),
    "mx.selfsigned.example": ("127.0.0.8", "selfsigned"),
    "mx.soon.example": ("127.0.0.9", "soon"),
}
POLICY_HOSTS = ["good", "twotxt", "badid", "redirect", "ctype", "expired", "notcovered", "wild",
                "plain", "wrongname", "selfsigned", "norecord", "hosted", "soon",
                "mon-good", "mon-hosted", "mon-rua", "mon-error", "mon-change", "mon-cli",
                "mon-norua"]
# Policy hosts served with a certificate of their own (by SNI): host -> days it has left.
SHORT_LIVED_POLICY_HOSTS = {"mta-sts.mon-soon.example": 10}


def world(tmp: Path) -> Iterator[World]:
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    zone = Zone()
    dns = DNSServer(zone, port=0, address="127.0.0.1", logger=DNSLogger(logf=lambda _: None))
    dns_port = dns.server.server_address[1]
    dns.start_thread()
    # The policy host: one HTTPS server whose certificate names every mta-sts.<domain>.
    web_cert = ca.issue_cert(*[f"mta-sts.{d}.example" for d in POLICY_HOSTS])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    web_cert.configure_cert(context)
    by_name = {host: _short_lived(ca, host, days) for host, days
               in SHORT_LIVED_POLICY_HOSTS.items()}

    def choose(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        if name in by_name:
            sock.context = by_name[name]

    context.sni_callback = choose  # type: ignore[assignment]
    policies = Policies()
    https = ThreadingHTTPServer(("127.0.0.1", 0), _policy_handler(policies))
    https.socket = context.wrap_socket(https.socket, server_side=True)
    threading.Thread(target=https.serve_forever, daemon=True).start()
    smtp_port, controllers = _start_mx_servers(ca)
    for host, (ip, _) in MX_SERVERS.items():
        zone.add(host, "A", ip)
    try:
        yield World(zone, f"127.0.0.1:{dns_port}", https.server_address[1], smtp_port,
                    tmp / "ca.pem", policies, {h: ip for h, (ip, _) in MX_SERVERS.items()}, ca)
    finally:
        for controller in controllers:
            controller.stop()
        https.shutdown()
        https.server_close()
        dns.stop()


def _short_lived(ca: Any, host: str, days: int) -> ssl.SSLContext:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host, not_before=datetime.now(UTC) - timedelta(days=80),
                  not_after=datetime.now(UTC) + timedelta(days=days, hours=1)
                  ).configure_cert(tls)
    return tls


def _mx_tls(ca: Any, other: Any, host: str, kind: str) -> ssl.SSLContext | None:
    if kind == "none":
        return None
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if kind == "expired":
        cert = ca.issue_cert(host, not_before=datetime.now(UTC) - timedelta(days=90),
                             not_after=datetime.now(UTC) - timedelta(days=1))
    elif kind == "soon":
        cert = ca.issue_cert(host, not_before=datetime.now(UTC) - timedelta(days=80),
                             not_after=datetime.now(UTC) + timedelta(days=10, hours=1))
    elif kind == "wrongname":
        cert = ca.issue_cert("somebody-else.example")
    elif kind == "selfsigned":
        cert = other.issue_cert(host)
    else:
        cert = ca.issue_cert(host)
    cert.configure_cert(tls)
    return tls


def _start_mx_servers(ca: Any) -> tuple[int, list[BoundController]]:
    """One MX server per loopback address, all on one port: the first binds port 0 and the
    others take the port it got (tried again on a fresh port if one is taken there)."""
    import trustme

    other = trustme.CA()
    for _attempt in range(5):
        port, controllers = 0, []
        try:
            for host, (ip, kind) in MX_SERVERS.items():
                controller = BoundController(NullHandler(), hostname=ip, port=port,
                                             tls_context=_mx_tls(ca, other, host, kind))
                controller.start()
                controllers.append(controller)
                port = controller.port
            return port, controllers
        except OSError:
            for controller in controllers:
                controller.stop()
    raise AssertionError("no port free on every MX address after 5 tries")


GOOD_POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.good.example\r\n" \
              b"mx: mx2.good.example\r\nmax_age: 604800\r\n"


def publish(w: World, name: str, *, mx: list[str], policy: bytes | None = GOOD_POLICY,
            sts: list[Any] | None = None, tlsrpt: list[Any] | None = None,
            status: int = 200, headers: dict[str, str] | None = None) -> str:
    domain = f"{name}.example"
    for i, host in enumerate(mx):
        w.zone.add(domain, "MX", (host, 10 * (i + 1)))
    for record in (sts if sts is not None else ["v=STSv1; id=20261127T01;"]):
        w.zone.add(f"_mta-sts.{domain}", "TXT", record)
    for record in (tlsrpt if tlsrpt is not None else
                   ["v=TLSRPTv1; rua=mailto:tlsrpt@reports.example.net"]):
        w.zone.add(f"_smtp._tls.{domain}", "TXT", record)
    w.zone.add(f"mta-sts.{domain}", "A", "127.0.0.1")
    if policy is not None:
        w.policies.answers[f"mta-sts.{domain}"] = (status, headers or {}, policy)
    return domain
