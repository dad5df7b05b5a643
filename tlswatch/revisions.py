"""Which days' files are due, what the daily files were written from, and when a day has
changed enough to send its summary again, marked revised.

Reports for a day keep arriving after its files are written (Postfix sites spread their
reports over hours and retry for days).  The export folder keeps a small record,
``.tlswatch-export-state.json`` (in the database when several nodes share a PostgreSQL
one): the last day written, and for each recent day the figures
its files were written from (``DayFigures``), the per-domain figures last sent, and how
many revised summaries went out.  A day whose figures in the store differ from its record
gets its files rewritten; a revised summary follows only when the change is material
(``material_changes``), at most ``summary_max_revisions`` times a day.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlswatch.analytics.freshness import DayFigures
from tlswatch.analytics.render import safe_text
from tlswatch.cluster import read_days, shared, write_days
from tlswatch.config import Settings
from tlswatch.errors import ConfigError

if TYPE_CHECKING:  # the daily files' module (jinja2, Parquet) only for a type
    from tlswatch.exports import Daily

log = logging.getLogger(__name__)
STATE = ".tlswatch-export-state.json"
TASK = "daily summary"  # its record's name in the database (cluster_days)

Figures = tuple[int, int]  # a domain's (total sessions, failed sessions)


@dataclass
class DayRecord:
    """One day's files: what they were written from (the day's figures and the day
    before's: the files show the change from it), what was last sent about the day."""

    written_from: DayFigures
    sent: dict[str, Figures]
    revisions: int = 0
    previous_from: DayFigures = field(default_factory=DayFigures)

    def as_dict(self) -> dict[str, Any]:
        return {"written_from": self.written_from.as_dict(),
                "previous_from": self.previous_from.as_dict(),
                "sent": {d: list(f) for d, f in sorted(self.sent.items())},
                "revisions": self.revisions}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DayRecord:
        return cls(DayFigures.from_dict(data["written_from"]),
                   {str(d): (int(f[0]), int(f[1])) for d, f in data["sent"].items()},
                   int(data.get("revisions", 0)),
                   DayFigures.from_dict(data.get("previous_from") or {}))


@dataclass
class ExportState:
    """The record kept in the export folder (a missing or unreadable one starts afresh)."""

    last_day: date | None = None
    days: dict[date, DayRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> ExportState:
        path = folder / STATE
        try:
            data = json.loads(path.read_text())
            last = date.fromisoformat(data["last_day"])
        except (FileNotFoundError, NotADirectoryError):  # nothing written there yet
            return cls()
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("%s: unreadable (%s); starting a new record", path, exc)
            return cls()
        days = {}
        for key, value in (data.get("days") or {}).items():  # absent in older records
            try:
                days[date.fromisoformat(key)] = DayRecord.from_dict(value)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                log.warning("%s: record of %r unreadable (%s); that day is rewritten once",
                            path, key, exc)
        return cls(last, days)

    def save(self, folder: Path, *, keep_since: date) -> None:
        """Write the record whole (temporary file, fsync, rename), dropping days before
        ``keep_since`` (they are no longer rewritten)."""
        self.days = {d: r for d, r in self.days.items() if d >= keep_since}
        data = {"last_day": self.last_day.isoformat() if self.last_day else None,
                "days": {d.isoformat(): r.as_dict() for d, r in sorted(self.days.items())}}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{STATE}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(folder / STATE)

    @classmethod
    def read(cls, settings: Settings) -> ExportState:
        """The record where the settings keep it: in the database when nodes share a
        PostgreSQL one (every node must see what any of them wrote), else in the export
        folder.  The database starts from the folder's record if it has none yet."""
        if shared(settings):
            days = read_days(settings, TASK)
            if days is not None:
                return cls(max(days), {d: DayRecord.from_dict(r) for d, r in days.items()
                                       if r is not None})
        return cls.load(Path(settings.export_dir))

    def write(self, settings: Settings, *, keep_since: date) -> None:
        """``save`` where ``read`` finds it."""
        if not shared(settings):
            self.save(Path(settings.export_dir), keep_since=keep_since)
            return
        self.days = {d: r for d, r in self.days.items() if d >= keep_since}
        days: dict[date, Any] = {d: r.as_dict() for d, r in self.days.items()}
        if self.last_day is not None:
            days.setdefault(self.last_day, None)
        write_days(settings, TASK, days, forget_before=keep_since)


def due_days(settings: Settings, now: datetime) -> list[date]:
    """Days whose summary is due and not written yet (catching up on missed days)."""
    latest = now.date() - timedelta(days=1 if now.time() >= _export_time(settings) else 2)
    last = ExportState.read(settings).last_day
    if last is None:
        return [latest]
    return [last + timedelta(days=i) for i in range(1, (latest - last).days + 1)]


def _export_time(settings: Settings) -> time:
    try:
        hour, minute = (int(p) for p in settings.export_time.split(":"))
        return time(hour, minute)
    except ValueError as exc:
        raise ConfigError(f"setting export_time: expected HH:MM, got "
                          f"{settings.export_time!r}") from exc


def by_domain(report: Daily) -> dict[str, Figures]:
    return {d.policy_domain: (d.total_sessions, d.failed_sessions) for d in report.domains}


@dataclass(frozen=True)
class Change:
    """How one domain's figures for the day moved since the summary last sent."""

    policy_domain: str
    before: Figures | None  # None: the domain was not in the summary sent
    after: Figures | None  # None: the domain is no longer in the day's reports

    def describe(self) -> str:
        name = safe_text(self.policy_domain)
        if self.before is None and self.after is not None:
            return (f"{name}: new for this day: {self.after[0]:,} sessions, "
                    f"{self.after[1]:,} failed.")
        if self.after is None and self.before is not None:
            return (f"{name}: no longer in this day's reports (it had {self.before[0]:,} "
                    f"sessions, {self.before[1]:,} failed).")
        assert self.before is not None and self.after is not None
        return (f"{name}: {self.before[0]:,} sessions, {self.before[1]:,} failed before; "
                f"now {self.after[0]:,} sessions, {self.after[1]:,} failed.")

    def as_dict(self) -> dict[str, Any]:
        before, after = self.before or (0, 0), self.after or (0, 0)
        return {"policy_domain": self.policy_domain, "sessions_before": before[0],
                "sessions_after": after[0], "failed_before": before[1],
                "failed_after": after[1]}


def _moved(before: int, after: int, *, percent: float, sessions: int) -> bool:
    delta = abs(after - before)
    return delta >= max(sessions, 1) and delta * 100 >= percent * before


def material_changes(sent: dict[str, Figures], now: dict[str, Figures], *, percent: float,
                     sessions: int) -> list[Change]:
    """The domains whose change matters: new for the day, gone from it, or whose total or
    failed sessions moved by at least ``percent`` % of the figure sent and at least
    ``sessions`` sessions."""
    changes = []
    for domain in sorted(set(sent) | set(now)):
        before, after = sent.get(domain), now.get(domain)
        if before is None or after is None or any(
                _moved(b, a, percent=percent, sessions=sessions)
                for b, a in zip(before, after, strict=True)):
            changes.append(Change(domain, before, after))
    return changes
