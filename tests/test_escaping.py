"""Report contents are untrusted in every output: a report whose fields hold terminal escapes,
bidi overrides and Markdown/HTML syntax is ingested into a real database, then every reading
command (a real ``tlswatch`` process, each format) and the daily files must show them inert."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from markupsafe import escape

from tests.conftest import detail, make_report, policy, write_json
from tests.serving import CLI
from tlswatch.analytics.render import csv_safe, md_text, safe_text, to_json

DAY = "2026-11-25"
# OSC 8 hyperlink, OSC 0 window title, RIS (reset), a C1 CSI, DEL, backspace, CR, bidi
# override/embedding/isolates and marks, a zero-width space and a tag character.
ESCAPES = ("\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07\x1b]0;owned\x07\x1bc\x9b2J"
           "\x7f\x08\rX\u202egnp.exe\u202c\u202a\u2066iso\u2069\u200e\u200f\u200b\U000e0041")
# Markdown and HTML that must stay text in a .md file.
MARKUP = ("# owned [click](http://evil.example) ![x](http://evil.example/img) "
          "<img src=x onerror=alert(1)> `tick` *em* _u_ ~~s~~ a|b www.evil.example "
          "a@evil.example\n- item\n1. one")
ORG = f"{MARKUP} {ESCAPES} Org"
FIELDS = {"org": ORG, "rid": f"rid-{ESCAPES}", "contact": f"c{ESCAPES}@evil.example",
          "mx": f"mx{ESCAPES}.example.com", "rtype": f"certificate-{ESCAPES}",
          "reason": f"=cmd|{ESCAPES}", "info": f"{MARKUP}{ESCAPES}"}


def unsafe(text: str) -> list[str]:
    """Code points in ``text`` that a terminal would act on or that reorder or hide text."""
    return sorted({f"U+{ord(c):04X}" for c in text if not (c.isprintable() or c in "\n\t")})


def run(db: Path, *args: str) -> str:
    done = subprocess.run([*CLI, "--db", str(db), *args], capture_output=True, timeout=120,
                          check=False)
    assert done.returncode == 0, (args, done.stderr.decode("utf-8", "replace"))
    return done.stdout.decode("utf-8")  # strict: a lone surrogate or bad byte fails here


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("escaping")
    entry = {**detail(FIELDS["rtype"], 3, mx=FIELDS["mx"]),
             "failure-reason-code": FIELDS["reason"], "additional-information": FIELDS["info"]}
    doc = make_report(org=FIELDS["org"], rid=FIELDS["rid"], day=DAY,
                      policies=[policy("example.com", 5, 3, [entry])])
    doc["contact-info"] = FIELDS["contact"]
    doc["policies"][0]["policy"]["mx-host"] = [FIELDS["mx"]]
    path = root / "tlswatch.duckdb"
    out = json.loads(run(path, "ingest", str(write_json(root / "hostile.json", doc)),
                         "--format", "json"))
    assert out["accepted"] == 1, out
    return path


def _report_id(db: Path) -> str:
    return str(json.loads(run(db, "reports", "--format", "json"))[0]["id"])


COMMANDS = [(cmd, fmt) for cmd in ("summary", "failures", "reports", "report show")
            for fmt in ("table", "json", "csv", "markdown")]


@pytest.mark.parametrize(("command", "fmt"), COMMANDS)
def test_reading_commands_show_hostile_fields_escaped(db: Path, command: str, fmt: str) -> None:
    args = command.split() + ([_report_id(db)] if command == "report show" else [])
    out = run(db, *args, "--format", fmt)
    assert unsafe(out) == []
    if fmt != "json":
        assert "\\x1b" in out and "\\u202e" in out  # shown, not dropped
    if fmt == "markdown" and command != "report show":  # show appends the raw JSON as is
        _assert_inert_markdown(out, headings=0)


def test_summary_text_shows_hostile_fields_escaped(db: Path) -> None:
    assert unsafe(run(db, "summary", "--format", "text")) == []


@pytest.mark.parametrize("command", ["failures", "reports", "report show"])
def test_json_keeps_the_values_exact(db: Path, command: str) -> None:
    args = command.split() + ([_report_id(db)] if command == "report show" else [])
    text = run(db, *args, "--format", "json")
    data = json.loads(text)
    found = {FIELDS["org"], FIELDS["rid"]} if command != "failures" else {FIELDS["org"],
                                                                          FIELDS["rtype"]}
    assert found <= set(_strings(data))


def test_rejections_and_log_lines_on_stderr_are_escaped(tmp_path: Path) -> None:
    bad = tmp_path / "bad\x1b]0;owned\x07\x1bc\x9b2J\x7f\u202egnp.exe\u2066x\u2069.json"
    bad.write_bytes(b"not a report")
    done = subprocess.run([*CLI, "--verbose", "--db", str(tmp_path / "t.duckdb"), "ingest",
                           str(bad)], capture_output=True, timeout=120, check=False)
    err = done.stderr.decode("utf-8")
    assert done.returncode == 1 and "file: refused" in err and "INFO" in err
    assert unsafe(err) == [] and "\\x1b" in err and "\\u202e" in err


def _strings(data: Any) -> list[str]:
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [s for v in data.values() for s in _strings(v)]
    if isinstance(data, list):
        return [s for v in data for s in _strings(v)]
    return []


def _assert_inert_markdown(text: str, *, headings: int) -> None:
    page = MarkdownIt("commonmark").enable("table").render(text)
    for tag in ("<a ", "<img", "<code", "<em>", "<strong>", "<ul>", "<ol", "<hr", "<s>",
                "<script", "<blockquote"):
        assert tag not in page, (tag, page)
    assert page.count("<h1>") + page.count("<h2>") == headings, page
    assert "://" not in text and "www.evil" not in text  # no bare link for GFM to make


def test_daily_markdown_and_csv_exports_are_inert(db: Path, tmp_path: Path) -> None:
    run(db, "export", "daily", "--date", DAY, "--out", str(tmp_path), "--format", "md,csv")
    md = (tmp_path / f"tlswatch-summary-{DAY}.md").read_bytes().decode("utf-8")
    assert unsafe(md) == []
    _assert_inert_markdown(md, headings=2)  # the title and the one domain
    text = (tmp_path / f"tlswatch-summary-{DAY}.csv").read_bytes().decode("utf-8")
    assert unsafe(text) == []
    rows = list(csv.reader(io.StringIO(text)))
    assert len(text.splitlines()) == len(rows) == 2  # no value breaks a row
    assert len({len(r) for r in rows}) == 1
    assert not [c for r in rows for c in r if c[:1] in ("=", "+", "-", "@", "\uff1d")]


def test_daily_html_isolates_untrusted_names(db: Path, tmp_path: Path) -> None:
    run(db, "export", "daily", "--date", DAY, "--out", str(tmp_path), "--format", "html")
    page = (tmp_path / f"tlswatch-summary-{DAY}.html").read_bytes().decode("utf-8")
    assert "<bdi>" in page and escape("\\x1b]8;;http://evil.example/\\x07click") in page
    # no control character reaches the page (copied into a terminal, it would act)
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", page)


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)", "\uff1d1+1", "\uff0b1",
                                   "\uff0d1", "\uff20SUM(A1)", "\ufe661", " =1", "\t=1"])
def test_csv_formula_starts_are_defused(value: str) -> None:
    assert csv_safe(value).startswith("'")


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "\r=1", "a\x1bb", "a\u2028b"])
def test_csv_cell_stays_on_one_line(value: str) -> None:
    cell = csv_safe(value)
    assert unsafe(cell) == [] and "\n" not in cell


def test_safe_text_keeps_layout_and_is_idempotent() -> None:
    text = "line one\n\tindented \x1b[31m red \u202e and \x9b and \ud800"
    once = safe_text(text)
    assert once == ("line one\n\tindented \\x1b[31m red \\u202e and \\x9b and \\ud800")
    assert safe_text(once) == once and safe_text("plain é 中") == "plain é 中"


def test_json_escapes_what_json_dumps_leaves_raw() -> None:
    data = {"v": "a\u202eb\x7f\x85\u2066\U000e0041\ud800 é"}
    text = to_json(data)
    assert unsafe(text) == [] and json.loads(text) == data and "é" in text
    assert to_json(["del\x7f"]) == '[\n  "del\\u007f"\n]'


@pytest.mark.parametrize(("value", "text"), [
    ("1. one", "1\\. one"), ("2) two", "2\\) two"), ("- x", "\\- x"), ("+ y", "\\+ y"),
    ("===", "\\==="), ("- - -", "\\- - -"), ("-0.5", "-0.5"), ("0.625", "0.625")])
def test_markdown_line_starts_are_escaped_numbers_kept(value: str, text: str) -> None:
    assert md_text(value) == text


def test_markdown_text_is_inert() -> None:
    _assert_inert_markdown(md_text(MARKUP), headings=0)
    _assert_inert_markdown("| h |\n|---|\n| " + md_text(MARKUP) + " |\n", headings=0)


def test_report_show_markdown_keeps_the_raw_report_inert(tmp_path: Path) -> None:
    db = tmp_path / "md.duckdb"
    doc = make_report(rid="fenced", org="```\n# owned\n[x](http://evil.example)")
    write_json(tmp_path / "r.json", doc)
    subprocess.run([*CLI, "--db", str(db), "ingest", str(tmp_path / "r.json")], check=True,
                   capture_output=True)
    text = run(db, "report", "show", "fenced", "--format", "markdown")
    fence = text.rstrip().splitlines()[-1]
    assert set(fence) == {"`"} and len(fence) > 3  # longer than any run in the report
    assert text.count(fence) == 2
