"""Render rows (lists of dicts) as table, JSON, CSV or Markdown.

Report contents are untrusted: CSV cells that a spreadsheet would run as a formula are
defused, Markdown cells have HTML and table syntax escaped, and the terminal table never
interprets rich markup found in a report.
"""

from __future__ import annotations

import csv
import io
import json
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


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(data: Any) -> str:
    return json.dumps(data, default=_json_default, ensure_ascii=False, indent=2)


def cell_text(value: Any) -> str:
    """A value as one line of text (lists joined, dicts as key=value)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return "; ".join(f"{k}={cell_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "; ".join(cell_text(v) for v in value)
    return " ".join(str(value).split())


def csv_safe(value: Any) -> Any:
    """Numbers as they are; text prefixed with ' where a spreadsheet would see a formula."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return value
    text = cell_text(value) if not isinstance(value, str) else value
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_safe(row.get(c)) for c in columns])
    return out.getvalue()


def _md_cell(value: Any) -> str:
    text = cell_text(value)
    for old, new in (("\\", "\\\\"), ("|", "\\|"), ("&", "&amp;"), ("<", "&lt;"),
                     (">", "&gt;"), ("`", "\\`"), ("*", "\\*"), ("_", "\\_"), ("[", "\\[")):
        text = text.replace(old, new)
    return text


def to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    if not columns:
        return "_(no rows)_\n"
    lines = ["| " + " | ".join(_md_cell(c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, *,
             title: str | None = None, console: Console | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    table = Table(title=title, show_lines=False)
    for column in columns:
        numeric = bool(rows) and isinstance(rows[0].get(column), int | float)
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
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
