"""The durable spool between receivers and the loader: ``tmp/ -> incoming/ -> done/ | failed/``.

A receiver acknowledges (SMTP 250, HTTP 201) only after ``put`` returned: the bytes are in
a file that was fsynced, renamed into ``incoming/`` and whose directory was fsynced, so a
crash or kill -9 after the acknowledgement loses nothing.  The loader moves each file to
``done/`` or, with a ``.reason`` file beside it, to ``failed/`` after the database commit;
a crash in between only makes the loader see the file again, and the store's
de-duplication counts it once.

A spool file is one line of JSON (how it arrived, and how many bytes follow) and then the
bytes as received.  Its name starts with the receipt time in nanoseconds; an entry the
loader deferred is renamed ``<due time>~<id>``, so the receipt time is never lost.
Whatever else lands in ``incoming/`` (a directory, a truncated or unreadable file) is
moved to ``failed/`` with the reason instead of holding up the entries after it.

Every folder has a lifecycle: ``done/`` is pruned after ``spool_keep_days``; ``failed/``
after ``failed_keep_days`` and, past ``failed_max_bytes``, oldest first.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlswatch.durable import fsync_path
from tlswatch.errors import SpoolError

log = logging.getLogger(__name__)
MAGIC = b"TLSWATCH-SPOOL 1 "
_HEAD = 64 * 1024  # a spool file's header line is far shorter
_DEFERRED = re.compile(r"(\d{20})~(.+)")
_STAMPED = re.compile(r"\d{20}(-|$)")
_counter = itertools.count()
GiB = 1024 ** 3


@dataclass(frozen=True, slots=True)
class Entry:
    """One spooled input waiting in ``incoming/`` (``id`` stays the same when deferred)."""

    id: str
    path: Path


class Spool:
    def __init__(self, root: Path, *, failed_keep_days: float = 30.0,
                 failed_max_bytes: int = GiB) -> None:
        self.root = Path(root)
        self.tmp, self.incoming = self.root / "tmp", self.root / "incoming"
        self.done, self.failed = self.root / "done", self.root / "failed"
        self.failed_keep_days = failed_keep_days
        self.failed_max_bytes = failed_max_bytes
        self._failed_bytes: int | None = None  # estimate; recounted when it nears the quota
        self._failed_lock = threading.Lock()
        try:
            for folder in (self.tmp, self.incoming, self.done, self.failed):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"{self.root}: cannot create the spool: {exc}") from exc

    @classmethod
    def from_settings(cls, settings: Any) -> Spool:
        """The spool the settings name, with their lifecycle for ``failed/``."""
        return cls(settings.spool, failed_keep_days=settings.failed_keep_days,
                   failed_max_bytes=settings.failed_max_bytes)

    # -- receivers --------------------------------------------------------------------------
    def put(self, data: bytes, meta: dict[str, Any]) -> str:
        """Store durably and return the id; raise ``SpoolError`` when that is not possible."""
        return self._write(self.incoming, data, meta)

    def put_rejected(self, data: bytes, meta: dict[str, Any], reason: str) -> str | None:
        """Keep bytes a receiver refused (the sender was told) in ``failed/`` with the reason.

        Within ``failed_max_bytes``: the oldest refused inputs are deleted to make room; a
        body larger than the whole quota is not kept (None).
        """
        # The disk it takes: two files (input with header, reason), each whole blocks.
        needed = _on_disk(len(data) + 1024) + _on_disk(len(reason.encode()) + 1)
        if needed > self.failed_max_bytes:
            log.warning("refused input of %s bytes not kept: over failed_max_bytes (%s)",
                        f"{len(data):,}", f"{self.failed_max_bytes:,}")
            return None
        with self._failed_lock:
            if self._failed_bytes is None or \
                    self._failed_bytes + needed > self.failed_max_bytes:
                self._failed_bytes = self._prune_failed(room=needed)
            self._failed_bytes += needed
        spool_id = self._write(self.failed, data, meta)
        try:
            (self.failed / f"{spool_id}.reason").write_text(reason + "\n", encoding="utf-8")
        except OSError as exc:
            raise SpoolError(f"cannot store the reason in {self.failed}: {exc}") from exc
        return spool_id

    def _write(self, folder: Path, data: bytes, meta: dict[str, Any]) -> str:
        spool_id = f"{time.time_ns():020d}-{os.getpid()}-{next(_counter)}-{secrets.token_hex(3)}"
        tmp = self.tmp / spool_id
        header = MAGIC + json.dumps({**meta, "size": len(data)}, separators=(",", ":"),
                                    default=str).encode() + b"\n"
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
            fsync_path(folder)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise SpoolError(f"cannot store the message in {self.root}: "
                             f"{exc.strerror or exc}") from exc
        return spool_id

    # -- the loader ---------------------------------------------------------------------------
    def pending(self, limit: int | None = None) -> list[Entry]:
        """The oldest entries that are due (a deferred one is due at its time).

        Names not made by ``put`` (dropped in by hand) are due at once; names starting with
        a dot are left alone (still being copied in).  An entry that cannot be loaded (a
        directory, a truncated or unreadable file) is moved to ``failed/`` with the reason.
        """
        due = f"{time.time_ns():020d}"
        entries: list[Entry] = []
        filed = False
        for name in sorted(os.listdir(self.incoming)):
            if limit is not None and len(entries) >= limit:
                break
            deferred = _DEFERRED.fullmatch(name)
            timed = bool(_STAMPED.match(name) or deferred)
            if name.startswith(".") or (timed and name[:20] > due):
                continue
            entry = Entry(deferred.group(2) if deferred else name, self.incoming / name)
            problem = _problem(entry.path)
            if problem is None:
                entries.append(entry)
            else:
                filed = self.file_bad(entry, problem) or filed
        if filed:
            fsync_path(self.incoming)
            fsync_path(self.failed)
        return entries

    def file_bad(self, entry: Entry, problem: str) -> bool:
        """Move an entry that cannot be loaded to ``failed/`` with ``problem`` as the reason.

        For the loader too: when ``read`` raises ``OSError``, ``file_bad(entry, str(exc))``
        keeps the entries after it moving.  False when even the move failed (logged).
        """
        reason = f"spool entry incoming/{entry.path.name}: {problem}"
        log.warning("%s; moved to %s", reason, self.failed)
        try:
            self.mark_failed(entry, reason)
        except OSError as exc:
            log.error("cannot move %s to %s: %s", entry.path, self.failed, exc)
            return False
        return True

    def defer(self, entry: Entry, seconds: float) -> None:
        """Leave an entry waiting, due again in ``seconds`` (its name carries the time)."""
        later = f"{time.time_ns() + int(seconds * 1e9):020d}~{entry.id}"
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
        return (meta if isinstance(meta, dict) else {}), data

    def mark_done(self, entry: Entry) -> None:
        os.replace(entry.path, self.done / entry.id)

    def mark_failed(self, entry: Entry, reason: str) -> None:
        (self.failed / f"{entry.id}.reason").write_text(reason + "\n", encoding="utf-8")
        os.replace(entry.path, self.failed / entry.id)

    def sync(self) -> None:
        """Make the moves of ``mark_*`` durable."""
        for folder in (self.incoming, self.done, self.failed):
            fsync_path(folder)

    def depth(self) -> int:
        return sum(1 for _ in os.scandir(self.incoming))

    def oldest_age(self) -> float:
        """Seconds since the oldest waiting entry was received (0 when none waits).

        Counted from receipt, not from a deferral: the receipt time is in the name (or,
        for a file dropped in by hand, its modification time).
        """
        oldest: float | None = None
        for item in _scan(self.incoming):
            received = _received_at(item)
            if received is not None and (oldest is None or received < oldest):
                oldest = received
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    def prune(self, *, older_than_days: float) -> int:
        """Delete ``done/`` files older than the given age (the store keeps every report),
        then apply ``failed/``'s lifecycle.  Returns how many inputs were deleted."""
        cutoff = time.time() - older_than_days * 86400
        removed = 0
        for item in _scan(self.done):
            if item.stat().st_mtime < cutoff:
                os.unlink(item.path)
                removed += 1
        before = len(_failed_groups(self.failed))
        with self._failed_lock:
            self._failed_bytes = self._prune_failed(room=0)
        return removed + before - len(_failed_groups(self.failed))

    def _prune_failed(self, *, room: int) -> int:
        """Delete refused inputs past ``failed_keep_days``, then the oldest until ``room``
        more bytes fit in ``failed_max_bytes``; return the bytes left."""
        cutoff = time.time() - self.failed_keep_days * 86400
        groups = sorted(_failed_groups(self.failed).values(), key=lambda g: g.mtime)
        total = sum(g.size for g in groups)
        for group in groups:
            if group.mtime >= cutoff and total + room <= self.failed_max_bytes:
                break
            for path in group.paths:
                with contextlib.suppress(FileNotFoundError):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
            total -= group.size
        return total


