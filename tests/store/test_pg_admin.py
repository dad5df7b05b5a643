"""PostgreSQL as the store, seen by an admin: every command works on it as on a DuckDB
file, and no message shows the password or the database's places to whom it does not
concern."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import Cli, make_report, write_json
from tlswatch.cli import app
from tlswatch.dburl import DatabaseUrl

SAMPLES = Path(__file__).resolve().parents[2] / "sample_reports"


def test_quarantine_lists_shows_and_deletes_on_postgresql(pg_url: str) -> None:
    cli = Cli(pg_url)
    cli("ingest", str(SAMPLES / "invalid" / "not-json.json"), code=None)
    entries = cli.json("quarantine")
    assert len(entries) == 1 and "not-json.json" in entries[0]["source"]
    shown = cli("quarantine", "show", entries[0]["id"])
    assert "not-json.json" in shown.stdout
    cli("quarantine", "delete", entries[0]["id"])
    assert cli.json("quarantine") == []


SPECIAL = "p@ss:w/rd#?&%=x"  # a password that was not percent-encoded


@pytest.mark.parametrize(("url", "shown"), [
    (f"postgresql://u:{SPECIAL}@/db?host=/tmp/none", "postgresql://u:***@/db?host=/tmp/none"),
    ("postgresql:///db?host=/tmp/none", "postgresql:///db?host=/tmp/none"),
    ("postgresql://u@h/db?password=a&b#c&sslmode=require",
     "postgresql://u@h/db?password=***&sslmode=require"),
])
def test_the_shown_url_hides_the_whole_password(url: str, shown: str) -> None:
    assert str(DatabaseUrl(url)) == shown


@pytest.mark.parametrize(("url", "words"), [
    ("postgresql://u:ab%zzSECRET@/db?host=/tmp/none", "invalid percent-encoded token"),
    ("postgresql://u:SECRET@[::1/db", "IPv6"),
    ("postgresql://u:SECRET@/db?host=/tmp/none&sslmode=bogus", 'invalid sslmode value: "bogus"'),
])
def test_a_malformed_url_is_a_lasting_error_without_the_password(tmp_path: Path, url: str,
                                                                 words: str) -> None:
    write_json(tmp_path / "r.json", make_report())
    out = Cli(url)("ingest", str(tmp_path / "r.json"), code=1)  # not 75: retrying won't help
    assert words in out.stderr and "cannot connect to PostgreSQL with this URL" in out.stderr
    assert "SECRET" not in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_a_keyword_connection_string_is_refused_unechoed(tmp_path: Path) -> None:
    dsn = "host=/tmp/none dbname=x user=u password=SECRET"
    out = CliRunner().invoke(app, ["--db", dsn, "summary"], catch_exceptions=False)
    assert out.exit_code == 1
    assert "keyword connection string" in out.stderr and "postgresql://" in out.stderr
    assert "SECRET" not in out.stdout + out.stderr
    assert not list(Path.cwd().glob("*SECRET*"))


def test_a_server_away_is_temporary(tmp_path: Path) -> None:
    write_json(tmp_path / "r.json", make_report())
    url = f"postgresql:///db?host={tmp_path}"  # no server on this socket folder
    out = Cli(url)("ingest", str(tmp_path / "r.json"), code=75)
    assert f"postgresql:///db?host={tmp_path}: cannot reach PostgreSQL now" in out.stderr


def test_status_and_prune_show_the_postgresql_database_size(pg_url: str) -> None:
    cli = Cli(pg_url)
    cli("ingest", str(SAMPLES / "valid"), code=None)
    table = cli("db", "status", "-f", "table").stdout
    size = int(re.search(r"size\s*│?\s*([\d,]+) bytes", table).group(1).replace(",", ""))
    assert size > 1_000_000  # a PostgreSQL database has its catalogs: several MB
    assert cli.json("db", "status")["size_bytes"] > 1_000_000
    pruned = cli("prune", "-f", "table").stdout
    before, after = (int(n.replace(",", "")) for n in re.search(
        r"([\d,]+) bytes, now ([\d,]+) bytes", pruned).groups())
    assert before > 1_000_000 and after > 1_000_000
