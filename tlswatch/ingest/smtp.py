"""The SMTP / LMTP receiver (aiosmtpd): accept report mail, spool it, then say 250.

Limits are enforced at the edge: open sessions in total and per client address (421),
command length (500) and deadlines (421), recipients (550), SIZE (552, by aiosmtpd).  The
message then goes through the one intake door (``accept``), checked as the loader will
check it: a message that holds no loadable report (no report part, a compression bomb,
broken base64, MIME nested too deep, an invalid report) gets ``550`` and is kept in
``spool/failed`` with the reason.  ``250`` is sent only after the message is durably in
the spool; when the spool cannot be written (disk full) the answer is ``451`` and the
sender retries, so nothing acknowledged is ever lost.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from datetime import UTC, datetime
from typing import Any, cast

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from tlswatch.ingest.accept import Intake, Refused, Unavailable
from tlswatch.ingest.limits import ConnectionCap, peer_host
from tlswatch.ingest.prepare import DEFAULT_OPTIONS, Options
from tlswatch.ingest.spool import Spool
from tlswatch.metrics import Metrics

log = logging.getLogger(__name__)
_REPLY_TEXT = 400  # characters of refusal reasons in a reply line (RFC 5321 s4.5.3.1.5)


class ReportHandler:
    """aiosmtpd handler: ``handle_RCPT`` checks the address, ``handle_DATA`` hands the
    message to the intake door and answers its outcome."""

    def __init__(self, spool: Spool, metrics: Metrics, *, addresses: tuple[str, ...] = (),
                 max_recipients: int = 100, lmtp: bool = False, hostname: str = "",
                 options: Options = DEFAULT_OPTIONS) -> None:
        self.spool = spool
        self.metrics = metrics
        self.intake = Intake(spool, options, metrics=metrics)
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
        outcome = await asyncio.to_thread(self.intake.accept, data, meta, source="message",
                                          via=self.via)
        if isinstance(outcome, Unavailable):
            return _each("451 4.3.0 Cannot store the message now; please try again later",
                         replies)
        if isinstance(outcome, Refused):
            return _each(f"550 5.6.0 {_reply_text(outcome.message)}", replies)
        return _each(f"250 2.0.0 OK: queued as {outcome.spool_id}", replies)

    def _meta(self, session: Session, envelope: Envelope) -> dict[str, Any]:
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        return {"via": self.via, "peer": peer, "helo": session.host_name,
                "mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                "tls": session.ssl is not None,
                "received_at": datetime.now(UTC).isoformat()}


def _reply_text(text: str) -> str:
    """One line of printable ASCII: reasons quote what the sender sent."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text)
    return clean if len(clean) <= _REPLY_TEXT else clean[:_REPLY_TEXT - 3] + "..."


def _each(reply: str, count: int) -> str:
    """LMTP answers DATA once per recipient (RFC 2033 section 4.2)."""
    return "\r\n".join([reply] * max(1, count))


def tls_context(cert: str, key: str) -> ssl.SSLContext | None:
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key or None)
    return context


class LimitedSMTP(SMTP):
    """aiosmtpd's SMTP with the connection caps, a command-size limit and two deadlines:
    ``timeout`` for each command (aiosmtpd resets it only on a complete, known command, so
    a command sent byte by byte does not extend it) and ``data_timeout`` for a whole DATA
    transfer.  A session that runs out of time gets ``421`` before the connection closes.
    """

    cap: ConnectionCap | None = None
    data_timeout: float = 600.0
    _peer: str | None = None
    _refused = False

    def __init__(self, handler: ReportHandler, *, command_size_limit: int = 512,
                 **options: Any) -> None:
        super().__init__(handler, **options)
        # Per session, not aiosmtpd's class-wide table (EHLO extensions add to it).
        self.command_size_limit = command_size_limit
        self.command_size_limits = collections.defaultdict(lambda: command_size_limit)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None and self._peer is None and self.cap is not None:
            host = peer_host(transport)  # a new session (connection_made again: STARTTLS)
            why = self.cap.admit(host)
            if why is not None:  # never set up: connection_lost has nothing to undo
                writer = cast(asyncio.WriteTransport, transport)
                writer.write(f"421 4.7.0 Too many connections: {why}; try again later\r\n"
                             .encode())
                writer.close()
                self._refused = True
                return
            self._peer = host
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._peer is not None and self.cap is not None:
            self.cap.release(self._peer)
            self._peer = None
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        return super().eof_received()

    async def smtp_DATA(self, arg: str) -> None:
        self._reset_timeout(self.data_timeout)
        try:
            await super().smtp_DATA(arg)
        finally:
            if self.transport is not None:
                self._reset_timeout()

    async def handle_exception(self, error: Exception) -> str:
        """A failed STARTTLS handshake is the client's doing: one line, not a traceback."""
        if isinstance(error, TLSSetupException):
            peer = self.session.peer if self.session is not None else None
            host = peer[0] if isinstance(peer, tuple) else peer
            log.warning("smtp: STARTTLS handshake with %s failed: %s", host,
                        error.__cause__ or "no detail")
            return "454 4.7.0 TLS not available"  # not sent: aiosmtpd closes the connection
        return await super().handle_exception(error)

    def _timeout_cb(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            log.warning("smtp: closed the session of %s: no command within the time allowed",
                        peer_host(self.transport))
            if self.cap is not None:
                self.cap.refused("timeout")
            cast(asyncio.WriteTransport, self.transport).write(
                b"421 4.4.2 Timeout; closing the connection\r\n")
        super()._timeout_cb()


class LimitedLMTP(LimitedSMTP, LMTP):
    """LMTP (RFC 2033) with the same limits."""


async def start_smtp(handler: ReportHandler, host: str, port: int, *, lmtp: bool = False,
                     data_size_limit: int, tls: ssl.SSLContext | None = None,
                     cap: ConnectionCap | None = None, timeout: float = 300.0,
                     data_timeout: float = 600.0, command_size_limit: int = 512
                     ) -> asyncio.base_events.Server:
    """Listen on the running event loop; STARTTLS is offered when ``tls`` is given.

    ``cap`` bounds open sessions (in total and per client address), ``timeout`` is the
    wait for each command and ``data_timeout`` for a whole message.
    """
    loop = asyncio.get_running_loop()
    base = LimitedLMTP if lmtp else LimitedSMTP
    protocol = type(base.__name__, (base,), {"cap": cap, "data_timeout": data_timeout})

    def factory() -> SMTP:
        return protocol(handler, data_size_limit=data_size_limit, tls_context=tls,
                        hostname=handler.hostname or None, ident="tlswatch",
                        timeout=timeout, command_size_limit=command_size_limit, loop=loop)

    # A burst of connections waits in the kernel's queue, not in SYN retries (asyncio's
    # default queue is 100); the caps then refuse the excess at once.
    return await loop.create_server(factory, host=host, port=port, backlog=1024)
