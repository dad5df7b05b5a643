"""Daily summary files: ``DIR/tlswatch-summary-YYYY-MM-DD.{md,html,csv,json,parquet}``.

The numbers are those of ``tlswatch summary --since D --until D`` (the same function makes
them).  Files are written to a temporary name, flushed to disk and renamed, so a re-run
replaces them whole and a reader never sees half a file.

The CSV, JSON and Parquet files have the same columns (schema) every day, an empty day
included, so a folder of them reads as one table (``read_csv('DIR/*.csv')``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tlswatch.analytics.explain import explain
from tlswatch.analytics.queries import Filters
from tlswatch.analytics.render import md_text, to_csv, to_json, to_markdown
from tlswatch.analytics.summary import DomainSummary, Summary, paragraph, percent, summarize
from tlswatch.durable import fsync_path
from tlswatch.errors import TlsWatchError
from tlswatch.render.charts import hbars
from tlswatch.render.html import render
from tlswatch.schemas import RFC8460_RESULT_TYPES
from tlswatch.store import Store
from tlswatch.tenants.scope import EVERYTHING, Scope

FORMATS = ("md", "html", "csv", "json", "parquet")
# The CSV's columns, the same every day: the totals, then one column per result type of the
# RFC 8460 registry (section 4.3) and one for the failures under any other result type.
RESULT_TYPE_COLUMNS = tuple(sorted(RFC8460_RESULT_TYPES))
OTHER_RESULT_TYPES = "other_result_types"
CSV_COLUMNS = ("day", "policy_domain", "reports", "organizations", "successful_sessions",
               "failed_sessions", "success_rate", "change_success_rate",
               "change_failed_sessions", *RESULT_TYPE_COLUMNS, OTHER_RESULT_TYPES)


class ExportError(TlsWatchError):
    """The daily files could not be written where they were asked for."""


@dataclass
class Daily:
    day: date
    summary: Summary

    @property
    def domains(self) -> list[DomainSummary]:
        return self.summary.domains


def daily(store: Store, day: date, *, scope: Scope = EVERYTHING) -> Daily:
    """The summary of one UTC report day, compared with the day before."""
    return Daily(day, summarize(store, Filters(since=day, until=day, scope=scope)))


def file_name(day: date, fmt: str) -> str:
    return f"tlswatch-summary-{day.isoformat()}.{fmt}"


def export_daily(store: Store, day: date, out: Path, formats: Sequence[str] = FORMATS, *,
                 scope: Scope = EVERYTHING) -> list[Path]:
    """Write the day's files into ``out``; return their paths."""
    return write_daily(daily(store, day, scope=scope), out, formats)


def write_daily(report: Daily, out: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``report`` in each format, each file replaced whole (temporary file, fsync,
    rename); an unusable folder (a file, no permission, a full disk) is an ExportError."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(FORMATS)}")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: cannot write the daily files there: not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{out}: cannot write the daily files there: "
                          f"{exc.strerror or exc}") from None
    written = []
    for fmt in formats:
        path = out / file_name(report.day, fmt)
        _replace(path, _encode(report, fmt))
        written.append(path)
    fsync_path(out)
    return written


def _encode(report: Daily, fmt: str) -> bytes:
    if fmt == "parquet":
        sink = pa.BufferOutputStream()
        pq.write_table(_arrow(report), sink)
        return bytes(sink.getvalue())
    return {"md": markdown, "html": html, "csv": csv_text,
            "json": json_text}[fmt](report).encode("utf-8")


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{path}: cannot write the daily file: "
                          f"{exc.strerror or exc}") from None



def _change(d: DomainSummary) -> str:
    if d.change_success_rate is None:
        return "no reports the day before"
    return f"{d.change_success_rate * 100:+.2f} pp, failed {d.change_failed_sessions:+,}"


