"""The HTTPS receiver: ``POST /v1/reports`` (RFC 8460 section 5.4), ``/healthz``, ``/metrics``.

A body goes through the one intake door (``accept``): checked as the loader will check it,
so a sender learns at once what is wrong (400 with a JSON ``error``; the body is kept in
``spool/failed``); ``201`` is sent only after the body is durably in the spool.  Limits are
enforced before reading: an unknown type gets 415, a body over the limit 413 (by its
Content-Length, or as soon as the stream passes it), and a client IP over its rate 429.
``/healthz`` answers 503 with the reason when the loader is down or the spool has waited
too long.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tlswatch.dnsname import BadDomain, parse_domain
from tlswatch.ingest.accept import Intake, Refused, Unavailable
from tlswatch.ingest.prepare import Options
from tlswatch.ingest.spool import Spool
from tlswatch.metrics import Metrics

log = logging.getLogger(__name__)
REPORT_TYPES = frozenset({"application/tlsrpt+gzip", "application/tlsrpt+json",
                          "application/gzip", "application/x-gzip", "application/json"})


class RateLimiter:
    """A token bucket per client IP: ``burst`` at once, then ``per_minute``."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(max(1, burst))
        self.buckets: dict[str, tuple[float, float]] = {}

    def wait_time(self, client: str) -> float:
        """0 when the request may go ahead (and is counted), else seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, last = self.buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self.buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self.buckets[client] = (tokens - 1.0, now)
        if len(self.buckets) > 10_000:  # forget clients whose bucket is full again
            full = [k for k, (t, s) in self.buckets.items()
                    if t + (now - s) * self.rate >= self.burst]
            for key in full:
                del self.buckets[key]
        return 0.0


@dataclass(frozen=True)
class HealthChecks:
    """What /healthz checks beyond the spool's depth; 'serve' puts it on ``app.state.health``."""

    loader_problem: Callable[[], str | None]
    max_spool_age: float
    # On a node of several: its name and whether the shared store answers (information:
    # the node still takes reports into its spool while the store is away).
    about: Callable[[], dict[str, Any]] | None = None


class _Json(JSONResponse):
    """JSON with every non-ASCII character escaped: report-ids and reasons echoed to a
    sender may hold control or bidi characters, which then reach no log viewer as such."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return _Json({"error": message}, status_code=status, headers=headers or None)


class ReportReceiver:
    def __init__(self, spool: Spool, metrics: Metrics, options: Options, *,
                 rate_per_minute: float, burst: int) -> None:
        self.spool = spool
        self.metrics = metrics
        self.intake = Intake(spool, options, metrics=metrics)
        self.max_bytes = options.limits.max_input_bytes
        self.limiter = RateLimiter(rate_per_minute, burst)

    def routes(self) -> list[Route]:
        # With and without a final slash: a redirect would lose the report (senders post
        # with curl and no --location).
        return [Route("/v1/reports", self.post_report, methods=["POST"]),
                Route("/v1/reports/", self.post_report, methods=["POST"]),
                Route("/v1/reports/{domain}", self.post_report, methods=["POST"]),
                Route("/v1/reports/{domain}/", self.post_report, methods=["POST"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/metrics", self.prometheus, methods=["GET"])]

    def _refuse(self, reason: str, status: int, message: str, client: str,
                **headers: str) -> JSONResponse:
        self.metrics.rejected.labels("http", reason).inc()
        if status in (400, 413, 415):  # 429 is a flood by definition: counted, not logged
            log.info("http: answered %d to %s: %r", status, client, message)
        return _error(status, message, **headers)

    async def post_report(self, request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        wait = self.limiter.wait_time(client)
        if wait:
            return self._refuse("rate_limited", 429, "too many reports from this address; "
                                "slow down", client, **{"Retry-After": str(math.ceil(wait))})
        domain = request.path_params.get("domain")
        if domain is not None:  # rua=https://host/v1/reports/<domain>: for entries naming none
            try:
                domain = parse_domain(domain)
            except BadDomain as exc:
                return self._refuse("invalid", 400, f"URL path: {exc}", client)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in REPORT_TYPES:
            return self._refuse("unsupported_media_type", 415,
                                f"Content-Type must be one of {', '.join(sorted(REPORT_TYPES))}"
                                f", got {ctype or 'none'!r}", client)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return self._refuse("too_large", 413, f"body of {int(declared):,} bytes is over "
                                f"the limit of {self.max_bytes:,}", client)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_bytes:
                return self._refuse("too_large", 413, f"body is over the limit of "
                                    f"{self.max_bytes:,} bytes", client)
        meta: dict[str, Any] = {"via": "http", "peer": client, "content_type": ctype,
                                "received_at": datetime.now(UTC).isoformat(), "domain": domain}
        source = f"POST /v1/reports/{domain}" if domain else "POST /v1/reports"
        outcome = await asyncio.to_thread(self.intake.accept, bytes(body), meta,
                                          source=source, via="http", domain=domain)
        if isinstance(outcome, Unavailable):
            return _error(503, "cannot store the report now; please retry later",
                          **{"Retry-After": "60"})
        if isinstance(outcome, Refused):
            return _error(400, outcome.message)
        return _Json({"id": outcome.spool_id, "reports": len(outcome.report_ids),
                             "report_ids": list(outcome.report_ids)}, status_code=201)

    async def healthz(self, request: Request) -> Response:
        """200 ``ok``, or 503 with the ``reason``: the loader is down (as 'serve' tells
        through ``app.state.health``) or the oldest waiting report is too old."""
        depth, age = await asyncio.to_thread(lambda: (self.spool.depth(),
                                                      self.spool.oldest_age()))
        checks: HealthChecks | None = getattr(request.app.state, "health", None)
        reason = checks.loader_problem() if checks is not None else None
        if reason is None and checks is not None and age > checks.max_spool_age:
            reason = (f"the oldest report in the spool has waited {age:.0f} s, more than "
                      f"{checks.max_spool_age:g} s (health_max_spool_age)")
        body = {"status": "ok" if reason is None else "unavailable", "spool_depth": depth,
                "oldest_waiting_seconds": round(age, 1)}
        if reason is not None:
            body["reason"] = reason
        if checks is not None and checks.about is not None:
            body |= await asyncio.to_thread(checks.about)
        return JSONResponse(body, status_code=200 if reason is None else 503)

    async def prometheus(self, request: Request) -> Response:
        body = await asyncio.to_thread(self.metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
