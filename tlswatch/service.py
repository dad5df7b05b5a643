"""``tlswatch serve``: SMTP/LMTP and HTTP receivers in one asyncio process, and the loader.

Receivers only write to the spool; the loader drains it in batches through the same code
as ``tlswatch ingest`` and holds DuckDB's write lock only while it writes a batch, so the
read commands keep working beside it.  The loader runs in a child process at a lower CPU
priority: it never holds the receivers' GIL, and under a burst the receivers answer first
while the loader catches up from the spool; a loader that dies is restarted (with
back-off) and /healthz says so meanwhile.  SIGTERM or SIGINT: stop accepting, let the
loader finish the batch it is writing, exit 0.  SIGHUP: load the TLS certificate again and
the settings that may change while running (``tlswatch.reload``); never stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import resource
import signal
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn

from tlswatch import jobs
from tlswatch import policyfetches as fetches
from tlswatch.analytics.render import SafeFormatter
from tlswatch.cluster import StoreProbe, node_metrics, shared
from tlswatch.config import Settings
from tlswatch.daymetrics import DomainDayMetrics
from tlswatch.errors import ConfigError, StoreLockedError, StoreWriteError
from tlswatch.ingest.draining import drain
from tlswatch.ingest.http import HealthChecks
from tlswatch.ingest.limits import BodyBudget, ConnectionCap, LimitMetrics, http_protocol
from tlswatch.ingest.prepare import options_from
from tlswatch.ingest.smtp import ReportHandler, start_smtp, tls_context
from tlswatch.ingest.spool import Spool
from tlswatch.logutil import install_repeat_filter
from tlswatch.metrics import Metrics
from tlswatch.reload import CertificateError, load_certificate, reload_settings
from tlswatch.spoollock import spool_lock
from tlswatch.stopsignal import StopSignal
from tlswatch.store import Store
from tlswatch.store.maintenance import refuse_newer, serving_mark
from tlswatch.web import create_app
from tlswatch.web.acme import SniCertificates, challenge_app

log = logging.getLogger(__name__)


def parse_address(value: str, name: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"setting {name}: expected HOST:PORT (PORT 0 to 65535), got "
                          f"{value!r}")
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
    acme: str | None = None  # the plain HTTP listener of the ACME challenges



def _check_certificate(s: Settings) -> None:
    """A missing or unusable certificate stops 'serve' with the file, the reason and what
    to do (OpenSSL's own error names neither), before anything listens."""
    if not s.tls_cert:
        return
    try:
        load_certificate([], s.tls_cert, s.tls_key)
    except CertificateError as exc:
        raise ConfigError(f"setting tls_cert/tls_key: {exc}. Put the certificate and its key "
                          "there (with certbot: deploy/certbot-deploy-hook), or set tls_cert "
                          "= \"\" to serve without TLS") from exc


class Service:
    def __init__(self, settings: Settings,
                 reread: Callable[[], Settings] | None = None) -> None:
        self.settings = settings
        self.reread = reread  # the settings as the files and environment say now (SIGHUP)
        self.tls_contexts: list[ssl.SSLContext] = []  # the listeners' own, for SIGHUP
        self.reloading: asyncio.Task[None] | None = None
        self.spool = Spool.from_settings(settings)
        self.loader = LoaderProcess(settings)
        self.jobs = jobs.JobsProcess(settings)  # daily summaries and the outbox's deliveries
        self.metrics = Metrics(spool_depth=self.spool.depth, loader_lag=self.spool.oldest_age,
                               loader_count=self.loader.count, loader_up=self.loader.up)
        self.limit_metrics = LimitMetrics(self.metrics.registry)
        self.metrics.registry.register(DomainDayMetrics(settings, loaded=self.loader.loaded))
        # Several nodes may share a PostgreSQL store: each tells its name and whether the
        # store answers it (its spool and loader figures above are its own).
        self.probe = StoreProbe(settings) if shared(settings) else None
        if self.probe is not None:
            node_metrics(self.metrics.registry, settings, self.probe)
        self.stopping = asyncio.Event()
        self.sni = SniCertificates()  # the ACME certificates, by name, on the TLS listener

    async def run(self, on_ready: Callable[[Listening], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT, marked as running for 'restore' (which refuses then),
        on a database this version can use, alone on its spool."""
        with spool_lock(self.settings.spool), serving_mark(self.settings.db):
            try:
                refuse_newer(self.settings.db, lock_timeout=self.settings.lock_timeout)
            except StoreWriteError as exc:  # PostgreSQL away: the loader checks when it is back
                log.warning("%s; receiving into the spool until it answers", exc)
            await self._serve(on_ready)

    async def _serve(self, on_ready: Callable[[Listening], None] | None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        s = self.settings
        install_repeat_filter(s.log_repeat_interval)
        raise_open_files_limit(2 * s.max_connections + 256)
        _check_certificate(s)
        tls = tls_context(s.tls_cert, s.tls_key)
        if tls is not None:
            self.tls_contexts.append(tls)
        smtp_server = await self._start_smtp(tls) if s.smtp else None
        smtp_at = _bound(smtp_server.sockets[0]) if smtp_server is not None else None
        http_server = http_task = http_at = None
        if s.http:
            http_server, http_task, http_at = await self._start_http()
        acme_server, acme_task, acme_at = await self._start_challenges()
        refresher = asyncio.create_task(self.sni.keep_fresh(lambda: self.settings,
                                                            self.stopping))
        self.loader.start()
        self.jobs.start()
        supervisor = asyncio.create_task(self.loader.supervise(self.stopping))
        loop.add_signal_handler(signal.SIGHUP, self._hangup)
        if on_ready is not None:
            on_ready(Listening(smtp_at, http_at, acme_at))
        await self.stopping.wait()
        loop.remove_signal_handler(signal.SIGHUP)
        if self.reloading is not None:
            await self.reloading
        log.info("stopping: no new connections; finishing the batch being written")
        if smtp_server is not None:
            smtp_server.close()
        for server, task in ((http_server, http_task), (acme_server, acme_task)):
            if server is not None and task is not None:
                server.should_exit = True
                await task
        await refresher
        if smtp_server is not None:
            await smtp_server.wait_closed()
        await supervisor
        await asyncio.gather(asyncio.to_thread(self.loader.finish, 60.0),
                             asyncio.to_thread(self.jobs.finish, 40.0))

    async def _start_smtp(self, tls: ssl.SSLContext | None) -> asyncio.base_events.Server:
        s = self.settings
        host, port = parse_address(s.smtp, "smtp")
        handler = ReportHandler(self.spool, self.metrics, addresses=s.report_addresses,
                                max_recipients=s.max_recipients, lmtp=s.lmtp,
                                hostname=s.smtp_hostname, options=options_from(s))
        cap = ConnectionCap("lmtp" if s.lmtp else "smtp", total=s.max_connections,
                            per_client=s.max_connections_per_ip, metrics=self.limit_metrics)
        return await start_smtp(handler, host, port, lmtp=s.lmtp,
                                data_size_limit=s.max_input_bytes, tls=tls, cap=cap,
                                timeout=s.smtp_timeout, data_timeout=s.smtp_data_timeout,
                                command_size_limit=s.smtp_command_size_limit)

    async def _start_http(self) -> tuple[_Server, asyncio.Task[None], str]:
        s = self.settings
        host, port = parse_address(s.http, "http")
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        app = create_app(s, self.spool, self.metrics)
        app.state.health = HealthChecks(
            loader_problem=self.loader.problem, max_spool_age=s.health_max_spool_age,
            about=self.probe.about if self.probe is not None else None)
        cap = ConnectionCap("http", total=s.max_connections,
                            per_client=s.max_connections_per_ip, metrics=self.limit_metrics)
        protocol = http_protocol(cap, header_timeout=s.http_header_timeout,
                                 body_timeout=s.http_body_timeout)
        config = uvicorn.Config(
            BodyBudget(app, limit=s.http_body_budget, metrics=self.limit_metrics),
            http=protocol, lifespan="off", log_config=None, log_level="warning",
            access_log=False, ssl_certfile=s.tls_cert or None, ssl_keyfile=s.tls_key or None,
            # uvicorn types it int; a float works (it only goes to call_later).
            timeout_graceful_shutdown=5,
            timeout_keep_alive=s.http_idle_timeout,  # type: ignore[arg-type]
            # The cap refuses connection max+1; uvicorn's own check counts this one too.
            limit_concurrency=s.max_connections + 1 if s.max_connections else None,
            h11_max_incomplete_event_size=s.http_max_header_bytes,
            proxy_headers=False)  # the app decides whom to believe (trusted_proxies)
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.config.ssl is not None:  # uvicorn's context: SIGHUP loads into it too
            self.tls_contexts.append(server.config.ssl)
            server.config.ssl.sni_callback = self.sni.choose
        scheme = "https" if s.tls_cert else "http"
        return server, task, f"{scheme}://{_bound(sock)}"

    async def _start_challenges(self) -> tuple[_Server | None, asyncio.Task[None] | None,
                                               str | None]:
        """The plain HTTP listener of the ACME challenges (``acme_http``), if set."""
        if not self.settings.acme_http:
            return None, None, None
        host, port = parse_address(self.settings.acme_http, "acme_http")
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        s = self.settings  # the same bounds as the main listener: it faces the Internet too
        cap = ConnectionCap("acme", total=s.max_connections,
                            per_client=s.max_connections_per_ip)
        protocol = http_protocol(cap, header_timeout=s.http_header_timeout,
                                 body_timeout=s.http_body_timeout)
        server = _Server(uvicorn.Config(
            challenge_app(s), http=protocol, lifespan="off", log_config=None,
            log_level="warning", access_log=False, proxy_headers=False,
            timeout_keep_alive=s.http_idle_timeout,  # type: ignore[arg-type]
            h11_max_incomplete_event_size=s.http_max_header_bytes))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        return server, task, _bound(sock)

    def _hangup(self) -> None:
        """SIGHUP: reload in the background; one reload at a time (a second SIGHUP during
        a reload runs after it)."""
        previous = self.reloading

        async def after() -> None:
            if previous is not None:
                await previous
            try:
                await self.reload()
            except Exception:  # a reload never stops serve
                log.exception("reload failed; serve goes on as before")

        self.reloading = asyncio.create_task(after())

    async def reload(self) -> None:
        """Take the settings that may change while running, and the certificate."""
        plan = reload_settings(self.settings, self.reread, self.tls_contexts)
        if not plan.reloaded or self.stopping.is_set():
            return
        self.settings = plan.settings
        self.spool.failed_keep_days = plan.settings.failed_keep_days  # the receivers' spool
        self.spool.failed_max_bytes = plan.settings.failed_max_bytes
        log.info("reload: took %s; the loader and the worker restart after their current "
                 "batch", ", ".join(plan.reloaded))
        self.loader.replace(plan.settings)
        await asyncio.to_thread(self.jobs.finish, 40.0)
        if not self.stopping.is_set():
            self.jobs = jobs.JobsProcess(plan.settings)
            self.jobs.start()


def raise_open_files_limit(wanted: int) -> None:
    """Raise this process's soft limit of open files towards ``wanted`` (up to the hard
    limit, which the service manager sets: LimitNOFILE); warn when it stays below."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("open files are limited to %d, fewer than the %d the connection limits "
                    "need (max_connections); raise LimitNOFILE / ulimit -n", soft, wanted)


class LoaderProcess:
    """The loader's child process, restarted when it dies, and the counters it shares with
    /metrics.

    It is stopped by SIGTERM (finish the batch, then exit), never through a shared lock or
    event: a terminal's Ctrl-C or a service manager signals the whole process group, and a
    child killed while holding a multiprocessing primitive would hang the parent.  A loader
    that dies (killed, out of memory, a crash at start) is started again after a wait that
    starts at 1 s and doubles up to ``loader_restart_max``, so one that cannot start does
    not spin; /healthz reports it down meanwhile.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")
        # One writer (the child) and plain reads: no lock to be left held.
        self.counts = {name: self.context.Value("q", 0, lock=False)
                       for name in ("loaded", "duplicates", "quarantined", "rejected")}
        self.running = self.context.Value("b", 0, lock=False)  # set once its loop runs
        self.process: BaseProcess | None = None
        self.down: str | None = "the loader process has not started yet"
        self.last_exit = ""  # how the previous loader process ended, for /healthz
        self.replacing = False  # stopped on purpose, to start again with new settings
        self.started_at = 0.0

    def start(self) -> None:
        self.running.value = 0
        self.started_at = time.monotonic()
        process = self.context.Process(
            target=run_loader, name="tlswatch-loader",
            args=(self.settings, self.counts, self.running, os.getpid(),
                  logging.getLogger().getEffectiveLevel()), daemon=True)
        try:
            process.start()
        except OSError as exc:  # no process could be made (fork or memory limits)
            self.process, self.last_exit = None, f"could not be started: {exc}"
            return
        self.process, self.down = process, None
        log.info("loader process %d started", process.pid)

    def problem(self) -> str | None:
        """Why the loader is not loading now, or None."""
        if self.down is not None:
            return self.down
        if self.process is None or not self.process.is_alive():
            return "the loader process is not running"
        if not self.running.value and self.last_exit:  # the first start is not a fault
            return f"the loader process is starting again; the last one {self.last_exit}"
        return None

    async def supervise(self, stopping: asyncio.Event) -> None:
        """Watch the started loader until ``stopping``; when it dies, start another after
        a wait (1 s, doubling up to ``loader_restart_max``)."""
        delay = 1.0
        while True:
            if self.process is not None:
                await _first(stopping.wait(), _exited(self.process))
                if stopping.is_set():
                    return
                if self.replacing:  # SIGHUP: a new loader with the new settings, now
                    self.replacing = False
                    self.start()
                    continue
                self.last_exit = f"{_exit_reason(self.process.exitcode)} after " \
                                 f"{time.monotonic() - self.started_at:.0f} s"
                self.process = None
            if time.monotonic() - self.started_at > self.settings.loader_restart_max:
                delay = 1.0  # it ran well for a while: this is a new fault
            self.down = f"the loader process {self.last_exit}; restarting it in {delay:g} s"
            log.error("%s (the spool keeps every report)", self.down,
                      extra={"every_time": True})
            await _first(stopping.wait(), asyncio.sleep(delay))
            if stopping.is_set():
                return
            delay = min(delay * 2, max(1.0, self.settings.loader_restart_max))
            self.start()

    def replace(self, settings: Settings) -> None:
        """Run with ``settings`` from now on: the running loader stops after its batch
        and ``supervise`` starts the next one at once."""
        self.settings = settings
        if self.process is not None and self.process.is_alive():
            self.replacing = True
            self.process.terminate()

    def finish(self, timeout: float) -> None:
        """Ask the loader to stop after its batch (SIGTERM); wait for it."""
        if self.process is None:
            return
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

    def loaded(self) -> float:
        return self.count("loaded")

    def up(self) -> float:
        """1 while the loader runs (plain reads: /metrics asks from another thread)."""
        return 1.0 if self.down is None and self.running.value else 0.0


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Wait until one of ``waits`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _exited(process: BaseProcess) -> None:
    """Wait (without a thread) until the child process has ended; reap it."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(process.sentinel, readable)
    try:
        await ended
    finally:
        loop.remove_reader(process.sentinel)
    process.join()


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def run_loader(settings: Settings, counts: dict[str, Any], running: Any, parent: int,
               level: int) -> None:
    """The loader's loop (in its own process): drain the spool until SIGTERM."""
    handler = logging.StreamHandler()  # report values in log lines are shown escaped
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    install_repeat_filter(settings.log_repeat_interval)
    stopping = StopSignal()  # SIGTERM: stop after this round; SIGINT ignored
    with contextlib.suppress(OSError):
        os.nice(19)
    spool, options = Spool.from_settings(settings), options_from(settings)
    pruned_at = 0.0
    running.value = 1
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
            quarantined = result.rejected - len(result.retry) + result.conflicts
            for name, value in (("loaded", result.accepted), ("duplicates", result.duplicates),
                                ("quarantined", quarantined), ("rejected", result.rejected)):
                counts[name].value += value
            log.info("loaded %d, duplicates %d, rejected %d, conflicts %d", result.accepted,
                     result.duplicates, result.rejected, result.conflicts)
            time.sleep(0.05)  # let waiting readers take the database
        else:
            stopping.wait(settings.loader_interval)
        _store_fetches(settings)
        if time.monotonic() - pruned_at > 3600:
            pruned_at = time.monotonic()
            spool.prune(older_than_days=settings.spool_keep_days)


def _store_fetches(settings: Settings) -> None:
    """The policy fetches the HTTP process recorded (its batch files) into the store."""
    try:
        fetches.load_pending(settings.spool, settings.db, lock_timeout=settings.lock_timeout)
    except Exception as exc:  # they wait (up to policy_fetch_backlog); loading goes on
        log.warning("policy fetches wait: %s", exc)


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
