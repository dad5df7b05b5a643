"""A PostgreSQL 15 cluster of the tests' own: initdb in a temp dir, the server on a unix
socket only (no TCP port), stopped at the end of the session.

initdb refuses to run as root: as root the cluster belongs to the ``postgres`` system user
(installed with postgresql-15), and its folder is made reachable for that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

BIN = Path(os.environ.get("TLSWATCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
OWNER = "postgres"


class Cluster:
    """A running throw-away cluster; ``url(name)`` names one of its databases."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tlswatch-pg-"))
        self.data = self.root / "data"
        self.socket = self.root / "sock"
        self.socket.mkdir()
        self.user: dict[str, Any] = {}
        self.role = pwd.getpwuid(os.getuid()).pw_name
        if os.getuid() == 0:
            owner = pwd.getpwnam(OWNER)
            for path in (self.root, self.socket):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            self.user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
            self.role = OWNER
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.root / "server.log"
        self.count = 0

    def start(self) -> None:
        subprocess.run([str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                        self.role, "-E", "UTF8", "--locale", "C"], check=True,
                       capture_output=True, **self.user)
        with (self.data / "pg_hba.conf").open("w") as hba:  # one role must give a password
            hba.write("local all tlswatch_pw scram-sha-256\nlocal all all trust\n")
        self.process = subprocess.Popen(
            [str(BIN / "postgres"), "-D", str(self.data), "-k", str(self.socket),
             "-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=100"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"),  # noqa: SIM115
            **self.user)
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.url("postgres"), autocommit=True) as con:
                    con.execute("CREATE ROLE tlswatch_pw LOGIN PASSWORD 's3cret-pw'")
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {self.log.read_text()}") \
                        from None
                time.sleep(0.05)

    def url(self, name: str, *, user: str | None = None) -> str:
        return f"postgresql://{user or self.role}@/{name}?host={self.socket}"

    def create(self) -> str:
        """A new empty database; its name."""
        self.count += 1
        name = f"t{os.getpid()}_{self.count}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
            con.execute(f'GRANT ALL ON DATABASE "{name}" TO tlswatch_pw')
            con.execute(f'ALTER DATABASE "{name}" OWNER TO tlswatch_pw')
        return name

    def drop(self, name: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: ends the sessions
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def available() -> bool:
    return (BIN / "initdb").exists() and (os.getuid() != 0 or _has_owner())


def _has_owner() -> bool:
    try:
        pwd.getpwnam(OWNER)
    except KeyError:
        return False
    return True
