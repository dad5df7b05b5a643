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
import time as clock
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from tlswatch.analytics.alerts import (
    MORE,
    Alert,
    AlertRules,
    evaluate,
    last_report_day,
    priority,
)
from tlswatch.analytics.freshness import DayFigures, day_figures
from tlswatch.analytics.render import SafeFormatter
from tlswatch.analytics.summary import Summary, paragraph
from tlswatch.cluster import once_per_cluster
from tlswatch.config import Settings
from tlswatch.errors import StoreLockedError
from tlswatch.notify import Message, messages
from tlswatch.outbox import Delivery, deliver_due
from tlswatch.revisions import STATE as STATE
from tlswatch.revisions import (
    Change,
    DayRecord,
    ExportState,
    by_domain,
    due_days,
    material_changes,
)
from tlswatch.stopsignal import StopSignal
from tlswatch.store import Store, exists, now_utc
from tlswatch.upkeep import daily_prune

# The daily files (jinja2, Parquet, pydantic) and Arrow tables are imported when first used:
# 'alerts --check' needs neither (a third of a second of each check).
if TYPE_CHECKING:
    import pyarrow as pa

    from tlswatch.exports import Daily
else:
    from tlswatch.deferred import deferred

    pa = deferred("pyarrow")

log = logging.getLogger(__name__)


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
    return _record_found(settings, found)


def _record_found(settings: Settings, found: Sequence[Alert]) -> Recorded:
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
    table = [{"policy_domain": a.policy_domain, "kind": a.kind, "day": a.day,
              "message": a.message, "details": json.dumps(a.details, default=str),
              "rank": priority(a)} for a in found]
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
        queued = _announce(settings, new)
        if queued:  # (an Arrow table of nothing still costs pyarrow and pandas a start)
            store.enqueue(_rows(batch, "alerts", queued), now=now)
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
    report: Daily | None = None
    # What the files were written from: the day's figures and the day before's (the files
    # show the change from it).
    figures: DayFigures = field(default_factory=DayFigures)
    previous: DayFigures = field(default_factory=DayFigures)

    def record(self, sent: dict[str, tuple[int, int]] | None = None, revisions: int = 0
               ) -> DayRecord:
        assert self.report is not None
        return DayRecord(self.figures, by_domain(self.report) if sent is None else sent,
                         revisions, self.previous)


def _write(settings: Settings, day: date, target: Path) -> DailyRun:
    """The day's files, and the figures they were written from (read in one connection,
    so no report loaded in between can be missing from one and counted in the other)."""
    from tlswatch.exports import daily, write_daily

    with Store.open(settings.db, read_only=True, lock_timeout=settings.lock_timeout) as store:
        report = daily(store, day)
        figures = day_figures(store, day - timedelta(days=1), day)
    written = write_daily(report, target, settings.export_formats)
    return DailyRun(written, [], report, figures.get(day, DayFigures()),
                    figures.get(day - timedelta(days=1), DayFigures()))


def _queue_summary(settings: Settings, report: Daily, *, only: list[str] | None = None,
                   changes: list[Change] | None = None) -> int | None:
    """Queue the day's summary (only the ``only`` domains; marked revised with
    ``changes``) in the outbox; return its batch, or None when there is nobody to tell."""
    from tlswatch.exports import Daily, html

    if not (settings.mail_smtp or settings.webhook_url):
        return None
    every = [d for d in report.domains if only is None or d.policy_domain in only]
    said = {c.policy_domain: c.describe() for c in changes or []}

    def part(domains: list[str]) -> str:  # the HTML for one recipient's domains
        mine = Summary(report.summary.since, report.summary.until,
                       [d for d in every if d.policy_domain in domains])
        return html(Daily(report.day, mine), revised=[said[d] for d in domains if d in said])

    texts = {d.policy_domain: paragraph(d) for d in every}
    for domain, line in said.items():
        texts[domain] = f"Revised: {line}" + (f"\n{texts[domain]}" if domain in texts else "")
    if not texts:
        return None
    subject = f"TLS report summary for {report.day}" + (" (revised)" if changes else "")
    payload: dict[str, object] = {"day": report.day.isoformat(), "domains": sorted(texts),
                                  "revised": bool(changes)}
    if changes:
        payload["changes"] = [c.as_dict() for c in changes]
    queued = messages(settings, subject=subject, by_domain=texts, html=part, payload=payload)
    with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store, \
            store.transaction():
        batch = store.next_outbox_batch()
        store.enqueue(_rows(batch, "daily", queued), now=now_utc())
    return batch


