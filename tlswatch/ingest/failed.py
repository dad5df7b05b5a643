"""Reading ``spool/failed``: the inputs a receiver or the loader refused, each a spool file
(a JSON header line, then the bytes as received) with a ``<id>.reason`` file beside it.

Anything dropped into the spool by hand also ends up here (a link, a pipe): such files are
listed, never read through or opened blocking.
"""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tlswatch.ingest.spool import MAGIC

_HEAD = 64 * 1024  # a spool file's header line is far shorter


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The header of a spool file and the size of the input after it."""
    try:
        total = path.lstat().st_size
        head = read_regular(path, _HEAD)
    except OSError:
        return {}, 0
    if not head.startswith(MAGIC):
        return {}, total  # dropped in by hand
    line, newline, _ = head.partition(b"\n")
    try:
        meta = json.loads(line[len(MAGIC):]) if newline else {}
    except ValueError:
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    return meta, total - len(line) - len(newline)


def read_regular(path: Path, limit: int | None = None) -> bytes:
    """A regular file's bytes, never through a link or from a pipe or device (anything
    dropped in the spool by hand ends up in ``failed/``)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"not a regular file ({path.name})")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit if limit is not None else -1)
    finally:
        os.close(fd)


def read_input(path: Path) -> bytes:
    """The input as received (after the header line, if there is one)."""
    raw = read_regular(path)
    if not raw.startswith(MAGIC):
        return raw
    return raw.partition(b"\n")[2]


def received_at(path: Path, meta: dict[str, Any]) -> datetime:
    """When the input arrived (naive UTC): its header, else the time in its name."""
    text = meta.get("received_at")
    if isinstance(text, str):
        try:
            when = datetime.fromisoformat(text)
            return (when.astimezone(UTC) if when.tzinfo else when).replace(tzinfo=None)
        except ValueError:
            pass
    stamp = path.name[:20]
    if stamp.isdigit() and len(stamp) == 20:
        return datetime.fromtimestamp(int(stamp) / 1e9, UTC).replace(tzinfo=None)
    try:
        return datetime.fromtimestamp(path.stat(follow_symlinks=False).st_mtime,
                                      UTC).replace(tzinfo=None)
    except OSError:
        return datetime.now(UTC).replace(tzinfo=None)


def reason_path(path: Path) -> Path:
    return path.with_name(path.name + ".reason")


def remove(path: Path) -> None:
    for item in (path, reason_path(path)):
        item.unlink(missing_ok=True)
