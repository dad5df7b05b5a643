from __future__ import annotations

import gzip
import json
import os
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.pg import Cluster
from tests.pg import available as pg_available
from tlswatch.cli import app

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_reports"
VALID = SAMPLES / "valid"
INVALID = SAMPLES / "invalid"
EXPECTED = json.loads((SAMPLES / "invalid-expected.json").read_text())
REFERENCE = ROOT.parent / "shared" / "reference" / "reports"


def make_report(*, org: str = "Tester Inc.", rid: str = "r-1", day: str = "2026-11-25",
                policies: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A minimal valid report; tests change what they are about."""
    return {
        "organization-name": org,
        "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
        "contact-info": "tls@tester.example",
        "report-id": rid,
        "policies": policies if policies is not None else [policy("example.com", 10, 0)],
    }


def policy(domain: str, ok: int, failed: int, details: list[dict[str, Any]] | None = None,
           ptype: str = "sts") -> dict[str, Any]:
    entry: dict[str, Any] = {
        "policy": {"policy-type": ptype, "policy-domain": domain,
                   "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.example.com",
                                     "max_age: 86400"]},
        "summary": {"total-successful-session-count": ok, "total-failure-session-count": failed},
    }
    if details is not None:
        entry["failure-details"] = details
    return entry


def detail(rtype: str, n: int, mx: str = "mx.example.com", ip: str = "192.0.2.1",
           sip: str = "198.51.100.1") -> dict[str, Any]:
    return {"result-type": rtype, "sending-mta-ip": sip, "receiving-mx-hostname": mx,
            "receiving-ip": ip, "failed-session-count": n}


def write_json(path: Path, doc: Any, *, gz: bool = False) -> Path:
    data = json.dumps(doc).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


class Cli:
    """Runs the real Typer app in-process against one database file."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.runner = CliRunner()

    def __call__(self, *args: str, input: bytes | None = None, code: int | None = 0) -> Any:
        result = self.runner.invoke(app, ["--db", str(self.db), *args], input=input,
                                    catch_exceptions=False)
        if code is not None:
            assert result.exit_code == code, (result.stdout, result.stderr)
        return result

    def json(self, *args: str, code: int | None = 0, input: bytes | None = None) -> Any:
        return json.loads(self(*args, "--format", "json", code=code, input=input).stdout)


ENGINE = os.environ.get("TLSWATCH_TEST_ENGINE", "duckdb")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """The session's own PostgreSQL 15 (tests/pg.py), started on first use."""
    if not pg_available():
        pytest.fail("PostgreSQL 15 is not installed here: run 'make system-deps'")
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh empty PostgreSQL database, as a postgresql:// URL (unix socket)."""
    name = pg_cluster.create()
    yield pg_cluster.url(name)
    pg_cluster.drop(name)


@pytest.fixture
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """The test's database: a DuckDB file in tmp_path, or with TLSWATCH_TEST_ENGINE=
    postgresql a fresh PostgreSQL database's URL (tests that need a file are marked
    ``duckdb_only``)."""
    if ENGINE == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return tmp_path / "tlswatch.duckdb"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if ENGINE != "postgresql":
        return
    skip = pytest.mark.skip(reason="needs a DuckDB file (TLSWATCH_TEST_ENGINE=postgresql)")
    for item in items:
        if item.get_closest_marker("duckdb_only"):
            item.add_marker(skip)


@pytest.fixture
def cli(db: Path) -> Cli:
    return Cli(db)


GZIP_TYPE = {"Content-Type": "application/tlsrpt+gzip"}


def report_mail(rid: str, domain: str = "example.com") -> bytes:
    """A report mail as Google-like senders send it: a gzipped JSON attachment."""
    msg = EmailMessage()
    msg["From"] = "noreply@reporter.example"
    msg["Subject"] = f"Report Domain: {domain} Submitter: reporter.example Report-ID: <{rid}>"
    msg["TLS-Report-Domain"] = domain
    msg.set_content("report attached")
    doc = make_report(rid=rid, policies=[{
        "policy": {"policy-type": "sts", "policy-domain": domain},
        "summary": {"total-successful-session-count": 5, "total-failure-session-count": 0}}])
    msg.add_attachment(gzip.compress(json.dumps(doc).encode()), maintype="application",
                       subtype="tlsrpt+gzip", filename=f"{rid}.json.gz")
    return msg.as_bytes()


def gz_report(rid: str, domain: str = "example.com") -> bytes:
    """A gzipped report as an HTTPS POST body."""
    doc = make_report(rid=rid, policies=[{
        "policy": {"policy-type": "sts", "policy-domain": domain},
        "summary": {"total-successful-session-count": 7, "total-failure-session-count": 1},
        "failure-details": [{"result-type": "certificate-expired", "failed-session-count": 1}]}])
    return gzip.compress(json.dumps(doc).encode(), mtime=0)  # the same report, the same bytes


def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real file system of ``size`` (tmpfs) at ``mount``, so a full disk is a real
    ENOSPC; unmounted afterwards.  For fixtures: ``yield from tmpfs(...)``."""
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB file system."""
    yield from tmpfs(tmp_path / "disk", "256k")


def fill(folder: Path) -> None:
    """Fill the file system holding ``folder`` (the file ``filler`` takes the space)."""
    with open(folder / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
