"""The jobs ``serve`` runs beside loading, also callable from the CLI or cron: alerts after
each load and daily, the daily summary files, and the worker that delivers the outbox.

Recording is one short write transaction: the new alerts in one statement (at most
``max_alerts_per_day`` a day, the rest counted by one more alert) and the messages that
announce them in the outbox.  Sending happens later, outside any lock, in the delivery
worker (``serve``) or right after ``export daily --send``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import threading
import time as clock
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pyarrow as pa

from tlswatch.analytics.alerts import (
    MORE,
    Alert,
    AlertRules,
    evaluate,
    last_report_day,
    priority,
)
from tlswatch.analytics.render import SafeFormatter
from tlswatch.analytics.summary import Summary, paragraph
from tlswatch.config import Settings
from tlswatch.errors import ConfigError, StoreLockedError
from tlswatch.exports import Daily, daily, export_daily, html
from tlswatch.notify import Message, messages
from tlswatch.outbox import Delivery, deliver_due
from tlswatch.store import Store, now_utc
from tlswatch.upkeep import daily_prune

log = logging.getLogger(__name__)
STATE = ".tlswatch-export-state.json"


@dataclass
class Recorded:
    """The alerts one check recorded, and the outbox batch that announces them."""

    batch: int | None = None
    alerts: list[Alert] = field(default_factory=list)


def rules(settings: Settings) -> AlertRules:
    return AlertRules(success_threshold=settings.alert_success_threshold,
                      spike_factor=settings.alert_spike_factor,
                      silent_days=settings.alert_silent_days)


def check_alerts(settings: Settings, days: list[date], *, today: date | None = None
                 ) -> Recorded:
    """Evaluate (reading only), then record the new alerts and queue their delivery."""
    if not days:
        return Recorded()
    with Store.open(settings.db, read_only=True, lock_timeout=settings.lock_timeout) as store:
        found = evaluate(store, days, rules(settings), today=today or datetime.now(UTC).date())
    if not found:
        return Recorded()
    with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
        return record(store, settings, found)


def record(store: Store, settings: Settings, found: Sequence[Alert],
           also: Callable[[], object] | None = None) -> Recorded:
    """One write transaction: the alerts not recorded before (one statement, capped per
    day) and the outbox messages announcing them (and ``also``: what the alerts came
    from, such as a check run, written in the same transaction)."""
    cap = settings.max_alerts_per_day
    table = pa.table({
        "policy_domain": pa.array([a.policy_domain for a in found], pa.string()),
        "kind": pa.array([a.kind for a in found], pa.string()),
        "day": pa.array([a.day for a in found], pa.date32()),
        "message": pa.array([a.message for a in found], pa.string()),
        "details": pa.array([json.dumps(a.details, default=str) for a in found], pa.string()),
        "rank": pa.array([priority(a) for a in found], pa.int64()),
    })
    now = now_utc()
    with store.transaction():
        if also is not None:
            also()
        batch = store.next_outbox_batch()
        rows = store.record_alerts(
            table, cap=cap, batch=batch, more_kind=MORE, now=now,
            more_message=f"{{more}} more alert(s) for {{day}} were not recorded or sent (at "
                         f"most {cap} a day: setting max_alerts_per_day); see "
                         "tlswatch failures --since {day} --until {day}.")
        new = sorted((Alert(r["policy_domain"], r["kind"], r["day"], r["message"],
                            json.loads(r["details"] or "{}")) for r in rows),
                     key=lambda a: (a.day, priority(a), a.policy_domain))
        store.enqueue(_rows(batch, "alerts", _announce(settings, new)), now=now)
    return Recorded(batch, new)


def _announce(settings: Settings, new: list[Alert]) -> list[Message]:
    if not new:
        return []
    by_domain: dict[str, list[str]] = {}
    for alert in new:
        by_domain.setdefault(alert.policy_domain, []).append(alert.message)
    return messages(settings, subject=f"tlswatch: {len(new)} new alert(s)",
                    by_domain={d: "\n".join(m) for d, m in by_domain.items()},
                    payload={"alerts": [{"policy_domain": a.policy_domain, "kind": a.kind,
                                         "day": a.day.isoformat(), "message": a.message}
                                        for a in new]})


def _rows(batch: int, kind: str, queued: list[Message]) -> pa.Table:
    return pa.table({
        "batch": pa.array([batch] * len(queued), pa.int64()),
        "kind": pa.array([kind] * len(queued), pa.string()),
        "channel": pa.array([m.channel for m in queued], pa.string()),
        "recipient": pa.array([m.recipient for m in queued], pa.string()),
        "subject": pa.array([m.subject for m in queued], pa.string()),
        "body": pa.array([json.dumps(m.body) for m in queued], pa.string()),
    })


@dataclass
class DailyRun:
    written: list[Path]
    batches: list[int]  # the outbox batches queued: the summary's and the new alerts'


def run_daily(settings: Settings, day: date, out: Path | None = None) -> DailyRun:
    """Write the day's files, queue the summary's delivery, and check the day's alerts."""
    target = out or Path(settings.export_dir)
    with Store.open(settings.db, read_only=True, lock_timeout=settings.lock_timeout) as store:
        written = export_daily(store, day, target, settings.export_formats)
        report = daily(store, day)
    batches = []
    if report.domains and (settings.mail_smtp or settings.webhook_url):
        every = list(report.domains)

        def part(domains: list[str]) -> str:  # the HTML for one recipient's domains
            only = Summary(report.summary.since, report.summary.until,
                           [d for d in every if d.policy_domain in domains])
            return html(Daily(day, only))

        texts = {d.policy_domain: paragraph(d) for d in every}
        queued = messages(settings, subject=f"TLS report summary for {day}", by_domain=texts,
                          html=part, payload={"day": day.isoformat(), "domains": sorted(texts)})
        with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store, \
                store.transaction():
            batch = store.next_outbox_batch()
            store.enqueue(_rows(batch, "daily", queued), now=now_utc())
        batches.append(batch)
    alerts = check_alerts(settings, [day])
    if alerts.batch is not None and alerts.alerts:
        batches.append(alerts.batch)
    return DailyRun(written, batches)


