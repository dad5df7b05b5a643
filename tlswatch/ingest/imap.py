"""Fetch report mail from an IMAP mailbox (IMAPS), for domains whose ``rua`` is a mailbox.

Incremental by UID: the last UID seen (with the folder's UIDVALIDITY) is kept in the spool
folder.  A message with a report is spooled durably and only then moved to the archive
folder; any other mail is left where it is.  A crash between the two only spools the
message again on the next run, and the store's de-duplication counts it once.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import logging
import os
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tlswatch.errors import ReportError, TlsWatchError
from tlswatch.ingest.mail import parse_message
from tlswatch.ingest.spool import Spool

log = logging.getLogger(__name__)


class ImapError(TlsWatchError):
    """The IMAP server refused or failed (login, folder, connection)."""

    terminal = False


@dataclass
class FetchResult:
    seen: int = 0
    spooled: list[str] = field(default_factory=list)
    left_alone: int = 0


@dataclass(frozen=True)
class Mailbox:
    host: str
    user: str
    password: str
    port: int = 993
    folder: str = "INBOX"
    archive_folder: str = "Processed"
    ca_bundle: str | None = None
    timeout: float = 60.0

    @property
    def key(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.folder}"


def fetch(mailbox: Mailbox, spool: Spool) -> FetchResult:
    """Spool every new report message of the folder and move it to the archive folder."""
    context = ssl.create_default_context(cafile=mailbox.ca_bundle)
    try:
        client = imaplib.IMAP4_SSL(mailbox.host, mailbox.port, ssl_context=context,
                                   timeout=mailbox.timeout)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ImapError(f"{mailbox.host}:{mailbox.port}: cannot connect: {exc}") from exc
    try:
        _check(client.login(mailbox.user, mailbox.password), f"login as {mailbox.user}")
        return _fetch_folder(client, mailbox, spool)
    except imaplib.IMAP4.error as exc:
        raise ImapError(f"{mailbox.key}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            client.logout()


def _fetch_folder(client: imaplib.IMAP4_SSL, mailbox: Mailbox, spool: Spool) -> FetchResult:
    _check(client.select(_quote(mailbox.folder)), f"select {mailbox.folder}")
    validity = int((client.response("UIDVALIDITY")[1] or [b"0"])[0] or 0)
    state = _State(spool.root / "imap-state.json")
    last = state.last_uid(mailbox.key, validity)
    typ, data = client.uid("SEARCH", f"UID {last + 1}:*")
    _check((typ, data), "search")
    uids = sorted(u for u in map(int, (data[0] or b"").split()) if u > last)
    result = FetchResult()
    capabilities = _capabilities(client)
    archive_ready = False
    for uid in uids:
        typ, parts = client.uid("FETCH", str(uid), "(BODY.PEEK[])")
        _check((typ, parts), f"fetch UID {uid}")
        message = next((p[1] for p in parts if isinstance(p, tuple)), None)
        result.seen += 1
        if message is None or not _is_report(message):
            result.left_alone += 1
        else:
            spool_id = spool.put(message, {"via": "imap", "mailbox": mailbox.key, "uid": uid,
                                           "received_at": datetime.now(UTC).isoformat()})
            if not archive_ready:
                client.create(_quote(mailbox.archive_folder))  # fails harmlessly if it exists
                archive_ready = True
            _move(client, uid, mailbox.archive_folder, capabilities)
            result.spooled.append(spool_id)
        state.save(mailbox.key, validity, uid)
    return result


def _is_report(message: bytes) -> bool:
    try:
        parse_message(message, source="imap")
    except ReportError:
        return False
    return True


def _capabilities(client: imaplib.IMAP4_SSL) -> set[str]:
    """What the server offers once logged in (imaplib keeps the greeting's list)."""
    typ, data = client.capability()
    if typ != "OK" or not data or not isinstance(data[0], bytes):
        return {c.upper() for c in client.capabilities}
    return {c.upper() for c in data[0].decode("ascii", "replace").split()}


def _move(client: imaplib.IMAP4_SSL, uid: int, folder: str, capabilities: set[str]) -> None:
    if "MOVE" in capabilities:
        _check(client.uid("MOVE", str(uid), _quote(folder)), f"move UID {uid}")
        return
    _check(client.uid("COPY", str(uid), _quote(folder)), f"copy UID {uid}")
    _check(client.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)"), f"flag UID {uid}")
    if "UIDPLUS" in capabilities:
        client.uid("EXPUNGE", str(uid))
    else:
        client.expunge()


def _check(reply: tuple[str, Sequence[Any]], what: str) -> None:
    typ, data = reply
    if typ != "OK":
        detail = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
        raise ImapError(f"{what} failed: {detail or typ}")


def _quote(name: str) -> str:
    return '"' + re.sub(r'(["\\])', r"\\\1", name) + '"'


class _State:
    """Last UID per mailbox, kept in a small JSON file written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, dict[str, int]] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            self.data = {}

    def last_uid(self, key: str, validity: int) -> int:
        entry = self.data.get(key)
        if not entry or entry.get("uidvalidity") != validity:
            return 0  # new mailbox, or the server renumbered it: look at everything
        return int(entry.get("last_uid", 0))

    def save(self, key: str, validity: int, uid: int) -> None:
        self.data[key] = {"uidvalidity": validity, "last_uid": uid}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)
