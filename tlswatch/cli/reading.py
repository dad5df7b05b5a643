"""`summary`, `failures`, `reports`, `report show`, `export daily`, `alerts`, `config`."""

from __future__ import annotations

import re
import shutil
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tlswatch.analytics.render import Format, render_rows, to_json
from tlswatch.cli.base import (
    MAX_ROWS,
    DomainOpt,
    FormatOpt,
    OrgOpt,
    SinceOpt,
    TenantScopeOpt,
    UntilOpt,
    _dates,
    _day,
    _errors,
    _format,
    _read_store,
    _state,
    app,
    day_option,
    echo,
    in_range,
    listing,
    nothing_matched,
    report_app,
    tenant_filters,
)
from tlswatch.config import describe

if TYPE_CHECKING:
    from tlswatch.analytics.summary import Summary

TEXT_WIDTH = 92  # the longest line of a text summary on a terminal
SUMMARY_COLUMNS = ["policy_domain", "reports", "successful_sessions", "failed_sessions",
                   "success_rate", "change_success_rate", "failures_by_result_type"]
# The columns of each listing, for the CSV header of an empty result (a test holds them to
# the keys of a full one).
FAILURE_COLUMNS = ("policy_domain", "organization_name", "result_type", "receiving_mx_hostname",
                   "receiving_ip", "sending_mta_ip", "failed_sessions", "reports", "first_day",
                   "last_day", "failure_reason_codes")
REPORT_COLUMNS = ("id", "day", "organization_name", "report_id", "policy_domains",
                  "successful_sessions", "failed_sessions", "warnings")
ALERT_COLUMNS = ("day", "policy_domain", "kind", "message", "created_at", "delivery",
                 "delivered_at", "delivery_error")
OUTBOX_COLUMNS = ("id", "kind", "channel", "recipient", "subject", "status", "attempts",
                  "created_at", "next_try_at", "delivered_at", "last_error")


@app.command()
def summary(
    ctx: typer.Context,
    domain: DomainOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    fmt: Annotated[Format | None, typer.Option(
        "--format", "-f", help="table, text, json, csv or markdown.")] = None,
    tenant: TenantScopeOpt = None,
) -> None:
    """Sessions, success rate and failure causes per domain.

    With the change against the previous period of the same length.
    """
    from tlswatch.analytics.queries import Filters
    from tlswatch.analytics.summary import summarize

    settings = _state(ctx).settings
    filters = Filters(*_dates(since, until), domains=tuple(domain or ()))
    with _errors(), _read_store(settings) as store:
        result = summarize(store, tenant_filters(store, filters, tenant))
    width = min(shutil.get_terminal_size().columns, TEXT_WIDTH) if sys.stdout.isatty() else None
    echo(render_summary(result, _format(fmt), nothing=nothing_matched("reports", filters),
                        width=width), nl=False)


def render_summary(result: Summary, fmt: Format, *, nothing: str = "No reports.",
                   width: int | None = None) -> str:
    """The summary in ``fmt``; ``text`` paragraphs wrapped at ``width`` (on a terminal), or
    one line each (for scripts and mail)."""
    from tlswatch.analytics.summary import paragraph, percent

    if fmt is Format.json:
        return to_json(result.as_dict()) + "\n"
    if not result.domains:
        return listing([], fmt, columns=[*SUMMARY_COLUMNS, "organizations"], title="",
                       nothing=nothing)
    if fmt is Format.text:  # names are never split across lines
        texts = [paragraph(d) for d in result.domains]
        if width:
            texts = [textwrap.fill(t, width=width, break_long_words=False,
                                   break_on_hyphens=False) for t in texts]
        return "\n\n".join(texts) + "\n"
    rows = []
    for d in result.domains:
        if fmt is Format.table:
            change = d.change_success_rate
            top = sorted(d.failures_by_result_type.items(), key=lambda kv: -kv[1])[:3]
            rows.append({
                "domain": d.policy_domain, "reports": d.reports,
                "reporters": len(d.organizations), "sessions": d.total_sessions,
                "failed": d.failed_sessions,
                "success": percent(d.success_rate, failures=d.failed_sessions),
                "change": "" if change is None else f"{change * 100:+.2f} pp",
                "top failures": ", ".join(f"{k} {v:,}" for k, v in top),
            })
            continue
        row = {c: getattr(d, c) for c in SUMMARY_COLUMNS}
        row["organizations"] = d.organizations
        rows.append(row)
    if result.since and result.until:
        period = f"{result.since} to {result.until}"
    elif result.since or result.until:
        period = f"since {result.since}" if result.since else f"until {result.until}"
    else:
        period = "every report day"
    return render_rows(rows, fmt, title=f"TLS-RPT summary, {period}")


