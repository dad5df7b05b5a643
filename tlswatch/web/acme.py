"""What every 'serve' node does for the certificates obtained by ACME: answer the HTTP-01
challenges (RFC 8555 section 8.3: ``GET /.well-known/acme-challenge/TOKEN``, for any Host,
over plain HTTP), and present each host's certificate by SNI on the TLS listener (another
name gets ``tls_cert``)."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tlswatch.config import Settings
from tlswatch.errors import StoreError
from tlswatch.mtasts.acme_records import certificates, key_authorization
from tlswatch.store import now_utc

log = logging.getLogger(__name__)

CHALLENGE_PATH = "/.well-known/acme-challenge/"
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")  # base64url (RFC 8555 section 8.3)


class Challenges:
    """The HTTP-01 answers, read from the store (whichever node ordered)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def routes(self) -> list[Route]:
        return [Route(CHALLENGE_PATH + "{token}", self.answer, methods=["GET"])]

    async def answer(self, request: Request) -> Response:
        token = request.path_params["token"]
        if not TOKEN.fullmatch(token):
            return PlainTextResponse("not an ACME token\n", status_code=404)
        try:
            answer = await asyncio.to_thread(key_authorization, self.settings, token)
        except StoreError as exc:
            log.warning("ACME challenge %r not answered: %s", token, exc)
            return PlainTextResponse("store unavailable\n", status_code=503)
        if answer is None:
            return PlainTextResponse("no such ACME challenge pending\n", status_code=404)
        return PlainTextResponse(answer)


def challenge_app(settings: Settings) -> Starlette:
    """The app of the ``acme_http`` listener: the challenges only."""
    return Starlette(routes=Challenges(settings).routes())


class SniCertificates:
    """The ACME certificates by host name, for the TLS listener's ``sni_callback``.

    The callback runs inside the TLS handshake, so it only looks up a dictionary;
    ``refresh`` (in a thread, every ``acme_refresh`` seconds) rebuilds the contexts of the
    names whose certificate changed."""

    def __init__(self) -> None:
        self.contexts: dict[str, tuple[datetime, ssl.SSLContext]] = {}  # name -> (issued_at, ...)
        self.expiry: dict[str, datetime] = {}

    def choose(self, sock: ssl.SSLObject | ssl.SSLSocket, name: str | None,
               _: ssl.SSLContext) -> None:
        if name is None:
            return
        found = self.contexts.get(name.lower())
        if found is not None and self.expiry[name.lower()] > now_utc():
            sock.context = found[1]

    def refresh(self, settings: Settings) -> None:
        contexts: dict[str, tuple[datetime, ssl.SSLContext]] = {}
        for name, record in certificates(settings).items():
            if record.cert_pem is None or record.key_pem is None or record.issued_at is None \
                    or record.not_after is None:
                continue
            kept = self.contexts.get(name)
            if kept is not None and kept[0] == record.issued_at:
                contexts[name] = kept
                continue
            try:
                contexts[name] = (record.issued_at, _context(record.cert_pem, record.key_pem))
            except (ssl.SSLError, OSError) as exc:
                log.error("ACME certificate of %s not usable, not served: %s", name, exc)
                continue
            self.expiry[name] = record.not_after
            log.info("serving the ACME certificate of %s (valid until %s)", name,
                     record.not_after)
        self.contexts = contexts

    async def keep_fresh(self, settings: Callable[[], Settings], stopping: asyncio.Event
                         ) -> None:
        """Refresh until ``stopping``, while ACME is on (the settings as they are now: a
        SIGHUP may turn it on or off)."""
        while not stopping.is_set():
            now = settings()
            try:
                if now.acme_directory:
                    await asyncio.to_thread(self.refresh, now)
            except StoreError as exc:
                log.warning("ACME certificates not read again: %s", exc)
            with suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), max(0.1, now.acme_refresh))


def _context(cert_pem: str, key_pem: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with _files(cert_pem, key_pem) as (cert, key):
        context.load_cert_chain(cert, key)
    return context


@contextmanager
def _files(cert_pem: str, key_pem: str) -> Iterator[tuple[str, str]]:
    """The PEM texts as files readable only by this process, for ``load_cert_chain``."""
    with tempfile.TemporaryDirectory(prefix="tlswatch-acme-") as folder:
        cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert.write_text(cert_pem)
        key.touch(mode=0o600)
        key.write_text(key_pem)
        yield str(cert), str(key)
