"""A repeated warning is written once per interval, then with a count of the ones held back."""

from __future__ import annotations

import logging

from tlswatch.logutil import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("tlswatch.test", level, __file__, 1, msg, args, None)


def test_a_repeated_warning_is_logged_once_per_interval_with_a_count() -> None:
    clock = Clock()
    flood = RepeatFilter(60, clock=clock)
    passed = [r for i in range(1000) if flood.filter(r := record("refused %s", f"10.0.0.{i}"))]
    assert [r.getMessage() for r in passed] == ["refused 10.0.0.0"]
    clock.now += 61
    later = record("refused %s", "10.0.0.7")
    assert flood.filter(later)
    assert later.getMessage() == "refused 10.0.0.7 (999 more like this in the last 61 s " \
                                 "not logged)"


def test_other_messages_info_and_every_time_records_pass() -> None:
    flood = RepeatFilter(60, clock=Clock())
    assert flood.filter(record("refused %s", "a"))
    assert flood.filter(record("loader waits: %s", "locked"))  # another template
    assert flood.filter(record("refused %s", "a", level=logging.ERROR))  # another level
    assert all(flood.filter(record("spooled %s", str(i), level=logging.INFO))
               for i in range(10))
    restart = record("loader died; restarting")
    restart.every_time = True
    assert flood.filter(restart) and flood.filter(restart)
    assert not flood.filter(record("refused %s", "b"))
