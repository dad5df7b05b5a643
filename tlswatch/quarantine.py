"""Refused inputs, from both places they are kept: list, show, retry, delete.

An input is refused in one of two places.  A receiver ('serve': SMTP, LMTP, HTTPS, the
upload form) or the loader in 'serve' keeps the whole input in ``spool/failed/<id>`` with
its header (peer, envelope sender, file name) and a ``<id>.reason`` file.  The loader
(in 'serve' or 'tlswatch ingest') keeps each refused report in the database's
``quarantine`` table, gzipped.  A report that 'serve' loaded and refused is in both; its
``quarantine`` row names the spool entry in its source (``smtp:<id> [part]``), and the
listing shows the two as one entry under the spool id, which holds the richer metadata and
the whole input.  Entries only in the database are named ``q<number>``.

``retry`` loads an entry again, directly, with today's decoder and loader (as 'tlswatch
ingest' does), so its outcome is known at once; it opens the database for writing as any
writer does (waiting up to ``lock_timeout`` while 'serve' loads a batch), one entry at a
time, so 'serve' keeps loading in between.
"""

from __future__ import annotations

import collections
import gzip
import logging
import os
import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from tlswatch.config import Settings
from tlswatch.dnsname import is_domain
from tlswatch.errors import NotFoundError
from tlswatch.ingest.failed import read_header, read_input, reason_path, received_at
from tlswatch.ingest.failed import remove as remove_failed
from tlswatch.ingest.loader import load
from tlswatch.ingest.prepare import Options, options_from
from tlswatch.ingest.sources import Input
from tlswatch.store import Store, exists
from tlswatch.store.quarantine import (
    delete_quarantine,
    quarantine_row,
    quarantine_rows,
    set_quarantine_reason,
)

log = logging.getLogger(__name__)
HOLD = 1.0  # seconds a retry holds the database before letting 'serve' write
_DB_ID = re.compile(r"q(\d{1,18})")
_SPOOL_NAME = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,200}")
# A quarantine row from 'serve': "<via>:<spool id>", then " [part]" or " (stored report N)".
_SPOOLED_SOURCE = re.compile(r"(smtp|lmtp|http|upload|imap|spool):([^\s\[\]()]+)")


@dataclass(frozen=True)
class Refusal:
    """One refused input: the spool id or ``q<number>``, when, how, from whom, why."""

    id: str
    received_at: datetime  # naive UTC
    via: str
    source: str
    size: int
    reason: str
    spool_id: str | None = None
    rows: tuple[tuple[int, str], ...] = ()  # its quarantine rows: (number, source)
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def quarantine_ids(self) -> list[str]:
        return [f"q{pk}" for pk, _ in self.rows]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "received_at": self.received_at.isoformat(timespec="seconds"),
                "via": self.via, "source": self.source, "size": self.size,
                "reason": self.reason, "quarantine_ids": self.quarantine_ids}


@dataclass(frozen=True)
class Filters:
    since: date | None = None
    until: date | None = None
    reason: str | None = None  # a part of the reason, any case
    older_than_days: float | None = None

    def match(self, entry: Refusal) -> bool:
        day = entry.received_at.date()
        if self.older_than_days is not None and entry.received_at > \
                _now() - timedelta(days=self.older_than_days):
            return False
        return (self.since is None or day >= self.since) and \
            (self.until is None or day <= self.until) and \
            (not self.reason or self.reason.casefold() in entry.reason.casefold())


@dataclass(frozen=True)
class Retried:
    """What a retry did: ``stored``, ``refused`` (kept, with the new reason), ``later``
    (a passing failure, such as a DKIM key lookup: kept as it was) or ``gone`` (removed or
    unreadable meanwhile)."""

    id: str
    outcome: str
    detail: str
    report_pks: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "outcome": self.outcome, "detail": self.detail,
                "report_pks": list(self.report_pks)}


# -- listing ------------------------------------------------------------------------------
def list_refused(settings: Settings, filters: Filters = Filters()) -> list[Refusal]:
    """Every refused input in ``spool/failed`` and the quarantine table, oldest first."""
    spooled = {e.id: e for e in _spool_entries(_failed_dir(settings))}
    alone: list[Refusal] = []
    for row in _db_rows(settings):
        linked = _linked_spool_id(row["source"])
        entry = spooled.get(linked) if linked else None
        if entry is not None:
            spooled[entry.id] = replace(entry, rows=(*entry.rows, (row["quarantine_pk"],
                                                                   row["source"])))
        else:
            alone.append(_from_row(row))
    entries = [e for e in (*spooled.values(), *alone) if filters.match(e)]
    return sorted(entries, key=lambda e: (e.received_at, e.spool_id or "",
                                          e.rows[0][0] if e.rows else 0))


