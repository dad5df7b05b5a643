"""A real ACME server for the tests: Debian's ``pebble`` on loopback ports the OS chooses
(found from the process's listening sockets), asking the tests' loopback DNS, validating
HTTP-01 at ``http_port`` of the address a name resolves to."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from pathlib import Path

import httpx

from tests.serving import stop_process


class Pebble:
    def __init__(self, root: Path, *, ca: object, dns: str, http_port: int,
                 tls_port: int) -> None:
        self.root = root
        self.ca_bundle = root / "pebble-ca.pem"  # trusts pebble's own HTTPS (a test CA)
        cert = ca.issue_cert("127.0.0.1", "localhost")  # type: ignore[attr-defined]
        cert.cert_chain_pems[0].write_to_path(str(root / "pebble-cert.pem"))
        cert.private_key_pem.write_to_path(str(root / "pebble-key.pem"))
        ca.cert_pem.write_to_path(str(self.ca_bundle))  # type: ignore[attr-defined]
        config = root / "pebble.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": "127.0.0.1:0", "managementListenAddress": "127.0.0.1:0",
            "certificate": str(root / "pebble-cert.pem"),
            "privateKey": str(root / "pebble-key.pem"),
            "httpPort": http_port, "tlsPort": tls_port, "ocspResponderURL": "",
            "externalAccountBindingRequired": False}}))
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_VA_ALWAYS_VALID": "0",
               "PEBBLE_WFE_NONCEREJECT": "0"}
        self.log = (root / "pebble.log").open("w")
        self.proc = subprocess.Popen(["pebble", "-config", str(config), "-dnsserver", dns],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     cwd=root)
        try:
            self.directory, self.management = self._find_ports()
        except BaseException:
            self.stop()
            raise

    def _client(self) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=str(self.ca_bundle)),
                            timeout=10)

    def _find_ports(self) -> tuple[str, str]:
        """The directory URL and the management URL, once both answer."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            ports = listening_ports(self.proc.pid)
            if len(ports) == 2:
                with self._client() as http:
                    urls = [f"https://127.0.0.1:{p}" for p in ports]
                    try:
                        wfe = [u for u in urls if http.get(f"{u}/dir").status_code == 200]
                    except httpx.TransportError:
                        wfe = []
                if len(wfe) == 1:
                    other = next(u for u in urls if u != wfe[0])
                    return f"{wfe[0]}/dir", other
            time.sleep(0.05)
        raise AssertionError("pebble did not start:\n" + (self.root / "pebble.log").read_text())

    def root_pem(self) -> str:
        """Pebble's root certificate (made anew at each start), from its management port."""
        with self._client() as http:
            answer = http.get(f"{self.management}/roots/0")
            answer.raise_for_status()
            return answer.text

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.log.close()


def listening_ports(pid: int) -> list[int]:
    """The TCP ports process ``pid`` listens on (its socket inodes in /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
            ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)
