"""Turn the PATHs given to ``tlswatch ingest`` into (source name, bytes) inputs.

Files, directories (recursively, in name order), Maildir folders, mbox files and ``-`` for
standard input.  Sizes are checked before reading, so a huge file is refused unread.
"""

from __future__ import annotations

import mailbox
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tlswatch.errors import ReportError


@dataclass(frozen=True, slots=True)
class Input:
    source: str
    data: bytes
    filename: str | None = None
    via: str = "file"  # file | stdin | smtp | lmtp | http | imap | spool
    domain: str | None = None  # the domain the receiving URL named (a checked DNS name)


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file not read yet: whoever decodes it reads it (a worker process, in parallel)."""

    path: str


Item = Input | FileRef | ReportError


def _is_maildir(path: Path) -> bool:
    return all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


def iter_inputs(paths: list[str], *, max_bytes: int) -> Iterator[Item]:
    """Yield every input named by ``paths``; files as ``FileRef`` (see ``read_file``)."""
    for name in paths:
        if name == "-":
            data = sys.stdin.buffer.read(max_bytes + 1)
            yield Input(source="<stdin>", data=data, via="stdin")
            continue
        path = Path(name)
        if path.is_dir():
            yield from _iter_dir(path, max_bytes=max_bytes)
        elif path.exists():
            yield FileRef(str(path))
        else:
            yield ReportError(label(name), "no such file or directory")


def count_files(paths: list[str]) -> int:
    """How many files the paths name (for a progress bar); mbox messages count once."""
    total = 0
    for name in paths:
        path = Path(name)
        if path.is_dir():
            total += sum(len(files) for _, _, files in os.walk(path))
        else:
            total += 1
    return total


def _iter_dir(path: Path, *, max_bytes: int) -> Iterator[Item]:
    if _is_maildir(path):
        yield from _iter_maildir(path, max_bytes=max_bytes)
        return
    for root, dirs, files in os.walk(path):
        dirs.sort()
        here = Path(root)
        if here != path and _is_maildir(here):
            dirs.clear()
            yield from _iter_maildir(here, max_bytes=max_bytes)
            continue
        # str(here / file), joined as text: a Path per file cost more than reading it.
        prefix = "" if str(here) == "." else os.path.join(str(here), "")
        for file in sorted(files):
            if not file.startswith("."):
                yield FileRef(prefix + file)


def expand(item: Item, *, max_bytes: int) -> Iterator[Input | ReportError]:
    """The inputs an item stands for: a file is read (and an mbox split) here."""
    if isinstance(item, FileRef):
        yield from read_file(item, max_bytes=max_bytes)
    else:
        yield item


def read_file(ref: FileRef, *, max_bytes: int) -> Iterator[Input | ReportError]:
    """Read one file: refused unread when over the size limit; an mbox gives its messages."""
    source = label(ref.path)
    try:
        data, size = _read_bounded(ref.path, max_bytes)
    except OSError as exc:
        yield ReportError(source, f"cannot read: {exc.strerror or exc}")
        return
    if data is None:
        yield ReportError(source, f"input is {size:,} bytes, over the limit of {max_bytes:,}")
        return
    if data.startswith(b"From "):  # an mbox file: one input per message
        yield from _iter_mbox(Path(ref.path), max_bytes=max_bytes)
        return
    yield Input(source=source, data=data, filename=os.path.basename(source))


def label(path: str) -> str:
    """A path as text that names it: bytes of a file name that are no UTF-8 (which Python
    carries as lone surrogates, and no database or output can hold) shown as \\xNN."""
    if path.isascii():  # nothing to show otherwise (most paths)
        return path
    try:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # another lone surrogate: not from a file name's bytes
        return path.encode("utf-8", "backslashreplace").decode("utf-8")


def _read_bounded(path: str, max_bytes: int) -> tuple[bytes | None, int]:
    """The file's bytes and size; no bytes when it holds more than ``max_bytes`` (refused
    unread when its size says so).  Plain system calls: this runs once per report, and a
    file object cost more than the read itself."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            return None, size
        data = os.read(fd, size + 1)
        while len(data) <= max_bytes and (more := os.read(fd, max_bytes + 1 - len(data))):
            data += more  # the file grew since, or the file system reads in pieces
    finally:
        os.close(fd)
    return (data, len(data)) if len(data) <= max_bytes else (None, len(data))


def _iter_mbox(path: Path, *, max_bytes: int) -> Iterator[Input | ReportError]:
    box = mailbox.mbox(path, create=False)
    try:
        for index, key in enumerate(box.iterkeys(), start=1):
            data = box.get_bytes(key)
            yield Input(source=f"{label(str(path))} (message {index})", data=data)
    finally:
        box.close()


def _iter_maildir(path: Path, *, max_bytes: int) -> Iterator[Input | ReportError]:
    box = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(box.iterkeys()):
        source = f"{label(str(path))} (message {label(key)})"
        try:
            data = box.get_bytes(key)
        except OSError as exc:
            yield ReportError(source, f"cannot read: {exc}")
            continue
        yield Input(source=source, data=data)
