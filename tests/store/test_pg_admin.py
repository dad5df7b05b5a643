"""PostgreSQL as the store, seen by an admin: every command works on it as on a DuckDB
file, and no message shows the password or the database's places to whom it does not
concern."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Cli

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
