from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tlswatch.errors import SpoolError
from tlswatch.ingest.spool import Spool


def test_put_then_file_done_or_failed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    first = spool.put(b"report one", {"via": "http", "peer": "127.0.0.1"})
    second = spool.put(b"report two", {"via": "smtp"})
    entries = spool.pending()
    assert [e.id for e in entries] == [first, second]  # oldest first
    assert spool.read(entries[0]) == ({"via": "http", "peer": "127.0.0.1"}, b"report one")
    assert not os.listdir(tmp_path / "spool" / "tmp")
    spool.mark_done(entries[0])
    spool.mark_failed(entries[1], "not a report")
    spool.sync()
    assert spool.depth() == 0
    assert (tmp_path / "spool" / "done" / first).exists()
    assert (tmp_path / "spool" / "failed" / f"{second}.reason").read_text() == "not a report\n"


def test_deferred_entry_waits_its_turn(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(b"x", {})
    (entry,) = spool.pending()
    spool.defer(entry, 3600)
    assert spool.pending() == [] and spool.depth() == 1
    (later,) = os.listdir(tmp_path / "incoming")
    assert int(later[:20]) > time.time_ns() + 3500 * 10**9


def test_prune_removes_only_old_done_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for data in (b"old", b"new"):
        spool.put(data, {})
    old, new = spool.pending()
    spool.mark_done(old)
    spool.mark_done(new)
    os.utime(tmp_path / "done" / old.id, (time.time() - 40 * 86400,) * 2)
    assert spool.prune(older_than_days=30) == 1
    assert os.listdir(tmp_path / "done") == [new.id]


@pytest.fixture
def tiny_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real 256 KiB file system (tmpfs), so a full disk is a real ENOSPC."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass


def test_full_disk_is_a_clear_error_and_leaves_nothing_half_written(tiny_disk: Path) -> None:
    spool = Spool(tiny_disk / "spool")
    fill(tiny_disk)
    with pytest.raises(SpoolError, match=r"cannot store the message in .*No space left"):
        spool.put(b"r" * 100_000, {"via": "smtp"})
    assert spool.pending() == []
    assert os.listdir(tiny_disk / "spool" / "tmp") == []
    (tiny_disk / "filler").unlink()
    spool.put(b"r" * 100_000, {"via": "smtp"})
    assert len(spool.pending()) == 1
