"""The door of the ASGI app, as plain ASGI (Starlette's BaseHTTPMiddleware cost the report
receiver a quarter of its rate): the Host check, the client behind a trusted proxy, the
login, and the security headers on every answer."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import os

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tlswatch.config import Settings
from tlswatch.web.proxy import Client, ClientView, ForwardingError, HostCheck

# Senders, health checks and MTA-STS policy fetches never log in.
OPEN_PATHS = ("/v1/reports", "/healthz", "/.well-known/mta-sts.txt",
              "/.well-known/acme-challenge/")
# Found by Host: mta-sts.<hosted domain>, so it answers for names beyond allowed_hosts.
POLICY_PATH = "/.well-known/mta-sts.txt"
ACME_PATH = "/.well-known/acme-challenge/"  # asked by the ACME server for the hosted names
SECURITY_HEADERS = {
    # No script is ever served: even a mistake in escaping cannot run one.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "img-src 'self' data:; form-action 'self'; frame-ancestors "
                               "'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def login_mode(settings: Settings) -> str:
    """never, always, or loopback: no login for a known loopback client only."""
    if settings.web_auth != "auto":
        return settings.web_auth
    host = settings.http.rpartition(":")[0].strip("[]") or "127.0.0.1"
    if host == "localhost":
        return "loopback"
    try:
        return "loopback" if ipaddress.ip_address(host).is_loopback else "always"
    except ValueError:
        return "always"


class Guard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.mode = login_mode(settings)
        self.hosts = HostCheck(settings)
        self.view = ClientView(settings.trusted_proxies)
        self.token = settings.web_token
        self.user = settings.web_user
        self.password = os.environ.get(settings.web_password_env, "") \
            if settings.web_password_env else ""

    def _logged_in(self, request: Request) -> bool:
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

    def _needs_login(self, client: Client) -> bool:
        return self.mode == "always" or (self.mode == "loopback" and not client.loopback)

    def _refusal(self, scope: Scope) -> tuple[Scope, Response | None]:
        """The scope with the real client, or the answer that refuses the request."""
        host = next((value.decode("latin-1") for name, value in scope["headers"]
                     if name == b"host"), None)
        any_host = scope["path"] == POLICY_PATH or scope["path"].startswith(ACME_PATH)
        if not any_host and not self.hosts.allows(host):
            return scope, PlainTextResponse(
                f"refused: Host {host!r} is not a name of this server (allowed_hosts); "
                "add it there if it is", status_code=421)
        try:
            client = self.view.client(scope)
        except ForwardingError as exc:
            return scope, PlainTextResponse(f"refused: {exc}", status_code=400)
        scope = self.view.rewrite(scope, client)
        if not scope["path"].startswith(OPEN_PATHS) and self._needs_login(client) and \
                not self._logged_in(Request(scope)):
            return scope, PlainTextResponse(
                "login required", status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="tlswatch"'})
        return scope, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers.setdefault(key, value)
            await send(message)

        scope, refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)
