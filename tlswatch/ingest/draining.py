"""The spool's way into the store: waiting entries loaded a batch at a time, then filed.

A receiver acknowledges a report once it is in the spool; ``drain`` loads what waits and
moves each entry to ``done/`` or ``failed/`` only after the commit, so nothing
acknowledged is lost and nothing is retried forever.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tlswatch.dnsname import is_domain
from tlswatch.errors import StoreError, TlsWatchError
from tlswatch.ingest.loader import IngestResult, Rejection, load
from tlswatch.ingest.prepare import DEFAULT_OPTIONS, Options
from tlswatch.ingest.sources import Input
from tlswatch.ingest.spool import Entry, Spool
from tlswatch.store import Store

log = logging.getLogger(__name__)


def drain(spool: Spool, store_path: Path | str, *, options: Options = DEFAULT_OPTIONS,
          limit: int = 5000, max_bytes: int = 64 * 1024 * 1024, lock_timeout: float = 10.0,
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
