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
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tlswatch.dnsname import is_domain
from tlswatch.errors import StoreError, TlsWatchError
from tlswatch.ingest.duplicates import Plan, Stored, plan, quarantined
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
from tlswatch.ingest.spool import Entry, Spool
from tlswatch.store import Store, now_utc, rollups
from tlswatch.tenants.registry import accepted

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
    conflicts: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    retry: list[Rejection] = field(default_factory=list)  # not quarantined: try again later
    conflict_reports: list[Rejection] = field(default_factory=list)
    duplicate_reports: list[dict[str, str]] = field(default_factory=list)
    report_pks: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "conflicts": self.conflicts,
            "rejections": [{"source": r.source, "reason": r.reason} for r in self.rejections],
            "conflict_reports": [{"source": r.source, "reason": r.reason}
                                 for r in self.conflict_reports],
            "duplicate_reports": self.duplicate_reports,
            "retry_later": [{"source": r.source, "reason": r.reason} for r in self.retry],
        }


class Loader:
    """Collects prepared reports and rejects, writing them to the store a batch at a time.

    A batch is bounded by count and by bytes.  A batch that the store refuses (a value no
    check foresaw) is split in halves until the report at fault is quarantined alone and
    every other one is stored: one poisoned report never stops the rest.
    """

    def __init__(self, store: Store, *, options: Options = DEFAULT_OPTIONS,
                 batch_size: int = 2500, max_batch_bytes: int = 64 * 1024 * 1024) -> None:
        self.store = store
        self.options = options
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.result = IngestResult()
        self._reports: list[Prepared] = []
        self._quarantine: list[Quarantined] = []
        self._bytes = 0
        self._fresh: list[tuple[str, str]] = []  # the keys the batch being written adds

    def add(self, item: Item) -> None:
        """Prepare one input here: good reports are queued, bad input quarantined."""
        self.take(*prepare(item, self.options))

    def take(self, good: list[Prepared], bad: list[Quarantined]) -> None:
        """Queue the outcome of ``prepare`` (done here or in a worker process)."""
        self._reports.extend(good)
        self._bytes += sum(_weight(r) for r in good) + sum(len(q.data) for q in bad)
        for q in bad:
            self._reject(q)
        if len(self._reports) >= self.batch_size or self._bytes >= self.max_batch_bytes:
            self.flush()

    def _reject(self, q: Quarantined) -> None:
        if q.transient:
            log.info("%s: not loaded yet %r: %r (tried again later)", _via(q.source),
                     q.source, q.reason)
        else:
            log.info("%s: refused %r: %r", _via(q.source), q.source, q.reason)
        rejection = Rejection(source=q.source, reason=q.reason)
        self.result.rejected += 1
        self.result.rejections.append(rejection)
        if q.transient:
            self.result.retry.append(rejection)
        else:
            self._quarantine.append(q)

    def flush(self) -> None:
        """Write what is queued, in one transaction when the store takes it whole."""
        reports, self._reports = self._reports, []
        rejects, self._quarantine = self._quarantine, []
        self._bytes = 0
        if reports or rejects:
            self._write_or_split(reports, rejects)

    def _write_or_split(self, reports: list[Prepared], rejects: list[Quarantined], *,
                        again: bool = False) -> None:
        self._fresh = []
        try:
            with self.store.transaction():
                outcome, pks = self._write(reports, rejects)
        except Exception as exc:
            if (isinstance(exc, TlsWatchError) and not exc.terminal) or not reports:
                raise
            if not again and self._fresh and self.store.existing_reports(self._fresh):
                # Another writer stored one of these reports after they were looked up
                # (its unique key refused ours): look again, it is a duplicate now.
                self._write_or_split(reports, rejects, again=True)
                return
            if len(reports) == 1:
                log.warning("could not store %s: %r", reports[0].source, exc)
                self._reject(quarantined(reports[0], f"could not be stored "
                                                     f"({type(exc).__name__}: {exc})"[:500]))
                self._write_or_split([], [*rejects, self._quarantine.pop()])
                return
            half = len(reports) // 2
            self._write_or_split(reports[:half], rejects)
            self._write_or_split(reports[half:], [])
            return
        self.result.report_pks.extend(pks)
        for pk, report in zip(pks, outcome.fresh, strict=True):
            log.info("%s: stored report %d, %r report-id %r from %r", report.report.received_via,
                     pk, report.key[0], report.key[1], report.source)
        self._count(outcome)

    def _write(self, reports: list[Prepared],
               rejects: list[Quarantined]) -> tuple[Plan, list[int]]:
        stored = {key: Stored(row["report_pk"], row["content_sha256"], row["dkim_result"],
                              row["source"], row["dkim_domain"], row["contact_info"])
                  for key, row in self.store.existing_reports([r.key for r in reports]).items()}
        outcome = plan(reports, stored)
        self._fresh = [r.key for r in outcome.fresh]
        removed = rollups.forget(self.store, list(outcome.displaced))
        displaced = [Quarantined(f"{row['source']} (stored report {row['report_pk']})",
                                 outcome.displaced[row["report_pk"]],
                                 gzip.decompress(row["raw_gzip"]))
                     for row in self.store.remove_reports(list(outcome.displaced))]
        pks = _write_reports(self.store, outcome.fresh) if outcome.fresh else []
        rollups.add(self.store, pks, removed)
        quarantine = [*rejects, *outcome.refused, *displaced]
        if quarantine:
            _write_quarantine(self.store, quarantine)
        outcome.refused += displaced
        return outcome, pks

    def _count(self, outcome: Plan) -> None:
        """Results are counted once the batch is committed (a split batch is not counted twice)."""
        self.result.accepted += len(outcome.fresh)
        self.result.duplicates += len(outcome.duplicates)
        self.result.duplicate_reports += [
            {"source": r.source, "organization_name": r.key[0], "report_id": r.key[1]}
            for r in outcome.duplicates]
        for q in outcome.refused:
            log.warning("%s: refused %r: %r", _via(q.source), q.source, q.reason)
            self.result.conflicts += 1
            self.result.conflict_reports.append(Rejection(q.source, q.reason))


