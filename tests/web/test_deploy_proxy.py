"""The documented reverse-proxy set-up, for real: nginx with deploy/nginx.conf in front of
`serve` with deploy/tlswatch-behind-proxy.toml (only the paths, certificates and the
listening socket changed).  Clients from the internet must log in; policies and the
receiver stay open; a rebinding Host is refused.

nginx listens on a unix socket (no port to pick); its realip module, told to believe the
test's ``X-Test-Client-IP`` from that socket, plays clients at any address."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.conftest import ROOT, Cli, make_report
from tests.serving import Serve

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")

NAMES = ["reports.example.com", "mta-sts.example.com", "mta-sts.example.org"]


def nginx_conf(tmp: Path, sock: Path, pem: Path, upstream: str) -> Path:
    site = (ROOT / "deploy" / "nginx.conf").read_text().split("# Senders fetch policies")[0]
    site = site.replace("    listen 443 ssl http2;\n", f"    listen unix:{sock} ssl;\n")
    site = site.replace("    listen [::]:443 ssl http2;\n", "")
    site = site.replace("/etc/letsencrypt/live/reports.example.com/fullchain.pem", str(pem))
    site = site.replace("/etc/letsencrypt/live/reports.example.com/privkey.pem", str(pem))
    site = site.replace("https://127.0.0.1:8080", upstream)
    assert f"unix:{sock}" in site and upstream in site
    (tmp / "site.conf").write_text(site)
    temp = "".join(f"{kind}_temp_path {tmp}/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = tmp / "nginx.conf"
    main.write_text(f"""daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{}}
http {{
    access_log off;
    {temp}
    set_real_ip_from unix:;
    real_ip_header X-Test-Client-IP;
    include {tmp}/site.conf;
}}
""")
    return main


@pytest.fixture
def deployed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    ca = trustme.CA()
    pem = tmp_path / "host.pem"
    ca.issue_cert(*NAMES).private_key_and_cert_chain_pem.write_to_path(str(pem))
    monkeypatch.setenv("TLSWATCH_WEB_PASSWORD", "proxy-pw")
    monkeypatch.setenv("TLSWATCH_POLICY_DIR", str(tmp_path / "policies"))
    Cli(tmp_path / "cli.duckdb")("policy", "init", "example.com", "--mx", "mx.example.com",
                                 "--format", "json")
    documented = tomllib.loads((ROOT / "deploy" / "tlswatch-behind-proxy.toml").read_text())
    (tmp_path / "srv").mkdir()
    server = Serve(tmp_path / "srv", **{
        **documented, "db": str(tmp_path / "srv" / "t.duckdb"),
        "spool": str(tmp_path / "srv" / "spool"), "policy_dir": str(tmp_path / "policies"),
        "export_dir": str(tmp_path / "exports"),
        "smtp": "", "http": "127.0.0.1:0", "tls_cert": str(pem), "tls_key": str(pem)})
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    sock = nginx_dir / "https.sock"
    with server:
        conf = nginx_conf(nginx_dir, sock, pem, server.http_url)
        proxy = subprocess.Popen(["nginx", "-p", str(nginx_dir), "-c", str(conf)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not sock.exists():
                assert proxy.poll() is None, proxy.communicate()[0]
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
            trust = ssl.create_default_context()
            ca.configure_trust(trust)
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock), verify=trust)) as c:
                yield c
        finally:
            proxy.kill()
            proxy.wait(30)


def test_behind_nginx_as_documented_the_dashboard_has_a_login(deployed: httpx.Client) -> None:
    outside = {"X-Test-Client-IP": "203.0.113.9"}
    dashboard = "https://reports.example.com/?format=json"
    assert deployed.get(dashboard, headers=outside).status_code == 401
    spoofed = {**outside, "X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1",
               "Forwarded": "for=127.0.0.1"}
    assert deployed.get(dashboard, headers=spoofed).status_code == 401
    assert deployed.get(dashboard, headers=outside, auth=("admin", "proxy-pw")
                        ).status_code == 200
    # a user on the proxy's own host, as nginx reports it
    assert deployed.get(dashboard, headers={"X-Test-Client-IP": "127.0.0.1"}).status_code == 200

    policy = deployed.get("https://mta-sts.example.com/.well-known/mta-sts.txt",
                          headers=outside)
    assert policy.status_code == 200 and "mx: mx.example.com" in policy.text
    assert deployed.get("https://mta-sts.example.org/.well-known/mta-sts.txt",
                        headers=outside).status_code == 404
    posted = deployed.post("https://reports.example.com/v1/reports", headers=outside,
                           json=make_report(rid="through-nginx"))
    assert posted.status_code == 201, posted.text
    rebound = deployed.get(dashboard, headers={**outside, "Host": "rebound.example"},
                           extensions={"sni_hostname": "reports.example.com"})
    assert rebound.status_code == 421
