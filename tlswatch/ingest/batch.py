"""Prepared reports as Arrow tables: what worker processes hand the loader, and what it writes.

A chunk holds a run of prepared reports as three tables: the reports (with their raw
bytes), their policy entries and their failure details.  Each entry row carries the
position of its report in the chunk (``_report``) and each detail row also that of its
entry (``_policy``).  Tables cross between processes as Arrow buffers (no object per field
to pickle and rebuild), stay compact while a batch waits, and are written by selecting
rows and setting keys a column at a time.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from tlswatch.ingest.prepare import Prepared, Quarantined
from tlswatch.ingest.rows import (
    DETAIL_SCHEMA,
    POLICY_SCHEMA,
    REPORT_SCHEMA,
    DetailRow,
    PolicyRow,
    ReportRow,
    to_table,
)

_POS = pa.int64()
_RAW = pa.field("raw_gzip", pa.binary())
CHUNK_REPORTS = REPORT_SCHEMA.append(_RAW)
CHUNK_POLICIES = POLICY_SCHEMA.append(pa.field("_report", _POS))
CHUNK_DETAILS = DETAIL_SCHEMA.append(pa.field("_report", _POS)).append(pa.field("_policy", _POS))


class Chunk(NamedTuple):
    """Reports as tables; positions (``_report``, ``_policy``) count rows from 0."""

    reports: pa.Table
    policies: pa.Table
    details: pa.Table

    @property
    def nbytes(self) -> int:
        return self.reports.nbytes + self.policies.nbytes + self.details.nbytes


EMPTY = Chunk(*(pa.Table.from_batches([], schema=schema)
                for schema in (CHUNK_REPORTS, CHUNK_POLICIES, CHUNK_DETAILS)))


def tabulate(prepared: Sequence[Prepared]) -> tuple[Chunk, list[Quarantined]]:
    """The reports as one chunk; a report whose values Arrow cannot hold (a check missed
    them) is returned to be quarantined, and the others are tabled without it."""
    try:
        return _tabulate(prepared), []
    except Exception:  # find the report at fault: each alone
        pass
    chunks, bad = [], []
    for report in prepared:
        try:
            chunks.append(_tabulate([report]))
        except Exception as exc:
            reason = f"could not be stored ({type(exc).__name__}: {exc})"[:500]
            bad.append(Quarantined(report.source, reason, gzip.decompress(report.raw_gzip)))
    return join(chunks), bad


def _tabulate(prepared: Sequence[Prepared]) -> Chunk:
    if not prepared:
        return EMPTY
    policies: list[PolicyRow] = []
    details: list[DetailRow] = []
    policy_of_report: list[int] = []
    report_of_detail: list[int] = []
    policy_of_detail: list[int] = []
    for position, report in enumerate(prepared):
        for policy, rows in report.policies:
            if rows:
                report_of_detail += [position] * len(rows)
                policy_of_detail += [len(policies)] * len(rows)
                details += rows
            policies.append(policy)
            policy_of_report.append(position)
    reports = to_table(ReportRow, [r.report for r in prepared], REPORT_SCHEMA)
    reports = reports.append_column(_RAW, pa.array([r.raw_gzip for r in prepared], pa.binary()))
    return Chunk(
        reports,
        to_table(PolicyRow, policies, POLICY_SCHEMA).append_column(
            "_report", pa.array(policy_of_report, _POS)),
        to_table(DetailRow, details, DETAIL_SCHEMA).append_column(
            "_report", pa.array(report_of_detail, _POS)).append_column(
            "_policy", pa.array(policy_of_detail, _POS)))


def join(chunks: Sequence[Chunk]) -> Chunk:
    """One chunk of several, positions renumbered to count over all of them."""
    if not chunks:
        return EMPTY
    if len(chunks) == 1:
        return chunks[0]
    policies, details = [], []
    reports_before = policies_before = 0
    for chunk in chunks:
        policies.append(_shifted(chunk.policies, _report=reports_before))
        details.append(_shifted(chunk.details, _report=reports_before, _policy=policies_before))
        reports_before += chunk.reports.num_rows
        policies_before += chunk.policies.num_rows
    return Chunk(pa.concat_tables([c.reports for c in chunks]).combine_chunks(),
                 pa.concat_tables(policies).combine_chunks(),
                 pa.concat_tables(details).combine_chunks())


def split(chunk: Chunk, count: int) -> tuple[Chunk, Chunk]:
    """The chunk's first ``count`` reports and the rest, each numbered from 0 again."""
    policies, details = (pc.sum(pc.less(table["_report"], count)).as_py() or 0
                         for table in (chunk.policies, chunk.details))
    head = Chunk(chunk.reports.slice(0, count), chunk.policies.slice(0, policies),
                 chunk.details.slice(0, details))
    tail = Chunk(chunk.reports.slice(count), _shifted(chunk.policies.slice(policies),
                                                      _report=-count),
                 _shifted(chunk.details.slice(details), _report=-count, _policy=-policies))
    return head, tail


