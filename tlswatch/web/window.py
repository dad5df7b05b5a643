"""The dashboard's date range: ``?since=`` and ``?until=`` (inclusive UTC report days, any
length up to ``web_max_days``), or ``?days=N`` ending at ``until``; by default the 30 days
ending today."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from urllib.parse import urlencode

DEFAULT_DAYS = 30


class WindowError(ValueError):
    """A date range that cannot be shown; the message names the parameter and the value."""


@dataclass(frozen=True)
class Window:
    since: date
    until: date
    chosen: bool  # the URL named the range (links to other pages keep it)
    note: str = ""

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1

    @property
    def query(self) -> str:
        """``?since=...&until=...`` when the URL chose the range, else empty."""
        return "?" + urlencode({"since": self.since, "until": self.until}) if self.chosen \
            else ""

    def ending(self, day: date, note: str) -> Window:
        """The same length, ending at ``day``."""
        return Window(day - timedelta(days=self.days - 1), day, False, note)


def _shown(value: str) -> str:
    return repr(value[:40] + ("..." if len(value) > 40 else ""))


def _day(params: Mapping[str, str], name: str) -> date | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    problem = WindowError(f"{name}: {_shown(value)} is not a date; use YYYY-MM-DD, "
                          "e.g. 2026-11-01")
    if len(value) != 10:  # fromisoformat would also take 20261101
        raise problem
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise problem from None


def day_param(params: Mapping[str, str], name: str) -> date | None:
    """One ``YYYY-MM-DD`` query parameter (``WindowError`` naming it when it is not one)."""
    return _day(params, name)


def parse_window(params: Mapping[str, str], *, today: date, max_days: int) -> Window:
    """The range the URL asks for (``WindowError`` when it is not a valid one)."""
    since, until = _day(params, "since"), _day(params, "until")
    days_text = params.get("days", "").strip()
    days = DEFAULT_DAYS
    if days_text:
        if not days_text.isdigit() or not 1 <= int(days_text[:9]) <= max_days:
            raise WindowError(f"days: {_shown(days_text)} is not a whole number of days from "
                              f"1 to {max_days:,} (setting web_max_days)")
        days = int(days_text)
    end = until or today
    try:
        start = since or end - timedelta(days=days - 1)
    except OverflowError:
        raise WindowError(f"days: {days:,} days before {end} is before year 1") from None
    if start > end:
        raise WindowError(f"since: {start} is after until: {end}; swap them")
    if (end - start).days + 1 > max_days:
        raise WindowError(f"since {start} .. until {end} spans {(end - start).days + 1:,} "
                          f"days, more than the {max_days:,} the dashboard shows at once "
                          "(setting web_max_days)")
    return Window(start, end, bool(since or until or days_text))
