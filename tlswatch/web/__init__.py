"""The ASGI application: the HTTPS receiver and the dashboard share it."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware

from tlswatch.config import Settings
from tlswatch.errors import ConfigError
from tlswatch.ingest.http import ReportReceiver
from tlswatch.ingest.prepare import options_from
from tlswatch.ingest.spool import Spool
from tlswatch.metrics import Metrics
from tlswatch.web.acme import Challenges
from tlswatch.web.dashboard import Dashboard
from tlswatch.web.fetchlog import FetchLog
from tlswatch.web.guard import Guard, login_mode
from tlswatch.web.policyhost import PolicyHost


def needs_login(settings: Settings) -> bool:
    """Login for every client: the dashboard listens beyond loopback (or it was asked for).
    On loopback, a client behind a proxy logs in all the same (see ``Guard``)."""
    return login_mode(settings) == "always"


def _check_login_configured(settings: Settings) -> None:
    password = os.environ.get(settings.web_password_env, "") if settings.web_password_env \
        else ""
    if settings.web_token or (settings.web_user and password):
        return
    if needs_login(settings):
        raise ConfigError(f"the dashboard on {settings.http} needs a login: set web_token, "
                          "or web_user and web_password_env (or listen on loopback)")
    if settings.trusted_proxies and settings.web_auth != "never":
        raise ConfigError(f"trusted_proxies is set ({', '.join(settings.trusted_proxies)}): "
                          "the clients behind the proxy need a login: set web_token, or "
                          "web_user and web_password_env")


def create_app(settings: Settings, spool: Spool, metrics: Metrics) -> Starlette:
    _check_login_configured(settings)
    options = options_from(settings)
    receiver = ReportReceiver(spool, metrics, options,
                              rate_per_minute=settings.http_rate_limit,
                              burst=settings.http_rate_burst)
    dashboard = Dashboard(settings, spool, options)
    policies = PolicyHost(Path(settings.policy_dir), FetchLog(settings, metrics.registry))
    # The guard runs before routing: the receiver's per-IP limit sees the real client.
    challenges = Challenges(settings)
    return Starlette(routes=receiver.routes() + policies.routes() + challenges.routes()
                     + dashboard.routes(),
                     middleware=[Middleware(Guard, settings=settings)])
