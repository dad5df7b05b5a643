"""The one writer to the store: validated reports in batches, duplicates counted, rejects
quarantined with their bytes and reason.

A report is identified by (organization-name, report-id); a report seen again, in the
same run or a later one, is counted as a duplicate and not stored twice.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import gzip
import hashlib
import itertools
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pyarrow as pa

from tlswatch.errors import TlsWatchError
from tlswatch.ingest.batch import EMPTY, Chunk, join, keyed, split, tabulate
from tlswatch.ingest.duplicates import Candidate, Plan, Stored, plan
from tlswatch.ingest.prepare import DEFAULT_OPTIONS, Options, Prepared, Quarantined, prepare
from tlswatch.ingest.sources import Item
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

    Reports wait as Arrow tables (``batch.Chunk``): prepared here they are tabled a chunk
    at a time, worker processes send them tabled.  A batch is bounded by count and by
    bytes.  A batch that the store refuses (a value no check foresaw) is split in halves
    until the report at fault is quarantined alone and every other one is stored: one
    poisoned report never stops the rest.
    """

    def __init__(self, store: Store, *, options: Options = DEFAULT_OPTIONS,
                 batch_size: int = 5000, max_batch_bytes: int = 64 * 1024 * 1024) -> None:
        self.store = store
        self.options = options
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.result = IngestResult()
        self._prepared: list[Prepared] = []  # prepared here, not tabled yet
        self._chunks: list[Chunk] = []
        self._quarantine: list[Quarantined] = []
        self._reports = 0
        self._bytes = 0
        self._fresh: list[tuple[str, str]] = []  # the keys the batch being written adds

    def take(self, good: list[Prepared], bad: list[Quarantined]) -> None:
        """Queue the outcome of ``prepare`` done in this process."""
        self._prepared += good
        self._reports += len(good)
        self._bytes += sum(_weight(r) for r in good) + sum(len(q.data) for q in bad)
        for q in bad:
            self._reject(q)
        if len(self._prepared) >= CHUNK:
            self._table_prepared()
        self._flush_if_full()

    def take_chunk(self, chunk: Chunk, bad: list[Quarantined]) -> None:
        """Queue tabled reports (``_prepare_tabled``); a batch ends at ``batch_size``
        reports exactly, so batches end in the same places whoever prepared the chunks."""
        self._table_prepared()  # keep the input order
        for q in bad:
            self._reject(q)
        self._bytes += sum(len(q.data) for q in bad)
        while chunk.reports.num_rows:
            room = max(self.batch_size - self._reports, 1)
            part, chunk = split(chunk, room) if chunk.reports.num_rows > room else (chunk, EMPTY)
            self._chunks.append(part)
            self._reports += part.reports.num_rows
            self._bytes += part.nbytes
            self._flush_if_full()
        self._flush_if_full()

    def _table_prepared(self) -> None:
        if self._prepared:
            chunk, bad = tabulate(self._prepared)
            self._prepared = []
            self._chunks.append(chunk)
            for q in bad:
                self._reports -= 1
                self._reject(q)

    def _flush_if_full(self) -> None:
        if self._reports >= self.batch_size or self._bytes >= self.max_batch_bytes:
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
        self._table_prepared()
        chunk, self._chunks = join(self._chunks), []
        rejects, self._quarantine = self._quarantine, []
        self._reports = self._bytes = 0
        if chunk.reports.num_rows or rejects:
            self._write_or_split(Batch(chunk), list(range(chunk.reports.num_rows)), rejects)

    def _write_or_split(self, batch: Batch, positions: list[int],
                        rejects: list[Quarantined], *, again: bool = False) -> None:
        self._fresh = []
        try:
            with self.store.transaction():
                outcome, pks, displaced = self._write(batch, positions, rejects)
        except Exception as exc:
            if (isinstance(exc, TlsWatchError) and not exc.terminal) or not positions:
                raise
            if not again and self._fresh and self.store.existing_reports(self._fresh):
                # Another writer stored one of these reports after they were looked up
                # (its unique key refused ours): look again, it is a duplicate now.
                self._write_or_split(batch, positions, rejects, again=True)
                return
            if len(positions) == 1:
                (alone,) = batch.candidates(positions)
                log.warning("could not store %s: %r", alone.source, exc)
                self._reject(batch.quarantined(alone, f"could not be stored "
                                                      f"({type(exc).__name__}: {exc})"[:500]))
                self._write_or_split(batch, [], [*rejects, self._quarantine.pop()])
                return
            half = len(positions) // 2
            self._write_or_split(batch, positions[:half], rejects)
            self._write_or_split(batch, positions[half:], [])
            return
        self.result.report_pks.extend(pks)
        if log.isEnabledFor(logging.INFO):
            vias = batch.chunk.reports["received_via"].to_pylist()
            for pk, report in zip(pks, outcome.fresh, strict=True):
                log.info("%s: stored report %d, %r report-id %r from %r",
                         vias[report.position], pk, report.key[0], report.key[1],
                         report.source)
        self._count(outcome, displaced)

    def _write(self, batch: Batch, positions: list[int],
               rejects: list[Quarantined]) -> tuple[Plan, list[int], list[Quarantined]]:
        candidates = batch.candidates(positions)
        stored = {key: Stored(row["report_pk"], row["content_sha256"], row["dkim_result"],
                              row["source"], row["dkim_domain"], row["contact_info"])
                  for key, row in self.store.existing_reports(
                      [c.key for c in candidates]).items()}
        outcome = plan(candidates, stored)
        self._fresh = [r.key for r in outcome.fresh]
        removed = rollups.forget(self.store, list(outcome.displaced))
        displaced = [Quarantined(f"{row['source']} (stored report {row['report_pk']})",
                                 outcome.displaced[row["report_pk"]],
                                 gzip.decompress(row["raw_gzip"]))
                     for row in self.store.remove_reports(list(outcome.displaced))]
        fresh = [r.position for r in outcome.fresh]
        pks, pairs = _write_reports(self.store, batch.chunk, fresh) if fresh else ([], [])
        rollups.add(self.store, pks, removed, pairs)
        quarantine = [*rejects, *(batch.quarantined(c, why) for c, why in outcome.refused),
                      *displaced]
        if quarantine:
            _write_quarantine(self.store, quarantine)
        return outcome, pks, displaced

    def _count(self, outcome: Plan, displaced: list[Quarantined]) -> None:
        """Results are counted once the batch is committed (a split batch is not counted twice)."""
        self.result.accepted += len(outcome.fresh)
        self.result.duplicates += len(outcome.duplicates)
        self.result.duplicate_reports += [
            {"source": r.source, "organization_name": r.key[0], "report_id": r.key[1]}
            for r in outcome.duplicates]
        refused = [(c.source, why) for c, why in outcome.refused]
        refused += [(q.source, q.reason) for q in displaced]
        for source, reason in refused:
            log.warning("%s: refused %r: %r", _via(source), source, reason)
            self.result.conflicts += 1
            self.result.conflict_reports.append(Rejection(source, reason))


