"""The deploy files work as shipped: `serve` starts from deploy/tlswatch.toml with only
its paths, ports and certificate moved by TLSWATCH_* variables (as a test machine must);
the systemd unit passes `systemd-analyze verify` and lets serve write every folder the
settings name; certbot's deploy hook hands a renewed certificate to a running serve."""

from __future__ import annotations

import grp
import os
import shutil
import smtplib
import ssl
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path, PurePosixPath

import httpx
import pytest
import trustme

from tests.conftest import GZIP_TYPE, ROOT, gz_report, report_mail
from tests.serving import Serve
from tests.test_sighup import smtp_cert

DEPLOY = ROOT / "deploy"
SHIPPED = tomllib.loads((DEPLOY / "tlswatch.toml").read_text())
# What a test machine must move: folders, listening addresses, the certificate's files.
MOVED = {"db", "spool", "policy_dir", "export_dir", "smtp", "http", "tls_cert", "tls_key"}


def unit() -> dict[str, list[str]]:
    """deploy/tlswatch.service's [Service] lines, by key."""
    section, out = "", dict[str, list[str]]()
    for line in (DEPLOY / "tlswatch.service").read_text().splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_every_folder_and_file_setting_is_absolute_and_moved_here() -> None:
    paths = {k for k, v in SHIPPED.items() if isinstance(v, str) and v.startswith("/")}
    assert paths == {"db", "spool", "policy_dir", "export_dir", "tls_cert", "tls_key"}
    assert paths <= MOVED


