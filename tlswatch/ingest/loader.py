"""The one writer to the store: validated reports in batches, duplicates counted, rejects
quarantined with their bytes and reason.

A report is identified by (organization-name, report-id); a report seen again, in the
same run or a later one, is counted as a duplicate and not stored twice.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tlswatch.errors import ReportError
from tlswatch.ingest.decode import DEFAULT_LIMITS, Limits, decode
from tlswatch.ingest.sources import Input
from tlswatch.ingest.validate import ValidReport, validate
from tlswatch.store import Store, now_utc

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rejection:
    source: str
    reason: str


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    duplicate_reports: list[dict[str, str]] = field(default_factory=list)
    report_pks: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "rejections": [{"source": r.source, "reason": r.reason} for r in self.rejections],
            "duplicate_reports": self.duplicate_reports,
        }


@dataclass(frozen=True, slots=True)
class _Quarantined:
    source: str
    reason: str
    data: bytes


class Loader:
    """Collects decoded reports and rejects, writing them to the store a batch at a time."""

    def __init__(self, store: Store, *, limits: Limits = DEFAULT_LIMITS,
                 batch_size: int = 2000) -> None:
        self.store = store
        self.limits = limits
        self.batch_size = batch_size
        self.result = IngestResult()
        self._reports: list[ValidReport] = []
        self._quarantine: list[_Quarantined] = []

    def add(self, item: Input | ReportError) -> None:
        """Decode and validate one input: good reports are queued, bad input quarantined."""
        if isinstance(item, ReportError):
            self.reject(item, b"")
            return
        try:
            documents = decode(item.data, source=item.source, filename=item.filename,
                               limits=self.limits)
        except ReportError as exc:
            self.reject(exc, item.data)
            return
        for doc in documents:
            try:
                self._reports.append(validate(doc))
            except ReportError as exc:
                self.reject(exc, item.data)
        if len(self._reports) >= self.batch_size:
            self.flush()

    def reject(self, error: ReportError, data: bytes) -> None:
        log.info("rejected %s", error)
        self.result.rejected += 1
        self.result.rejections.append(Rejection(source=error.source, reason=error.detail))
        self._quarantine.append(_Quarantined(error.source, error.detail, data))

    def flush(self) -> None:
        """Write what is queued in one transaction."""
        reports, self._reports = self._reports, []
        rejects, self._quarantine = self._quarantine, []
        if not reports and not rejects:
            return
        with self.store.transaction():
            fresh = self._drop_duplicates(reports)
            if fresh:
                self.result.report_pks.extend(_write_reports(self.store, fresh))
            if rejects:
                _write_quarantine(self.store, rejects)
        self.result.accepted += len(fresh)

    def _drop_duplicates(self, reports: list[ValidReport]) -> list[ValidReport]:
        keys = [(r.report.organization_name, r.report.report_id) for r in reports]
        known = self.store.existing_reports(keys)
        fresh = []
        for key, report in zip(keys, reports, strict=True):
            if key in known:
                self.result.duplicates += 1
                self.result.duplicate_reports.append(
                    {"source": report.source, "organization_name": key[0], "report_id": key[1]})
                continue
            known.add(key)
            fresh.append(report)
        return fresh


def load(items: Iterable[Input | ReportError], store: Store, *, limits: Limits = DEFAULT_LIMITS,
         batch_size: int = 2000, progress: Callable[[], None] | None = None) -> IngestResult:
    """Decode, validate and store every input; return what happened to each."""
    loader = Loader(store, limits=limits, batch_size=batch_size)
    for item in items:
        loader.add(item)
        if progress is not None:
            progress()
    loader.flush()
    return loader.result


def _write_reports(store: Store, reports: list[ValidReport]) -> list[int]:
    first = store.next_pk("reports", "report_pk")
    first_policy = store.next_pk("policies", "policy_pk")
    now = now_utc()
    pks = list(range(first, first + len(reports)))
    rep: dict[str, list[Any]] = {k: [] for k in _REPORT_COLUMNS}
    pol: dict[str, list[Any]] = {k: [] for k in _POLICY_COLUMNS}
    det: dict[str, list[Any]] = {k: [] for k in _DETAIL_COLUMNS}
    raw: list[bytes] = []
    policy_pk = first_policy
    for pk, vr in zip(pks, reports, strict=True):
        r, c = vr.report, vr.container
        day = vr.start.date()
        for key, value in (
            ("report_pk", pk), ("organization_name", r.organization_name),
            ("report_id", r.report_id), ("contact_info", r.contact_info),
            ("start_datetime", vr.start), ("end_datetime", vr.end), ("day", day),
            ("source", vr.source), ("filename", c.filename), ("message_id", c.message_id),
            ("header_report_domain", c.report_domain), ("header_submitter", c.submitter),
            ("subject_report_id", c.subject_report_id), ("warnings", vr.warnings),
            ("received_at", now),
        ):
            rep[key].append(value)
        raw.append(vr.raw_gzip if vr.raw_gzip is not None else gzip.compress(vr.raw_json, 6))
        for index, (entry, facts) in enumerate(zip(r.policies, vr.policies, strict=True)):
            common = (day, r.organization_name, entry.policy.policy_type, facts.policy_domain)
            for key, value in zip(
                _POLICY_COLUMNS,
                (policy_pk, pk, index, *common, facts.policy_string, facts.mx_host,
                 entry.summary.total_successful_session_count,
                 entry.summary.total_failure_session_count), strict=True,
            ):
                pol[key].append(value)
            for d in entry.failure_details or []:
                for key, value in zip(
                    _DETAIL_COLUMNS,
                    (pk, policy_pk, *common, d.result_type, d.sending_mta_ip,
                     d.receiving_mx_hostname, d.receiving_mx_helo, d.receiving_ip,
                     d.failed_session_count, d.additional_information or d.additional_info_uri,
                     d.failure_reason_code), strict=True,
                ):
                    det[key].append(value)
            policy_pk += 1
    store.insert("reports", pa.table(rep, schema=_REPORT_SCHEMA))
    store.insert("report_raw", pa.table({"report_pk": pks, "raw_gzip": raw},
                                        schema=_RAW_SCHEMA))
    store.insert("policies", pa.table(pol, schema=_POLICY_SCHEMA))
    store.insert("failure_details", pa.table(det, schema=_DETAIL_SCHEMA))
    return pks


def _write_quarantine(store: Store, rejects: list[_Quarantined]) -> None:
    digests = [hashlib.sha256(q.source.encode() + b"\0" + q.data).hexdigest() for q in rejects]
    known = store.existing_quarantine(digests)
    rows: dict[str, list[Any]] = {k: [] for k in _QUARANTINE_SCHEMA.names}
    pk = store.next_pk("quarantine", "quarantine_pk")
    now = now_utc()
    for digest, q in zip(digests, rejects, strict=True):
        if digest in known:
            continue
        known.add(digest)
        for key, value in (("quarantine_pk", pk), ("sha256", digest), ("source", q.source),
                           ("reason", q.reason), ("received_at", now), ("size", len(q.data)),
                           ("raw_gzip", gzip.compress(q.data, 6))):
            rows[key].append(value)
        pk += 1
    store.insert("quarantine", pa.table(rows, schema=_QUARANTINE_SCHEMA))


_S, _I, _TS = pa.string(), pa.int64(), pa.timestamp("us")
_REPORT_SCHEMA = pa.schema([
    ("report_pk", _I), ("organization_name", _S), ("report_id", _S), ("contact_info", _S),
    ("start_datetime", _TS), ("end_datetime", _TS), ("day", pa.date32()), ("source", _S),
    ("filename", _S), ("message_id", _S), ("header_report_domain", _S),
    ("header_submitter", _S), ("subject_report_id", _S), ("warnings", pa.list_(_S)),
    ("received_at", _TS),
])
_RAW_SCHEMA = pa.schema([("report_pk", _I), ("raw_gzip", pa.binary())])
_POLICY_SCHEMA = pa.schema([
    ("policy_pk", _I), ("report_pk", _I), ("policy_index", pa.int32()), ("day", pa.date32()),
    ("organization_name", _S), ("policy_type", _S), ("policy_domain", _S),
    ("policy_string", pa.list_(_S)), ("mx_host", pa.list_(_S)),
    ("successful_sessions", _I), ("failed_sessions", _I),
])
_DETAIL_SCHEMA = pa.schema([
    ("report_pk", _I), ("policy_pk", _I), ("day", pa.date32()), ("organization_name", _S),
    ("policy_type", _S), ("policy_domain", _S), ("result_type", _S), ("sending_mta_ip", _S),
    ("receiving_mx_hostname", _S), ("receiving_mx_helo", _S), ("receiving_ip", _S),
    ("failed_session_count", _I), ("additional_information", _S), ("failure_reason_code", _S),
])
_QUARANTINE_SCHEMA = pa.schema([
    ("quarantine_pk", _I), ("sha256", _S), ("source", _S), ("reason", _S),
    ("received_at", _TS), ("size", _I), ("raw_gzip", pa.binary()),
])
_REPORT_COLUMNS = _REPORT_SCHEMA.names
_POLICY_COLUMNS = _POLICY_SCHEMA.names
_DETAIL_COLUMNS = _DETAIL_SCHEMA.names