_CANDIDATE_COLUMNS = ("organization_name", "report_id", "source", "content_sha256",
                      "dkim_result", "dkim_domain", "contact_info")


class Batch:
    """A chunk being written, and what de-duplication needs of its reports."""

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        columns = [chunk.reports[name].to_pylist() for name in _CANDIDATE_COLUMNS]
        self._candidates = [Candidate((org, rid), source, digest, result, domain, contact, at)
                            for at, (org, rid, source, digest, result, domain, contact)
                            in enumerate(zip(*columns, strict=True))]

    def candidates(self, positions: list[int]) -> list[Candidate]:
        return [self._candidates[p] for p in positions]

    def quarantined(self, candidate: Candidate, reason: str) -> Quarantined:
        """A report of the batch as a quarantine entry (its JSON text as received)."""
        raw = self.chunk.reports["raw_gzip"][candidate.position].as_py()
        return Quarantined(candidate.source, reason, gzip.decompress(raw))


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
         batch_size: int = 5000, max_batch_bytes: int = 64 * 1024 * 1024, workers: int = 1,
         progress: Callable[[int], None] | None = None) -> IngestResult:
    """Prepare and store every input; return what happened to each.

    With ``workers`` > 1, inputs past the first chunk are prepared in that many worker
    processes while this process writes; small ingests never start a worker.
    """
    # Arrow's buffers from the C library's allocator: mimalloc (pyarrow's default) keeps
    # the pages a batch frees for later, about 15 MB at the peak of a 20,000-report ingest
    # (bench/ingest_bench.py), for no speed that shows.  Workers inherit it.
    pa.set_memory_pool(pa.system_memory_pool())
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
        else:  # the same chunks as the workers' (so batches end in the same places)
            for chunk in (first, *chunks):
                loader.take_chunk(*_prepare_tabled(chunk, loader.options))
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
    """Keep up to a batch of chunks in flight (at least two per worker), taking results in
    input order: while this process writes a batch, the workers prepare the next one
    instead of waiting for it to ask (so at most about two batches are held at once)."""
    # fork: workers inherit the imported modules and start in milliseconds.  They run only
    # decode/validate (pure Python) and Arrow, never DuckDB, whose threads exist here.
    context = multiprocessing.get_context("fork")
    # The writer's engine on one thread: the workers need the cores more (measured on two
    # cores: 7 % faster, 10 MB less).
    with loader.store.one_thread(), \
            ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                initializer=_as_batch_work) as pool:
        pending: collections.deque[tuple[Future[tuple[Chunk, list[Quarantined]]], int]] = \
            collections.deque()
        ahead = max(2 * workers, loader.batch_size // CHUNK)
        for chunk in itertools.chain([first], rest):
            pending.append((pool.submit(_prepare_tabled, chunk, loader.options), len(chunk)))
            while len(pending) > ahead:
                _take(loader, pending.popleft(), progress)
        while pending:
            _take(loader, pending.popleft(), progress)


def _as_batch_work() -> None:
    """In a worker: tell the scheduler it is batch work (Linux's ``SCHED_BATCH``).

    The writer is the one stage that cannot be shared out: woken while a worker runs, it is
    not made to wait behind it.  The workers keep a fair share of the cores otherwise; a
    lower priority (niceness 10) starved them behind any other busy process on the machine,
    and an ingest then took 3 to 4 times as long (``bench/ingest_bench.py --busy 2``)."""
    with contextlib.suppress(AttributeError, OSError):  # no such policy on this system
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def _prepare_tabled(items: list[Item], options: Options) -> tuple[Chunk, list[Quarantined]]:
    """In a worker: prepare a chunk of inputs and table the good reports."""
    good: list[Prepared] = []
    bad: list[Quarantined] = []
    for item in items:
        more_good, more_bad = prepare(item, options)
        good += more_good
        bad += more_bad
    chunk, unfit = tabulate(good)
    return chunk, bad + unfit


def _take(loader: Loader, job: tuple[Future[tuple[Chunk, list[Quarantined]]], int],
          progress: Callable[[int], None] | None) -> None:
    future, size = job
    loader.take_chunk(*future.result())
    if progress is not None:
        progress(size)


def _write_reports(store: Store, chunk: Chunk, positions: list[int]
                   ) -> tuple[list[int], list[tuple[date, str]]]:
    """Insert the reports at these positions of the chunk; their new keys, in order, and
    the (day, policy domain) pairs of their policy entries."""
    rows = keyed(chunk, positions, store.next_pk("reports", "report_pk"),
                 store.next_pk("policies", "policy_pk"), now_utc())
    store.insert("reports", rows.reports)
    store.insert("report_raw", rows.raw)
    store.insert("policies", rows.policies)
    store.insert_failure_details(rows.details)
    pairs = rows.policies.group_by(["day", "policy_domain"]).aggregate([])
    return (rows.reports["report_pk"].to_pylist(),
            list(zip(pairs["day"].to_pylist(), pairs["policy_domain"].to_pylist(), strict=True)))


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
_QUARANTINE_SCHEMA = pa.schema([
    ("quarantine_pk", _I), ("sha256", _S), ("source", _S), ("reason", _S),
    ("received_at", _TS), ("size", _I), ("raw_gzip", pa.binary()),
])
