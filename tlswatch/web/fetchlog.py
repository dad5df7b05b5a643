"""Recording the fetches of hosted policies without slowing the answers.

``record`` only appends to a bounded list in memory.  A thread writes the list every
``policy_fetch_flush`` seconds as one batch file in ``spool/fetches/`` for the loader to
store (``tlswatch.policyfetches``).  Nothing here waits for the database: a full buffer,
a client past ``policy_fetch_ip_rate`` fetches a minute (a flood must not fill the table), a
backlog of ``policy_fetch_backlog`` batches that the loader has not stored (the
database away) or a file that cannot be written drops the fetches and counts them in
``tlswatch_policy_fetches_dropped_total{reason}``.
"""

from __future__ import annotations

import atexit
import ipaddress
import itertools
import logging
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from tlswatch import policyfetches as fetches
from tlswatch.cluster import node_name
from tlswatch.config import Settings

log = logging.getLogger(__name__)
_names = itertools.count()


class FetchLog:
    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.spool = settings.spool
        self.limit = settings.policy_fetch_buffer
        self.interval = max(0.05, settings.policy_fetch_flush)
        self.backlog = max(1, settings.policy_fetch_backlog)
        self.node = node_name(settings)
        self.ip_rate = settings.policy_fetch_ip_rate
        self.minute = -1
        self.per_client: dict[str, int] = {}  # this minute's recorded fetches per client
        self.rows: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()
        self.flushing = threading.Lock()  # one writer of batch files at a time
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        registry = registry if registry is not None else CollectorRegistry()
        self.recorded = Counter("tlswatch_policy_fetches", "Fetches of hosted MTA-STS "
                                "policies recorded.", ["status"], registry=registry)
        self.dropped = Counter("tlswatch_policy_fetches_dropped", "Policy fetches not "
                               "recorded: buffer_full, ip_rate (policy_fetch_ip_rate), "
                               "backlog_full (the loader has not stored the batches before: "
                               "the database away) or write_failed.", ["reason"],
                               registry=registry)
        Gauge("tlswatch_policy_fetch_batches_waiting", "Batches of policy fetches waiting "
              "for the loader.", registry=registry).set_function(
            lambda: float(len(fetches.pending(self.spool))))

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def record(self, domain: str, client_ip: str, policy_id: str | None, status: int) -> None:
        """Remember one fetch (never blocks on I/O)."""
        if not self.enabled:
            return
        row = (datetime.now(UTC).replace(tzinfo=None).isoformat(), domain, client_ip,
               policy_id, status, self.node)
        with self.lock:
            reason = self._refusal(client_ip)
            if reason is None:
                self.rows.append(row)
        if reason is not None:
            self.dropped.labels(reason).inc()
            return
        self.recorded.labels(str(status)).inc()
        if self.thread is None:
            self._start()

    def _refusal(self, client_ip: str) -> str | None:
        """Why this fetch is not recorded, or None (called holding the lock)."""
        if len(self.rows) >= self.limit:
            return "buffer_full"
        if not self.ip_rate:
            return None
        minute = int(time.monotonic() // 60)
        if minute != self.minute:
            self.minute, self.per_client = minute, {}
        client = _client_key(client_ip)
        seen = self.per_client.get(client, 0)
        if seen >= self.ip_rate:
            return "ip_rate"
        if seen or len(self.per_client) < 100_000:  # many clients: the buffer bounds them
            self.per_client[client] = seen + 1
        return None

    def _start(self) -> None:
        with self.lock:
            if self.thread is not None:
                return
            self.thread = threading.Thread(target=self._run, name="tlswatch-fetchlog",
                                           daemon=True)
        atexit.register(self.stop)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.flush()

    def stop(self) -> None:
        """Write what is buffered (at exit: a stopped 'serve' loses no recorded fetch)."""
        self.stopping.set()
        self.flush()

    def flush(self) -> int:
        """Write the buffered fetches as one batch file; return how many were written."""
        with self.flushing:
            with self.lock:
                rows, self.rows = self.rows, []
            if not rows:
                return 0
            try:
                if len(fetches.pending(self.spool)) >= self.backlog:
                    self.dropped.labels("backlog_full").inc(len(rows))
                    log.warning("dropped %d policy fetch(es): %d batches wait for the loader "
                                "already (policy_fetch_backlog)", len(rows), self.backlog)
                    return 0
                fetches.folder(self.spool).mkdir(parents=True, exist_ok=True)
                fetches.write_batch(self.spool, rows,
                                    name=f"{time.time_ns():020d}-{os.getpid()}-{next(_names)}")
            except OSError as exc:
                self.dropped.labels("write_failed").inc(len(rows))
                log.warning("dropped %d policy fetch(es): cannot write the batch: %s",
                            len(rows), exc)
                return 0
            return len(rows)


def _client_key(ip: str) -> str:
    """The address a client is counted by: itself, or its /64 for IPv6 (one host can
    use a whole /64)."""
    if ":" not in ip:
        return ip
    try:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    except ValueError:
        return ip