def _via(source: str) -> str:
    """How an input came: spooled ones are named ``<via>:<spool id>``, files by path."""
    via, colon, _ = source.partition(":")
    return via if colon and via in _VIAS else "file"


_VIAS = frozenset({"smtp", "lmtp", "http", "upload", "imap", "spool", "stdin"})


def _weight(report: Prepared) -> int:
    """Roughly what a queued report holds in memory: its text and its rows."""
    rows = sum(1 + len(details) for _, details in report.policies)
    return len(report.raw_gzip) + 300 * (1 + rows)


def load(items: Iterable[Item], store: Store, *, options: Options = DEFAULT_OPTIONS,
         batch_size: int = 2500, max_batch_bytes: int = 64 * 1024 * 1024, workers: int = 1,
         progress: Callable[[int], None] | None = None) -> IngestResult:
    """Prepare and store every input; return what happened to each.

    With ``workers`` > 1, inputs past the first chunk are prepared in that many worker
    processes while this process writes; small ingests never start a worker.
    """
    options = accepted(store, options)  # provider mode: the domains tenants own
    loader = Loader(store, options=options, batch_size=batch_size,
                    max_batch_bytes=max_batch_bytes)
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


def drain(spool: Spool, store_path: Path | str, *, options: Options = DEFAULT_OPTIONS,
          limit: int = 2500, max_bytes: int = 64 * 1024 * 1024, lock_timeout: float = 10.0,
          retry_delay: float = 300.0, retry_for: float = 86400.0) -> IngestResult | None:
    """Load up to ``limit`` waiting spool entries (and about ``max_bytes``), then file them.

    Entries move to ``done/`` or ``failed/`` only after the commit; a crash in between
    loads them again, and de-duplication counts them once.  Entries that failed for a
    passing reason (a DKIM key lookup) are deferred by ``retry_delay`` seconds, for at most
    ``retry_for`` seconds after receipt; then they fail like any other refusal.  An entry
    that cannot be read, or that breaks loading in a way nothing foresaw, is filed in
    ``failed/`` alone: no entry blocks the others or is retried forever.
    """
    entries, items = _read_pending(spool, limit, max_bytes)
    if not entries:
        return None
    filing = {"retry_delay": retry_delay, "retry_for": retry_for}
    try:
        return _load_entries(spool, store_path, entries, items, options=options,
                             max_bytes=max_bytes, lock_timeout=lock_timeout, **filing)
    except Exception as exc:
        if _not_theirs(exc) or len(entries) == 1:
            raise  # a busy database: everything waits in the spool
        log.warning("a batch of %d failed to load (%r); loading its entries one by one",
                    len(entries), exc)
    result = IngestResult()
    for entry, item in zip(entries, items, strict=True):
        try:
            more = _load_entries(spool, store_path, [entry], [item], options=options,
                                 max_bytes=max_bytes, lock_timeout=lock_timeout, **filing)
        except Exception as exc:
            if _not_theirs(exc):
                raise
            log.exception("loading %s failed; filed in failed/", item.source)
            reason = f"could not be loaded ({type(exc).__name__}: {str(exc)[:300]})"
            spool.mark_failed(entry, f"{item.source}: {reason}")
            spool.sync()
            more = IngestResult(rejected=1, rejections=[Rejection(item.source, reason)])
        _merge(result, more)
    return result


def _load_entries(spool: Spool, store_path: Path | str, entries: list[Entry], items: list[Input], *,
                  options: Options, max_bytes: int, lock_timeout: float, retry_delay: float,
                  retry_for: float) -> IngestResult:
    with Store.open(store_path, lock_timeout=lock_timeout) as store:
        result = load(items, store, options=options, batch_size=len(items) + 1,
                      max_batch_bytes=max_bytes)
    _file(spool, entries, items, result, retry_delay=retry_delay, retry_for=retry_for)
    return result


