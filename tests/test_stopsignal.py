"""A worker's stop request (SIGTERM) must end its loop whenever it arrives.

The workers once set a ``threading.Event`` from the signal handler: a SIGTERM landing while the
main thread was inside ``Event.wait`` deadlocked it, and ``serve`` then waited a minute for
its loader before killing it.  A loop that waits in very short steps is almost always inside
the wait, so it shows the fault within a few tries."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

LOOP = """
import sys
from tlswatch.stopsignal import StopSignal
stopping = StopSignal()
print("ready", flush=True)
while not stopping.is_set():
    stopping.wait(0)
print("stopped", flush=True)
"""


@pytest.mark.parametrize("attempt", range(8))
def test_sigterm_ends_a_busy_wait_loop(attempt: int) -> None:
    child = subprocess.Popen([sys.executable, "-c", LOOP], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        child.send_signal(signal.SIGINT)  # ignored: the parent decides
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=20)
        assert child.returncode == 0
        assert out == "stopped\n"
    finally:
        child.kill()
        child.wait()


def test_wait_returns_early_on_sigterm() -> None:
    code = LOOP.replace("stopping.wait(0)", "stopping.wait(3600)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=20)
        assert (child.returncode, out) == (0, "stopped\n")
    finally:
        child.kill()
        child.wait()
