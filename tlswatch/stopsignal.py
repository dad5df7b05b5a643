"""SIGTERM as a stop request for a worker process's main loop.

A ``threading.Event`` set from a signal handler can deadlock: the handler runs in the main
thread, possibly while that thread is inside ``Event.wait`` holding the event's own lock, and
``Event.set`` then waits for that lock forever.  Here the handler only sets a flag, and the
wait is a ``select`` on the signal module's wake-up pipe, which the interpreter writes to when
a signal arrives, so a stop request ends a wait at once and nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from types import FrameType


class StopSignal:
    """Installed in the main thread of a child process: SIGINT is ignored (a terminal's
    Ctrl-C reaches the whole group; the parent decides) and SIGTERM asks the loop to stop."""

    def __init__(self) -> None:
        self._stop = False
        self._read, write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._stop = True

    def is_set(self) -> bool:
        return self._stop

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, less when SIGTERM arrives; True once asked to stop."""
        if not self._stop:
            readable, _, _ = select.select([self._read], [], [], max(0.0, timeout))
            if readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._read, 512)
        return self._stop
