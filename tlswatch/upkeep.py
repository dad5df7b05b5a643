"""Retention: ``tlswatch prune`` and the daily prune that ``serve`` runs.

What is kept forever: each report's envelope and its per-policy session counts (the
``reports`` and ``policies`` rows), so ``summary`` gives the same session figures for an old
day after its details are gone.  What is pruned, each after its own setting: failure
details (``detail_keep_days``), the raw JSON (``raw_keep_days``), the database's quarantine
(``quarantine_keep_days``), recorded policy fetches (``policy_fetch_keep_days``),
``spool/done`` (``spool_keep_days``) and ``spool/failed``
(``failed_keep_days``).  Afterwards the database file is compacted (``compact_after_prune``):
DuckDB keeps the space of deleted rows for its own reuse.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from tlswatch.config import Settings
from tlswatch.dburl import DatabaseUrl, location
from tlswatch.errors import StoreError
from tlswatch.ingest.spool import Spool
from tlswatch.store import Store, exists
from tlswatch.store.maintenance import (
    Retention,
    compact,
    database_size,
    file_size,
    last_run,
    mark_compacted,
    prune,
    uncompacted,
)

log = logging.getLogger(__name__)


@dataclass
class PruneRun:
    """What ``tlswatch prune`` did (or, in a dry run, would do)."""

    today: date
    dry_run: bool
    removed: dict[str, int] = field(default_factory=dict)
    kept_from: dict[str, str] = field(default_factory=dict)
    size_before: int = 0
    size_after: int = 0
    compacted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"today": self.today.isoformat(), "dry_run": self.dry_run,
                "removed": self.removed, "kept_from": self.kept_from,
                "size_before": self.size_before, "size_after": self.size_after,
                "compacted": self.compacted}


def retention(settings: Settings) -> Retention:
    return Retention(detail_days=settings.detail_keep_days, raw_days=settings.raw_keep_days,
                     quarantine_days=settings.quarantine_keep_days,
                     check_days=settings.check_keep_days,
                     fetch_days=settings.policy_fetch_keep_days)


def run_prune(settings: Settings, *, today: date, dry_run: bool = False,
              compact_share: float = 0.0) -> PruneRun:
    """Prune the database and the spool's done/ and failed/ folders; compact the file when
    the rows pruned since its last compaction are at least ``compact_share`` of the rows
    left in the pruned tables (0: after any removal)."""
    db = location(settings.db)
    if not exists(db):  # a wrong --db or folder must not leave an empty database behind
        raise StoreError(f"{db}: no database here to prune; give the one 'serve' uses "
                         "(--db, or the setting db in --config)")
    run = PruneRun(today, dry_run, size_before=_size(db, settings.lock_timeout))
    with Store.open(db, read_only=dry_run, lock_timeout=settings.lock_timeout) as store:
        pruned = prune(store, retention(settings), today=today, dry_run=dry_run)
        since, left = (0, 0) if dry_run else uncompacted(store)
    run.removed, run.kept_from = dict(pruned.removed), dict(pruned.before)
    run.removed.update(_prune_spool(settings, dry_run=dry_run))
    for kind, days in (("spool_done", settings.spool_keep_days),
                       ("spool_failed", settings.failed_keep_days)):
        run.kept_from[kind] = (datetime.now(UTC) - timedelta(days=days)).strftime(
            "%Y-%m-%d %H:%M UTC")
    if not dry_run and since and since >= compact_share * left and \
            settings.compact_after_prune and isinstance(db, Path):  # PostgreSQL: autovacuum
        before, after = compact(db, lock_timeout=settings.lock_timeout)
        run.compacted = after < before
        with Store.open(db, lock_timeout=settings.lock_timeout) as store:
            mark_compacted(store)
    run.size_after = _size(db, settings.lock_timeout)
    return run


def _size(db: Path | DatabaseUrl, lock_timeout: float) -> int:
    """The DuckDB file's bytes, or the PostgreSQL database's (which shrinks only as far as
    autovacuum gives space back)."""
    if isinstance(db, Path):
        return file_size(db)
    with Store.open(db, read_only=True, pending_ok=True, lock_timeout=lock_timeout) as store:
        return database_size(store)


def _prune_spool(settings: Settings, *, dry_run: bool) -> dict[str, int]:
    """Files past their days in spool/done and inputs past theirs in spool/failed."""
    root = Path(settings.spool)
    if not root.is_dir():
        return {"spool_done": 0, "spool_failed": 0}
    now = time.time()
    counts = {"spool_done": _older(root / "done", now - settings.spool_keep_days * 86400),
              "spool_failed": _older(root / "failed", now - settings.failed_keep_days * 86400)}
    if not dry_run:
        Spool.from_settings(settings).prune(older_than_days=settings.spool_keep_days)
    return counts


def _older(folder: Path, cutoff: float) -> int:
    """Inputs (a file and its ``.reason`` count once) last changed before ``cutoff``."""
    if not folder.is_dir():
        return 0
    names = set()
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    names.add(entry.name.removesuffix(".reason"))
            except FileNotFoundError:
                continue
    return len(names)


def daily_prune(settings: Settings, now: datetime) -> PruneRun | None:
    """The scheduled task of 'serve': prune once a UTC day (the database records the last
    run, so a restart does not prune again and a missed day is caught up)."""
    db = location(settings.db)
    if not exists(db):
        return None
    with Store.open(db, read_only=True, lock_timeout=settings.lock_timeout,
                    pending_ok=True) as store:  # the prune itself migrates
        last = last_run(store)
    if last is not None and last.date() >= now.date():
        return None
    run = run_prune(settings, today=now.date(), compact_share=settings.compact_min_share)
    log.info("pruned %s; database %s -> %s bytes%s",
             ", ".join(f"{k} {v}" for k, v in run.removed.items()), f"{run.size_before:,}",
             f"{run.size_after:,}", " (compacted)" if run.compacted else "")
    return run
