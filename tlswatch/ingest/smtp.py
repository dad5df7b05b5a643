"""The SMTP / LMTP receiver (aiosmtpd): accept report mail, spool it, then say 250.

Limits are enforced at the edge: recipients (550), SIZE (552, by aiosmtpd), a message
with no report part (550).  ``250`` is sent only after the message is durably in the
spool; when the spool cannot be written (disk full) the answer is ``451`` and the sender
retries, so nothing acknowledged is ever lost.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from datetime import UTC, datetime
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from tlswatch.errors import ReportError, SpoolError
from tlswatch.ingest.mail import parse_message
from tlswatch.ingest.spool import Spool
from tlswatch.metrics import Metrics

log = logging.getLogger(__name__)

# A part labelled as a report (or as what real senders label reports with).  Finding one is
# enough to accept at DATA; the full MIME walk (~10x the cost) runs only when there is none.
_REPORT_PART = re.compile(rb"(?im)^content-type:[ \t]*application/(tlsrpt|gzip|x-gzip|json|"
                          rb"zip|x-zip-compressed|octet-stream)\b")


class ReportHandler:
    """aiosmtpd handler: ``handle_RCPT`` checks the address, ``handle_DATA`` spools."""

    def __init__(self, spool: Spool, metrics: Metrics, *, addresses: tuple[str, ...] = (),
                 max_recipients: int = 100, lmtp: bool = False, hostname: str = "") -> None:
        self.spool = spool
        self.metrics = metrics
        self.exact = {a.lower() for a in addresses if not a.startswith("*@")}
        self.domains = {a[2:].lower() for a in addresses if a.startswith("*@")}
        self.max_recipients = max_recipients
        self.via = "lmtp" if lmtp else "smtp"
        self.hostname = hostname

    def accepts(self, address: str) -> bool:
        if not self.exact and not self.domains:
            return True  # development default: any recipient
        address = address.lower()
        return address in self.exact or address.rpartition("@")[2] in self.domains

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if not self.accepts(address):
            self.metrics.rejected.labels(self.via, "recipient").inc()
            return f"550 5.1.1 <{address}>: not a TLS report address here"
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        replies = len(envelope.rcpt_tos) if self.via == "lmtp" else 1
        meta = self._meta(session, envelope)
        try:
            if _REPORT_PART.search(data):  # the loader walks the MIME tree fully later
                spool_id = await asyncio.to_thread(self.spool.put, data, meta)
            else:  # no obvious report part: the full walk decides (and names the reason)
                spool_id = await asyncio.to_thread(self._accept, data, meta)
        except ReportError as exc:
            self.metrics.rejected.labels(self.via, "no_report").inc()
            return _each(f"550 5.6.0 {exc.reason}", replies)
        except SpoolError as exc:
            log.error("%s", exc)
            self.metrics.rejected.labels(self.via, "spool_error").inc()
            return _each("451 4.3.0 Cannot store the message now; please try again later",
                         replies)
        self.metrics.received.labels(self.via).inc()
        log.info("spooled %s from %s", spool_id, meta["peer"])
        return _each(f"250 2.0.0 OK: queued as {spool_id}", replies)

    def _accept(self, data: bytes, meta: dict[str, Any]) -> str:
        """Check there is a report part (else keep the bytes aside), then spool durably."""
        try:
            parse_message(data, source="message")
        except ReportError as exc:
            self._keep_rejected(data, meta, exc.reason)
            raise
        return self.spool.put(data, meta)

    def _meta(self, session: Session, envelope: Envelope) -> dict[str, Any]:
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        return {"via": self.via, "peer": peer, "helo": session.host_name,
                "mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                "tls": session.ssl is not None,
                "received_at": datetime.now(UTC).isoformat()}

    def _keep_rejected(self, data: bytes, meta: dict[str, Any], reason: str) -> None:
        try:
            self.spool.put_rejected(data, meta, reason)
        except SpoolError as exc:
            log.warning("could not keep a refused message: %s", exc)


def _each(reply: str, count: int) -> str:
    """LMTP answers DATA once per recipient (RFC 2033 section 4.2)."""
    return "\r\n".join([reply] * max(1, count))


def tls_context(cert: str, key: str) -> ssl.SSLContext | None:
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key or None)
    return context


async def start_smtp(handler: ReportHandler, host: str, port: int, *, lmtp: bool = False,
                     data_size_limit: int, tls: ssl.SSLContext | None = None
                     ) -> asyncio.base_events.Server:
    """Listen on the running event loop; STARTTLS is offered when ``tls`` is given."""
    loop = asyncio.get_running_loop()
    protocol = LMTP if lmtp else SMTP

    def factory() -> SMTP:
        return protocol(handler, data_size_limit=data_size_limit, tls_context=tls,
                        hostname=handler.hostname or None, ident="tlswatch",
                        timeout=120, loop=loop)

    return await loop.create_server(factory, host=host, port=port)
