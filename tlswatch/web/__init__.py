"""The ASGI application: the HTTPS receiver now, the dashboard and JSON API later."""

from __future__ import annotations

from starlette.applications import Starlette

from tlswatch.config import Settings
from tlswatch.ingest.http import ReportReceiver
from tlswatch.ingest.prepare import options_from
from tlswatch.ingest.spool import Spool
from tlswatch.metrics import Metrics


def create_app(settings: Settings, spool: Spool, metrics: Metrics) -> Starlette:
    receiver = ReportReceiver(spool, metrics, options_from(settings),
                              rate_per_minute=settings.http_rate_limit,
                              burst=settings.http_rate_burst)
    return Starlette(routes=receiver.routes())