def send_daily(settings: Settings, day: date, out: Path) -> tuple[list[Path], list[Delivery]]:
    """``run_daily``, then one delivery attempt of what it queued: the written files and the
    deliveries that failed (they stay in the outbox, retried by 'serve')."""
    run = run_daily(settings, day, out)
    done = deliver_due(settings, batches=run.batches) if run.batches else []
    return run.written, [d for d in done if d.status != "delivered"]


def check_and_send(settings: Settings, today: date) -> list[Delivery]:
    """Check the last 7 report days (up to ``today``), then one delivery attempt of the new
    alerts; return the deliveries that failed (they stay queued)."""
    with Store.open(settings.db, read_only=True, lock_timeout=settings.lock_timeout) as store:
        last = min(last_report_day(store) or today, today)
    recorded = check_alerts(settings, [last - timedelta(days=i) for i in range(7)],
                            today=today)
    if recorded.batch is None or not recorded.alerts:
        return []
    return [d for d in deliver_due(settings, batches=[recorded.batch])
            if d.status != "delivered"]


def due_days(settings: Settings, now: datetime) -> list[date]:
    """Days whose summary is due and not written yet (catching up on missed days)."""
    try:
        hour, minute = (int(p) for p in settings.export_time.split(":"))
        at = time(hour, minute)
    except ValueError as exc:
        raise ConfigError(f"setting export_time: expected HH:MM, got "
                          f"{settings.export_time!r}") from exc
    latest = now.date() - timedelta(days=1 if now.time() >= at else 2)
    last = _last_done(Path(settings.export_dir))
    if last is None:
        return [latest]
    return [last + timedelta(days=i) for i in range(1, (latest - last).days + 1)]


def run_schedule(settings: Settings, now: datetime) -> list[date]:
    """Write every due daily summary; called by the worker in 'serve' every 30 s or so."""
    if not settings.export_dir:
        return []
    done = []
    for day in due_days(settings, now):
        run_daily(settings, day)
        _save_done(Path(settings.export_dir), day)
        done.append(day)
    return done


def _last_done(folder: Path) -> date | None:
    try:
        return date.fromisoformat(json.loads((folder / STATE).read_text())["last_day"])
    except (FileNotFoundError, KeyError, ValueError):
        return None


def _save_done(folder: Path, day: date) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{STATE}.tmp"
    tmp.write_text(json.dumps({"last_day": day.isoformat()}))
    tmp.replace(folder / STATE)


def scheduled(settings: Settings) -> list[tuple[str, Callable[[Settings, datetime], object]]]:
    """The tasks the worker runs every 30 s or so; each one decides itself what is due
    (keeping its own record of what it did), so a restart or a missed day is caught up."""
    from tlswatch.mtasts.monitor import run_checks  # it records through this module

    return [("daily summary", run_schedule),
            ("mta-sts checks", run_checks),
            ("daily prune", daily_prune)]


class JobsProcess:
    """The worker process of 'serve' for the daily schedule and the outbox.

    A process, not a thread: DuckDB refuses a writable connection in a process that holds
    a read-only one (the dashboard's), and the receivers keep their GIL.  Stopped by
    SIGTERM after the message it is sending.
    """

    def __init__(self, settings: Settings) -> None:
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(
            target=run_jobs, name="tlswatch-jobs",
            args=(settings, os.getpid(), logging.getLogger().getEffectiveLevel()), daemon=True)

    def start(self) -> None:
        self.process.start()

    def finish(self, timeout: float) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout)
        if self.process.is_alive():
            log.warning("delivery worker did not stop in %ss; killing it (the outbox keeps "
                        "every message)", timeout)
            self.process.kill()
            self.process.join(5)


def run_jobs(settings: Settings, parent: int, level: int) -> None:
    """The worker's loop: the daily schedule every 30 s, due deliveries every
    ``delivery_interval`` seconds, until SIGTERM or the parent is gone."""
    handler = logging.StreamHandler()  # report values in log lines are shown escaped
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    stopping = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent decides
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with contextlib.suppress(OSError):
        os.nice(10)
    scheduled_at = -60.0
    while not stopping.is_set() and os.getppid() == parent:
        if clock.monotonic() - scheduled_at > 30:
            scheduled_at = clock.monotonic()
            for name, task in scheduled(settings):
                try:
                    task(settings, datetime.now(UTC))
                except Exception:
                    log.exception("%s failed; it will be tried again", name)
        if settings.mail_smtp or settings.webhook_url:
            try:
                deliver_due(settings)
            except StoreLockedError as exc:
                log.info("delivery waits: %s", exc)
            except Exception:  # the outbox keeps every message; try again next round
                log.exception("delivery round failed")
        stopping.wait(settings.delivery_interval)