def run_daily(settings: Settings, day: date, out: Path | None = None) -> DailyRun:
    """Write the day's files, queue the summary's delivery, and check the day's alerts."""
    run = _write(settings, day, out or Path(settings.export_dir))
    assert run.report is not None
    if run.report.domains:
        batch = _queue_summary(settings, run.report)
        if batch is not None:
            run.batches.append(batch)
    alerts = check_alerts(settings, [day])
    if alerts.batch is not None and alerts.alerts:
        run.batches.append(alerts.batch)
    return run


def send_daily(settings: Settings, day: date, out: Path) -> tuple[list[Path], list[Delivery]]:
    """``run_daily``, then one delivery attempt of what it queued: the written files and the
    deliveries that failed (they stay in the outbox, retried by 'serve')."""
    run = run_daily(settings, day, out)
    done = deliver_due(settings, batches=run.batches) if run.batches else []
    return run.written, [d for d in done if d.status != "delivered"]


def check_and_send(settings: Settings, today: date) -> list[Delivery]:
    """Check the last 7 report days (up to ``today``), then one delivery attempt of the new
    alerts; return the deliveries that failed (they stay queued)."""
    # One open for reading, evaluating and recording (each open costs 30 ms on a big
    # store); 'serve' evaluates outside the write lock instead (check_alerts).
    with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
        last = min(last_report_day(store) or today, today)
        found = evaluate(store, [last - timedelta(days=i) for i in range(7)], rules(settings),
                         today=today)
        recorded = record(store, settings, found) if found else Recorded()
    if recorded.batch is None or not recorded.alerts:
        return []
    return [d for d in deliver_due(settings, batches=[recorded.batch])
            if d.status != "delivered"]


_told: set[str] = set()  # what keeps the schedule waiting, logged once until it passes


def _tell_once(level: int, message: str) -> None:
    if message not in _told:
        _told.add(message)
        log.log(level, "%s", message)


def run_schedule(settings: Settings, now: datetime) -> list[date]:
    """Write every due daily summary, and rewrite the recent days that changed since their
    files were written (``export_revise_days``); return the days written.  Called by the
    worker in 'serve' every 30 s or so."""
    from tlswatch.exports import ExportError

    if not settings.export_dir:
        return []
    if not exists(settings.db):
        _tell_once(logging.INFO, f"daily summary waits: no database at {settings.db} yet (it "
                                 "is made when the first report is loaded)")
        return []
    folder = Path(settings.export_dir)
    keep_since = now.date() - timedelta(days=max(0, settings.export_revise_days))
    done: list[date] = []
    try:
        state = ExportState.read(settings)
        for day in due_days(settings, now):
            run = run_daily(settings, day)
            log.info("wrote the daily files of %s into %s: %d report(s), %d failed "
                     "session(s)", day, folder, run.figures.reports,
                     run.figures.failed_sessions)
            state.days[day] = run.record()
            state.last_day = day
            state.write(settings, keep_since=keep_since)
            done.append(day)
        done += _revise(settings, state, folder, keep_since=keep_since)
    except StoreLockedError as exc:
        log.info("daily summary waits: %s", exc)
    except (ExportError, OSError) as exc:  # export_dir unusable: say so once, not every 30 s
        _tell_once(logging.ERROR, f"daily summary not written (tried again every 30 s): "
                                  f"{exc}")
        return done
    _told.clear()
    return done