@app.command()
def failures(
    ctx: typer.Context,
    domain: DomainOpt = None,
    result_type: Annotated[list[str] | None, typer.Option(help="Result type.")] = None,
    org: OrgOpt = None,
    mx: Annotated[list[str] | None, typer.Option(help="Receiving MX host name.")] = None,
    sending_ip: Annotated[list[str] | None, typer.Option(help="Sending MTA IP.")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option(help="Most rows to show (1 to 1,000,000).",
                                        callback=in_range(1, MAX_ROWS))] = 100,
    fmt: FormatOpt = None,
    tenant: TenantScopeOpt = None,
) -> None:
    """Failed sessions grouped by domain, reporter, type, MX and IP.

    Grouped by policy domain, reporting organisation, result type, receiving MX, receiving
    IP and sending IP, with up to three failure reason codes.
    """
    from tlswatch.analytics.queries import Filters, failure_groups
    from tlswatch.analytics.retention import pruned_notes

    settings = _state(ctx).settings
    filters = Filters(*_dates(since, until), domains=tuple(domain or ()),
                      organizations=tuple(org or ()), result_types=tuple(result_type or ()),
                      mx_hosts=tuple(mx or ()), sending_ips=tuple(sending_ip or ()))
    dims = ("policy_domain", "organization_name", "result_type", "receiving_mx_hostname",
            "receiving_ip", "sending_mta_ip")
    with _errors(), _read_store(settings) as store:
        rows = failure_groups(store, tenant_filters(store, filters, tenant), dims, limit=limit,
                              details=True)
        notes = pruned_notes(store, since=filters.since, until=filters.until)
    echo(listing(rows, _format(fmt), columns=FAILURE_COLUMNS, title="Failed sessions",
                 nothing=nothing_matched("failed sessions", filters)), nl=False)
    if "failure_details" in notes:
        echo(f"note: {notes['failure_details']}", err=True)


@app.command()
def reports(
    ctx: typer.Context,
    domain: DomainOpt = None,
    org: OrgOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option(help="Most rows to show (1 to 1,000,000).",
                                        callback=in_range(1, MAX_ROWS))] = 100,
    fmt: FormatOpt = None,
    tenant: TenantScopeOpt = None,
) -> None:
    """List stored reports, newest first."""
    from tlswatch.analytics.queries import Filters
    from tlswatch.analytics.reports import list_reports

    settings = _state(ctx).settings
    filters = Filters(*_dates(since, until), domains=tuple(domain or ()),
                      organizations=tuple(org or ()))
    with _errors(), _read_store(settings) as store:
        rows = list_reports(store, tenant_filters(store, filters, tenant), limit=limit)
    echo(listing(rows, _format(fmt), columns=REPORT_COLUMNS, title="Reports",
                 nothing=nothing_matched("reports", filters)), nl=False)


@report_app.command("show")
def report_show(
    ctx: typer.Context,
    ident: Annotated[str, typer.Argument(metavar="ID", help="The id from 'tlswatch reports' "
                                                             "or the report-id.")],
    fmt: FormatOpt = None,
    tenant: TenantScopeOpt = None,
) -> None:
    """Show one report, as stored and as received.

    Envelope facts, warnings, policies, failure details and the raw JSON.
    """
    from tlswatch.analytics.queries import Filters
    from tlswatch.analytics.reports import show_report

    settings = _state(ctx).settings
    with _errors(), _read_store(settings) as store:
        data = show_report(store, ident,
                           scope=tenant_filters(store, Filters(), tenant).scope)
    chosen = _format(fmt)
    if chosen is Format.json:
        echo(to_json(data))
        for note in data["pruned"].values():
            echo(f"note: {note}", err=True)
        return
    head = {k: v for k, v in data.items()
            if k not in ("policies", "raw_report", "warnings", "pruned")}
    out = [render_rows([{"field": k, "value": v} for k, v in head.items()], chosen,
                       title="Report")]
    out.append(render_rows([{"warning": w} for w in data["warnings"]] or [{"warning": "none"}],
                           chosen, title="Warnings"))
    policies = [{k: v for k, v in p.items() if k not in ("failure_details", "counting")}
                for p in data["policies"]]
    out.append(render_rows(policies, chosen, title="Policies"))
    details = [{"policy_index": p["policy_index"], **d} for p in data["policies"]
               for d in p["failure_details"]]
    if details:
        out.append(render_rows(details, chosen, title="Failure details (in the sender's order)"))
    if data["raw_report"] is not None:
        out.append(_raw_block(data["raw_report"], chosen))
    echo("\n".join(out), nl=False)
    for note in data["pruned"].values():
        echo(f"note: {note}", err=True)



def _raw_block(raw: str, fmt: Format) -> str:
    """The report text as received; in Markdown, a code block no report text can end."""
    raw = raw if raw.endswith("\n") else raw + "\n"
    if fmt is Format.markdown:
        fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", raw)), default=0))
        return f"{fence}json\n{raw}{fence}\n"
    return ("The report as received:\n" if fmt is Format.table else "") + raw


