"""Run sys4 tlsrpt-reporter (the reporter Postfix 3.10+ uses) as real processes, offline.

tlsrpt-collectd takes libtlsrpt datagrams on a unix socket into a SQLite file; SIGUSR2 rolls
the day over (today's sessions become yesterday's, ready to report); tlsrpt-reportd then
asks tlsrpt-fetcher for yesterday's domains, builds one report per domain and delivers it
to the ``rua`` of the record in the datagrams: ``mailto:`` through ``sendmail_script``,
``https:`` through ``http_script`` (curl, as by default).  Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
SENDMAIL = Path(__file__).with_name("sendmail_smtp.py")


def poll(what: str, ready: Callable[[], bool], timeout: float, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{logs()}")
        time.sleep(0.05)


def sqlite_value(path: Path, sql: str) -> Any:
    """One value from a SQLite file another process writes (None while it is not there)."""
    if not path.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            row = con.execute(sql).fetchone()
        finally:
            con.close()
    except sqlite3.Error:  # not created yet, or renamed under us at the day roll-over
        return None
    return row[0] if row else None


class Reporter:
    """tlsrpt-collectd + tlsrpt-reportd with their files under ``root``."""

    def __init__(self, root: Path, *, smtp_port: int, cafile: Path) -> None:
        self.root = root
        self.socket = root / "collectd.sock"
        self.collectd_db = root / "collectd.sqlite"
        self.reportd_db = root / "reportd.sqlite"
        self.sent_dir = root / "sent"  # reportd's own copy of every report it delivers
        self.sent_dir.mkdir(exist_ok=True)
        self.smtp_log = root / "smtp-replies.log"
        self.http_log = root / "http-replies.log"
        self.config = root / "tlsrpt.cfg"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.entries = 0  # policy entries collectd has stored (one per policy a session used)
        http_script = (f"curl --silent --show-error --cacert {cafile} "
                       "--header 'Content-Type: application/tlsrpt+gzip' --data-binary @- "
                       "--write-out '\\nHTTP %{http_code} %{url_effective}\\n' "
                       f">> {self.http_log}")  # reportd appends the URL after this
        sections = {
            "tlsrpt_collectd": {
                "storage": f"sqlite://{self.collectd_db}", "socketname": str(self.socket),
                "sockettimeout": "1", "max_uncommited_datagrams": "1", "log_level": "info",
                "dump_path_for_invalid_datagram": str(root / "invalid-datagram")},
            "tlsrpt_fetcher": {"storage": f"sqlite://{self.collectd_db}", "log_level": "warn"},
            "tlsrpt_reportd": {
                "organization_name": "Postfix Reporter Example",
                "contact_info": "tlsrpt-admin@reporter.example",
                "sender_address": "noreply-tlsrpt@reporter.example",
                "dbname": str(self.reportd_db), "log_level": "info",
                "fetchers": f"{BIN / 'tlsrpt-fetcher'} --config_file {self.config}",
                "sendmail_script": f"{sys.executable} {SENDMAIL} {smtp_port} {self.smtp_log} "
                                   f"{cafile}",
                "http_script": http_script, "debug_send_file_dest": str(self.sent_dir),
                "interval_main_loop": "1", "spread_out_delivery": "1",
                "max_retries_delivery": "0", "min_wait_delivery": "0", "max_wait_delivery": "1",
                "min_wait_domainlist": "0", "max_wait_domainlist": "1",
                "min_wait_domaindetails": "0", "max_wait_domaindetails": "1"},
        }
        # configparser interpolates '%': curl's --write-out variables are written as '%%'.
        self.config.write_text("".join(
            f"[{name}]\n" + "".join(f"{k} = {v.replace('%', '%%')}\n" for k, v in opts.items())
            for name, opts in sections.items()))

    # -- processes ----------------------------------------------------------------------------
    def _start(self, name: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TLSRPT_")}
        with open(self.root / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [str(BIN / name), "--config_file", str(self.config)], stdout=log,
                stderr=subprocess.STDOUT, env=env, cwd=self.root)

    def logs(self) -> str:
        out = []
        for name in ("tlsrpt-collectd", "tlsrpt-reportd"):
            path = self.root / f"{name}.log"
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-40:]
                out.append(f"--- {name} (last lines)\n" + "\n".join(tail))
        for path in (self.smtp_log, self.http_log):
            if path.exists():
                out.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(out)

    def _running(self, name: str) -> bool:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}\n{self.logs()}")
        return True

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)

    # -- the day's sessions ---------------------------------------------------------------------
    def start_collectd(self) -> None:
        self._start("tlsrpt-collectd")
        poll("tlsrpt-collectd's socket", lambda: self._running("tlsrpt-collectd")
             and self.socket.exists(), 20, self.logs)

    def send(self, datagrams: list[dict[str, Any]]) -> None:
        """Send the sessions as libtlsrpt does, then wait until collectd committed them all."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            for datagram in datagrams:
                sock.sendto(json.dumps(datagram).encode(), str(self.socket))
        entries = sum(len(d["policies"]) for d in datagrams)
        poll(f"tlsrpt-collectd to store {entries} policy entries",
             lambda: self._running("tlsrpt-collectd") and sqlite_value(
                 self.collectd_db, "SELECT sum(cntrtotal) FROM finalresults") == entries,
             30, self.logs)
        self.entries = entries

    def roll_over(self) -> None:
        """SIGUSR2: the day ends; the sessions move to yesterday's file, ready to report."""
        self.procs["tlsrpt-collectd"].send_signal(signal.SIGUSR2)
        yesterday = Path(f"{self.collectd_db}.yesterday")
        poll("tlsrpt-collectd's day roll-over", lambda: self._running("tlsrpt-collectd")
             and sqlite_value(yesterday, "SELECT sum(cntrtotal) FROM finalresults"
                              " WHERE day = (SELECT daycomplete FROM daystatus)") == self.entries,
             30, self.logs)

    def deliver(self, reports: int, timeout: float = 60) -> None:
        """Start reportd and wait until it has delivered (or given up on) ``reports`` reports."""
        self._start("tlsrpt-reportd")
        poll(f"tlsrpt-reportd to deliver {reports} reports",
             lambda: self._running("tlsrpt-reportd") and sqlite_value(
                 self.reportd_db, "SELECT count(*) FROM destinations WHERE status IS NOT NULL")
             == reports, timeout, self.logs)

    def delivery_status(self) -> dict[str, str]:
        con = sqlite3.connect(f"file:{self.reportd_db}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT r.domain, d.status FROM destinations d "
                               "JOIN reports r ON r.r_id = d.d_r_id").fetchall()
        finally:
            con.close()
        return dict(rows)

    def reports(self) -> dict[str, dict[str, Any]]:
        """The JSON reports reportd built, by domain (from its own database)."""
        con = sqlite3.connect(f"file:{self.reportd_db}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT domain, report FROM reports").fetchall()
        finally:
            con.close()
        return {domain: json.loads(report) for domain, report in rows}

    def http_replies(self) -> list[tuple[int, str]]:
        """(HTTP status, URL) of every POST curl made."""
        if not self.http_log.exists():
            return []
        lines = self.http_log.read_text().splitlines()
        return [(int(code), url) for _, code, url in
                (line.split(" ", 2) for line in lines if line.startswith("HTTP "))]

    def smtp_replies(self) -> list[str]:
        return self.smtp_log.read_text().splitlines() if self.smtp_log.exists() else []