def _shifted(table: pa.Table, **by: int) -> pa.Table:
    for name, offset in by.items():
        if offset:
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, pc.add(table[name], offset))
    return table


class Keyed(NamedTuple):
    """The rows to insert for some reports of a chunk, keys set."""

    reports: pa.Table
    raw: pa.Table
    policies: pa.Table
    details: pa.Table


def keyed(chunk: Chunk, positions: Sequence[int], first_report_pk: int,
          first_policy_pk: int, received_at: object) -> Keyed:
    """The rows of the reports at ``positions`` (in that order, ascending), numbered from
    the first free keys; ``received_at`` is the time of the write."""
    count = len(positions)
    if count == chunk.reports.num_rows:  # every report of the chunk (``positions`` ascend)
        return _keyed_whole(chunk, first_report_pk, first_policy_pk, received_at)
    report_pks = range(first_report_pk, first_report_pk + count)
    pk_at: list[int | None] = [None] * chunk.reports.num_rows
    for pk, position in zip(report_pks, positions, strict=True):
        pk_at[position] = pk
    report_pk_at = pa.array(pk_at, pa.int64())
    wanted = pa.array(positions, _POS)
    reports = chunk.reports.take(wanted)
    reports = _set(reports, report_pk=pa.array(report_pks, pa.int64()),
                   received_at=pa.repeat(pa.scalar(received_at, pa.timestamp("us")), count))
    kept = pc.is_in(chunk.policies["_report"], value_set=wanted)
    kept_at = pc.indices_nonzero(kept)
    policy_pk_at: list[int | None] = [None] * chunk.policies.num_rows
    for pk, position in enumerate(kept_at.to_pylist(), start=first_policy_pk):
        policy_pk_at[position] = pk
    policies = chunk.policies.filter(kept)
    policies = _set(policies, report_pk=pc.take(report_pk_at, policies["_report"]),
                    policy_pk=pa.array(range(first_policy_pk, first_policy_pk + len(kept_at)),
                                       pa.int64()))
    details = chunk.details.filter(pc.is_in(chunk.details["_report"], value_set=wanted))
    details = _set(details, report_pk=pc.take(report_pk_at, details["_report"]),
                   policy_pk=pc.take(pa.array(policy_pk_at, pa.int64()), details["_policy"]))
    raw = pa.table({"report_pk": reports["report_pk"], "raw_gzip": reports["raw_gzip"]})
    return Keyed(reports.select(REPORT_SCHEMA.names), raw,
                 policies.select(POLICY_SCHEMA.names), details.select(DETAIL_SCHEMA.names))


def _keyed_whole(chunk: Chunk, first_report_pk: int, first_policy_pk: int,
                 received_at: object) -> Keyed:
    """``keyed`` of every report of the chunk: keys are positions plus the first free key
    (no rows selected, so none copied: the usual batch, where every report is new)."""
    reports = chunk.reports.num_rows
    reports_table = _set(chunk.reports,
                         report_pk=pa.array(range(first_report_pk, first_report_pk + reports),
                                            pa.int64()),
                         received_at=pa.repeat(pa.scalar(received_at, pa.timestamp("us")),
                                               reports))
    policies = _set(chunk.policies, report_pk=pc.add(chunk.policies["_report"], first_report_pk),
                    policy_pk=pa.array(range(first_policy_pk,
                                             first_policy_pk + chunk.policies.num_rows),
                                       pa.int64()))
    details = _set(chunk.details, report_pk=pc.add(chunk.details["_report"], first_report_pk),
                   policy_pk=pc.add(chunk.details["_policy"], first_policy_pk))
    raw = pa.table({"report_pk": reports_table["report_pk"],
                    "raw_gzip": reports_table["raw_gzip"]})
    return Keyed(reports_table.select(REPORT_SCHEMA.names), raw,
                 policies.select(POLICY_SCHEMA.names), details.select(DETAIL_SCHEMA.names))


def _set(table: pa.Table, **columns: pa.Array | pa.ChunkedArray) -> pa.Table:
    """The table with these columns replaced (same names, same places)."""
    for name, values in columns.items():
        index = table.schema.get_field_index(name)
        table = table.set_column(index, table.schema.field(index), values)
    return table
