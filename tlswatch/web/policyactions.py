"""The dashboard's actions on a hosted MTA-STS policy: rotate, enforce, fallback, retire and
apply-staged, each a plain HTML form (no script is served) posted with the CSRF token,
confirmed on a second page, and recorded with the logged-in user.

A change runs in a process of its own: DuckDB refuses a writable connection in a process
that holds read-only ones (the dashboard's); the change waits for the loader's lock like any
writer (``lock_timeout``).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tlswatch.analytics.render import to_json
from tlswatch.config import Settings
from tlswatch.errors import NotFoundError, TlsWatchError
from tlswatch.mtasts.changes import ACTIONS, Outcome, act, history, staged
from tlswatch.mtasts.hosting import PolicyStore
from tlswatch.render.html import render
from tlswatch.store import Store
from tlswatch.web.csrf import COOKIE, CsrfTokens
from tlswatch.web.guard import scope_of

WHAT = {  # what each action does, said on its button's confirmation page
    "rotate": "serve the same policy under a new id, so every sender fetches it again",
    "enforce": "move the policy from testing to enforce (refused unless 'policy advise' "
               "advises it; forcing it is recorded as forced)",
    "fallback": "go back from enforce to testing under a new id; senders that do not look "
                "again keep the enforce policy until its max_age runs out",
    "retire": "serve mode none under a new id; the records can go once the old max_age "
              "has passed",
    "apply-staged": "serve the policy the MX watcher staged",
}
FIELDS = 6  # a form carries csrf, reason, confirm, force: anything bigger is refused


def web_actor(request: Request, settings: Settings) -> str:
    """Who is logged in, as the change history names them: the dashboard user, the API
    token, or a loopback client that needed no login."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    token = value if scheme.lower() == "bearer" else request.cookies.get("tlswatch_token", "")
    if settings.web_token and token and hmac.compare_digest(token, settings.web_token):
        return "token:web_token"
    password = os.environ.get(settings.web_password_env, "") if settings.web_password_env \
        else ""
    if scheme.lower() == "basic" and settings.web_user and password:
        try:
            user, _, given = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            user, given = "", ""
        if hmac.compare_digest(user, settings.web_user) and \
                hmac.compare_digest(given, password):
            return f"dashboard:{user}"
    seen = scope_of(request)
    if seen.tenant is not None:
        return f"tenant {seen.tenant}, {seen.who or 'login'}"
    client = request.client.host if request.client else "unknown"
    return f"dashboard:no login ({client})"


def _run(settings: Settings, domain: str, action: str, actor: str, reason: str,
         force: bool) -> Outcome:
    return act(settings, domain, action, actor=actor, reason=reason, force=force)


class PolicyActions:
    def __init__(self, settings: Settings, csrf: CsrfTokens) -> None:
        self.settings = settings
        self.csrf = csrf
        self.policies = PolicyStore(Path(settings.policy_dir))

    def routes(self) -> list[Route]:
        return [Route("/domains/{domain}/policy", self.page),
                Route("/domains/{domain}/policy/{action}", self.post, methods=["POST"])]

    def panel(self, request: Request, domain: str) -> dict[str, Any]:
        """What the domain page's forms need (nothing when the domain is not hosted)."""
        policy = self.policies.hosted(domain)
        if policy is None:
            return {"hosted": None}
        session = self.csrf.session(request.cookies.get(COOKIE))
        return {"hosted": policy, "csrf": self.csrf.issue(session), "csrf_session": session}

    def with_session(self, request: Request, response: Response, session: str) -> Response:
        response.set_cookie(COOKIE, session, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def page(self, request: Request) -> Response:
        """The hosted policy, the staged one, its history and the action forms."""
        name = request.path_params["domain"].lower()
        panel = self.panel(request, name)
        if panel["hosted"] is None or not scope_of(request).allows(name):
            return self._answer(f"{name}: no policy is hosted here", 404, request)

        def read(store: Store) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
            return history(store, name), staged(store, name)
        changes, pending = await asyncio.to_thread(self._read, read)
        if request.query_params.get("format") == "json":
            hosted = panel["hosted"]
            return self.with_session(request, Response(to_json({
                "domain": name, "policy": hosted.text, "id": hosted.id, "mode": hosted.mode,
                "mx": hosted.mx, "max_age": hosted.max_age, "staged": pending,
                "changes": changes, "csrf": panel["csrf"]}),
                media_type="application/json"), panel["csrf_session"])
        response = HTMLResponse(render("policy.html", domain=name, changes=changes,
                                       staged=pending, what=WHAT, period="", **panel))
        return self.with_session(request, response, panel["csrf_session"])

    def _read(self, fn: Any) -> Any:
        try:
            with Store.open(self.settings.db, read_only=True,
                            lock_timeout=self.settings.lock_timeout) as store:
                return fn(store)
        except TlsWatchError:
            return [], None

    async def post(self, request: Request) -> Response:
        name = request.path_params["domain"].lower()
        action = request.path_params["action"]
        if action not in ACTIONS:
            return self._answer(f"{action}: no such policy action (one of "
                                f"{', '.join(ACTIONS)})", 404)
        cookie = request.cookies.get(COOKIE)
        form = await request.form(max_files=0, max_fields=FIELDS)
        token = form.get("csrf", "")
        problem = self.csrf.problem(token if isinstance(token, str) else "", cookie)
        if problem:
            return self._answer(f"refused: policy {action} of {name}: {problem}; reload the "
                                "page and try again", 403)
        if self.policies.hosted(name) is None or not scope_of(request).allows(name):
            return self._answer(f"{name}: no policy is hosted here", 404)
        reason = str(form.get("reason", ""))[:500]
        force = form.get("force") == "yes"
        if form.get("confirm") != "yes":
            assert cookie is not None  # checked with the token above
            return HTMLResponse(render(
                "policy_confirm.html", domain=name, action=action, what=WHAT[action],
                reason=reason, force=force, csrf=self.csrf.issue(cookie), period=""))
        return await self._apply(request, name, action, reason, force)

    async def _apply(self, request: Request, name: str, action: str, reason: str,
                     force: bool) -> Response:
        actor = web_actor(request, self.settings)
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            try:
                outcome = await loop.run_in_executor(pool, _run, self.settings, name, action,
                                                     actor, reason, force)
            except NotFoundError as exc:
                return self._answer(str(exc), 404)
            except TlsWatchError as exc:
                return self._answer(str(exc), 409)
        return HTMLResponse(render("policy_done.html", domain=name, change=outcome.change,
                                   note=outcome.note, period=""))

    def _answer(self, message: str, status: int, request: Request | None = None) -> Response:
        if request is not None and request.query_params.get("format") == "json":
            return Response(to_json({"error": message}), status_code=status,
                            media_type="application/json")
        return HTMLResponse(render("error.html", title="Policy action", message=message,
                                   window=None, period=""), status_code=status)
