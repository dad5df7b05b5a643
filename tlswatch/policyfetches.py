"""Recorded policy fetches on their way to the store: batch files in ``spool/fetches/``.

``serve``'s HTTP process never opens the database (on DuckDB it could not write beside the
dashboard's readers): it writes each batch of fetches as one small file here, and the
loader process, the one writer, stores the waiting files in one transaction and deletes
them.  A file is JSON lines, one fetch a line: ``[fetched_at (ISO, UTC), domain,
client_ip, policy_id or null, status, node]``.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from tlswatch.store import Store

log = logging.getLogger(__name__)

FOLDER = "fetches"
SUFFIX = ".jsonl"
COLUMNS = ("fetched_at", "domain", "client_ip", "policy_id", "status", "node")


def folder(spool: Path | str) -> Path:
    return Path(spool) / FOLDER


def pending(spool: Path | str, *, limit: int = 0) -> list[Path]:
    """The batch files waiting, oldest first (their names start with the time written)."""
    try:
        with os.scandir(folder(spool)) as entries:
            names = sorted(e.name for e in entries if e.name.endswith(SUFFIX))
    except FileNotFoundError:
        return []
    return [folder(spool) / n for n in (names[:limit] if limit else names)]


def write_batch(spool: Path | str, rows: list[tuple[Any, ...]], *, name: str) -> Path:
    """One batch as a file (written aside, then renamed: the loader never sees half)."""
    target = folder(spool) / f"{name}{SUFFIX}"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(tmp, target)
    return target


def _row(line: str) -> tuple[datetime, str, str, str | None, int, str]:
    at, domain, ip, policy_id, status, node = json.loads(line)
    if not (isinstance(domain, str) and isinstance(ip, str) and isinstance(status, int)
            and isinstance(node, str) and (policy_id is None or isinstance(policy_id, str))):
        raise ValueError("a field has the wrong type")
    return datetime.fromisoformat(at), domain, ip, policy_id, status, node


def read_batch(path: Path) -> list[tuple[datetime, str, str, str | None, int, str]]:
    """The fetches in one file; a line that is not one is skipped with a warning."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            rows.append(_row(line))
        except (ValueError, TypeError) as exc:
            log.warning("%s line %d: not a recorded fetch (%s); skipped", path, number, exc)
    return rows


def load_pending(spool: Path | str, db: Path | str, *, lock_timeout: float,
                 max_files: int = 200) -> int:
    """Store the waiting batch files (up to ``max_files``) in one transaction, then delete
    them; return the fetches stored.  Nothing waiting: the database is not opened."""
    files = pending(spool, limit=max_files)
    if not files:
        return 0
    rows = [row for path in files for row in read_batch(path)]
    table = pa.table({name: pa.array([r[i] for r in rows], kind) for i, (name, kind) in
                      enumerate(zip(COLUMNS, (pa.timestamp("us"), pa.string(), pa.string(),
                                              pa.string(), pa.int32(), pa.string()),
                                    strict=True))})
    with Store.open(db, lock_timeout=lock_timeout) as store, store.transaction():
        store.insert("policy_fetches", table)
    for path in files:  # a crash before this stores them again: telemetry, not reports
        path.unlink(missing_ok=True)
    return len(rows)
