"""``tlswatch serve``: SMTP/LMTP and HTTP receivers and the loader in one asyncio process.

Receivers only write to the spool; the loader drains it in batches through the same code
as ``tlswatch ingest`` and holds DuckDB's write lock only while it writes a batch, so the
read commands keep working beside it.  SIGTERM or SIGINT: stop accepting, finish the
batch being written, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn

from tlswatch.config import Settings
from tlswatch.errors import ConfigError, StoreLockedError
from tlswatch.ingest.loader import IngestResult, drain
from tlswatch.ingest.prepare import options_from
from tlswatch.ingest.smtp import ReportHandler, start_smtp, tls_context
from tlswatch.ingest.spool import Spool
from tlswatch.metrics import Metrics
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
        self.spool = Spool(settings.spool)
        self.metrics = Metrics(spool_depth=self.spool.depth, loader_lag=self.spool.oldest_age)
        self.options = options_from(settings)
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
                                    hostname=s.smtp_hostname)
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
                                    ssl_keyfile=s.tls_key or None, timeout_graceful_shutdown=5)
            http_server = _Server(config)
            http_task = asyncio.create_task(http_server.serve(sockets=[sock]))
            while not http_server.started and not http_task.done():
                await asyncio.sleep(0.01)
            scheme = "https" if s.tls_cert else "http"
            http_at = f"{scheme}://{_bound(sock)}"
        loader = asyncio.create_task(self._load_forever())
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
        await loader

    async def _load_forever(self) -> None:
        s = self.settings
        pruned_at = 0.0
        while not self.stopping.is_set():
            try:
                result = await asyncio.to_thread(self._drain_once)
            except StoreLockedError as exc:
                log.warning("loader waits: %s", exc)
                result = None
            except Exception:  # keep receiving whatever the loader met; the spool keeps all
                log.exception("loader failed; the spool keeps the reports, retrying")
                result = None
            if result is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), s.loader_interval)
            else:
                await asyncio.sleep(0.05)  # let waiting readers take the database
            now = asyncio.get_running_loop().time()
            if now - pruned_at > 3600:
                pruned_at = now
                await asyncio.to_thread(self.spool.prune, older_than_days=s.spool_keep_days)

    def _drain_once(self) -> IngestResult | None:
        s = self.settings
        result = drain(self.spool, s.db, options=self.options, limit=s.batch_size,
                       lock_timeout=s.lock_timeout)
        if result is not None:
            self.metrics.loaded.inc(result.accepted)
            self.metrics.duplicates.inc(result.duplicates)
            self.metrics.quarantined.inc(result.rejected - len(result.retry))
            if result.rejected:
                self.metrics.rejected.labels("loader", "invalid").inc(result.rejected)
            log.info("loaded %d, duplicates %d, rejected %d", result.accepted,
                     result.duplicates, result.rejected)
        return result


def _bound(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
