"""One 'serve' per spool: an exclusive lock on ``serve.lock`` in the spool folder, held
for the process's lifetime (the kernel lets go when it ends, however it ends).

Two processes loading one spool would load, move and prune each other's files; with a
DuckDB file the database's own lock stops the second one, with PostgreSQL nothing else does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from tlswatch.errors import SpoolError

LOCK_NAME = "serve.lock"


@contextlib.contextmanager
def spool_lock(spool: Path) -> Iterator[None]:
    """Hold the spool for this process; refuse (naming the other process) when another
    'serve' holds it."""
    path = Path(spool) / LOCK_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise SpoolError(f"{path}: cannot open the spool's lock: {exc.strerror or exc}") \
            from None
    with open(fd, "r+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = fh.read(200).strip() or "a process that did not say which"
            raise SpoolError(
                f"{spool}: another 'tlswatch serve' ({holder}) uses this spool. Each serve "
                "needs a spool folder of its own (the setting spool, or --spool): stop that "
                "one, or give this one another folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        yield
