from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.conftest import Cli, detail, make_report, policy, write_json
from tlswatch.analytics.render import csv_safe, to_markdown, to_table

HOSTILE_ORG = "=HYPERLINK(\"http://evil.example\",\"x\") <script>alert(1)</script> [bold]|"


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)"])
def test_csv_cells_that_start_a_formula_are_defused(value: str) -> None:
    assert csv_safe(value) == "'" + value


@pytest.mark.parametrize(("value", "cell"), [("\t=1", "'=1"), ("\rx", "\\x0dx")])
def test_csv_cells_never_start_with_tab_or_cr(value: str, cell: str) -> None:
    assert csv_safe(value) == cell  # white space collapsed, CR shown escaped


def test_csv_numbers_stay_numbers() -> None:
    assert csv_safe(-3) == -3 and csv_safe(0.5) == 0.5 and csv_safe("mx.example.com") == \
        "mx.example.com"


def test_markdown_escapes_html_and_table_syntax() -> None:
    out = to_markdown([{"org": HOSTILE_ORG}])
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "\\|" in out


def test_table_shows_markup_as_text() -> None:
    out = to_table([{"org": "[bold red]Evil[/bold red]"}])
    assert "[bold red]Evil[/bold red]" in out


def test_hostile_report_through_every_format(cli: Cli, tmp_path: Path) -> None:
    doc = make_report(org=HOSTILE_ORG, policies=[policy("example.com", 1, 2, [
        {**detail("certificate-expired", 2), "failure-reason-code": "-cmd|' /C calc'!A0"}])])
    cli.json("ingest", str(write_json(tmp_path / "evil.json", doc)))
    rows = list(csv.DictReader(io.StringIO(cli("failures", "--format", "csv").stdout)))
    assert rows[0]["organization_name"].startswith("'=HYPERLINK")
    assert rows[0]["failure_reason_codes"].startswith("'-cmd")
    assert rows[0]["failed_sessions"] == "2"
    md = cli("reports", "--format", "markdown").stdout
    assert "<script>" not in md
    assert cli.json("failures")[0]["organization_name"] == HOSTILE_ORG  # JSON keeps it exact
