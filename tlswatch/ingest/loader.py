"""The one writer to the store: validated reports in batches, duplicates counted, rejects
quarantined with their bytes and reason.

A report is identified by (organization-name, report-id); a report seen again, in the
same run or a later one, is counted as a duplicate and not stored twice.
"""

from __future__ import annotations

import collections
import gc
import gzip
import hashlib
import itertools
import logging
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyarrow as pa

from tlswatch.errors import ReportError
from tlswatch.ingest.decode import DEFAULT_LIMITS, Limits, decode
from tlswatch.ingest.sources import FileRef, Item, expand
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


class Prepared(NamedTuple):
    """One validated report as plain row tuples, keys not yet assigned (cheap to pickle)."""

    key: tuple[str, str]
    source: str
    report_row: tuple[Any, ...]
    raw_gzip: bytes
    policies: list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]


class Quarantined(NamedTuple):
    source: str
    reason: str
    data: bytes


def prepare(item: Item, limits: Limits) -> tuple[list[Prepared], list[Quarantined]]:
    """Read, decode, validate and flatten one input; runs in worker processes."""
    if isinstance(item, FileRef):
        good: list[Prepared] = []
        bad: list[Quarantined] = []
        for part in expand(item, max_bytes=limits.max_input_bytes):
            more_good, more_bad = prepare(part, limits)
            good += more_good
            bad += more_bad
        return good, bad
    if isinstance(item, ReportError):
        return [], [Quarantined(item.source, item.detail, b"")]
    try:
        documents = decode(item.data, source=item.source, filename=item.filename, limits=limits)
    except ReportError as exc:
        return [], [Quarantined(exc.source, exc.detail, item.data)]
    good = []
    bad = []
    for doc in documents:
        try:
            good.append(_flatten(validate(doc)))
        except ReportError as exc:
            bad.append(Quarantined(exc.source, exc.detail, item.data))
    return good, bad


def _prepare_chunk(items: list[Item], limits: Limits
                   ) -> list[tuple[list[Prepared], list[Quarantined]]]:
    return [prepare(item, limits) for item in items]


def _largest(sums: dict[tuple[Any, ...], int]) -> dict[tuple[Any, ...], str]:
    """For each group key (all but the last part), the policy type with the largest sum."""
    best: dict[tuple[Any, ...], tuple[int, str]] = {}
    for (*group, ptype), total in sums.items():
        key = tuple(group)
        if key not in best or total > best[key][0]:  # ties: the type listed first
            best[key] = (total, ptype)
    return {key: ptype for key, (_, ptype) in best.items()}


def _always(*_: str) -> bool:
    return True


def _counting_rule(vr: ValidReport) -> tuple[Callable[..., bool], Callable[..., bool],
                                             Callable[..., bool]]:
    """DESIGN.md's rule for one report: sum within a policy type, count the largest type.

    Returns predicates saying whether a (domain, type) policy row counts for successful and
    for failed sessions, and whether a (domain, result type, type) failure row counts.
    """
    policies = vr.report.policies
    if len(policies) == 1:
        return _always, _always, _always
    ok: dict[tuple[Any, ...], int] = collections.defaultdict(int)
    failed: dict[tuple[Any, ...], int] = collections.defaultdict(int)
    by_result: dict[tuple[Any, ...], int] = collections.defaultdict(int)
    for entry, facts in zip(policies, vr.policies, strict=True):
        ptype, domain = entry.policy.policy_type, facts.policy_domain
        ok[domain, ptype] += entry.summary.total_successful_session_count
        failed[domain, ptype] += entry.summary.total_failure_session_count
        for d in entry.failure_details or ():
            by_result[domain, d.result_type, ptype] += d.failed_session_count
    best_ok, best_failed, best_result = _largest(ok), _largest(failed), _largest(by_result)
    return (lambda domain, ptype: best_ok[(domain,)] == ptype,
            lambda domain, ptype: best_failed[(domain,)] == ptype,
            lambda domain, rtype, ptype: best_result[domain, rtype] == ptype)


def _flatten(vr: ValidReport) -> Prepared:
    r, c = vr.report, vr.container
    day = vr.start.date()
    counts_ok, counts_failed, counts_result = _counting_rule(vr)
    policies = []
    for entry, facts in zip(r.policies, vr.policies, strict=True):
        ptype, domain = entry.policy.policy_type, facts.policy_domain
        common = (day, r.organization_name, ptype, domain)
        summary = entry.summary
        details = [(*common, d.result_type, d.sending_mta_ip, d.receiving_mx_hostname,
                    d.receiving_mx_helo, d.receiving_ip, d.failed_session_count,
                    d.additional_information or d.additional_info_uri, d.failure_reason_code,
                    counts_result(domain, d.result_type, ptype))
                   for d in entry.failure_details or ()]
        policies.append(((*common, facts.policy_string, facts.mx_host,
                          summary.total_successful_session_count,
                          summary.total_failure_session_count,
                          counts_ok(domain, ptype), counts_failed(domain, ptype)), details))
    row = (r.organization_name, r.report_id, r.contact_info, vr.start, vr.end, day, vr.source,
           c.filename, c.message_id, c.report_domain, c.submitter, c.subject_report_id,
           vr.warnings)
    raw = vr.raw_gzip if vr.raw_gzip is not None else gzip.compress(vr.raw_json, 6)
    return Prepared((r.organization_name, r.report_id), vr.source, row, raw, policies)


