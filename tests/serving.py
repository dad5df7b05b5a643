"""Run the real ``tlswatch serve`` in a subprocess on loopback ports chosen by the OS."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import psycopg
from aiosmtpd.controller import Controller

CLI = [sys.executable, "-c", "from tlswatch.cli import main; main()"]
WAITING = {"x86_64": "270", "aarch64": "72"}  # pselect6's number, per machine


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not ended within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Serve:
    """A running ``tlswatch serve``; ``stop()`` (SIGTERM) or ``kill()`` (SIGKILL) ends it.

    ``db``: a DuckDB file (default: one in ``root``) or a postgresql:// URL, which several
    Serves (nodes, each with its own ``root`` and spool) may share."""

    def __init__(self, root: Path, *, verbose: bool = True, db: Path | str | None = None,
                 **settings: Any) -> None:
        self.root = root
        self.verbose = verbose
        self.db: Path | str = root / "tlswatch.duckdb" if db is None else db
        self.spool = root / "spool"
        # No daily MTA-STS checks unless a test asks: they would look up real domains.
        self.settings = {"db": str(self.db), "spool": str(self.spool), "smtp": "127.0.0.1:0",
                         "http": "127.0.0.1:0", "loader_interval": 0.1,
                         "check_interval_hours": 0, **settings}
        self.spool = Path(self.settings["spool"])
        self.config = root / "tlswatch.toml"
        self.config.write_text("".join(f"{k} = {toml_value(v)}\n"
                                       for k, v in self.settings.items()))
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 30, *, own_group: bool = False) -> Serve:
        """Start; ``own_group`` gives it a process group, as a terminal or systemd would."""
        assert self.proc is None or self.proc.poll() is not None, "serve is running already"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        flags = ["-v"] if self.verbose else []
        self.proc = subprocess.Popen([*CLI, "--config", str(self.config), *flags, "serve"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env, start_new_session=own_group)
        ready = threading.Event()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        if not ready.wait(timeout):
            self.kill()
            raise AssertionError("serve did not start:\n" + "".join(self.output))
        return self

    def _read(self, ready: threading.Event) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if line.startswith("tlswatch serving"):
                words = dict(w.split("=", 1) for w in line.split()[2:])
                self.smtp_at = words.get("smtp")
                self.http_url = words.get("http")
                ready.set()
        ready.set()

    @property
    def smtp_port(self) -> int:
        assert self.smtp_at
        return int(self.smtp_at.rsplit(":", 1)[1])

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def kill_group(self) -> None:
        """kill -9 of the whole node (serve, its loader and worker), as when its machine
        fails; needs ``start(own_group=True)``."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def children(self) -> list[int]:
        assert self.proc is not None
        tasks = Path(f"/proc/{self.proc.pid}/task")
        return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]

    def incoming(self) -> list[str]:
        return sorted(os.listdir(self.spool / "incoming"))

    def wait_loaded(self, timeout: float = 60) -> None:
        """Poll until the spool's incoming folder is empty (everything loaded or filed)."""
        deadline = time.monotonic() + timeout
        while self.incoming():
            if time.monotonic() > deadline:
                raise AssertionError(f"spool not drained: {self.incoming()[:5]}")
            time.sleep(0.05)

    def loader_pid(self) -> int | None:
        """The running loader process, as serve logged it (the delivery worker and
        multiprocessing's resource tracker are children too); None while there is none."""
        started = [re.search(r"loader process (\d+) started", line) for line in self.output]
        pids = [int(m.group(1)) for m in started if m]
        return pids[-1] if pids and pids[-1] in self.children() else None

    def wait_loader_idle(self, timeout: float = 30) -> None:
        """Poll until the loader has logged a batch and now waits for work: its main thread
        blocked in the stop signal's select, not in a sleep or its own work."""
        loader = self.loader_pid()
        assert loader is not None, "no loader process is running"
        waiting = WAITING.get(platform.machine())
        deadline = time.monotonic() + timeout
        while not (any(" tlswatch.service: loaded " in line for line in self.output) and
                   (waiting is None or
                    Path(f"/proc/{loader}/syscall").read_text().split()[0] == waiting)):
            if time.monotonic() > deadline:
                raise AssertionError("the loader did not become idle:\n" + "".join(self.output))
            time.sleep(0.01)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Read the database the way 'tlswatch summary' does, waiting for the loader's lock."""
        if str(self.db).startswith("postgresql://"):
            with psycopg.connect(str(self.db)) as pg:
                return pg.execute(sql).fetchall()
        deadline = time.monotonic() + 30
        while True:
            try:
                con = duckdb.connect(str(self.db), read_only=True)
            except duckdb.IOException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            try:
                return con.execute(sql).fetchall()
            finally:
                con.close()

    def __enter__(self) -> Serve:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


class BoundController(Controller):
    """aiosmtpd's Controller that may bind port 0 and reports the port the OS chose.

    Controller 1.4 connects to its own (hostname, port) once started, which fails for port
    0: the bound port is read from the server's socket before that.
    """

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()