def _not_theirs(exc: Exception) -> bool:
    """An error no entry caused: a passing one, or a database that cannot be used (a refused
    login, a missing database): the entries wait in the spool rather than fail."""
    return isinstance(exc, StoreError) or (isinstance(exc, TlsWatchError) and not exc.terminal)


def _merge(into: IngestResult, more: IngestResult) -> None:
    for name in ("accepted", "duplicates", "rejected", "conflicts"):
        setattr(into, name, getattr(into, name) + getattr(more, name))
    for name in ("rejections", "retry", "conflict_reports", "duplicate_reports", "report_pks"):
        getattr(into, name).extend(getattr(more, name))


def _read_pending(spool: Spool, limit: int, max_bytes: int) -> tuple[list[Entry], list[Input]]:
    """The due entries, up to ``limit`` and about ``max_bytes``; unreadable ones are filed."""
    entries: list[Entry] = []
    items: list[Input] = []
    total = 0
    for entry in spool.pending(limit):
        try:
            meta, data = spool.read(entry)
        except OSError as exc:  # changed between the listing and the read
            spool.file_bad(entry, f"unreadable ({exc.strerror or exc})")
            continue
        domain = meta.get("domain")
        entries.append(entry)
        items.append(Input(source=f"{meta.get('via', 'spool')}:{entry.id}", data=data,
                           filename=meta.get("filename"), via=str(meta.get("via", "spool")),
                           domain=domain if isinstance(domain, str) and is_domain(domain)
                           else None))
        total += len(data)
        if total >= max_bytes:
            break
    return entries, items


def _file(spool: Spool, entries: list[Entry], items: list[Input], result: IngestResult, *,
          retry_delay: float, retry_for: float) -> None:
    """Move each loaded entry to done/ or failed/, or leave it to be tried again."""
    retry = {r.source: r.reason for r in result.retry}
    refused = [*result.rejections, *result.conflict_reports]
    for entry, item in zip(entries, items, strict=True):
        waiting = [f"{s}: {r}" for s, r in retry.items() if _same_input(s, item.source)]
        if waiting and _age(entry) < retry_for:
            spool.defer(entry, retry_delay)
            continue
        reasons = [f"{r.source}: {r.reason}" for r in refused if _same_input(r.source, item.source)]
        if waiting:
            reasons.append(f"still failing {retry_for / 3600:g} hours after receipt; given up")
        if reasons:
            spool.mark_failed(entry, "\n".join(reasons))
        else:
            spool.mark_done(entry)
    spool.sync()


def _age(entry: Entry) -> float:
    """Seconds since the entry was received (renames keep the file's mtime)."""
    try:
        return time.time() - entry.path.stat().st_mtime
    except OSError:
        return 0.0


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
    policy_first = store.next_pk("policies", "policy_pk")
    pks = list(range(first, first + len(reports)))
    # Rows are tabled as prepared; the keys are then set a column at a time (a Python
    # ``_replace`` per row was a fifth of the writer's time).
    pol = [policy for r in reports for policy, _ in r.policies]
    det = [d for r in reports for _, details in r.policies for d in details]
    policy_pks = pa.array(range(policy_first, policy_first + len(pol)), _I)
    policies_per_report = [len(r.policies) for r in reports]
    details_per_policy = [len(details) for r in reports for _, details in r.policies]
    report_tab = _keyed(to_table(ReportRow, [r.report for r in reports], REPORT_SCHEMA),
                        report_pk=pa.array(pks, _I),
                        received_at=pa.repeat(pa.scalar(now_utc(), _TS), len(reports)))
    store.insert("reports", report_tab)
    store.insert("report_raw", pa.table({"report_pk": pks,
                                         "raw_gzip": [r.raw_gzip for r in reports]},
                                        schema=_RAW_SCHEMA))
    policy_report_pks = _repeat(pks, policies_per_report)
    store.insert("policies", _keyed(to_table(PolicyRow, pol, POLICY_SCHEMA), policy_pk=policy_pks,
                                    report_pk=policy_report_pks))
    store.insert_failure_details(_keyed(
        to_table(DetailRow, det, DETAIL_SCHEMA),
        report_pk=_repeat(policy_report_pks.to_pylist(), details_per_policy),
        policy_pk=_repeat(policy_pks.to_pylist(), details_per_policy)))
    return pks


def _repeat(values: list[int], counts: list[int]) -> pa.Array:
    """Each value as many times as its count, in order."""
    offsets = pa.array([0, *itertools.accumulate(counts)], pa.int32())
    lists = pa.ListArray.from_arrays(offsets, pa.nulls(offsets[-1].as_py(), pa.int8()))
    return pc.take(pa.array(values, _I), pc.list_parent_indices(lists))


def _keyed(table: pa.Table, **columns: pa.Array) -> pa.Table:
    """The table with these columns replaced (same names, same places)."""
    for name, values in columns.items():
        index = table.schema.get_field_index(name)
        table = table.set_column(index, table.schema.field(index), values)
    return table


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
