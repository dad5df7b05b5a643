"""The jobs ``serve`` runs beside loading, also callable from the CLI or cron:
alerts after each load and daily, and the daily summary files with their delivery.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from tlswatch.analytics.alerts import Alert, AlertRules, evaluate
from tlswatch.analytics.summary import Summary, paragraph
from tlswatch.config import Settings
from tlswatch.errors import ConfigError
from tlswatch.exports import Daily, daily, export_daily, html
from tlswatch.notify import deliver
from tlswatch.store import Store

log = logging.getLogger(__name__)
STATE = ".tlswatch-export-state.json"


def rules(settings: Settings) -> AlertRules:
    return AlertRules(success_threshold=settings.alert_success_threshold,
                      spike_factor=settings.alert_spike_factor,
                      silent_days=settings.alert_silent_days)


def check_alerts(settings: Settings, days: list[date], *, today: date | None = None
                 ) -> list[Alert]:
    """Evaluate, record the new alerts (once per domain, kind, day), deliver them."""
    if not days:
        return []
    with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
        new = store.record_alerts(evaluate(store, days, rules(settings),
                                           today=today or datetime.now(UTC).date()))
    if not new or not (settings.mail_smtp or settings.webhook_url):
        return new
    by_domain: dict[str, list[str]] = {}
    for alert in new:
        by_domain.setdefault(alert.policy_domain, []).append(alert.message)
    errors = deliver(settings, subject=f"tlswatch: {len(new)} new alert(s)",
                     by_domain={d: "\n".join(m) for d, m in by_domain.items()},
                     payload={"alerts": [{"policy_domain": a.policy_domain, "kind": a.kind,
                                          "day": a.day.isoformat(), "message": a.message}
                                         for a in new]})
    with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
        store.mark_delivered([a.key for a in new], "; ".join(errors) or None)
    return new


def run_daily(settings: Settings, day: date, out: Path | None = None) -> list[Path]:
    """Write the day's files, send the summary, and check the day's alerts."""
    target = out or Path(settings.export_dir)
    with Store.open(settings.db, read_only=True, lock_timeout=settings.lock_timeout) as store:
        written = export_daily(store, day, target, settings.export_formats)
        report = daily(store, day)
    if report.domains and (settings.mail_smtp or settings.webhook_url):
        texts = {d.policy_domain: paragraph(d) for d in report.domains}

        every = list(report.domains)

        def part(domains: list[str]) -> str:  # the HTML for one recipient's domains
            only = Summary(report.summary.since, report.summary.until,
                           [d for d in every if d.policy_domain in domains])
            return html(Daily(day, only))

        errors = deliver(settings, subject=f"TLS report summary for {day}", by_domain=texts,
                         html=part, payload={"day": day.isoformat(),
                                             "domains": sorted(texts)})
        if errors:
            log.error("daily summary for %s not delivered: %s", day, "; ".join(errors))
    check_alerts(settings, [day])
    return written


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
    """Write every due daily summary; called by 'serve' every minute or so."""
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
