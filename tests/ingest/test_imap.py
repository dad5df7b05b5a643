"""``tlswatch fetch imap`` against a real Dovecot that the test configures and starts."""

from __future__ import annotations

import imaplib
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Cli, report_mail

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
CONFIG = """
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
auth_mechanisms = plain
disable_plaintext_auth = yes
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home={root}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
"""


@dataclass
class Dovecot:
    port: int
    ca: Path
    user: str = "reporter"
    password: str = "s3cret-pw"

    def client(self) -> imaplib.IMAP4_SSL:
        context = ssl.create_default_context(cafile=str(self.ca))
        client = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=context, timeout=30)
        client.login(self.user, self.password)
        return client

    def folder(self, name: str) -> list[bytes]:
        client = self.client()
        try:
            typ, _ = client.select(f'"{name}"')
            if typ != "OK":
                return []
            _, data = client.search(None, "ALL")
            subjects = []
            for number in (data[0] or b"").split():
                _, parts = client.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                subjects.append(parts[0][1].strip())  # type: ignore[index]
            return subjects
        finally:
            client.logout()


# Socket activation, as systemd does it: Dovecot takes the listening socket the test bound on
# port 0 as fd 3 (LISTEN_FDS) instead of binding a port itself, so no other process can take
# the port in between.
ACTIVATE = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
            "os.execv(sys.argv[2], sys.argv[2:])")


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    assert Path(DOVECOT).exists(), "Dovecot is missing: 'make test' installs dovecot-imapd"
    trustme = pytest.importorskip("trustme")
    # Dovecot's own processes run as unprivileged users: pytest's 0700 tmp_path is closed
    # to them, so the server gets a folder of its own that they can reach.
    root = Path(tempfile.mkdtemp(prefix="tlswatch-dovecot-"))
    root.chmod(0o755)
    (root / "home").mkdir(parents=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        server = Dovecot(port=listener.getsockname()[1], ca=root / "ca.pem")
        (root / "passwd").write_text(f"{server.user}:{{PLAIN}}{server.password}\n")
        shutil.chown(root / "home", "mail", "mail")
        (root / "dovecot.conf").write_text(CONFIG.format(root=root, port=server.port))
        proc = subprocess.Popen([sys.executable, "-c", ACTIVATE, str(listener.fileno()),
                                 DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
                                pass_fds=(listener.fileno(),), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                server.client().logout()
                break
            except (OSError, imaplib.IMAP4.error):
                if time.monotonic() > deadline or proc.poll() is not None:
                    log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() \
                        else ""
                    raise AssertionError(f"Dovecot did not start: {log}") from None
                time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)
        subprocess.run(["pkill", "-f", str(root / "dovecot.conf")], check=False)
        shutil.rmtree(root, ignore_errors=True)


def append(server: Dovecot, message: bytes) -> None:
    client = server.client()
    try:
        assert client.append("INBOX", None, None, message.replace(b"\n", b"\r\n")
                             .replace(b"\r\r\n", b"\r\n"))[0] == "OK"
    finally:
        client.logout()


def fetch(cli: Cli, server: Dovecot, tmp_path: Path) -> dict:  # type: ignore[type-arg]
    return cli.json("fetch", "imap", "--host", "127.0.0.1", "--port", str(server.port),
                    "--user", server.user, "--password-env", "IMAP_TEST_PW",
                    "--ca-bundle", str(server.ca))  # type: ignore[no-any-return]


def test_fetch_spools_reports_archives_them_and_leaves_other_mail(
        dovecot: Dovecot, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAP_TEST_PW", dovecot.password)
    monkeypatch.setenv("TLSWATCH_SPOOL", str(tmp_path / "spool"))
    append(dovecot, report_mail("imap-1"))
    append(dovecot, b"From: friend@example.com\r\nSubject: lunch?\r\n\r\nat noon\r\n")
    append(dovecot, report_mail("imap-2"))
    first = fetch(cli, dovecot, tmp_path)
    assert (first["messages"], first["spooled"], first["left_alone"]) == (3, 2, 1)
    assert (first["accepted"], first["rejected"]) == (2, 0)
    assert dovecot.folder("INBOX") == [b"Subject: lunch?"]
    assert len(dovecot.folder("Processed")) == 2
    again = fetch(cli, dovecot, tmp_path)  # incremental: nothing new, the lunch mail skipped
    assert (again["messages"], again["spooled"]) == (0, 0)
    append(dovecot, report_mail("imap-3"))
    append(dovecot, report_mail("imap-1"))  # the same report sent twice
    third = fetch(cli, dovecot, tmp_path)
    assert (third["messages"], third["accepted"], third["duplicates"]) == (2, 1, 1)
    rows = cli.json("reports")
    assert sorted(r["report_id"] for r in rows) == ["imap-1", "imap-2", "imap-3"]


def test_wrong_password_is_a_clear_error(dovecot: Dovecot, cli: Cli, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAP_TEST_PW", "wrong")
    monkeypatch.setenv("TLSWATCH_SPOOL", str(tmp_path / "spool"))
    result = cli("fetch", "imap", "--host", "127.0.0.1", "--port", str(dovecot.port),
                 "--user", dovecot.user, "--password-env", "IMAP_TEST_PW",
                 "--ca-bundle", str(dovecot.ca), code=1)
    assert "tlswatch: " in result.stderr and "AUTHENTICATIONFAILED" in result.stderr.upper()
