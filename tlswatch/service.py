"""``tlswatch serve``: SMTP/LMTP and HTTP receivers in one asyncio process, and the loader.

Receivers only write to the spool; the loader drains it in batches through the same code
as ``tlswatch ingest`` and holds DuckDB's write lock only while it writes a batch, so the
read commands keep working beside it.  The loader runs in a child process at a lower CPU
priority: it never holds the receivers' GIL, and under a burst the receivers answer first
while the loader catches up from the spool.  SIGTERM or SIGINT: stop accepting, let the
loader finish the batch it is writing, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import uvicorn

from tlswatch import jobs
from tlswatch.analytics.render import SafeFormatter
from tlswatch.config import Settings
from tlswatch.errors import ConfigError, StoreLockedError
from tlswatch.ingest.loader import drain
from tlswatch.ingest.prepare import options_from
from tlswatch.ingest.smtp import ReportHandler, start_smtp, tls_context
from tlswatch.ingest.spool import Spool
from tlswatch.metrics import Metrics
from tlswatch.store import Store
from tlswatch.web import create_app

log = logging.getLogger(__name__)


def parse_address(value: str, name: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"setting {name}: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handling: the service owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Listening:
    smtp: str | None
    http: str | None


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spool = Spool.from_settings(settings)
        self.loader = LoaderProcess(settings)
        self.jobs = jobs.JobsProcess(settings)  # daily summaries and the outbox's deliveries
        self.metrics = Metrics(spool_depth=self.spool.depth, loader_lag=self.spool.oldest_age,
                               loader_count=self.loader.count)
        self.stopping = asyncio.Event()

    async def run(self, on_ready: Callable[[Listening], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        s = self.settings
        tls = tls_context(s.tls_cert, s.tls_key)
        smtp_server = http_server = None
        smtp_at = http_at = None
        if s.smtp:
            host, port = parse_address(s.smtp, "smtp")
            handler = ReportHandler(self.spool, self.metrics, addresses=s.report_addresses,
                                    max_recipients=s.max_recipients, lmtp=s.lmtp,
                                    hostname=s.smtp_hostname, options=options_from(s))
            smtp_server = await start_smtp(handler, host, port, lmtp=s.lmtp,
                                           data_size_limit=s.max_input_bytes, tls=tls)
            smtp_at = _bound(smtp_server.sockets[0])
        http_task = None
        if s.http:
            host, port = parse_address(s.http, "http")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            config = uvicorn.Config(create_app(s, self.spool, self.metrics), lifespan="off",
                                    log_level="warning", access_log=False,
                                    ssl_certfile=s.tls_cert or None,
                                    ssl_keyfile=s.tls_key or None, timeout_graceful_shutdown=5,
                                    # the app decides whom to believe (trusted_proxies)
                                    proxy_headers=False)
            http_server = _Server(config)
            http_task = asyncio.create_task(http_server.serve(sockets=[sock]))
            while not http_server.started and not http_task.done():
                await asyncio.sleep(0.01)
            scheme = "https" if s.tls_cert else "http"
            http_at = f"{scheme}://{_bound(sock)}"
        self.loader.start()
        self.jobs.start()
        if on_ready is not None:
            on_ready(Listening(smtp_at, http_at))
        await self.stopping.wait()
        log.info("stopping: no new connections; finishing the batch being written")
        if smtp_server is not None:
            smtp_server.close()
        if http_server is not None and http_task is not None:
            http_server.should_exit = True
            await http_task
        if smtp_server is not None:
            await smtp_server.wait_closed()
        await asyncio.gather(asyncio.to_thread(self.loader.finish, 60.0),
                             asyncio.to_thread(self.jobs.finish, 40.0))



class LoaderProcess:
    """The loader's child process and the counters it shares with /metrics.

    It is stopped by SIGTERM (finish the batch, then exit), never through a shared lock or
    event: a terminal's Ctrl-C or a service manager signals the whole process group, and a
    child killed while holding a multiprocessing primitive would hang the parent.
    """

    def __init__(self, settings: Settings) -> None:
        context = multiprocessing.get_context("spawn")
        # One writer (the child) and plain reads: no lock to be left held.
        self.counts = {name: context.Value("q", 0, lock=False)
                       for name in ("loaded", "duplicates", "quarantined", "rejected")}
        self.process = context.Process(
            target=run_loader, name="tlswatch-loader",
            args=(settings, self.counts, os.getpid(),
                  logging.getLogger().getEffectiveLevel()), daemon=True)

    def start(self) -> None:
        self.process.start()

    def finish(self, timeout: float) -> None:
        """Ask the loader to stop after its batch (SIGTERM); wait for it."""
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout)
        if self.process.is_alive():
            log.warning("loader did not stop in %ss; killing it (the spool keeps everything)",
                        timeout)
            self.process.kill()
            self.process.join(5)

    def count(self, name: str) -> float:
        return float(self.counts[name].value)


def run_loader(settings: Settings, counts: dict[str, Any], parent: int, level: int) -> None:
    """The loader's loop (in its own process): drain the spool until SIGTERM."""
    handler = logging.StreamHandler()  # report values in log lines are shown escaped
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    stopping = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent decides
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with contextlib.suppress(OSError):
        os.nice(19)
    spool, options = Spool.from_settings(settings), options_from(settings)
    pruned_at = 0.0
    while not stopping.is_set() and os.getppid() == parent:  # gone with the parent, even on -9
        try:
            result = drain(spool, settings.db, options=options, limit=settings.batch_size,
                           max_bytes=settings.max_batch_bytes, lock_timeout=settings.lock_timeout)
        except StoreLockedError as exc:
            log.warning("loader waits: %s", exc)
            result = None
        except Exception:  # keep going whatever happened; the spool keeps every report
            log.exception("loader failed; the spool keeps the reports, retrying")
            result = None
        if result is not None and (result.report_pks or result.conflicts):
            _alerts_after_load(settings, result.report_pks, conflicts=bool(result.conflicts))
        if result is not None:
            for name, value in (("loaded", result.accepted), ("duplicates", result.duplicates),
                                ("quarantined", result.rejected - len(result.retry)),
                                ("rejected", result.rejected)):
                counts[name].value += value
            log.info("loaded %d, duplicates %d, rejected %d", result.accepted,
                     result.duplicates, result.rejected)
            time.sleep(0.05)  # let waiting readers take the database
        else:
            stopping.wait(settings.loader_interval)
        if time.monotonic() - pruned_at > 3600:
            pruned_at = time.monotonic()
            spool.prune(older_than_days=settings.spool_keep_days)


def _alerts_after_load(settings: Settings, report_pks: list[int], *, conflicts: bool) -> None:
    days = [datetime.now(UTC).date()] if conflicts else []  # dated by their arrival
    try:
        if report_pks:
            with Store.open(settings.db, read_only=True,
                            lock_timeout=settings.lock_timeout) as store:
                days += [r["day"] for r in store.rows(
                    "SELECT DISTINCT day FROM reports WHERE report_pk BETWEEN ? AND ?",
                    [min(report_pks), max(report_pks)])]
        jobs.check_alerts(settings, days)
    except Exception:  # alerts must not stop loading
        log.exception("alert check failed")


def _bound(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
