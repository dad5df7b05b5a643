"""Logging helpers for the long-running ``serve``: a repeated warning is written once per
interval, with a count of the copies held back, so a flood of refusals cannot fill a disk."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RepeatFilter(logging.Filter):
    """Pass a warning or error once per ``interval`` seconds per (logger, level, message
    template); the next one passed after the interval says how many were held back.

    The template (``record.msg``) is the key, not the formatted text: ``"refused %s"`` for
    a thousand different peers is one repeated message.  A record logged with
    ``extra={"every_time": True}`` always passes (events already spaced out, such as a
    restart after a back-off).
    """

    def __init__(self, interval: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self.seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or self.interval <= 0 or \
                getattr(record, "every_time", False):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        last, held = self.seen.get(key, (float("-inf"), 0))
        if now - last < self.interval:
            self.seen[key] = (last, held + 1)
            return False
        self.seen[key] = (now, 0)
        if held:
            # Formatted once here so every handler shows the same count.
            record.msg = f"{record.getMessage()} ({held} more like this in the last " \
                         f"{now - last:.0f} s not logged)"
            record.args = None
        if len(self.seen) > 10_000:  # templates are few; forget the stale ones anyway
            self.seen = {k: v for k, v in self.seen.items() if now - v[0] < self.interval}
        return True


def install_repeat_filter(interval: float) -> None:
    """Put one ``RepeatFilter`` on every handler of the root logger (set up by the CLI)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter(interval))
