"""Render rows (lists of dicts) as table, JSON, CSV or Markdown.

Report contents are untrusted.  Every character a terminal would act on or that reorders or
hides text (``safe_text``) is shown escaped in every format; CSV cells that a spreadsheet
would run as a formula are defused; Markdown has its inline and block syntax escaped
(``md_text``); the terminal table never interprets rich markup found in a report.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import re
import unicodedata
from collections.abc import Sequence
from datetime import date, datetime
from enum import StrEnum
from pathlib import PurePath
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"
    text = "text"


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Candidates for escaping: anything but printable ASCII, newline and tab.  Of those, what
# str.isprintable() refuses is escaped: C0 and C1 controls, DEL, format characters (bidi
# embeddings, overrides and isolates, LRM/RLM, zero-width and tag characters), line and
# paragraph separators, spaces other than U+0020, lone surrogates, private-use and
# unassigned code points.
_CANDIDATE = re.compile(r"[^\n\t\x20-\x7e]")


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _escape_unprintable(match: re.Match[str]) -> str:
    char = match.group()
    return char if char.isprintable() else _escape(char)


def safe_text(text: str) -> str:
    """``text`` with every character a terminal would act on, or that reorders or hides
    text, shown as a Python-style escape (``\\x1b``, ``\\u202e``); newline and tab are kept.

    The result holds no such character, so applying it twice changes nothing; backslashes
    are kept as they are.  Use it for every free text block that holds report contents.
    """
    if text.isprintable():
        return text
    return _CANDIDATE.sub(_escape_unprintable, text)


def line_text(text: str) -> str:
    """``text`` as one line: ``safe_text``, and newline and tab shown escaped too (``\\x0a``,
    ``\\x09``), like every other line break (CR, VT, FF, NEL, U+2028, U+2029).  For a
    report value inside a sentence or a one-line paragraph: a sender cannot start a line
    that looks like one of ours."""
    return safe_text(text).replace("\n", "\\x0a").replace("\t", "\\x09")


class SafeFormatter(logging.Formatter):
    """Log lines are terminal output too: a logged report value is shown ``safe_text``."""

    def format(self, record: logging.LogRecord) -> str:
        return safe_text(super().format(record))


def _json_escape(match: re.Match[str]) -> str:
    char = match.group()
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a JSON escape of a supplementary character is a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(data: Any) -> str:
    """Indented JSON, UTF-8 kept readable; every character ``safe_text`` would escape is a
    ``\\uXXXX`` escape (json.dumps leaves DEL, C1, bidi and format characters raw), so the
    text is safe on a terminal and decodes to the same data."""
    text = json.dumps(data, default=_json_default, ensure_ascii=False, indent=2)
    if text.isascii() and "\x7f" not in text:  # json.dumps escaped the other ASCII controls
        return text
    return _CANDIDATE.sub(_json_escape, text)


def cell_text(value: Any) -> str:
    """A value as one line of text (lists joined, dicts as key=value): a line break shown
    escaped (``\\x0a``), runs of other white space as one space and every other unprintable
    character escaped (``safe_text``)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return "; ".join(f"{cell_text(k)}={cell_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "; ".join(cell_text(v) for v in value)
    return " ".join(safe_text(str(value)).replace("\n", "\\x0a").split())


def csv_safe(value: Any) -> Any:
    """Numbers as they are; text on one line (``cell_text``), prefixed with ' where a
    spreadsheet would see a formula: a first character that is, or folds (NFKC) to, one of
    ``= + - @`` (full-width ``＝`` and small ``﹦`` included).  Tab, CR and newline never
    reach the cell: white space is collapsed and other controls are escaped."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return value
    text = cell_text(value)
    return "'" + text if unicodedata.normalize("NFKC", text[:1]).startswith(_FORMULA_START) \
        else text


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([csv_safe(c) for c in columns])
    for row in rows:
        writer.writerow([csv_safe(row.get(c)) for c in columns])
    return out.getvalue()


_MD_SPECIAL = {"\\": "\\\\", "|": "\\|", "&": "&amp;", "<": "&lt;", ">": "&gt;", "`": "\\`",
               "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]", "#": "\\#", "~": "\\~",
               "@": "\\@"}
_MD_INLINE = re.compile("|".join(re.escape(c) for c in _MD_SPECIAL) + r"|(?<=:)//|(?i:www)\.")
# What would start a list ("1. ", "2) ", "- ", "+ ") or make a heading underline or a
# thematic break ("===", "- - -") at the start of a line; numbers like "-0.5" stay as they are.
_MD_LINE_START = re.compile(r"^(\d{0,9})([.)])(?=[ \t]|$)"
                            r"|^()([-+])(?=[ \t]|$)"
                            r"|^()([-=])(?=[-= ]*$)", re.MULTILINE)


def _md_inline(match: re.Match[str]) -> str:
    found = match.group()
    if found == "//":  # "http://x" would become a link (GFM autolinks); "http:\/\/x" not
        return "\\/\\/"
    if found.endswith("."):  # likewise "www.x"
        return found[:-1] + "\\."
    return _MD_SPECIAL[found]


def md_text(value: Any) -> str:
    """A value as one line of inert Markdown text: ``cell_text``, then HTML, emphasis, code,
    links, images, autolinks, headings, lists and table pipes escaped."""
    text = _MD_INLINE.sub(_md_inline, cell_text(value))
    return _MD_LINE_START.sub(_md_line_start, text)


def _md_line_start(match: re.Match[str]) -> str:
    lead, marker = [g for g in match.groups() if g is not None][:2]
    return lead + "\\" + marker


def to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    if not columns:
        return "_(no rows)_\n"
    lines = ["| " + " | ".join(md_text(c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(md_text(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, *,
             title: str | None = None, console: Console | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    table = Table(title=None if title is None else Text(safe_text(title)), show_lines=False)
    for column in columns:
        numeric = bool(rows) and isinstance(rows[0].get(column), int | float)
        table.add_column(Text(cell_text(column)), justify="right" if numeric else "left",
                         overflow="fold")
    for row in rows:
        table.add_row(*(Text(_table_cell(row.get(c))) for c in columns))
    console = console or Console(width=160, record=True, file=io.StringIO())
    with console.capture() as capture:
        console.print(table)
    return capture.get()


def _table_cell(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return cell_text(value)


def render_rows(rows: Sequence[dict[str, Any]], fmt: Format, *,
                columns: Sequence[str] | None = None, title: str | None = None,
                console: Console | None = None) -> str:
    """Rows in the asked format (``text`` falls back to the table)."""
    if fmt is Format.json:
        return to_json(list(rows)) + "\n"
    if fmt is Format.csv:
        return to_csv(rows, columns)
    if fmt is Format.markdown:
        return to_markdown(rows, columns)
    return to_table(rows, columns, title=title, console=console)
