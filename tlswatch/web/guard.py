"""The door of the ASGI app, as plain ASGI (Starlette's BaseHTTPMiddleware cost the report
receiver a quarter of its rate): the Host check, the client behind a trusted proxy, the
login, and the security headers on every answer.

Who logged in decides what a request sees: the single-tenant logins (``web_token``,
``web_user``) and a loopback client that needs no login see everything; a tenant's user or
API token sees only the tenant's domains (``Scope``, passed to the pages in the ASGI scope
under ``SCOPE_KEY``).  A viewer's request that would change something (any method but GET
and HEAD) is refused here, in one place, for every page."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from tlswatch.config import Settings
from tlswatch.store import Store
from tlswatch.tenants.accounts import password_login, token_digest, token_login
from tlswatch.tenants.registry import scope_for
from tlswatch.tenants.scope import EVERYTHING, Scope
from tlswatch.tenants.usage import note_use
from tlswatch.web.proxy import Client, ClientView, ForwardingError, HostCheck

log = logging.getLogger(__name__)
SCOPE_KEY = "tlswatch.scope"  # the ASGI scope key holding the request's Scope
READING = ("GET", "HEAD")  # what a viewer may do
# Figures of every domain: for the operator; a tenant gets 404, as for a page that is not.
OPERATOR_PATHS = ("/metrics",)
PASSWORD_CACHE_SECONDS = 60.0  # a checked password is not checked again (scrypt) for this long
# Tenant logins are checked on two threads of their own (scrypt is slow on purpose), so a
# flood of wrong passwords never holds up the receivers; at most LOGIN_QUEUE checks wait,
# and a client that failed LOGIN_FAILURES times within a minute is refused without one.
LOGIN_THREADS = 2
LOGIN_QUEUE = 16
LOGIN_FAILURES = 10

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


class LoginRefused(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


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
        self.settings = settings
        self._cache_key = secrets.token_bytes(32)
        self._passwords: dict[bytes, tuple[float, str, str]] = {}  # -> (until, tenant, role)
        self._noted: dict[str, float] = {}  # token digest -> when to note its use again
        self._logins = ThreadPoolExecutor(LOGIN_THREADS, thread_name_prefix="tlswatch-login")
        self._waiting = 0
        self._failed: dict[str, deque[float]] = {}  # client -> times of its failed logins

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

    def _offered(self, request: Request) -> tuple[str, str, str] | None:
        """The credentials a request offers: ("token", token, "") or ("user", name,
        password); None when it offers none."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value:
            return "token", value, ""
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return "user", user, password
        cookie = request.cookies.get("tlswatch_token", "")
        return ("token", cookie, "") if cookie else None

    def _tenant_scope(self, offered: tuple[str, str, str]) -> Scope | None:
        """The scope of a tenant's token or user (a blocking store read), or None."""
        kind, name, password = offered
        key = hmac.new(self._cache_key, f"{name}\0{password}".encode(),
                       hashlib.sha256).digest()
        try:
            with Store.open(self.settings.db, read_only=True,
                            lock_timeout=self.settings.lock_timeout) as store:
                if kind == "token":
                    found = token_login(store, name)
                    if found is not None:
                        self._note_use(name)
                    return found
                cached = self._passwords.get(key)
                if cached and cached[0] > time.monotonic() and store.rows(
                        "SELECT name FROM users WHERE name = ? AND tenant = ? AND role = ?",
                        [name, cached[1], cached[2]]):  # still the same user of that tenant
                    return replace(scope_for(store, cached[1], cached[2]), who=f"user:{name}")
                self._passwords.pop(key, None)
                found = password_login(store, name, password)
                if found is not None and found.tenant is not None:
                    self._passwords[key] = (time.monotonic() + PASSWORD_CACHE_SECONDS,
                                            found.tenant, found.role)
                return replace(found, who=f"user:{name}") if found is not None else None
        except Exception as exc:  # no database yet, or no tenant tables: no tenant login
            log.info("login: tenant credentials not checked: %s", exc)
            return None

    def _note_use(self, token: str) -> None:
        """Leave the mark that 'serve' turns into the token's last_used_at (once a minute)."""
        digest = token_digest(token)
        if self._noted.get(digest, 0.0) > time.monotonic():
            return
        self._noted[digest] = time.monotonic() + 60
        try:
            note_use(self.settings.spool, digest)
        except OSError as exc:
            log.warning("login: could not note the use of token %s...: %s", digest[:8], exc)

    async def _scope(self, request: Request, client: Client) -> Scope | None:
        """What the request may see, or None: it must log in."""
        if self._logged_in(request):
            return EVERYTHING
        offered = self._offered(request)
        if offered is not None:
            found = await self._check_login(offered, client.host)
            if found is not None:
                return found
        return None if self._needs_login(client) else EVERYTHING

    async def _check_login(self, offered: tuple[str, str, str], host: str) -> Scope | None:
        """A tenant login checked on the login threads, within the bounds above."""
        now = time.monotonic()
        failures = self._failed.get(host)
        while failures and failures[0] < now - 60:
            failures.popleft()
        if failures is not None and len(failures) >= LOGIN_FAILURES:
            raise LoginRefused(f"refused: {LOGIN_FAILURES} failed logins from this address "
                               "within a minute; wait a minute", 429)
        if self._waiting >= LOGIN_QUEUE:
            raise LoginRefused("refused: too many logins are being checked; try again", 503)
        self._waiting += 1
        try:
            found = await asyncio.get_running_loop().run_in_executor(
                self._logins, self._tenant_scope, offered)
        finally:
            self._waiting -= 1
        if found is None:
            if len(self._failed) > 10_000:  # bounded: the oldest clients are forgotten
                self._failed.pop(next(iter(self._failed)))
            self._failed.setdefault(host, deque(maxlen=LOGIN_FAILURES)).append(now)
        return found

    def _needs_login(self, client: Client) -> bool:
        return self.mode == "always" or (self.mode == "loopback" and not client.loopback)

    async def _refusal(self, scope: AsgiScope) -> tuple[AsgiScope, Response | None]:
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
        if scope["path"].startswith(OPEN_PATHS):
            return scope, None
        try:
            seen = await self._scope(Request(scope), client)
        except LoginRefused as exc:
            return scope, PlainTextResponse(str(exc), status_code=exc.status,
                                            headers={"Retry-After": "60"})
        if seen is None:
            return scope, PlainTextResponse(
                "login required", status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="tlswatch"'})
        if seen.role != "admin" and scope["method"] not in READING:
            return scope, PlainTextResponse(
                f"refused: {scope['method']} {scope['path']}: a viewer of tenant "
                f"{seen.tenant!r} reads only; an admin of the tenant can do this",
                status_code=403)
        if not seen.everything and scope["path"].startswith(OPERATOR_PATHS):
            return scope, PlainTextResponse("Not Found", status_code=404)
        return {**scope, SCOPE_KEY: seen}, None

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers.setdefault(key, value)
            await send(message)

        scope, refusal = await self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)


def scope_of(request: Request) -> Scope:
    """What the logged-in user or token may see (everything without the guard)."""
    found = request.scope.get(SCOPE_KEY, EVERYTHING)
    assert isinstance(found, Scope)
    return found
