"""`tlswatch ingest -` as a mail system's pipe runs it: 75 (EX_TEMPFAIL: defer and retry)
when the failure is transient, 1 when the input is refused, and nothing lost either way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.resolver
import duckdb
import pytest

from tests.conftest import Cli, report_mail, tmpfs
from tests.ingest.test_dkim import signed
from tests.serving import CLI

EX_TEMPFAIL = 75


def ingest(db: Path, mail: bytes, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, "--db", str(db), "ingest", "--format", "json", "-"],
                          input=mail, capture_output=True, timeout=120,
                          env={**_environ(), **{f"TLSWATCH_{k.upper()}": v
                                                for k, v in env.items()}})


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TLSWATCH_")}


def quarantined(db: Path) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0])
    finally:
        con.close()


def report_ids(cli: Cli) -> list[str]:
    return [r["report_id"] for r in cli.json("reports")]


def test_locked_database_defers_and_the_retry_loads(tmp_path: Path, cli: Cli) -> None:
    db = cli.db
    assert ingest(db, report_mail("first")).returncode == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
         "print('locked', flush=True); sys.stdin.read()", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        done = ingest(db, report_mail("while-locked"), lock_timeout="0.5")
        assert done.returncode == EX_TEMPFAIL, done.stderr
        assert b"locked by another process" in done.stderr
        assert b"try again later" in done.stderr
    finally:
        holder.communicate("", timeout=30)
    retry = ingest(db, report_mail("while-locked"))
    assert retry.returncode == 0, retry.stderr
    assert json.loads(retry.stdout)["accepted"] == 1
    assert sorted(report_ids(cli)) == ["first", "while-locked"]


def test_refused_report_exits_1(tmp_path: Path, cli: Cli) -> None:
    done = ingest(cli.db, report_mail("not-ours", domain="example.net"),
                  domains="example.com")
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["rejected"] == 1
    assert report_ids(cli) == []
    assert quarantined(cli.db) == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB file system (a database needs more than tiny_disk's 256 KiB)."""
    yield from tmpfs(tmp_path / "disk", "16m")


def test_full_disk_defers_and_the_retry_loads(small_disk: Path) -> None:
    db = small_disk / "tlswatch.duckdb"
    assert ingest(db, report_mail("before")).returncode == 0
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    done = ingest(db, report_mail("disk-full"))
    assert done.returncode == EX_TEMPFAIL, done.stderr
    assert b"No space left on device" in done.stderr
    filler.unlink()
    retry = ingest(db, report_mail("disk-full"))
    assert retry.returncode == 0, retry.stderr
    assert sorted(report_ids(Cli(db))) == ["before", "disk-full"]


def test_dkim_lookup_without_answer_defers(tmp_path: Path, cli: Cli,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # The network's edge: a resolver whose server does not answer (nothing listens there).
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.9"]
    monkeypatch.setattr(dns.resolver, "default_resolver", resolver)
    monkeypatch.setenv("TLSWATCH_DKIM", "require")
    monkeypatch.setenv("TLSWATCH_DNS_TIMEOUT", "1")
    done = cli("ingest", "--format", "json", "-", input=signed("dkim-later"), code=EX_TEMPFAIL)
    assert json.loads(done.stdout)["retry_later"][0]["reason"]
    assert report_ids(cli) == []
    assert quarantined(cli.db) == 0  # not refused: Postfix keeps it and delivers it again
