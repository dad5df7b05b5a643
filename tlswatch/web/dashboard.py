"""The web dashboard: overview, domain pages, reports, alerts and a manual upload form.

Every page is also JSON (``?format=json``).  Pages read the store with a read-only
connection per request (waiting briefly while the loader writes a batch); uploads go to
the spool like any other report.  No JavaScript is served; charts are SVG drawn here.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tlswatch.analytics.alert_rules import describe as describe_rules
from tlswatch.analytics.alerts import history, last_report_day
from tlswatch.analytics.checks import check_history, last_check
from tlswatch.analytics.explain import explain
from tlswatch.analytics.fetches import fetch_section
from tlswatch.analytics.overview import overview, overview_of_nothing
from tlswatch.analytics.queries import Filters, failure_groups
from tlswatch.analytics.render import to_json
from tlswatch.analytics.reports import find_report, list_reports, raw_report, report_page
from tlswatch.analytics.senders import SenderMap
from tlswatch.analytics.series import (
    by_organization,
    daily_failures,
    daily_sessions,
    policy_strings,
)
from tlswatch.analytics.summary import paragraph, summarize
from tlswatch.config import Settings
from tlswatch.errors import NotFoundError
from tlswatch.ingest.accept import Intake, Refused, Unavailable
from tlswatch.ingest.prepare import Options
from tlswatch.ingest.spool import Spool
from tlswatch.jobs import rules
from tlswatch.mtasts.onboarding import onboarding, stored_records
from tlswatch.render.charts import rate_chart, sparkline, stacked_bars
from tlswatch.render.html import render
from tlswatch.store import Store
from tlswatch.tenants.registry import NOBODY
from tlswatch.web.csrf import COOKIE as CSRF_COOKIE
from tlswatch.web.csrf import HEADER as CSRF_HEADER
from tlswatch.web.csrf import CsrfTokens
from tlswatch.web.guard import scope_of
from tlswatch.web.policyactions import PolicyActions
from tlswatch.web.refused import RefusedPages
from tlswatch.web.window import Window, WindowError, parse_window

log = logging.getLogger(__name__)
# Room for the multipart envelope around an upload of max_input_bytes.
FORM_OVERHEAD = 64 * 1024


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _page_number(text: str) -> int:
    return int(text) if text.isdigit() and len(text) < 9 else 1


def _page_link(window: Window, page: int, as_json: bool) -> str:
    """The overview's URL for another page, in the same range (and form)."""
    query = {"since": window.since, "until": window.until} if window.chosen else {}
    return "/?" + urlencode({**query, "page": page, **({"format": "json"} if as_json else {})})


