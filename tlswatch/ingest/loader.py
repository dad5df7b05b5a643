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
from pathlib import Path
from typing import Any

import pyarrow as pa

from tlswatch.dnsname import is_domain
from tlswatch.ingest.prepare import (
    DEFAULT_OPTIONS,
    Options,
    Outcome,
    Prepared,
    Quarantined,
    prepare,
    prepare_chunk,
)
from tlswatch.ingest.rows import (
    DETAIL_SCHEMA,
    POLICY_SCHEMA,
    REPORT_SCHEMA,
    DetailRow,
    PolicyRow,
    ReportRow,
    to_table,
)
from tlswatch.ingest.sources import Input, Item
from tlswatch.ingest.spool import Spool
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
    retry: list[Rejection] = field(default_factory=list)  # not quarantined: try again later
    duplicate_reports: list[dict[str, str]] = field(default_factory=list)
    report_pks: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "rejections": [{"source": r.source, "reason": r.reason} for r in self.rejections],
            "duplicate_reports": self.duplicate_reports,
            "retry_later": [{"source": r.source, "reason": r.reason} for r in self.retry],
        }


class Loader:
    """Collects prepared reports and rejects, writing them to the store a batch at a time."""

    def __init__(self, store: Store, *, options: Options = DEFAULT_OPTIONS,
                 batch_size: int = 2500) -> None:
        self.store = store
        self.options = options
        self.batch_size = batch_size
        self.result = IngestResult()
        self._reports: list[Prepared] = []
        self._quarantine: list[Quarantined] = []

    def add(self, item: Item) -> None:
        """Prepare one input here: good reports are queued, bad input quarantined."""
        self.take(*prepare(item, self.options))

    def take(self, good: list[Prepared], bad: list[Quarantined]) -> None:
        """Queue the outcome of ``prepare`` (done here or in a worker process)."""
        self._reports.extend(good)
        for q in bad:
            log.info("rejected %s: %s", q.source, q.reason)
            rejection = Rejection(source=q.source, reason=q.reason)
            self.result.rejected += 1
            self.result.rejections.append(rejection)
            if q.transient:
                self.result.retry.append(rejection)
            else:
                self._quarantine.append(q)
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


def load(items: Iterable[Item], store: Store, *, options: Options = DEFAULT_OPTIONS,
         batch_size: int = 2500, workers: int = 1,
         progress: Callable[[int], None] | None = None) -> IngestResult:
    """Prepare and store every input; return what happened to each.

    With ``workers`` > 1, inputs past the first chunk are prepared in that many worker
    processes while this process writes; small ingests never start a worker.
    """
    loader = Loader(store, options=options, batch_size=batch_size)
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


def drain(spool: Spool, store_path: Path, *, options: Options = DEFAULT_OPTIONS,
          limit: int = 2500, lock_timeout: float = 10.0,
          retry_delay: float = 300.0) -> IngestResult | None:
    """Load up to ``limit`` waiting spool entries in one transaction, then file them.

    Entries move to ``done/`` or ``failed/`` only after the commit; a crash in between
    loads them again, and de-duplication counts them once.  Entries that failed for a
    passing reason (a DKIM key lookup) are deferred by ``retry_delay`` seconds.
    """
    entries = spool.pending(limit)
    if not entries:
        return None
    items: list[Item] = []
    for entry in entries:
        meta, data = spool.read(entry)
        domain = meta.get("domain")
        items.append(Input(source=f"{meta.get('via', 'spool')}:{entry.id}", data=data,
                           filename=meta.get("filename"), via=str(meta.get("via", "spool")),
                           domain=domain if isinstance(domain, str) and is_domain(domain)
                           else None))
    with Store.open(store_path, lock_timeout=lock_timeout) as store:
        result = load(items, store, options=options, batch_size=len(items) + 1)
    retry = {r.source for r in result.retry}
    for entry, item in zip(entries, items, strict=True):
        assert isinstance(item, Input)
        if any(_same_input(source, item.source) for source in retry):
            spool.defer(entry, retry_delay)
            continue
        reasons = [f"{r.source}: {r.reason}" for r in result.rejections
                   if _same_input(r.source, item.source)]
        if reasons:
            spool.mark_failed(entry, "\n".join(reasons))
        else:
            spool.mark_done(entry)
    spool.sync()
    return result


def _same_input(source: str, input_source: str) -> bool:
    return source == input_source or source.startswith(input_source + " [")


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
        pending: collections.deque[tuple[Future[list[Outcome]], int]] = collections.deque()
        for chunk in itertools.chain([first], rest):
            pending.append((pool.submit(prepare_chunk, chunk, loader.options), len(chunk)))
            while len(pending) > 2 * workers:
                _take(loader, pending.popleft(), progress)
        while pending:
            _take(loader, pending.popleft(), progress)


def _take(loader: Loader, job: tuple[Future[list[Outcome]], int],
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
    rep: list[ReportRow] = []
    pol: list[PolicyRow] = []
    det: list[DetailRow] = []
    for pk, prepared in zip(pks, reports, strict=True):
        rep.append(prepared.report._replace(report_pk=pk, received_at=now))
        for policy, details in prepared.policies:
            pol.append(policy._replace(policy_pk=policy_pk, report_pk=pk))
            det.extend(d._replace(report_pk=pk, policy_pk=policy_pk) for d in details)
            policy_pk += 1
    store.insert("reports", to_table(ReportRow, rep, REPORT_SCHEMA))
    store.insert("report_raw", pa.table({"report_pk": pks,
                                         "raw_gzip": [r.raw_gzip for r in reports]},
                                        schema=_RAW_SCHEMA))
    store.insert("policies", to_table(PolicyRow, pol, POLICY_SCHEMA))
    store.insert_failure_details(to_table(DetailRow, det, DETAIL_SCHEMA))
    return pks


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
_RAW_SCHEMA = pa.schema([("report_pk", _I), ("raw_gzip", pa.binary())])
_QUARANTINE_SCHEMA = pa.schema([
    ("quarantine_pk", _I), ("sha256", _S), ("source", _S), ("reason", _S),
    ("received_at", _TS), ("size", _I), ("raw_gzip", pa.binary()),
])