@dataclass
class _Group:
    """One refused input in ``failed/``: its file and its ``.reason``."""

    paths: list[Path]
    size: int = 0
    mtime: float = float("inf")


def _on_disk(size: int, block: int = 4096) -> int:
    """Bytes a file of ``size`` bytes takes on disk: whole blocks (a tiny refused input
    still takes one; counting its length let a flood of them fill the disk)."""
    return max(1, -(-size // block)) * block


def _failed_groups(folder: Path) -> dict[str, _Group]:
    groups: dict[str, _Group] = {}
    for item in _scan(folder):
        try:
            info = item.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        key = item.name.removesuffix(".reason")
        group = groups.setdefault(key, _Group([]))
        group.paths.append(Path(item.path))
        group.size += max(info.st_blocks * 512, info.st_size) if stat.S_ISREG(info.st_mode) \
            else 0
        group.mtime = min(group.mtime, info.st_mtime)
    return groups


def _problem(path: Path) -> str | None:
    """Why a file in ``incoming/`` cannot be loaded, or None."""
    try:
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode):
            return "a directory, not a spool file"
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        with open(path, "rb") as fh:  # a header line is short: read more only when not
            head = fh.read(4096)
            if b"\n" not in head and len(head) == 4096:
                head += fh.read(_HEAD - 4096)
    except OSError as exc:
        return f"unreadable spool file ({exc.strerror or exc})"
    if not head:
        return "empty file"
    if len(head) < len(MAGIC) and MAGIC.startswith(head):
        return "truncated spool file: it ends inside its header"
    if not head.startswith(MAGIC):
        return None  # dropped in by hand: decoded as it is
    line, newline, _ = head.partition(b"\n")
    if not newline:
        return "truncated spool file: its header line has no end"
    try:
        meta = json.loads(line[len(MAGIC):])
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        return "damaged spool file: its header is not a JSON object"
    size, have = meta.get("size"), info.st_size - len(line) - 1
    if isinstance(size, int) and have < size:
        return f"truncated spool file: {have:,} of {size:,} bytes"
    return None


def _received_at(item: os.DirEntry[str]) -> float | None:
    """Receipt time (epoch seconds) of an entry in ``incoming/``."""
    if item.name.startswith("."):
        return None
    deferred = _DEFERRED.fullmatch(item.name)
    ident = deferred.group(2) if deferred else item.name
    if _STAMPED.match(ident):
        return int(ident[:20]) / 1e9
    try:
        return item.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return None


def _scan(folder: Path) -> Iterator[os.DirEntry[str]]:
    with os.scandir(folder) as it:
        yield from it