export_app = typer.Typer(help="Write summary files.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("daily")
def export_daily_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Folder for the files.")],
    day: Annotated[str | None, typer.Option("--date", help="UTC report day (default: "
                                                           "yesterday).",
                                            callback=day_option)] = None,
    formats: Annotated[str, typer.Option("--format", help="Comma-separated: md, html, csv, "
                                                          "json, parquet.")] =
        "md,html,csv,json,parquet",
    send: Annotated[bool, typer.Option("--send/--no-send", help="Also mail/post the summary "
                                       "and the day's new alerts now; exit 1 if a delivery "
                                       "failed (it stays queued for 'serve').")] = False,
    tenant: TenantScopeOpt = None,
) -> None:
    """Write one day's summary files.

    DIR/tlswatch-summary-YYYY-MM-DD.EXT, replacing earlier files of that day.
    """
    from datetime import UTC, datetime, timedelta

    from tlswatch import jobs
    from tlswatch.analytics.queries import Filters
    from tlswatch.exports import export_daily

    settings = _state(ctx).settings
    chosen = _day(day, "'--date'") or (datetime.now(UTC).date() - timedelta(days=1))
    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    failed: list[jobs.Delivery] = []
    if send and not (settings.webhook_url or (settings.mail_smtp and (
            settings.mail_to or settings.mail_to_domains))):  # cron would hear nothing
        raise typer.BadParameter("nothing to send with: set mail_smtp and mail_to (or "
                                 "mail_to_domains), or webhook_url", param_hint="--send")
    if send and tenant:
        raise typer.BadParameter("--send delivers the whole summary; write a tenant's files "
                                 "without it", param_hint="--tenant")
    with _errors():
        try:
            if send:
                written, failed = jobs.send_daily(
                    settings.replace(export_formats=tuple(wanted)), chosen, out)
            else:
                with _read_store(settings) as store:
                    written = export_daily(store, chosen, out, wanted, scope=tenant_filters(
                        store, Filters(), tenant).scope)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--format") from None
    for path in written:
        echo(str(path))
    for delivery in failed:
        echo(f"tlswatch: not delivered: {delivery.describe()}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def alerts(
    ctx: typer.Context,
    domain: DomainOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    check: Annotated[bool, typer.Option("--check", help="First evaluate the alert rules on "
                                        "the last 7 report days (as 'serve' does after each "
                                        "load) and send the new alerts; exit 1 if a delivery "
                                        "failed.")] = False,
    outbox: Annotated[bool, typer.Option("--outbox", help="List the deliveries (alerts and "
                                         "daily summaries) instead: delivered, pending, "
                                         "failed, with attempts and errors.")] = False,
    fmt: FormatOpt = None,
    tenant: TenantScopeOpt = None,
) -> None:
    """The alert history, or the outbox of deliveries.

    New result types, low success rates, spikes, silent reporters, broken MTA-STS policy
    hosts, and whether each was delivered. Each alert is raised once per domain, kind and
    day, and at most max_alerts_per_day a day.
    """

    from datetime import UTC, datetime

    from tlswatch import jobs
    from tlswatch.analytics import alerts as history
    from tlswatch.analytics.queries import Filters

    settings = _state(ctx).settings
    failed: list[jobs.Delivery] = []
    filters = Filters(*_dates(since, until), domains=tuple(domain or ()))
    if outbox and tenant:
        raise typer.BadParameter("the outbox lists every delivery; it takes no --tenant",
                                 param_hint="--tenant")
    with _errors():
        if check:
            failed = jobs.check_and_send(settings, datetime.now(UTC).date())
        with _read_store(settings) as store:
            rows = history.outbox(store) if outbox else history.history(
                store, tenant_filters(store, filters, tenant))
    if outbox:
        out = listing(rows, _format(fmt), columns=OUTBOX_COLUMNS, title="Outbox",
                      nothing="No deliveries in the outbox.")
    else:
        out = listing(rows, _format(fmt), columns=ALERT_COLUMNS, title="Alerts",
                      nothing=nothing_matched("alerts", filters))
    echo(out, nl=False)
    for delivery in failed:
        echo(f"tlswatch: not delivered: {delivery.describe()}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command("config")
def config_command(ctx: typer.Context, fmt: FormatOpt = None) -> None:
    """Show every setting: its value, its default and its meaning."""
    settings = _state(ctx).settings
    rows = [{"setting": name, "value": _shown(name, getattr(settings, name)),
             "default": default, "help": text} for name, default, text in describe()]
    echo(render_rows(rows, _format(fmt), title="Settings"), nl=False)


SECRET_SETTINGS = ("web_token",)  # the others name an environment variable, not a secret


def _shown(name: str, value: object) -> object:
    """A setting's value as ``config`` shows it: a secret only as set or not; the database
    URL without its password."""
    if name in SECRET_SETTINGS:
        return "(set)" if value else ""
    return str(value) if name == "db" else value