def find(settings: Settings, ident: str) -> Refusal:
    """The entry named ``ident`` (a spool id or ``q<number>``); a quarantine row that
    belongs to a spool entry finds that entry."""
    ident = ident.strip()
    db = _DB_ID.fullmatch(ident)
    if db is not None:
        pk = int(db.group(1))
        for entry in list_refused(settings):
            if any(p == pk for p, _ in entry.rows):
                return entry
    elif _SPOOL_NAME.fullmatch(ident) and not ident.endswith(".reason"):
        path = _failed_dir(settings) / ident
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            entry = _spool_entry(path)
            rows = [(r["quarantine_pk"], r["source"]) for r in _db_rows(settings)
                    if _linked_spool_id(r["source"]) == ident]
            return replace(entry, rows=tuple(rows))
    raise NotFoundError(f"{ident!r}: no refused input with this id; "
                        "'tlswatch quarantine' lists them")


def select(settings: Settings, idents: Sequence[str], filters: Filters | None) -> list[Refusal]:
    """The entries named (each once), or with ``filters`` every entry they match."""
    if filters is not None:
        return list_refused(settings, filters)
    chosen: dict[str, Refusal] = {}
    for ident in idents:
        entry = find(settings, ident)
        chosen.setdefault(entry.id, entry)
    return list(chosen.values())


def show(settings: Settings, ident: str) -> tuple[Refusal, bytes]:
    """One entry and its bytes."""
    entry = find(settings, ident)
    return entry, content(settings, entry)


def details(settings: Settings, ident: str, *, max_chars: int | None = None) -> dict[str, Any]:
    """One entry for display: its fields, its header and its content as text (gzip
    inflated, cut at ``max_chars``).  Escape the strings for where they are shown."""
    entry, data = show(settings, ident)
    text = readable(data, limit=settings.max_inflated_bytes)
    cut = max_chars is not None and len(text) > max_chars
    return {**entry.as_dict(), "meta": entry.meta, "inflated": data[:2] == b"\x1f\x8b",
            "content": text[:max_chars] if cut else text, "content_cut": cut}


def content(settings: Settings, entry: Refusal, *, store: Store | None = None) -> bytes:
    """The refused bytes: the whole input as received (spool), else the refused report
    (read through ``store`` when one is open)."""
    if entry.spool_id is not None:
        try:
            return read_input(_failed_dir(settings) / entry.spool_id)
        except OSError as exc:
            raise NotFoundError(f"{entry.id}: its content cannot be read "
                                f"({exc.strerror or exc})") from exc
    if store is not None:
        row = quarantine_row(store, entry.rows[0][0])
    else:
        with Store.open(settings.db, read_only=True,
                        lock_timeout=settings.lock_timeout) as reading:
            row = quarantine_row(reading, entry.rows[0][0])
    if row is None:
        raise NotFoundError(f"{entry.id}: removed meanwhile")
    return gzip.decompress(row["raw_gzip"])


def readable(data: bytes, *, limit: int) -> str:
    """The bytes as text for a person: a gzip body inflated (up to ``limit`` bytes), then
    UTF-8 with undecodable bytes replaced.  Escape the result for where it is shown."""
    if data[:2] == b"\x1f\x8b":
        try:
            inflating = zlib.decompressobj(wbits=31)
            inflated = inflating.decompress(data, limit)
            note = "" if inflating.eof else f"\n[... cut after {limit:,} inflated bytes]"
            return inflated.decode("utf-8", "replace") + note
        except zlib.error:
            pass
    return data.decode("utf-8", "replace")


# -- retry and delete ---------------------------------------------------------------------
def retry(settings: Settings, idents: Sequence[str] = (), *, filters: Filters | None = None,
          options: Options | None = None) -> list[Retried]:
    """Load each entry named (or every one ``filters`` match) again with today's checks; a
    stored one leaves the quarantine, a refused one stays with the new reason.  The
    database is held for about HOLD seconds at a time, so 'serve' loads in between."""
    options = options or options_from(settings)
    pending = collections.deque(select(settings, idents, filters))
    done: list[Retried] = []
    while pending:
        with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
            held = time.monotonic()
            while pending and time.monotonic() - held < HOLD:
                entry = pending.popleft()
                try:
                    data = content(settings, entry, store=store)
                except NotFoundError as exc:
                    done.append(Retried(entry.id, "gone", str(exc)))
                    continue
                done.append(_retry_one(settings, store, entry, data, options))
    return done