def _revise(settings: Settings, state: ExportState, folder: Path, *, keep_since: date
            ) -> list[date]:
    """Rewrite the files of each day since ``keep_since`` whose figures, or the day
    before's, changed since they were written; send a revised summary when the day's own
    change is material."""
    from tlswatch.exports import file_name

    if settings.export_revise_days <= 0 or state.last_day is None \
            or state.last_day < keep_since:
        return []
    days = [keep_since + timedelta(days=i) for i in range((state.last_day - keep_since).days + 1)]
    # A day with files but no record (written by an older version, or by hand) is adopted.
    days = [d for d in days if d in state.days or any(
        (folder / file_name(d, fmt)).exists() for fmt in settings.export_formats)]
    if not days:
        return []
    with Store.open(settings.db, read_only=True, lock_timeout=settings.lock_timeout) as store:
        now = day_figures(store, days[0] - timedelta(days=1), days[-1])
    done = []
    for day in days:
        record = state.days.get(day)
        if record is not None and record.written_from == now.get(day, DayFigures()) and \
                record.previous_from == now.get(day - timedelta(days=1), DayFigures()):
            continue
        state.days[day] = revise_day(settings, day, record)
        state.write(settings, keep_since=keep_since)
        done.append(day)
    return done


def revise_day(settings: Settings, day: date, record: DayRecord | None) -> DayRecord:
    """Rewrite a day's files; queue a revised summary if the day changed materially since
    the summary last sent (at most ``summary_max_revisions``).  Return the new record."""
    run = _write(settings, day, Path(settings.export_dir))
    assert run.report is not None
    log.info("rewrote the daily files of %s: %d report(s), %d failed session(s) (written "
             "before from %s)", day, run.figures.reports, run.figures.failed_sessions,
             "an unknown state" if record is None else
             f"{record.written_from.reports} report(s), "
             f"{record.written_from.failed_sessions} failed session(s)")
    if record is None:
        return run.record()
    changes = material_changes(record.sent, by_domain(run.report),
                               percent=settings.summary_revise_percent,
                               sessions=settings.summary_revise_sessions)
    if not changes:
        return run.record(record.sent, record.revisions)
    if record.revisions >= settings.summary_max_revisions:
        log.info("%s changed again (%s); no revised summary sent: at most %d a day (setting "
                 "summary_max_revisions)", day, changes[0].describe(),
                 settings.summary_max_revisions)
        return run.record(record.sent, record.revisions)
    batch = _queue_summary(settings, run.report, only=[c.policy_domain for c in changes],
                           changes=changes)
    return run.record(None, record.revisions + int(batch is not None))


def scheduled(settings: Settings) -> list[tuple[str, Callable[[Settings, datetime], object]]]:
    """The tasks the worker runs every 30 s or so; each one decides itself what is due
    (keeping its own record of what it did), so a restart or a missed day is caught up."""
    from tlswatch.mtasts.acme import renew_certificates  # it records through this module
    from tlswatch.mtasts.dnsupdate import publish_due
    from tlswatch.mtasts.monitor import run_checks  # it records through this module
    from tlswatch.mtasts.mxwatch import run_mx_watch
    from tlswatch.tenants.usage import record_uses

    tasks: list[tuple[str, Callable[[Settings, datetime], object]]] = [
        ("daily summary", run_schedule),
        ("mta-sts checks", run_checks),
        ("mx watch", run_mx_watch),
        ("daily prune", daily_prune),
        ("mta-sts id dns updates", publish_due),
        ("acme certificates", renew_certificates),
        ("token uses", record_uses)]
    # Nodes sharing one PostgreSQL take turns: each task runs on one node at a time.
    return [(name, once_per_cluster(name, task)) for name, task in tasks]


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
    stopping = StopSignal()  # SIGTERM: stop after this round; SIGINT ignored
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
