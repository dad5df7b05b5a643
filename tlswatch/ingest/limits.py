"""Bounds on what connections may hold, for both receivers: open connections in total and
per client address, how long a request head and body may take to arrive, and the bytes of
request bodies held by unfinished requests (all connections together).

A client over a cap is refused at once (SMTP ``421``, HTTP ``503`` with ``Retry-After``),
so slow or idle connections from one address cannot take the sockets, file descriptors or
memory another sender needs.  Every refusal is logged as a warning; ``serve`` logs a
repeated warning once a minute with a count (see ``tlswatch.logutil``).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import json
import logging
from dataclasses import dataclass
from typing import ClassVar, cast

import h11
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)
RETRY_AFTER = 10  # seconds a refused client is asked to wait


def client_key(host: str) -> str:
    """The address a per-client cap counts: the IPv4 address, or the IPv6 /64 (one site)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class LimitMetrics:
    """Open and refused connections, and body bytes held, for /metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = Gauge("tlswatch_connections", "Open connections.", ["via"],
                          registry=registry)
        self.refused = Counter("tlswatch_connections_refused", "Connections refused or "
                               "closed by a limit.", ["via", "reason"], registry=registry)
        self.body_bytes = Gauge("tlswatch_http_body_bytes", "Bytes of request bodies held "
                                "by unfinished HTTP requests.", registry=registry)


class ConnectionCap:
    """Open connections of one receiver: at most ``total``, at most ``per_client`` from one
    client address (0: no cap)."""

    def __init__(self, via: str, *, total: int, per_client: int,
                 metrics: LimitMetrics | None = None) -> None:
        self.via = via
        self.total = total
        self.per_client = per_client
        self.metrics = metrics
        self.open: collections.Counter[str] = collections.Counter()
        self.count = 0
        if metrics is not None:
            metrics.open.labels(via).set_function(lambda: self.count)

    def admit(self, host: str) -> str | None:
        """Count the connection in and return None, or return why it is refused."""
        key = client_key(host)
        if self.total and self.count >= self.total:
            reason, why = "total", f"{self.count} connections are open (max_connections)"
        elif self.per_client and self.open[key] >= self.per_client:
            reason, why = "per_client", (f"{self.open[key]} connections from {key} are open "
                                         "(max_connections_per_ip)")
        else:
            self.open[key] += 1
            self.count += 1
            return None
        log.warning("%s: refused a connection from %s: %s", self.via, host, why)
        self.refused(reason)
        return why

    def release(self, host: str) -> None:
        key = client_key(host)
        self.count -= 1
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]

    def refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.refused.labels(self.via, reason).inc()


def peer_host(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


def _refusal(status: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nRetry-After: "
            f"{RETRY_AFTER}\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the connection caps and the head and body deadlines.

    uvicorn closes an idle keep-alive connection but sets no deadline for a request head
    or body arriving byte by byte; here the head must be complete ``header_timeout``
    seconds after the connection (or the previous response), and the body ``body_timeout``
    seconds after its head.
    """

    cap: ClassVar[ConnectionCap]
    header_timeout: ClassVar[float]
    body_timeout: ClassVar[float]
    _peer: str | None = None
    _phase: str | None = None
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)
        host = peer_host(stream)
        why = self.cap.admit(host)
        if why is not None:  # never handed to uvicorn: nothing to undo in connection_lost
            stream.write(_refusal("503 Service Unavailable", f"connection refused: {why}"))
            stream.close()
            return
        self._peer = host
        super().connection_made(stream)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._peer is None:
            return
        self.cap.release(self._peer)
        self._peer = None
        self._set_deadline(None)
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._watch()

    def _watch(self) -> None:
        """Arm the deadline of what the connection is waiting for from the client."""
        state = self.conn.their_state
        phase = "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if self.transport.is_closing():
            phase = None
        if phase != self._phase:
            self._set_deadline(phase)

    def _set_deadline(self, phase: str | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = phase
        if phase is not None:
            seconds = self.header_timeout if phase == "head" else self.body_timeout
            if seconds > 0:
                self._deadline = self.loop.call_later(seconds, self._expired, phase, seconds)

    def _expired(self, phase: str, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        log.warning("http: closed the connection from %s: the request %s did not arrive "
                    "within %g s", self._peer, phase, seconds)
        self.cap.refused(f"{phase}_timeout")
        self.transport.close()


def http_protocol(cap: ConnectionCap, *, header_timeout: float,
                  body_timeout: float) -> type[LimitedH11Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, bound to this server's cap."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,),
                {"cap": cap, "header_timeout": header_timeout, "body_timeout": body_timeout})


@dataclass
class _Request:
    held: int = 0
    over: bool = False
    started: bool = False


class BodyBudget:
    """ASGI middleware: request bodies held by unfinished requests, all connections
    together, stay within ``limit`` bytes; a request that would pass it gets ``503`` with
    ``Retry-After`` (before its body is read when it declares a Content-Length).  uvicorn
    then reads the rest of that body and drops it, so the client can read the answer."""

    def __init__(self, app: ASGIApp, *, limit: int, metrics: LimitMetrics | None = None) -> None:
        self.app = app
        self.limit = limit
        self.held = 0
        if metrics is not None:
            metrics.body_bytes.set_function(lambda: self.held)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        # A body larger than the whole budget is left to the receiver's size limit (413).
        if declared is not None and self.held + declared > self.limit >= declared:
            await self._refuse(scope, send, declared)
            return
        request = _Request()

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                if self.held + size > self.limit:
                    request.over = True  # the app sees a disconnect and drops what it holds
                    return {"type": "http.disconnect"}
                self.held += size
                request.held += size
            return message

        async def guarded(message: Message) -> None:
            if request.over and not request.started:
                return  # our 503 replaces whatever the app answers to the disconnect
            if message["type"] == "http.response.start":
                request.started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not request.over:
                raise
        finally:
            self.held -= request.held
        if request.over and not request.started:
            await self._refuse(scope, send, None)

    async def _refuse(self, scope: Scope, send: Send, declared: int | None) -> None:
        client = scope.get("client") or ("unknown", 0)
        size = f"a body of {declared:,} bytes" if declared is not None else "its body"
        log.warning("http: refused a request from %s: %s would pass the %s bytes held for "
                    "unfinished requests (http_body_budget)", client[0], size, f"{self.limit:,}")
        body = json.dumps({"error": f"the server holds too many unfinished uploads to take "
                                    f"{size} now; retry in {RETRY_AFTER} s"}).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"),
                                (b"retry-after", str(RETRY_AFTER).encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            return int(value) if value.isdigit() else None
    return None