class Dashboard:
    def __init__(self, settings: Settings, spool: Spool, options: Options) -> None:
        self.settings = settings
        self.spool = spool
        self.options = options
        self.csrf = CsrfTokens()
        self.intake = Intake(spool, options)
        self.policy = PolicyActions(settings, self.csrf)

    def routes(self) -> list[Route]:
        return [Route("/", self.overview), Route("/domains/{domain}", self.domain),
                Route("/domains/{domain}/checks", self.checks), *self.policy.routes(),
                Route("/reports", self.reports), Route("/reports/{ident}", self.report),
                Route("/reports/{ident}/raw.json", self.raw_report),
                Route("/alerts", self.alerts), *RefusedPages(self.settings).routes(),
                Route("/upload", self.upload, methods=["GET", "POST"])]

    # -- plumbing ---------------------------------------------------------------------------
    async def _read(self, fn: Any, *args: Any) -> Any:
        def work() -> Any:
            try:
                store = Store.open(self.settings.db, read_only=True,
                                   lock_timeout=self.settings.lock_timeout)
            except Exception as exc:
                if "no database here yet" in str(exc):
                    return None
                raise
            with store:
                return fn(store, *args)
        return await asyncio.to_thread(work)

    def _page(self, request: Request, template: str, data: dict[str, Any],
              **extra: Any) -> Response:
        if request.query_params.get("format") == "json":
            # The CLI's JSON: control and bidi characters from reports as \uXXXX escapes.
            return Response(to_json(data), media_type="application/json")
        return HTMLResponse(render(template, **data, **extra))

    async def _window(self, request: Request) -> Window:
        """The range the URL asks for, else the 30 days ending today; a store with no report
        in those days but older ones shows the 30 days up to its newest report, and says so.
        ``WindowError`` for a range that cannot be shown."""
        window = parse_window(request.query_params, today=datetime.now(UTC).date(),
                              max_days=self.settings.web_max_days)
        if window.chosen:
            return window
        newest = await self._read(last_report_day, scope_of(request))
        if newest is not None and newest < window.since:
            return window.ending(newest, f"No reports in the {window.days} days up to today: "
                                 f"these are the {window.days} days up to the newest report "
                                 f"day, {newest}.")
        return window

    def _bad_window(self, request: Request, problem: WindowError) -> Response:
        if request.query_params.get("format") == "json":
            return JSONResponse({"error": str(problem)}, status_code=400)
        return HTMLResponse(render("error.html", title="Bad date range", message=str(problem),
                                   back=request.url.path, period=""), status_code=400)

    # -- pages --------------------------------------------------------------------------------
    async def overview(self, request: Request) -> Response:
        try:
            window = await self._window(request)
        except WindowError as problem:
            return self._bad_window(request, problem)
        start, end, days = window.since, window.until, window.days
        scope = scope_of(request)

        page = _page_number(request.query_params.get("page", "1"))

        def build(store: Store) -> dict[str, Any]:
            data = overview(store, Filters(since=start, until=end, scope=scope), page=page)
            for d in data["domains"]:
                rates = d["daily_success_rate"]
                d["sparkline"] = sparkline(rates, low=min(
                    [r for r in rates if r is not None] + [0.99]) - 0.01)
            return data

        data = await self._read(build) or overview_of_nothing()
        as_json = request.query_params.get("format") == "json"
        links = {"previous": _page_link(window, data["page"] - 1, as_json)
                 if data["page"] > 1 else None,
                 "next": _page_link(window, data["page"] + 1, as_json)
                 if data["page"] < data["pages"] else None}
        return self._page(request, "overview.html",
                          {"since": start, "until": end, "days": days, "note": window.note,
                           **data, **links},
                          window=window, period=f"{start} .. {end}")

    async def domain(self, request: Request) -> Response:
        name = request.path_params["domain"].lower()
        try:
            window = await self._window(request)
        except WindowError as problem:
            return self._bad_window(request, problem)
        start, end, days = window.since, window.until, window.days
        scope = scope_of(request)  # another tenant's domain is one without reports

        def build(store: Store) -> dict[str, Any] | None:
            filters = Filters(since=start, until=end, domains=(name,), scope=scope)
            summary = summarize(store, filters)
            if not summary.domains:
                return None
            d = summary.domains[0]
            sessions: dict[date, dict[str, Any]] = {
                r["day"]: r for r in daily_sessions(store, filters)}
            failures = daily_failures(store, filters)
            labels = [(start + timedelta(days=i)).isoformat() for i in range(days)]
            rates: list[float | None] = []
            for i in range(days):
                row = sessions.get(start + timedelta(days=i))
                total = (row["successful_sessions"] + row["failed_sessions"]) if row else 0
                rates.append(row["successful_sessions"] / total if row and total else None)
            by_type: dict[str, list[int]] = {}
            for r in failures:
                by_type.setdefault(r["result_type"], [0] * days)[(r["day"] - start).days] = \
                    int(r["failed_sessions"])
            return {
                "domain": name, "since": start, "until": end, "summary": d.__dict__,
                "paragraph": paragraph(d, max_causes=5),
                "findings": [{"result_type": t, "failed_sessions": n,
                              "meaning": explain(t, domain=name).meaning,
                              "fix": explain(t, domain=name).fix}
                             for t, n in d.failures_by_result_type.items()],
                "daily": [{"day": labels[i], "success_rate": rates[i]} for i in range(days)],
                "failures_by_day": {t: dict(zip(labels, v, strict=True))
                                    for t, v in by_type.items()},
                "organizations": by_organization(store, filters),
                "mx": failure_groups(store, filters, ("policy_domain", "receiving_mx_hostname",
                                                      "receiving_ip", "result_type"), limit=50),
                "ips": failure_groups(store, filters, ("policy_domain", "sending_mta_ip",
                                                       "organization_name"), limit=50),
                "policies": policy_strings(store, filters),
                "last_checked": last_check(store, name),
                # Hosted here: how onboarding goes, and the policy fetches beside the
                # sts-* failures senders reported.
                "onboarding": (board := onboarding(store, self.settings, name,
                                                   stored_records(store, name))),
                "policy_fetches": fetch_section(store, SenderMap(self.settings), name,
                                                since=start, until=end)
                if board["hosted"] else None,
                "rate_chart": rate_chart(labels, rates, title=f"daily success rate, {name}"),
                "failure_chart": stacked_bars(labels, by_type,
                                              title=f"failed sessions by result type, {name}"),
            }

        data = await self._read(build)
        if data is None:
            missing = render("error.html", title=name, window=window, period="",
                             message=f"No reports for {name} from {start} to {end}.")
            return await self.checks(request, note=f"No reports for {name} from {start} to "
                                     f"{end}.", missing=missing)
        charts = {k: data.pop(k) for k in ("rate_chart", "failure_chart")}
        panel = self.policy.panel(request, name)  # the hosted policy's action forms
        page = self._page(request, "domain.html", data, **charts, **panel, window=window,
                          period=f"{start} .. {end}")
        return self.policy.with_session(request, page, panel["csrf_session"]) \
            if panel["hosted"] else page

    async def checks(self, request: Request, note: str = "", missing: str = "") -> Response:
        """The history of a domain's MTA-STS/TLS-RPT checks, newest first (also the domain
        page of a domain without reports: 404 unless it was checked)."""
        name = request.path_params["domain"].lower()
        found = await self._read(lambda s: (last_check(s, name), check_history(s, domain=name))) \
            if scope_of(request).allows(name) else None
        last, runs = found or (None, [])
        if not scope_of(request).allows(name):  # as a domain without reports or checks
            note = note or f"No reports for {name}."
        if note and last is None:
            return HTMLResponse(missing or render("error.html", title=name, window=None,
                                                  period="", message=note), status_code=404)
        return self._page(request, "checks.html", {"domain": name, "runs": runs,
                                                   "last_checked": last}, note=note, period="")

    async def reports(self, request: Request) -> Response:
        q = request.query_params
        form = {k: q.get(k, "") for k in ("domain", "org", "since", "until")}

        def day(value: str) -> date | None:
            try:
                return date.fromisoformat(value) if value else None
            except ValueError:
                return None

        filters = Filters(since=day(form["since"]), until=day(form["until"]),
                          domains=(form["domain"],) if form["domain"] else (),
                          organizations=(form["org"],) if form["org"] else (),
                          scope=scope_of(request))
        rows = await self._read(lambda s: list_reports(s, filters, limit=500)) or []
        return self._page(request, "reports.html", {"filters": form, "reports": rows},
                          period="")

    async def report(self, request: Request) -> Response:
        ident = request.path_params["ident"]
        page = _page_number(request.query_params.get("page", "1"))
        try:
            data = await self._read(lambda s: report_page(s, ident, page=page,
                                                          scope=scope_of(request)))
        except NotFoundError as exc:
            return HTMLResponse(str(exc).replace("<", "&lt;"), status_code=404)
        if data is None:
            return HTMLResponse("no reports yet", status_code=404)
        data["raw_url"] = f"/reports/{data['id']}/raw.json"
        raw = data["raw_report"]
        return self._page(request, "report.html", {"report": data}, raw=raw, period="")

    async def raw_report(self, request: Request) -> Response:
        """The report's JSON as received, in full, as a download."""
        ident = request.path_params["ident"]

        def read(store: Store) -> tuple[int, bytes | None]:
            pk = find_report(store, ident, scope=scope_of(request))
            return pk, raw_report(store, pk)

        try:
            found = await self._read(read)
        except NotFoundError as exc:
            return HTMLResponse(str(exc).replace("<", "&lt;"), status_code=404)
        if found is None:
            return HTMLResponse("no reports yet", status_code=404)
        pk, raw = found
        if raw is None:
            return HTMLResponse("the raw report was pruned (setting raw_keep_days)",
                                status_code=404)

        def inflate() -> Iterator[bytes]:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as inflating:
                while chunk := inflating.read(1024 * 1024):
                    yield chunk

        name = f"report-{pk}.json"
        return StreamingResponse(inflate(), media_type="application/json", headers={
            "Content-Disposition": f'attachment; filename="{name}"'})

    async def alerts(self, request: Request) -> Response:
        """The recorded alerts (newest 500), when the rules run and which are in force."""
        rows = await self._read(lambda s: history(s, Filters(scope=scope_of(request)))[:500]) \
            or []
        s = self.settings
        schedule = {"after_load": True, "daily_at": s.export_time if s.export_dir else None,
                    "checks_every": s.check_interval_hours or None,
                    "delivered_by": [c for c, on in (("mail", bool(s.mail_smtp)),
                                                     ("webhook", bool(s.webhook_url))) if on]}
        return self._page(request, "alerts.html", {
            "alerts": rows, "schedule": schedule, "rules": describe_rules(
                rules(s), check_cert_days=s.check_cert_days if s.check_interval_hours else None,
                acme_alert_days=s.acme_alert_days if s.acme_directory else None,
                dns_updates=bool(s.dns_update_zone))},
            period="")

    async def upload(self, request: Request) -> Response:
        cookie = request.cookies.get(CSRF_COOKIE)
        session = self.csrf.session(cookie)
        message, ok, status = "", False, 200
        if request.method == "POST":
            refusal = self._upload_refusal(request, cookie)
            if refusal is not None:
                return refusal
            form = await request.form(max_files=1, max_fields=5)
            upload = form.get("report")
            if upload is None or isinstance(upload, str):
                message, status = "no file was sent", 400
            else:
                data = await upload.read(self.settings.max_input_bytes + 1)
                message, ok, status = await self._accept_upload(upload.filename or "upload",
                                                                data, _client(request),
                                                                self._intake(request))
        token = self.csrf.issue(session)
        if request.query_params.get("format") == "json":
            response: Response = JSONResponse({"ok": ok, "message": message, "csrf": token},
                                              status_code=status)
        else:
            response = HTMLResponse(render("upload.html", csrf=token, message=message, ok=ok,
                                           period=""), status_code=status)
        response.set_cookie(CSRF_COOKIE, session, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    def _upload_refusal(self, request: Request, cookie: str | None) -> Response | None:
        """Checks made before the body is read: the server-issued token, the size."""
        token = request.headers.get(CSRF_HEADER) or request.query_params.get("csrf", "")
        problem = self.csrf.problem(token, cookie)
        if problem:
            return HTMLResponse(f"refused: upload: {problem}; reload the upload page and try "
                                "again", status_code=403)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.settings.max_input_bytes + FORM_OVERHEAD:
            log.info("upload: answered 413 to %s: a body of %s bytes", _client(request),
                     f"{int(declared):,}")
            return HTMLResponse(f"refused: upload: a body of {int(declared):,} bytes is over "
                                f"the limit of {self.settings.max_input_bytes:,}",
                                status_code=413)
        return None

    def _intake(self, request: Request) -> Intake:
        """A tenant's admin uploads reports for the tenant's domains only."""
        scope = scope_of(request)
        if scope.domains is None:
            return self.intake
        return Intake(self.spool, replace(self.options, domains=scope.domains or NOBODY,
                                          refused_hint=f"tenant {scope.tenant!r} does not "
                                                       "own it"))

    async def _accept_upload(self, filename: str, data: bytes, client: str,
                             intake: Intake) -> tuple[str, bool, int]:
        if len(data) > self.settings.max_input_bytes:
            log.info("upload: answered 413 to %s: %r is over the limit", client, filename)
            return f"{filename}: over the limit of {self.settings.max_input_bytes:,} bytes", \
                False, 413
        meta = {"via": "upload", "filename": filename, "peer": client,
                "received_at": datetime.now(UTC).isoformat()}
        outcome = await asyncio.to_thread(intake.accept, data, meta, source=filename,
                                          via="upload", filename=filename)
        if isinstance(outcome, Unavailable):
            return "cannot store the report now; try again later", False, 503
        if isinstance(outcome, Refused):
            return f"{filename}: {outcome.message}", False, 400
        return f"accepted {len(outcome.report_ids)} report(s) from {filename}: " \
               f"{', '.join(outcome.report_ids)}; loaded within seconds", True, 200
