"""A private Postfix instance for the tests: its own config_directory, queue_directory and
data_directory under a test's folder, listening on one loopback port, configured with the
blocks of deploy/postfix.md.  Started with ``postfix -c DIR start``, stopped with ``stop``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import ROOT

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"
MASTER_CF = Path("/etc/postfix/master.cf.proto")  # Debian's, as shipped


def doc_blocks(section: str) -> dict[str, str]:
    """The code blocks of deploy/postfix.md in ``section`` ('' for the part common to all),
    keyed by the file named in their first line ('# /etc/postfix/transport')."""
    text = (ROOT / "deploy" / "postfix.md").read_text()
    parts = re.split(r"^## ", text, flags=re.M)
    chosen = parts[0] if not section else next(p for p in parts if p.startswith(section))
    blocks: dict[str, str] = {}
    for body in re.findall(r"^```\n(.*?)^```", chosen, flags=re.M | re.S):
        first, _, rest = body.partition("\n")
        assert first.startswith("# /"), first
        blocks[first[2:]] = rest
    return blocks


def free_port() -> int:
    """A loopback port free now (Postfix cannot be told to pick one and report it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostfix:
    """One Postfix instance under ``root``, its SMTP server on 127.0.0.1:``port``."""

    def __init__(self, root: Path, *, main: str, master: str = "",
                 maps: dict[str, str] | None = None) -> None:
        self.root = root
        self.config = root / "etc"
        self.queue = root / "queue"
        self.port = free_port()
        # Postfix's daemons drop to the postfix user and then open data_directory (and the
        # log) by absolute path, which a test's folder (root's only, 0700) does not allow;
        # the queue they reach relative to their working directory, so it may stay there.
        self.data = Path(tempfile.mkdtemp(prefix="tlswatch-postfix-"))
        os.chmod(self.data, 0o755)
        shutil.chown(self.data, "postfix")  # master's lock file and the TLS caches
        self.log = self.data / "postfix.log"
        self.config.mkdir(parents=True)
        self.queue.mkdir()
        (self.config / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.test.example
mydomain = test.example
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
smtputf8_enable = no
maillog_file = {self.log}
maillog_file_prefixes = {self.data}
syslog_name = postfix-tlswatch-test
# Retry a deferred message soon (the tests wait for it).
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
{main}""")
        (self.config / "master.cf").write_text(self._master() + master)
        for name, body in (maps or {}).items():
            (self.config / name).write_text(body)
            subprocess.run([POSTMAP, "-c", str(self.config), str(self.config / name)],
                           check=True, timeout=60)

    def _master(self) -> str:
        """Debian's master.cf with no chroot (the instance has no chroot tree) and its SMTP
        server on this instance's port, plus the logging service for maillog_file."""
        lines = []
        for line in MASTER_CF.read_text().splitlines():
            fields = line.split()
            if line[:1].isalnum() and len(fields) >= 8:
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"127.0.0.1:{self.port}"
                fields[4] = "n"
                line = " ".join(fields)
            lines.append(line)
        text = "\n".join(lines) + "\n"
        if not re.search(r"^postlog\s", text, flags=re.M):
            text += "postlog unix-dgram n - n - 1 postlogd\n"
        return text

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([POSTFIX, "-c", str(self.config), *args], capture_output=True,
                              text=True, timeout=120)

    def start(self) -> PrivatePostfix:
        done = self.postfix("start")
        assert done.returncode == 0, done.stdout + done.stderr + self.logged()
        deadline = time.monotonic() + 60
        while True:  # the SMTP server's socket is open once master has started
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
                return self
            except OSError:
                assert time.monotonic() < deadline, "postfix is not listening\n" + self.logged()
                time.sleep(0.05)

    def stop(self) -> None:
        self.postfix("stop")
        pid = self.queue / "pid" / "master.pid"
        deadline = time.monotonic() + 30
        while pid.exists() and self.postfix("status").returncode == 0:
            if time.monotonic() > deadline:
                self.postfix("abort")
                break
            time.sleep(0.1)

    def remove(self) -> None:
        """Keep the log beside the queue, then remove the folder outside the test's."""
        if self.log.exists():
            shutil.copy(self.log, self.root / "postfix.log")
        shutil.rmtree(self.data, ignore_errors=True)

    def logged(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def queued(self) -> str:
        """`mailq` of this instance: what waits in its queue, and why."""
        done = subprocess.run(["postqueue", "-c", str(self.config), "-p"], capture_output=True,
                              text=True, timeout=60)
        return done.stdout

    def __enter__(self) -> PrivatePostfix:
        try:
            return self.start()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.remove()
