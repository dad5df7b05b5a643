"""A real authoritative DNS server for the tests: BIND 9's ``named`` (Debian's bind9) on a
loopback port, in a temp folder with a configuration of its own, serving the zones a test
gives it; the provider's zone takes dynamic updates signed with one TSIG key."""

from __future__ import annotations

import base64
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype

from tests.serving import stop_process

NAMED = shutil.which("named") or "/usr/sbin/named"
KEY_NAME = "tlswatch-update"
SECRET = base64.b64encode(b"tlswatch test key, 32 bytes long").decode()
PROVIDER_ZONE = "sts.provider.example"
# What named logs when another process got its port first (it then exits or idles).
TAKEN = ("address in use", "unable to listen on any configured interfaces")

CONFIG = """
options {{
    directory "{folder}";
    pid-file "{folder}/named.pid";
    session-keyfile "{folder}/session.key";
    managed-keys-directory "{folder}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
key "{key}" {{ algorithm hmac-sha256; secret "{secret}"; }};
"""
ZONE = """
zone "{name}" {{
    type primary;
    file "{folder}/{name}.zone";
    {updates}
}};
"""
SOA = """$TTL 300
@ IN SOA ns.{name}. hostmaster.{name}. 1 3600 600 86400 300
@ IN NS ns.{name}.
ns IN A 127.0.0.1
"""


@dataclass
class Named:
    folder: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ask(self, name: str, kind: str) -> tuple[list[str], int | None]:
        """The values of ``kind`` at ``name`` (TXT: the strings joined) and their TTL."""
        query = dns.message.make_query(name, dns.rdatatype.from_text(kind))
        reply = dns.query.tcp(query, "127.0.0.1", port=self.port, timeout=5)
        for rrset in reply.answer:
            if rrset.rdtype == dns.rdatatype.from_text(kind):
                if kind == "TXT":
                    return [b"".join(r.strings).decode() for r in rrset], rrset.ttl
                return [r.to_text() for r in rrset], rrset.ttl
        return [], None

    def txt(self, name: str) -> list[str]:
        return sorted(self.ask(name, "TXT")[0])

    def log(self) -> str:
        path = self.folder / "named.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc, 30)


def free_port() -> int:
    """A loopback port free for both TCP and UDP now (named cannot take port 0)."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


def start(folder: Path, zones: dict[str, str]) -> Named:
    """``named`` serving ``zones`` (name -> records after the SOA and NS); updates of TXT
    records in PROVIDER_ZONE are granted to KEY_NAME.  A port taken between choosing and
    binding (another process got it) is noticed and another one tried."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, records in zones.items():
        (folder / f"{name}.zone").write_text(SOA.format(name=name) + records)
    for _attempt in range(5):
        port = free_port()
        config = CONFIG.format(folder=folder, port=port, key=KEY_NAME, secret=SECRET)
        for name in zones:
            updates = (f"update-policy {{ grant {KEY_NAME} subdomain {name}. TXT; }};"
                       if name == PROVIDER_ZONE else "")
            config += ZONE.format(name=name, folder=folder, updates=updates)
        (folder / "named.conf").write_text(config)
        log = (folder / "named.log").open("wb")
        proc = subprocess.Popen([NAMED, "-g", "-4", "-n", "1", "-c", str(folder / "named.conf")],
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        server = Named(folder, port, proc)
        if _ready(server, next(iter(zones))):
            return server
        server.stop()
    raise AssertionError(f"named did not start on a free port after 5 tries:\n{server.log()}")


def _ready(server: Named, zone: str, timeout: float = 30) -> bool:
    """Poll until named answers for ``zone``; False when its port was taken."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(sign in server.log() for sign in TAKEN):
            return False
        if server.proc.poll() is not None:
            raise AssertionError(f"named stopped (exit {server.proc.returncode}); where "
                                 "AppArmor confines it to /etc/bind and /var/lib/bind, "
                                 "'aa-complain /usr/sbin/named' lets the tests run it:\n"
                                 + server.log())
        with contextlib.suppress(OSError, dns.exception.DNSException):
            if server.ask(zone, "SOA")[0]:
                return True
        time.sleep(0.05)
    raise AssertionError(f"named did not answer within {timeout} s:\n{server.log()}")


@contextlib.contextmanager
def running(folder: Path, zones: dict[str, str]) -> Iterator[Named]:
    server = start(folder, zones)
    try:
        yield server
    finally:
        server.stop()
