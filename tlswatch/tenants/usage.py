"""When each API token was last used.

The dashboard process never writes to the database, so a login with a token leaves a mark
in the spool (``spool/token-uses/<sha256>``, its time the file's mtime), at most once a
minute per token; the worker of 'serve' copies the marks into ``api_tokens.last_used_at``
and removes them (task 'token uses').
"""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from tlswatch.config import Settings
from tlswatch.tenants.registry import open_for_changes

log = logging.getLogger(__name__)
FOLDER = "token-uses"
_DIGEST = re.compile(r"[0-9a-f]{64}")


def note_use(spool: Path, digest: str) -> None:
    """Mark that the token with SHA-256 ``digest`` was used now."""
    folder = Path(spool) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / digest).touch()


def record_uses(settings: Settings, now: datetime) -> list[str]:
    """Copy the marks into the database; return the digests of the tokens marked (none:
    nothing was due)."""
    folder = Path(settings.spool) / FOLDER
    try:
        marks = [(entry.name, entry.stat().st_mtime_ns) for entry in os.scandir(folder)
                 if _DIGEST.fullmatch(entry.name)]
    except FileNotFoundError:
        return []
    if not marks:
        return []
    with open_for_changes(settings.db, lock_timeout=settings.lock_timeout) as store, \
            store.transaction():
        for digest, stamp in marks:  # a few tokens per round, at most one row each
            used = datetime.fromtimestamp(stamp / 1e9, UTC).replace(tzinfo=None, microsecond=0)
            store.execute("UPDATE api_tokens SET last_used_at = ? WHERE token_sha256 = ? "
                          "AND (last_used_at IS NULL OR last_used_at < ?)", [used, digest, used])
    for digest, stamp in marks:
        path = folder / digest
        try:
            if path.stat().st_mtime_ns == stamp:  # not used again meanwhile
                path.unlink()
        except FileNotFoundError:
            pass
    log.debug("token uses: %d recorded at %s", len(marks), now)
    return [digest for digest, _ in marks]