def domain_rows(report: Daily) -> list[dict[str, Any]]:
    """One flat row per domain with the columns ``CSV_COLUMNS``."""
    rows = []
    for d in report.domains:
        row: dict[str, Any] = {
            "day": report.day.isoformat(), "policy_domain": d.policy_domain,
            "reports": d.reports, "organizations": "; ".join(d.organizations),
            "successful_sessions": d.successful_sessions, "failed_sessions": d.failed_sessions,
            "success_rate": d.success_rate, "change_success_rate": d.change_success_rate,
            "change_failed_sessions": d.change_failed_sessions}
        row.update({t: d.failures_by_result_type.get(t, 0) for t in RESULT_TYPE_COLUMNS})
        row[OTHER_RESULT_TYPES] = sum(n for t, n in d.failures_by_result_type.items()
                                      if t not in RFC8460_RESULT_TYPES)
        rows.append(row)
    return rows


def markdown(report: Daily) -> str:
    lines = [f"# TLS report summary for {report.day} (UTC)", ""]
    if not report.domains:
        lines.append(f"No reports for {report.day}.")
    for d in report.domains:
        lines += [f"## {md_text(d.policy_domain)}", "", md_text(paragraph(d)), "",
                  f"Change from the day before: {_change(d)}.", ""]
        failures = [{"result type": t, "sessions": n, "fix": explain(t, domain=d.policy_domain)
                     .fix} for t, n in d.failures_by_result_type.items()]
        if failures:
            lines.append(to_markdown(failures))
            lines.append(to_markdown([{k: v for k, v in s.items() if k != "failure_reason_code"}
                                      for s in d.failure_sources]))
    return "\n".join(lines) + "\n"


def html(report: Daily, *, revised: Sequence[str] = ()) -> str:
    """The self-contained page; ``revised`` lines say what changed since it was sent."""
    domains = []
    for d in report.domains:
        failures = [{"result_type": t, "failed_sessions": n,
                     "meaning": explain(t, domain=d.policy_domain).meaning,
                     "fix": explain(t, domain=d.policy_domain).fix}
                    for t, n in d.failures_by_result_type.items()]
        domains.append({
            **d.__dict__, "paragraph": paragraph(d), "failures": failures,
            "rate_text": percent(d.success_rate, failures=d.failed_sessions),
            "change_text": _change(d),
            "chart": hbars(list(d.failures_by_result_type.items()),
                           title=f"failed sessions by result type, {d.policy_domain}")})
    return render("daily.html", day=report.day, domains=domains, revised=list(revised),
                  previous_day=report.day - timedelta(days=1),
                  generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))


def csv_text(report: Daily) -> str:
    return to_csv(domain_rows(report), CSV_COLUMNS)


def json_text(report: Daily) -> str:
    data = report.summary.as_dict()
    data["day"] = report.day.isoformat()
    for d, summary in zip(data["domains"], report.domains, strict=True):
        d["paragraph"] = paragraph(summary)
        d["fixes"] = {t: explain(t, domain=summary.policy_domain).fix
                      for t in summary.failures_by_result_type}
    return to_json(data) + "\n"


def _arrow(report: Daily) -> pa.Table:
    # Session sums are 64-bit integers; only a store holding counts from before counts were
    # bounded can pass that, and then the file uses 38-digit decimals instead of failing.
    ds = report.domains
    widest = max((n for d in ds for n in (d.successful_sessions, d.failed_sessions,
                                          *d.failures_by_result_type.values())), default=0)
    count = pa.int64() if widest < 2**63 else pa.decimal128(38, 0)
    failures = pa.list_(pa.struct([("result_type", pa.string()),
                                   ("failed_sessions", count)]))
    schema = pa.schema([("day", pa.date32()), ("policy_domain", pa.string()),
                        ("reports", pa.int64()), ("organizations", pa.list_(pa.string())),
                        ("successful_sessions", count), ("failed_sessions", count),
                        ("success_rate", pa.float64()), ("failures_by_result_type", failures),
                        ("paragraph", pa.string())])
    return pa.table([
        [report.day] * len(ds), [d.policy_domain for d in ds], [d.reports for d in ds],
        [d.organizations for d in ds], [d.successful_sessions for d in ds],
        [d.failed_sessions for d in ds], [d.success_rate for d in ds],
        [[{"result_type": t, "failed_sessions": n} for t, n in d.failures_by_result_type.items()]
         for d in ds], [paragraph(d) for d in ds]], schema=schema)
