from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import fill, make_report
from tlswatch.errors import SpoolError
from tlswatch.ingest.draining import drain
from tlswatch.ingest.spool import MAGIC, Spool
from tlswatch.metrics import Metrics
from tlswatch.store import Store

HOUR_NS = 3600 * 10**9


def test_put_then_file_done_or_failed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    first = spool.put(b"report one", {"via": "http", "peer": "127.0.0.1"})
    second = spool.put(b"report two", {"via": "smtp"})
    entries = spool.pending()
    assert [e.id for e in entries] == [first, second]  # oldest first
    assert spool.read(entries[0]) == ({"via": "http", "peer": "127.0.0.1", "size": 10},
                                      b"report one")
    assert not os.listdir(tmp_path / "spool" / "tmp")
    spool.mark_done(entries[0])
    spool.mark_failed(entries[1], "not a report")
    spool.sync()
    assert spool.depth() == 0
    assert (tmp_path / "spool" / "done" / first).exists()
    assert (tmp_path / "spool" / "failed" / f"{second}.reason").read_text() == "not a report\n"


def test_deferred_entry_waits_its_turn_and_keeps_its_id(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool_id = spool.put(b"x", {})
    (entry,) = spool.pending()
    spool.defer(entry, 3600)
    assert spool.pending() == [] and spool.depth() == 1
    (later,) = os.listdir(tmp_path / "incoming")
    assert int(later[:20]) > time.time_ns() + 3500 * 10**9
    spool.defer(entry.__class__(spool_id, tmp_path / "incoming" / later), -7200)
    (again,) = spool.pending()
    assert again.id == spool_id  # done/ and failed/ keep the name it was received under


def _received_an_hour_ago(spool: Spool) -> None:
    spool_id = spool.put(b"waiting", {"via": "smtp"})
    old = f"{time.time_ns() - HOUR_NS:020d}{spool_id[20:]}"
    os.rename(spool.incoming / spool_id, spool.incoming / old)


def test_loader_lag_counts_from_receipt_not_from_a_deferral(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    _received_an_hour_ago(spool)
    (entry,) = spool.pending()
    spool.defer(entry, 300)  # e.g. a DKIM key that could not be looked up
    (tmp_path / "incoming" / "dropped-by-hand.json").write_bytes(b"{}")
    metrics = Metrics(loader_lag=spool.oldest_age)
    lag = next(line for line in metrics.render().decode().splitlines()
               if line.startswith("tlswatch_loader_lag_seconds "))
    assert 3590 < float(lag.split()[1]) < 3700


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


def _age(spool: Spool, spool_id: str, days: float) -> None:
    for path in (spool.failed / spool_id, spool.failed / f"{spool_id}.reason"):
        os.utime(path, (time.time() - days * 86400,) * 2)


def test_refused_inputs_are_pruned_after_failed_keep_days(tmp_path: Path) -> None:
    spool = Spool(tmp_path, failed_keep_days=7)
    old = spool.put_rejected(b"old refusal", {"via": "smtp"}, "no TLS-RPT report in message")
    new = spool.put_rejected(b"new refusal", {"via": "smtp"}, "no TLS-RPT report in message")
    assert old and new
    _age(spool, old, 8)
    assert spool.prune(older_than_days=30) == 1
    assert sorted(os.listdir(tmp_path / "failed")) == [new, f"{new}.reason"]


def test_refused_inputs_stay_within_the_quota_oldest_deleted_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path, failed_max_bytes=10_000)
    kept = []
    for i in range(5):  # each a day younger than the one before
        spool_id = spool.put_rejected(bytes([65 + i]) * 3000, {"via": "http"}, f"refusal {i}")
        assert spool_id is not None
        _age(spool, spool_id, 5 - i)
        kept.append(spool_id)
    names = set(os.listdir(tmp_path / "failed"))
    assert sum(os.path.getsize(tmp_path / "failed" / n) for n in names) <= 10_000
    assert f"{kept[-1]}.reason" in names and kept[-1] in names  # the newest is never pruned
    assert kept[0] not in names  # the oldest went first
    waiting = spool.put(b"a report waiting to load", {})
    assert spool.put_rejected(b"X" * 20_000, {}, "too big to keep") is None
    assert waiting in os.listdir(tmp_path / "incoming")  # incoming is never pruned


def _drop_bad_entries(spool: Spool) -> None:
    stamp = f"{time.time_ns() - HOUR_NS:020d}"
    (spool.incoming / f"{stamp}-a-directory").mkdir()
    header = MAGIC + json.dumps({"via": "http", "size": 5000}).encode() + b"\n"
    (spool.incoming / f"{stamp}-b-short").write_bytes(header + b"\x1f\x8b" + b"z" * 100)
    (spool.incoming / f"{stamp}-c-header-cut").write_bytes(header[:30])
    (spool.incoming / f"{stamp}-d-empty").write_bytes(b"")


def test_bad_entries_in_incoming_go_to_failed_and_do_not_block_the_rest(
        tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    _drop_bad_entries(spool)
    report = gzip.compress(json.dumps(make_report(rid="after-the-bad-ones")).encode())
    spool.put(report, {"via": "http"})
    result = drain(spool, tmp_path / "db.duckdb")
    assert result is not None and result.accepted == 1
    assert spool.depth() == 0
    reasons = {p.name.split("-", 1)[1].removesuffix(".reason"): p.read_text()
               for p in spool.failed.glob("*.reason")}
    assert "a directory, not a spool file" in reasons["a-directory"]
    assert "truncated spool file: 102 of 5,000 bytes" in reasons["b-short"]
    assert "truncated spool file: its header line has no end" in reasons["c-header-cut"]
    assert "empty file" in reasons["d-empty"]
    assert all(r.startswith("spool entry incoming/") for r in reasons.values())
    assert (spool.failed / next(n for n in os.listdir(spool.failed)
                                if n.endswith("-a-directory"))).is_dir()
    with Store.open(tmp_path / "db.duckdb", read_only=True) as store:
        assert store.rows("SELECT report_id FROM reports") == [
            {"report_id": "after-the-bad-ones"}]


def test_a_file_dropped_in_by_hand_is_loaded(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    (spool.incoming / "report.json.gz").write_bytes(
        gzip.compress(json.dumps(make_report(rid="by-hand")).encode()))
    (spool.incoming / ".still-copying").write_bytes(b"{")
    result = drain(spool, tmp_path / "db.duckdb")
    assert result is not None and result.accepted == 1
    assert os.listdir(spool.incoming) == [".still-copying"]


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


def test_tiny_refused_inputs_count_the_disk_they_take(tmp_path: Path) -> None:
    # A sender's flood of tiny refused messages: each keeps two files of a few dozen bytes,
    # but each file takes a whole block on disk.  The quota must bound the disk used, not
    # the bytes written (a 1 GiB quota let ~8x that fill the disk).
    spool = Spool(tmp_path, failed_max_bytes=200_000)
    for _ in range(300):
        assert spool.put_rejected(b"not a report", {"via": "smtp"}, "no report") is not None
    used = sum(os.lstat(p).st_blocks * 512 for p in (tmp_path / "failed").iterdir())
    assert used <= 200_000
