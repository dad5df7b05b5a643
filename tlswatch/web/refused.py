"""The dashboard's "Refused" pages: refused inputs listed and shown (read only).

Retry and delete stay on the command line (``tlswatch quarantine retry|delete``): they
write to the database, and the web process is no writer (the loader process is); the pages
say which command to run.  Strings from inputs are escaped twice over: characters that
reorder or hide text become visible escapes (``safe_text``), then HTML escaping.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tlswatch.analytics.render import safe_text, to_json
from tlswatch.config import Settings
from tlswatch.errors import NotFoundError
from tlswatch.quarantine import Filters, details, list_refused
from tlswatch.render.html import render
from tlswatch.web.guard import scope_of
from tlswatch.web.window import WindowError, day_param

LISTED = 500  # entries on the page, the newest
SHOWN_CHARS = 1024 * 1024  # of an input's content on its page; --raw gives it whole


class RefusedPages:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def routes(self) -> list[Route]:
        return [Route("/refused", self.listing), Route("/refused/{ident}", self.entry)]

    async def listing(self, request: Request) -> Response:
        q = request.query_params
        try:  # a date that is not one is refused as on the other pages, never ignored
            since, until = day_param(q, "since"), day_param(q, "until")
            if since and until and since > until:
                raise WindowError(f"since: {since} is after until: {until}; swap them")
        except WindowError as exc:
            return _bad_request(request, str(exc))
        filters = Filters(since=since, until=until, reason=q.get("reason") or None)
        # Refused inputs belong to no tenant: a tenant's users see none of them.
        entries = await asyncio.to_thread(list_refused, self.settings, filters) \
            if scope_of(request).everything else []
        shown = entries[-LISTED:]  # the newest; the command lists them all
        return _page(request, "refused.html", {"entries": [e.as_dict() for e in shown],
                                               "total": len(entries)})

    async def entry(self, request: Request) -> Response:
        ident = request.path_params["ident"]
        try:
            if not scope_of(request).everything:
                raise NotFoundError(f"{ident!r}: no refused input with this id; "
                                    "'tlswatch quarantine' lists them")
            data = await asyncio.to_thread(details, self.settings, ident,
                                           max_chars=SHOWN_CHARS)
        except NotFoundError as exc:
            return HTMLResponse(safe_text(str(exc)).replace("&", "&amp;").replace("<", "&lt;"),
                                status_code=404)
        return _page(request, "refused_entry.html", {"entry": data})


def _page(request: Request, template: str, data: dict[str, Any]) -> Response:
    if request.query_params.get("format") == "json":
        return Response(to_json(data), media_type="application/json")
    return HTMLResponse(render(template, **_safe(data), period=""))


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {k: _safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_safe(v) for v in value]
    return value


def _bad_request(request: Request, problem: str) -> Response:
    if request.query_params.get("format") == "json":
        return JSONResponse({"error": problem}, status_code=400)
    return HTMLResponse(render("error.html", title="Bad date range", message=problem,
                               back=request.url.path, period=""), status_code=400)