class Loader:
    """Collects decoded reports and rejects, writing them to the store a batch at a time."""

    def __init__(self, store: Store, *, limits: Limits = DEFAULT_LIMITS,
                 batch_size: int = 2500) -> None:
        self.store = store
        self.limits = limits
        self.batch_size = batch_size
        self.result = IngestResult()
        self._reports: list[Prepared] = []
        self._quarantine: list[Quarantined] = []

    def add(self, item: Item) -> None:
        """Decode and validate one input here: good reports are queued, bad input quarantined."""
        self.take(*prepare(item, self.limits))

    def take(self, good: list[Prepared], bad: list[Quarantined]) -> None:
        """Queue the outcome of ``prepare`` (done here or in a worker process)."""
        self._reports.extend(good)
        for q in bad:
            log.info("rejected %s: %s", q.source, q.reason)
            self.result.rejected += 1
            self.result.rejections.append(Rejection(source=q.source, reason=q.reason))
        self._quarantine.extend(bad)
        if len(self._reports) >= self.batch_size:
            self.flush()

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

    def _drop_duplicates(self, reports: list[Prepared]) -> list[Prepared]:
        known = self.store.existing_reports([r.key for r in reports])
        fresh = []
        for report in reports:
            if report.key in known:
                self.result.duplicates += 1
                self.result.duplicate_reports.append(
                    {"source": report.source, "organization_name": report.key[0],
                     "report_id": report.key[1]})
                continue
            known.add(report.key)
            fresh.append(report)
        return fresh


def load(items: Iterable[Item], store: Store, *, limits: Limits = DEFAULT_LIMITS,
         batch_size: int = 2500, workers: int = 1,
         progress: Callable[[int], None] | None = None) -> IngestResult:
    """Decode, validate and store every input; return what happened to each.

    With ``workers`` > 1, inputs past the first chunk are decoded and validated in that many
    worker processes while this process writes; small ingests never start a worker.
    """
    loader = Loader(store, limits=limits, batch_size=batch_size)
    # Parsed reports hold no reference cycles; the cyclic collector scanning the growing
    # batch again and again cost a third of the ingest time (bench/ingest_bench.py).
    collecting = gc.isenabled()
    gc.disable()
    try:
        chunks = _chunks(items, CHUNK)
        first = next(chunks, [])
        if workers > 1 and len(first) == CHUNK:
            _load_parallel(loader, first, chunks, workers, progress)
        else:
            for chunk in (first, *chunks):
                for item in chunk:
                    loader.add(item)
                if progress is not None:
                    progress(len(chunk))
        loader.flush()
    finally:
        if collecting:
            gc.enable()
    return loader.result


CHUNK = 250


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _load_parallel(loader: Loader, first: list[Item], rest: Iterator[list[Item]], workers: int,
                   progress: Callable[[int], None] | None) -> None:
    """Keep at most two chunks per worker in flight, taking results in input order."""
    # fork: workers inherit the imported modules and start in milliseconds.  They run only
    # decode/validate (pure Python), never DuckDB, whose threads exist in this process.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: collections.deque[tuple[Future[Any], int]] = collections.deque()
        for chunk in itertools.chain([first], rest):
            pending.append((pool.submit(_prepare_chunk, chunk, loader.limits), len(chunk)))
            while len(pending) > 2 * workers:
                _take(loader, pending.popleft(), progress)
        while pending:
            _take(loader, pending.popleft(), progress)


def _take(loader: Loader, job: tuple[Future[Any], int],
          progress: Callable[[int], None] | None) -> None:
    future, size = job
    for good, bad in future.result():
        loader.take(good, bad)
    if progress is not None:
        progress(size)


def _write_reports(store: Store, reports: list[Prepared]) -> list[int]:
    first = store.next_pk("reports", "report_pk")
    policy_pk = store.next_pk("policies", "policy_pk")
    now = now_utc()
    pks = list(range(first, first + len(reports)))
    rep: list[tuple[Any, ...]] = []
    pol: list[tuple[Any, ...]] = []
    det: list[tuple[Any, ...]] = []
    for pk, prepared in zip(pks, reports, strict=True):
        rep.append((pk, *prepared.report_row, now))
        for index, (policy_row, details) in enumerate(prepared.policies):
            pol.append((policy_pk, pk, index, *policy_row))
            det.extend((pk, policy_pk, *d) for d in details)
            policy_pk += 1
    store.insert("reports", _columns(rep, _REPORT_SCHEMA))
    store.insert("report_raw", pa.table({"report_pk": pks,
                                         "raw_gzip": [r.raw_gzip for r in reports]},
                                        schema=_RAW_SCHEMA))
    store.insert("policies", _columns(pol, _POLICY_SCHEMA))
    store.insert_failure_details(_columns(det, _DETAIL_SCHEMA))
    return pks


def _columns(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    """Row tuples to an Arrow table (transposed in C, not a Python loop per cell)."""
    if not rows:
        return schema.empty_table()
    columns = list(zip(*rows, strict=True))
    return pa.table([pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)],
                    schema=schema)


def _write_quarantine(store: Store, rejects: list[Quarantined]) -> None:
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
    ("successful_sessions", _I), ("failed_sessions", _I), ("counted_successful", pa.bool_()),
    ("counted_failed", pa.bool_()),
])
_DETAIL_SCHEMA = pa.schema([
    ("report_pk", _I), ("policy_pk", _I), ("day", pa.date32()), ("organization_name", _S),
    ("policy_type", _S), ("policy_domain", _S), ("result_type", _S), ("sending_mta_ip", _S),
    ("receiving_mx_hostname", _S), ("receiving_mx_helo", _S), ("receiving_ip", _S),
    ("failed_session_count", _I), ("additional_information", _S), ("failure_reason_code", _S),
    ("counted", pa.bool_()),
])
_QUARANTINE_SCHEMA = pa.schema([
    ("quarantine_pk", _I), ("sha256", _S), ("source", _S), ("reason", _S),
    ("received_at", _TS), ("size", _I), ("raw_gzip", pa.binary()),
])
