"""The durable spool between receivers and the loader: ``tmp/ -> incoming/ -> done/ | failed/``.

A receiver acknowledges (SMTP 250, HTTP 201) only after ``put`` returned: the bytes are in
a file that was fsynced, renamed into ``incoming/`` and whose directory was fsynced, so a
crash or kill -9 after the acknowledgement loses nothing.  The loader moves each file to
``done/`` or, with a ``.reason`` file beside it, to ``failed/`` after the database commit;
a crash in between only makes the loader see the file again, and the store's
de-duplication counts it once.

A spool file is one line of JSON (how it arrived) and then the bytes as received.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlswatch.errors import SpoolError

log = logging.getLogger(__name__)
MAGIC = b"TLSWATCH-SPOOL 1 "
_counter = itertools.count()


@dataclass(frozen=True, slots=True)
class Entry:
    """One spooled input waiting in ``incoming/``."""

    id: str
    path: Path


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp, self.incoming = self.root / "tmp", self.root / "incoming"
        self.done, self.failed = self.root / "done", self.root / "failed"
        try:
            for folder in (self.tmp, self.incoming, self.done, self.failed):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"{self.root}: cannot create the spool: {exc}") from exc

    # -- receivers --------------------------------------------------------------------------
    def put(self, data: bytes, meta: dict[str, Any]) -> str:
        """Store durably and return the id; raise ``SpoolError`` when that is not possible."""
        return self._write(self.incoming, data, meta)

    def put_rejected(self, data: bytes, meta: dict[str, Any], reason: str) -> str:
        """Keep bytes a receiver refused (the sender was told) in ``failed/`` with the reason."""
        spool_id = self._write(self.failed, data, meta)
        try:
            (self.failed / f"{spool_id}.reason").write_text(reason + "\n", encoding="utf-8")
        except OSError as exc:
            raise SpoolError(f"cannot store the reason in {self.failed}: {exc}") from exc
        return spool_id

    def _write(self, folder: Path, data: bytes, meta: dict[str, Any]) -> str:
        spool_id = f"{time.time_ns():020d}-{os.getpid()}-{next(_counter)}-{secrets.token_hex(3)}"
        tmp = self.tmp / spool_id
        header = MAGIC + json.dumps(meta, separators=(",", ":"), default=str).encode() + b"\n"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                view = memoryview(header + data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, folder / spool_id)
            _fsync_dir(folder)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise SpoolError(f"cannot store the message in {self.root}: "
                             f"{exc.strerror or exc}") from exc
        return spool_id

    # -- the loader ---------------------------------------------------------------------------
    def pending(self, limit: int | None = None) -> list[Entry]:
        """The oldest entries that are due first (a deferred one is due at its time)."""
        due = f"{time.time_ns():020d}"
        names = [name for name in sorted(os.listdir(self.incoming)) if name[:20] <= due]
        if limit is not None:
            names = names[:limit]
        return [Entry(name, self.incoming / name) for name in names]

    def defer(self, entry: Entry, seconds: float) -> None:
        """Leave an entry waiting, due again in ``seconds`` (its name carries the time)."""
        later = f"{time.time_ns() + int(seconds * 1e9):020d}{entry.id[20:]}"
        os.replace(entry.path, self.incoming / later)

    def read(self, entry: Entry) -> tuple[dict[str, Any], bytes]:
        raw = entry.path.read_bytes()
        if not raw.startswith(MAGIC):
            return {}, raw  # dropped in by hand: take it as it is
        line, _, data = raw.partition(b"\n")
        try:
            meta = json.loads(line[len(MAGIC):])
        except ValueError:
            meta = {}
        return meta, data

    def mark_done(self, entry: Entry) -> None:
        os.replace(entry.path, self.done / entry.id)

    def mark_failed(self, entry: Entry, reason: str) -> None:
        (self.failed / f"{entry.id}.reason").write_text(reason + "\n", encoding="utf-8")
        os.replace(entry.path, self.failed / entry.id)

    def sync(self) -> None:
        """Make the moves of ``mark_*`` durable."""
        for folder in (self.incoming, self.done, self.failed):
            _fsync_dir(folder)

    def depth(self) -> int:
        return sum(1 for _ in os.scandir(self.incoming))

    def oldest_age(self) -> float:
        """Seconds the oldest waiting entry has waited (0 when none waits)."""
        first = next(iter(sorted(os.listdir(self.incoming))), None)
        if first is None:
            return 0.0
        return max(0.0, time.time() - int(first.split("-", 1)[0]) / 1e9)

    def prune(self, *, older_than_days: float) -> int:
        """Delete ``done/`` files older than the given age (the store keeps every report)."""
        cutoff = time.time() - older_than_days * 86400
        removed = 0
        for item in _scan(self.done):
            if item.stat().st_mtime < cutoff:
                os.unlink(item.path)
                removed += 1
        return removed


def _scan(folder: Path) -> Iterator[os.DirEntry[str]]:
    with os.scandir(folder) as it:
        yield from it


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
