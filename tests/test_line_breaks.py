"""A line break in a report value (CR LF, LF, NEL, U+2028, U+2029) never starts a line of
ours: the text summary, the daily JSON/Markdown/HTML paragraph and the Markdown tables show
it escaped, and the HTML tables isolate a bidi override in every report value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Cli, detail, make_report, policy, write_json

DAY = "2026-11-25"
FAKE = "example.com: 100% of 5 sessions succeeded"
BREAKS = ("\r\n", "\n", "\x85", "\u2028", "\u2029", "\x0b", "\x0c")
ORG = "Evil" + "".join(f"{b}{FAKE}" for b in BREAKS)
MX = "mx\n.example.com"
REASON = "reason\r\nMore causes: none"
RLO = "\u202eevil"


@pytest.fixture
def loaded(cli: Cli, tmp_path: Path) -> Cli:
    entry = {**detail(f"certificate-expired{RLO}", 3, mx=MX),
             "failure-reason-code": REASON}
    doc = make_report(org=ORG, rid="breaks", day=DAY,
                      policies=[policy("example.com", 5, 3, [entry])])
    doc["contact-info"] = "a\nb@evil.example"
    cli("ingest", str(write_json(tmp_path / "r.json", doc)))
    return cli


def _no_raw_break(text: str) -> None:
    for b in BREAKS:
        assert b not in text, repr(b)


def test_text_summary_is_one_line_per_domain(loaded: Cli) -> None:
    out = loaded("summary", "--format", "text").stdout
    assert len(out.splitlines()) == 1, out
    assert "Evil\\x0d\\x0aexample.com" in out and "\\u2028" in out and "\\x85" in out
    assert "mx\\x0a.example.com" in out


def test_daily_paragraphs_are_one_line(loaded: Cli, tmp_path: Path) -> None:
    out = tmp_path / "daily"
    loaded("export", "daily", "--date", DAY, "--out", str(out), "--format", "json,md,html")
    data = json.loads((out / f"tlswatch-summary-{DAY}.json").read_text("utf-8"))
    para = data["domains"][0]["paragraph"]
    _no_raw_break(para)
    assert "Evil\\x0d\\x0aexample.com" in para
    md = (out / f"tlswatch-summary-{DAY}.md").read_text("utf-8")
    assert FAKE not in md.replace("\\", "").splitlines()  # no line of the sender's own
    assert not any(line.startswith("example.com: 100%") for line in md.splitlines())
    page = (out / f"tlswatch-summary-{DAY}.html").read_text("utf-8")
    [shown] = [line for line in page.splitlines() if line.strip().startswith("<p>example")]
    assert "Evil\\x0d\\x0aexample.com" in shown and shown.strip().endswith("</p>")


def test_markdown_and_table_cells_show_line_breaks(loaded: Cli) -> None:
    md = loaded("failures", "--format", "markdown").stdout
    assert "mx\\\\x0a.example.com" in md  # the backslash of the escape is escaped in Markdown
    csv = loaded("failures", "--format", "csv").stdout
    assert "mx\\x0a.example.com" in csv and len(csv.splitlines()) == 2


def test_daily_html_failure_tables_isolate_bidi(loaded: Cli, tmp_path: Path) -> None:
    loaded("export", "daily", "--date", DAY, "--out", str(tmp_path), "--format", "html")
    page = (tmp_path / f"tlswatch-summary-{DAY}.html").read_text("utf-8")
    assert f"<td><bdi>certificate-expired{RLO}</bdi></td><td class=\"num\">3" in page
    assert f"</bdi></td><td><bdi>certificate-expired{RLO}</bdi></td><td><bdi>mx" in page