def test_serve_starts_from_the_shipped_settings(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    pem = tmp_path / "reports.pem"
    ca.issue_cert("127.0.0.1", "reports.example.com").private_key_and_cert_chain_pem \
        .write_to_path(str(pem))
    moved = {"db": str(tmp_path / "lib" / "tlswatch.duckdb"), "spool": str(tmp_path / "spool"),
             "policy_dir": str(tmp_path / "lib" / "policies"),
             "export_dir": str(tmp_path / "lib" / "exports"),
             "smtp": "127.0.0.1:0", "http": "127.0.0.1:0",
             "tls_cert": str(pem), "tls_key": str(pem)}
    assert set(moved) == MOVED
    for key in [k for k in os.environ if k.startswith("TLSWATCH_")]:
        monkeypatch.delenv(key)
    for key, value in moved.items():
        monkeypatch.setenv(f"TLSWATCH_{key.upper()}", value)
    monkeypatch.setenv(SHIPPED["web_password_env"], "from-the-environment-file")
    # Not a setting of the file: the daily checks would look the domains up in public DNS,
    # and a test reaches loopback only.
    monkeypatch.setenv("TLSWATCH_CHECK_INTERVAL_HOURS", "0")
    serve = Serve(tmp_path)
    serve.config, serve.spool = DEPLOY / "tlswatch.toml", Path(moved["spool"])
    serve.db = Path(moved["db"])
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    with serve:
        assert serve.http_url is not None and serve.http_url.startswith("https://")
        with smtplib.SMTP("127.0.0.1", serve.smtp_port, timeout=30) as smtp:
            smtp.starttls(context=trust)
            assert smtp.sendmail("noreply@reporter.example", SHIPPED["report_addresses"],
                                 report_mail("by-mail", domain="example.com")) == {}
        with httpx.Client(verify=trust) as http:
            posted = http.post(f"{serve.http_url}/v1/reports/example.org",
                               content=gz_report("by-https", domain="example.org"),
                               headers=GZIP_TYPE)
            assert posted.status_code == 201, posted.text
        serve.wait_loaded()
        assert sorted(serve.query("SELECT report_id FROM reports")) == [("by-https",),
                                                                        ("by-mail",)]
        assert serve.stop() == 0


def test_the_unit_lets_serve_write_every_folder_it_uses() -> None:
    service = unit()
    writable = [PurePosixPath(p) for line in service["ReadWritePaths"] for p in line.split()]
    folders = [PurePosixPath(SHIPPED["db"]).parent, PurePosixPath(SHIPPED["spool"]),
               PurePosixPath(SHIPPED["policy_dir"]), PurePosixPath(SHIPPED["export_dir"])]
    for folder in folders:
        assert any(folder == w or w in folder.parents for w in writable), folder
    assert service["WorkingDirectory"] == ["/var/lib/tlswatch"]
    assert int(service["LimitNOFILE"][0]) >= 2 * 1000 + 256  # max_connections' default
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["ProtectSystem"] == ["strict"]
    # The install line in the unit's comment creates each of them.
    text = (DEPLOY / "tlswatch.service").read_text().replace("\\\n#", "")
    install = next(line for line in text.splitlines() if "install -d" in line)
    for folder in folders:
        assert f" {folder}" in install, folder


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (make system-deps installs systemd)")
    # Only the install path is changed: verify checks that ExecStart's program exists.
    text = (DEPLOY / "tlswatch.service").read_text()
    assert "/opt/tlswatch/.venv/bin/tlswatch" in text
    (tmp_path / "tlswatch.service").write_text(text.replace(
        "/opt/tlswatch/.venv/bin/tlswatch", str(Path(sys.executable).parent / "tlswatch")))
    done = subprocess.run([analyze, "verify", str(tmp_path / "tlswatch.service")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout + done.stderr == "", \
        done.stdout + done.stderr


def test_certbot_deploy_hook_hands_the_renewed_certificate_to_serve(tmp_path: Path) -> None:
    ca = trustme.CA()
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    live, tls = tmp_path / "live", tmp_path / "tls"
    live.mkdir()
    tls.mkdir()
    group = grp.getgrgid(os.getgid()).gr_name

    def hook(reload: str) -> None:
        subprocess.run([str(DEPLOY / "certbot-deploy-hook")], check=True, timeout=60, env={
            **os.environ, "RENEWED_LINEAGE": str(live), "TLSWATCH_TLS_DIR": str(tls),
            "TLSWATCH_TLS_GROUP": group, "TLSWATCH_RELOAD": reload})

    leaf = ca.issue_cert("127.0.0.1")
    leaf.private_key_pem.write_to_path(str(live / "privkey.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(live / "fullchain.pem"))
    first = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    hook("true")
    assert stat.S_IMODE((tls / "privkey.pem").stat().st_mode) == 0o640
    assert stat.S_IMODE(tls.stat().st_mode) == 0o750
    (tmp_path / "srv").mkdir()
    with Serve(tmp_path / "srv", tls_cert=str(tls / "fullchain.pem"),
               tls_key=str(tls / "privkey.pem"), http="") as serve:
        assert serve.proc is not None
        assert smtp_cert(serve.smtp_port, trust) == first
        renewed = ca.issue_cert("127.0.0.1")
        renewed.private_key_pem.write_to_path(str(live / "privkey.pem"))
        renewed.cert_chain_pems[0].write_to_path(str(live / "fullchain.pem"))
        seen = len(serve.output)
        hook(f"kill -HUP {serve.proc.pid}")
        deadline = time.monotonic() + 30
        while not any("TLS certificate loaded" in line for line in serve.output[seen:]):
            assert time.monotonic() < deadline, "".join(serve.output)
            time.sleep(0.02)
        assert smtp_cert(serve.smtp_port, trust) == ssl.PEM_cert_to_DER_cert(
            renewed.cert_chain_pems[0].bytes().decode())
        assert serve.stop() == 0


def test_serve_before_the_first_certificate_says_which_file_and_what_to_do(
        tmp_path: Path) -> None:
    """The first start on a new server, before certbot ran: the certificate's file is named
    (it said 'cannot listen (smtp=... http=...): No such file or directory')."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSWATCH_")}
    env |= {"TLSWATCH_DB": str(tmp_path / "tlswatch.duckdb"),
            "TLSWATCH_SPOOL": str(tmp_path / "spool"), "TLSWATCH_SMTP": "127.0.0.1:0",
            "TLSWATCH_HTTP": "127.0.0.1:0", "TLSWATCH_POLICY_DIR": str(tmp_path / "p"),
            "TLSWATCH_EXPORT_DIR": str(tmp_path / "e"), "TLSWATCH_CHECK_INTERVAL_HOURS": "0",
            "TLSWATCH_TLS_CERT": str(tmp_path / "tls" / "fullchain.pem"),
            "TLSWATCH_TLS_KEY": str(tmp_path / "tls" / "privkey.pem"),
            SHIPPED["web_password_env"]: "x"}
    done = subprocess.run([sys.executable, "-c", "from tlswatch.cli import main; main()",
                           "--config", str(DEPLOY / "tlswatch.toml"), "serve"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (f"tlswatch: setting tls_cert/tls_key: {tmp_path}/tls/fullchain.pem: cannot read: "
            "No such file or directory. Put the certificate and its key there (with "
            "certbot: deploy/certbot-deploy-hook)") in done.stderr
    assert "Traceback" not in done.stderr and "tlswatch serving" not in done.stdout