def _retry_one(settings: Settings, store: Store, entry: Refusal, data: bytes,
               options: Options) -> Retried:
    result = load([_input(entry, data)], store, options=options)
    refused = {r.source: r.reason for r in (*result.rejections, *result.conflict_reports)
               if r not in result.retry}
    if result.retry:
        reasons = "; ".join(f"{r.source}: {r.reason}" for r in result.retry)
        return Retried(entry.id, "later", f"a passing failure, kept as it was: {reasons}")
    with store.transaction():  # rows refused again get the new reason; the others go
        for pk, source in entry.rows:
            if source in refused:
                set_quarantine_reason(store, pk, refused[source])
        delete_quarantine(store, [pk for pk, source in entry.rows if source not in refused])
    if entry.spool_id is not None:
        path = _failed_dir(settings) / entry.spool_id
        if refused:
            reason_path(path).write_text(
                "\n".join(f"{s}: {r}" for s, r in refused.items()) + "\n", encoding="utf-8")
        else:
            remove_failed(path)
    if refused:
        own = _input(entry, b"").source
        return Retried(entry.id, "refused", "; ".join(
            r if s == own else f"{s.removeprefix(own).strip()}: {r}"
            for s, r in refused.items()))
    stored = f"{result.accepted} report(s) stored" + (
        f", {result.duplicates} already stored" if result.duplicates else "")
    return Retried(entry.id, "stored", stored, tuple(result.report_pks))


def delete(settings: Settings, idents: Sequence[str] = (), *,
           filters: Filters | None = None) -> list[str]:
    """Remove the entries named (or every one ``filters`` match): spool files and quarantine
    rows.  Return their ids."""
    entries = select(settings, idents, filters)
    pks = [pk for e in entries for pk, _ in e.rows]
    if pks:
        with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
            delete_quarantine(store, pks)
    for entry in entries:
        if entry.spool_id is not None:
            remove_failed(_failed_dir(settings) / entry.spool_id)
    return [e.id for e in entries]


def _input(entry: Refusal, data: bytes) -> Input:
    """The input as the loader saw it first (the same source, so the same quarantine row)."""
    if entry.spool_id is None:
        return Input(source=entry.rows[0][1], data=data, via=entry.via)
    domain = entry.meta.get("domain")
    filename = entry.meta.get("filename")
    return Input(source=f"{entry.via}:{entry.spool_id}", data=data,
                 filename=filename if isinstance(filename, str) else None, via=entry.via,
                 domain=domain if isinstance(domain, str) and is_domain(domain) else None)


# -- the two places -----------------------------------------------------------------------
def _failed_dir(settings: Settings) -> Path:
    return Path(settings.spool) / "failed"


def _db_rows(settings: Settings) -> list[dict[str, Any]]:
    if not exists(settings.db):
        return []
    with Store.open(settings.db, read_only=True, lock_timeout=settings.lock_timeout) as store:
        return quarantine_rows(store)


def _from_row(row: dict[str, Any]) -> Refusal:
    source = str(row["source"])
    via = m.group(1) if (m := _SPOOLED_SOURCE.match(source)) else "file"
    return Refusal(id=f"q{row['quarantine_pk']}", received_at=row["received_at"], via=via,
                   source=source, size=int(row["size"]), reason=str(row["reason"]),
                   rows=((int(row["quarantine_pk"]), source),))


def _linked_spool_id(source: str) -> str | None:
    m = _SPOOLED_SOURCE.match(source)
    return m.group(2) if m else None


def _spool_entries(folder: Path) -> list[Refusal]:
    if not folder.is_dir():
        return []
    entries = []
    with os.scandir(folder) as it:
        for item in it:
            if item.name.endswith(".reason") or item.name.startswith(".") or \
                    item.is_dir(follow_symlinks=False):
                continue
            entries.append(_spool_entry(Path(item.path)))
    return entries


def _spool_entry(path: Path) -> Refusal:
    """A file in ``failed/`` as an entry, from its header line and ``.reason`` file."""
    meta, size = read_header(path)
    try:
        reason = reason_path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        reason = "(no reason was recorded)"
    via = str(meta.get("via") or "spool")
    # The loader writes "<via>:<id>[ [part]]: reason" lines: the id is this entry's own.
    own = f"{via}:{path.name}"
    lines = [line.removeprefix(own).removeprefix(": ").strip() for line in reason.splitlines()]
    return Refusal(id=path.name, received_at=received_at(path, meta), via=via,
                   source=_spool_source(meta), size=size, reason="; ".join(lines),
                   spool_id=path.name, meta=meta)


def _spool_source(meta: dict[str, Any]) -> str:
    """Who sent it: client address, envelope sender, file name, mailbox."""
    parts = []
    if meta.get("peer"):
        parts.append(str(meta["peer"]))
    if meta.get("mail_from") is not None:
        parts.append(f"<{meta['mail_from']}>")
    if meta.get("mailbox"):
        parts.append(f"{meta['mailbox']} uid {meta.get('uid')}")
    if meta.get("filename"):
        parts.append(str(meta["filename"]))
    return " ".join(parts) or "-"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
