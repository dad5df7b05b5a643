"""The ASGI application: the HTTPS receiver and the dashboard share it."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tlswatch.config import Settings
from tlswatch.errors import ConfigError
from tlswatch.ingest.accept import intake_options
from tlswatch.ingest.http import ReportReceiver
from tlswatch.ingest.spool import Spool
from tlswatch.metrics import Metrics
from tlswatch.web.dashboard import Dashboard
from tlswatch.web.policyhost import PolicyHost

# Senders, health checks and MTA-STS policy fetches never log in.
OPEN_PATHS = ("/v1/reports", "/healthz", "/.well-known/mta-sts.txt")
SECURITY_HEADERS = {
    # No script is ever served: even a mistake in escaping cannot run one.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "img-src 'self' data:; form-action 'self'; frame-ancestors "
                               "'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def needs_login(settings: Settings) -> bool:
    """Login is required when the dashboard listens beyond loopback (or when asked to)."""
    if settings.web_auth != "auto":
        return settings.web_auth == "always"
    host = settings.http.rpartition(":")[0].strip("[]") or "127.0.0.1"
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"


class _Guard:
    """Login beyond loopback and security headers, as plain ASGI: Starlette's
    BaseHTTPMiddleware cost the report receiver a quarter of its rate."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.login = needs_login(settings)
        self.token = settings.web_token
        self.user = settings.web_user
        self.password = os.environ.get(settings.web_password_env, "") \
            if settings.web_password_env else ""

    def _allowed(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if self.token:
            offered = value if scheme.lower() == "bearer" else \
                request.cookies.get("tlswatch_token", "")
            if offered and hmac.compare_digest(offered, self.token):
                return True
        if self.user and self.password and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return hmac.compare_digest(user, self.user) and \
                hmac.compare_digest(password, self.password)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.login and not scope["path"].startswith(OPEN_PATHS) and \
                not self._allowed(Request(scope)):
            refusal = PlainTextResponse("login required", status_code=401,
                                        headers={"WWW-Authenticate": 'Basic realm="tlswatch"'})
            await refusal(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers.setdefault(key, value)
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(settings: Settings, spool: Spool, metrics: Metrics) -> Starlette:
    password = os.environ.get(settings.web_password_env, "") if settings.web_password_env \
        else ""
    if needs_login(settings) and not settings.web_token and not (settings.web_user and
                                                                 password):
        raise ConfigError(f"the dashboard on {settings.http} needs a login: set web_token, "
                          "or web_user and web_password_env (or listen on loopback)")
    options = intake_options(settings)
    receiver = ReportReceiver(spool, metrics, options,
                              rate_per_minute=settings.http_rate_limit,
                              burst=settings.http_rate_burst)
    dashboard = Dashboard(settings, spool, options)
    policies = PolicyHost(Path(settings.policy_dir))
    return Starlette(routes=receiver.routes() + policies.routes() + dashboard.routes(),
                     middleware=[Middleware(_Guard, settings=settings)])
