"""The ``tlswatch`` command line: parse options, call one library function, print.

Exit codes (DESIGN.md): 0 success, 1 something was rejected or failed (the rest still
done), 2 usage error.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import duckdb
import typer
from rich.console import Console

from tlswatch import __version__
from tlswatch.analytics.queries import Filters, failure_groups
from tlswatch.analytics.render import Format, render_rows, to_json
from tlswatch.analytics.reports import list_reports, show_report
from tlswatch.analytics.summary import Summary, paragraph, percent, summarize
from tlswatch.config import Settings, describe, load_settings
from tlswatch.errors import ReportError, TlsWatchError
from tlswatch.ingest.decode import Limits, decode
from tlswatch.ingest.loader import IngestResult, load
from tlswatch.ingest.prepare import options_from
from tlswatch.ingest.sources import Input, Item, count_files, expand, iter_inputs
from tlswatch.ingest.validate import schema_errors, validate
from tlswatch.store import Store

app = typer.Typer(help="Receive, store and explain SMTP TLS reports (RFC 8460).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
report_app = typer.Typer(help="One stored report.", no_args_is_help=True)
app.add_typer(report_app, name="report")
err = Console(stderr=True)


@dataclass
class State:
    settings: Settings


def _state(ctx: typer.Context) -> State:
    state = ctx.obj
    assert isinstance(state, State)
    return state


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tlswatch {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    db: Annotated[Path | None, typer.Option("--db", envvar="TLSWATCH_DB",
                                             help="DuckDB database file.")] = None,
    config: Annotated[Path | None, typer.Option("--config", envvar="TLSWATCH_CONFIG",
                                                 help="TOML settings file.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    with _errors():
        ctx.obj = State(load_settings(config, db=db))


@contextmanager
def _errors() -> Iterator[None]:
    """Turn tlswatch's named errors into a one-line message and exit code 1."""
    try:
        yield
    except TlsWatchError as exc:
        typer.echo(f"tlswatch: {exc}", err=True)
        raise typer.Exit(1) from None
    except duckdb.Error as exc:  # a database this version cannot read, a full disk, ...
        typer.echo(f"tlswatch: database error: {exc}", err=True)
        raise typer.Exit(1) from None


def _format(fmt: Format | None) -> Format:
    if fmt is not None:
        return fmt
    return Format.table if sys.stdout.isatty() else Format.json


def _day(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date like 2026-11-27") from None


FormatOpt = Annotated[Format | None, typer.Option(
    "--format", "-f", help="table, json, csv or markdown (table on a terminal, else json).")]
SinceOpt = Annotated[str | None, typer.Option(help="First report day (UTC), inclusive.")]
UntilOpt = Annotated[str | None, typer.Option(help="Last report day (UTC), inclusive.")]
DomainOpt = Annotated[list[str] | None, typer.Option("--domain", "-d", help="Policy domain.")]
OrgOpt = Annotated[list[str] | None, typer.Option("--org", help="Reporting organisation.")]


# -- ingest and validate ----------------------------------------------------------------------
@app.command()
def ingest(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(
        help="Files, directories, .eml, mbox, Maildir; '-' reads standard input.")],
    fmt: FormatOpt = None,
) -> None:
    """Decode, validate and load reports; duplicates are counted once, rejects quarantined."""
    settings = _state(ctx).settings
    with _errors(), Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
        items = iter_inputs(paths, max_bytes=settings.max_input_bytes)
        result = _load_with_progress(items, store, settings, paths)
    chosen = _format(fmt)
    if chosen is Format.json:
        typer.echo(to_json(result.as_dict()))
    else:
        _print_ingest(result)
    raise typer.Exit(1 if result.rejected else 0)


def _load_with_progress(items: Iterator[Item], store: Store, settings: Settings,
                        paths: list[str]) -> IngestResult:
    kwargs: dict[str, Any] = {"options": options_from(settings), "batch_size": settings.batch_size,
                              "workers": settings.workers}
    if not err.is_terminal or "-" in paths:
        return load(items, store, **kwargs)
    total = count_files(paths)
    if total < 20:
        return load(items, store, **kwargs)
    from rich.progress import Progress

    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("ingesting", total=total)
        return load(items, store, progress=lambda n: bar.advance(task, n), **kwargs)


def _print_ingest(result: IngestResult) -> None:
    typer.echo(f"accepted {result.accepted:,}, duplicates {result.duplicates:,}, "
               f"rejected {result.rejected:,}")
    for rejection in result.rejections:
        typer.echo(f"rejected {rejection.source}: {rejection.reason}", err=True)


@app.command("validate")
def validate_command(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(help="Files or directories to check.")],
    fmt: FormatOpt = None,
) -> None:
    """Check reports without loading them; print every error with its JSON path."""
    settings = _state(ctx).settings
    results = [r for item in iter_inputs(paths, max_bytes=settings.max_input_bytes)
               for part in expand(item, max_bytes=settings.max_input_bytes)
               for r in _check(part, options_from(settings).limits)]
    chosen = _format(fmt)
    if chosen is Format.json:
        typer.echo(to_json(results))
    else:
        for r in results:
            if r["valid"]:
                typer.echo(f"{r['source']}: valid ({len(r['warnings'])} warnings)")
            for e in r["errors"]:
                where = f"{e['path']}: " if e["path"] else ""
                typer.echo(f"{r['source']}: {where}{e['message']}")
    raise typer.Exit(0 if all(r["valid"] for r in results) else 1)


def _check(item: Input | ReportError, limits: Limits) -> list[dict[str, Any]]:
    def bad(exc: ReportError, source: str) -> dict[str, Any]:
        return {"source": source, "valid": False, "warnings": [],
                "errors": [{"path": exc.path, "message": exc.reason}]}

    if isinstance(item, ReportError):
        return [bad(item, item.source)]
    try:
        docs = decode(item.data, source=item.source, filename=item.filename, limits=limits)
    except ReportError as exc:
        return [bad(exc, item.source)]
    out = []
    for doc in docs:
        try:
            valid = validate(doc)
        except ReportError as exc:
            errors = [{"path": p, "message": m} for p, m in schema_errors(doc.data)]
            out.append({"source": doc.source, "valid": False, "warnings": [],
                        "errors": errors or [{"path": exc.path, "message": exc.reason}]})
            continue
        out.append({"source": doc.source, "valid": True, "warnings": valid.warnings,
                    "errors": []})
    return out


# -- reading ----------------------------------------------------------------------------------
def _read_store(settings: Settings) -> Store:
    return Store.open(settings.db, read_only=True, lock_timeout=settings.lock_timeout)


SUMMARY_COLUMNS = ["policy_domain", "reports", "successful_sessions", "failed_sessions",
                   "success_rate", "change_success_rate", "failures_by_result_type"]


@app.command()
def summary(
    ctx: typer.Context,
    domain: DomainOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    fmt: Annotated[Format | None, typer.Option(
        "--format", "-f", help="table, text, json, csv or markdown.")] = None,
) -> None:
    """Per policy domain: sessions, success rate, failures and their causes, the change."""
    settings = _state(ctx).settings
    filters = Filters(since=_day(since), until=_day(until), domains=tuple(domain or ()))
    with _errors(), _read_store(settings) as store:
        result = summarize(store, filters)
    typer.echo(render_summary(result, _format(fmt)), nl=False)


def render_summary(result: Summary, fmt: Format) -> str:
    if fmt is Format.json:
        return to_json(result.as_dict()) + "\n"
    if fmt is Format.text:
        if not result.domains:
            return "No reports in this period.\n"
        return "\n\n".join(paragraph(d) for d in result.domains) + "\n"
    rows = []
    for d in result.domains:
        if fmt is Format.table:
            change = d.change_success_rate
            top = sorted(d.failures_by_result_type.items(), key=lambda kv: -kv[1])[:3]
            rows.append({
                "domain": d.policy_domain, "reports": d.reports,
                "reporters": len(d.organizations), "sessions": d.total_sessions,
                "failed": d.failed_sessions,
                "TLS rate": percent(d.success_rate, failures=d.failed_sessions),
                "change": "" if change is None else f"{change * 100:+.2f} pp",
                "top failures": ", ".join(f"{k} {v:,}" for k, v in top),
            })
            continue
        row = {c: getattr(d, c) for c in SUMMARY_COLUMNS}
        row["organizations"] = d.organizations
        rows.append(row)
    period = f"{result.since or 'start'} .. {result.until or 'end'}"
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
    limit: Annotated[int, typer.Option(help="Most rows to show.")] = 100,
    fmt: FormatOpt = None,
) -> None:
    """Failed sessions grouped by domain, reporter, result type, MX, receiving and sending IP."""
    settings = _state(ctx).settings
    filters = Filters(since=_day(since), until=_day(until), domains=tuple(domain or ()),
                      organizations=tuple(org or ()), result_types=tuple(result_type or ()),
                      mx_hosts=tuple(mx or ()), sending_ips=tuple(sending_ip or ()))
    dims = ("policy_domain", "organization_name", "result_type", "receiving_mx_hostname",
            "receiving_ip", "sending_mta_ip")
    with _errors(), _read_store(settings) as store:
        rows = failure_groups(store, filters, dims, limit=limit, details=True)
    typer.echo(render_rows(rows, _format(fmt), title="Failed sessions"), nl=False)


@app.command()
def reports(
    ctx: typer.Context,
    domain: DomainOpt = None,
    org: OrgOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option(help="Most rows to show.")] = 100,
    fmt: FormatOpt = None,
) -> None:
    """List stored reports, newest first."""
    settings = _state(ctx).settings
    filters = Filters(since=_day(since), until=_day(until), domains=tuple(domain or ()),
                      organizations=tuple(org or ()))
    with _errors(), _read_store(settings) as store:
        rows = list_reports(store, filters, limit=limit)
    typer.echo(render_rows(rows, _format(fmt), title="Reports"), nl=False)


@report_app.command("show")
def report_show(
    ctx: typer.Context,
    ident: Annotated[str, typer.Argument(metavar="ID", help="The id from 'tlswatch reports' "
                                                             "or the report-id.")],
    fmt: FormatOpt = None,
) -> None:
    """One report: envelope facts, warnings, policies, failure details and the raw JSON."""
    settings = _state(ctx).settings
    with _errors(), _read_store(settings) as store:
        data = show_report(store, ident)
    chosen = _format(fmt)
    if chosen is Format.json:
        typer.echo(to_json(data))
        return
    head = {k: v for k, v in data.items() if k not in ("policies", "raw_json", "warnings")}
    out = [render_rows([{"field": k, "value": v} for k, v in head.items()], chosen,
                       title="Report")]
    out.append(render_rows([{"warning": w} for w in data["warnings"]] or [{"warning": "none"}],
                           chosen, title="Warnings"))
    policies = [{k: v for k, v in p.items() if k != "failure_details"} for p in data["policies"]]
    out.append(render_rows(policies, chosen, title="Policies"))
    details = [{"policy_index": p["policy_index"], **d} for p in data["policies"]
               for d in p["failure_details"]]
    if details:
        out.append(render_rows(details, chosen, title="Failure details"))
    out.append(("Raw JSON:\n" if chosen is Format.table else "") + to_json(data["raw_json"]))
    typer.echo("\n".join(out))


@app.command()
def serve(
    ctx: typer.Context,
    smtp: Annotated[str | None, typer.Option(help="SMTP/LMTP HOST:PORT ('' for none).")] = None,
    http: Annotated[str | None, typer.Option(help="HTTP(S) HOST:PORT ('' for none).")] = None,
    spool: Annotated[Path | None, typer.Option(help="Spool folder.")] = None,
    lmtp: Annotated[bool | None, typer.Option("--lmtp/--no-lmtp", help="Speak LMTP.")] = None,
) -> None:
    """Receive reports by SMTP/LMTP and HTTPS, spool them durably, load them continuously."""
    import asyncio

    from tlswatch.service import Listening, Service

    changes = {k: v for k, v in {"smtp": smtp, "http": http, "spool": spool,
                                 "lmtp": lmtp}.items() if v is not None}
    settings = _state(ctx).settings.replace(**changes)

    def ready(at: Listening) -> None:
        parts = [f"smtp={at.smtp}" if at.smtp else "", f"http={at.http}" if at.http else ""]
        typer.echo(f"tlswatch serving {' '.join(p for p in parts if p)} "
                   f"spool={settings.spool} db={settings.db}")
        sys.stdout.flush()

    with _errors():
        asyncio.run(Service(settings).run(on_ready=ready))
    typer.echo("tlswatch stopped")


export_app = typer.Typer(help="Write summary files.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("daily")
def export_daily_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Folder for the files.")],
    day: Annotated[str | None, typer.Option("--date", help="UTC report day (default: "
                                                           "yesterday).")] = None,
    formats: Annotated[str, typer.Option("--format", help="Comma-separated: md, html, csv, "
                                                          "json, parquet.")] =
        "md,html,csv,json,parquet",
    send: Annotated[bool, typer.Option("--send/--no-send", help="Also mail/post the summary "
                                       "and check the day's alerts.")] = False,
) -> None:
    """Write DIR/tlswatch-summary-YYYY-MM-DD.EXT for one day (replacing earlier files)."""
    from datetime import UTC, datetime, timedelta

    from tlswatch import jobs
    from tlswatch.exports import export_daily

    settings = _state(ctx).settings
    chosen = _day(day) or (datetime.now(UTC).date() - timedelta(days=1))
    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    with _errors():
        try:
            if send:
                written = jobs.run_daily(settings.replace(export_formats=tuple(wanted)),
                                         chosen, out)
            else:
                with _read_store(settings) as store:
                    written = export_daily(store, chosen, out, wanted)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--format") from None
    for path in written:
        typer.echo(str(path))


@app.command()
def alerts(
    ctx: typer.Context,
    domain: DomainOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    check: Annotated[bool, typer.Option("--check", help="First evaluate the alert rules on "
                                        "the last 7 days (as 'serve' does after each load).")]
        = False,
    fmt: FormatOpt = None,
) -> None:
    """Alert history: new result types, low success rates, spikes, silent reporters, broken
    MTA-STS policy hosts. Each alert is raised once per domain, kind and day."""
    from datetime import UTC, datetime, timedelta

    from tlswatch import jobs

    settings = _state(ctx).settings
    with _errors():
        if check:
            today = datetime.now(UTC).date()
            with _read_store(settings) as store:
                last = store.rows("SELECT max(day) AS d FROM reports")[0]["d"] or today
            jobs.check_alerts(settings, [last - timedelta(days=i) for i in range(7)])
        filters = Filters(since=_day(since), until=_day(until), domains=tuple(domain or ()))
        where, params = filters.where(failure_rows=False)
        with _read_store(settings) as store:
            rows = store.rows("SELECT day, policy_domain, kind, message, created_at, "
                              f"delivered_at, delivery_error FROM alerts{where} "
                              "ORDER BY day DESC, policy_domain, kind", params)
    typer.echo(render_rows(rows, _format(fmt), title="Alerts"), nl=False)


fetch_app = typer.Typer(help="Fetch reports from a mailbox.", no_args_is_help=True)
app.add_typer(fetch_app, name="fetch")


@fetch_app.command("imap")
def fetch_imap(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="IMAP server (IMAPS).")],
    user: Annotated[str, typer.Option(help="Login name.")],
    password_env: Annotated[str, typer.Option(help="Environment variable holding the "
                                                   "password.")],
    port: Annotated[int, typer.Option(help="IMAPS port.")] = 993,
    folder: Annotated[str, typer.Option(help="Folder to read.")] = "INBOX",
    archive_folder: Annotated[str, typer.Option(help="Where processed reports go.")] =
        "Processed",
    ca_bundle: Annotated[Path | None, typer.Option(help="CA certificates to trust "
                                                         "(PEM).")] = None,
    load_now: Annotated[bool, typer.Option("--load/--no-load", help="Load what was fetched "
                                           "now (off when 'serve' loads the spool).")] = True,
    fmt: FormatOpt = None,
) -> None:
    """Spool new report mail from an IMAP folder, archive it, then load it."""
    import os

    from tlswatch.ingest.imap import Mailbox, fetch
    from tlswatch.ingest.loader import drain
    from tlswatch.ingest.spool import Spool

    settings = _state(ctx).settings
    password = os.environ.get(password_env)
    if password is None:
        raise typer.BadParameter(f"environment variable {password_env} is not set",
                                 param_hint="--password-env")
    with _errors():
        spool = Spool(settings.spool)
        got = fetch(Mailbox(host=host, user=user, password=password, port=port, folder=folder,
                            archive_folder=archive_folder,
                            ca_bundle=str(ca_bundle) if ca_bundle else None), spool)
        loaded = IngestResult()
        while load_now:
            batch = drain(spool, settings.db, options=options_from(settings),
                          limit=settings.batch_size, lock_timeout=settings.lock_timeout)
            if batch is None or not (batch.accepted + batch.duplicates + batch.rejected):
                break
            loaded.accepted += batch.accepted
            loaded.duplicates += batch.duplicates
            loaded.rejected += batch.rejected
            loaded.rejections += batch.rejections
    out = {"messages": got.seen, "spooled": len(got.spooled), "left_alone": got.left_alone,
           **loaded.as_dict()}
    if _format(fmt) is Format.json:
        typer.echo(to_json(out))
    else:
        typer.echo(f"{got.seen} new messages: {len(got.spooled)} reports spooled and archived "
                   f"to {archive_folder}, {got.left_alone} other messages left alone; "
                   f"loaded {loaded.accepted}, duplicates {loaded.duplicates}, "
                   f"rejected {loaded.rejected}")
        for rejection in loaded.rejections:
            typer.echo(f"rejected {rejection.source}: {rejection.reason}", err=True)
    raise typer.Exit(1 if loaded.rejected else 0)


@app.command("check")
def check_command(
    domain: Annotated[str, typer.Argument(help="The mail domain to check.")],
    nameserver: Annotated[str | None, typer.Option(help="DNS server IP[:PORT] to ask "
                                                        "(default: the system's).")] = None,
    ca_bundle: Annotated[Path | None, typer.Option(help="CA certificates to trust (PEM).")] =
        None,
    https_port: Annotated[int, typer.Option(help="Port of the policy host.")] = 443,
    smtp_port: Annotated[int, typer.Option(help="Port of the MX hosts.")] = 25,
    timeout: Annotated[float, typer.Option(help="Seconds for each lookup or connection.")] =
        10.0,
    fmt: FormatOpt = None,
) -> None:
    """Check MTA-STS (RFC 8461) and TLS-RPT (RFC 8460): records, policy, MX coverage, and
    each MX's STARTTLS and certificate. Exit 1 when there are errors."""
    from tlswatch.mtasts.check import Checker

    checker = Checker(nameserver=nameserver, ca_bundle=str(ca_bundle) if ca_bundle else None,
                      https_port=https_port, smtp_port=smtp_port, timeout=timeout)
    findings = checker.check(domain)
    chosen = _format(fmt)
    if chosen is Format.json:
        typer.echo(to_json({"domain": domain.lower().rstrip("."),
                            "findings": [f.as_dict() for f in findings]}))
    else:
        typer.echo(render_rows([f.as_dict() for f in findings], chosen,
                               title=f"MTA-STS and TLS-RPT check of {domain}"), nl=False)
    raise typer.Exit(1 if any(f.severity == "error" for f in findings) else 0)


policy_app = typer.Typer(help="Host MTA-STS policies and decide when to enforce them.",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy")


def _print_policy(policy: Any, settings: Settings, fmt: Format | None, note: str = "") -> None:
    from tlswatch.mtasts.hosting import records

    dns = records(settings, policy)
    if _format(fmt) is Format.json:
        typer.echo(to_json({"policy": policy.text, "id": policy.id, "records": dns}))
        return
    typer.echo(f"Policy served at https://mta-sts.{policy.domain}/.well-known/mta-sts.txt "
               f"(id {policy.id}):\n")
    typer.echo(policy.text.replace("\r\n", "\n"))
    typer.echo("Publish these DNS records (change the policy file first, then the TXT id):")
    for r in dns:
        typer.echo(f'  {r["name"]}.  IN {r["type"]}  {r["value"]!r}'.replace("'", '"'))
    if note:
        typer.echo("\n" + note)


@policy_app.command("init")
def policy_init(
    ctx: typer.Context,
    domain: Annotated[str, typer.Argument(help="The mail domain.")],
    mx: Annotated[list[str], typer.Option("--mx", help="MX host or *.pattern (repeat).")],
    mode: Annotated[str, typer.Option(help="testing, enforce or none.")] = "testing",
    max_age: Annotated[int, typer.Option(help="Seconds senders cache the policy.")] = 86400,
    fmt: FormatOpt = None,
) -> None:
    """Write (or replace) the hosted policy and print the DNS records to publish."""
    from tlswatch.mtasts.hosting import init_policy

    settings = _state(ctx).settings
    with _errors():
        policy = init_policy(settings, domain, mx=mx, mode=mode, max_age=max_age)
    _print_policy(policy, settings, fmt)


@policy_app.command("retire")
def policy_retire(ctx: typer.Context, domain: Annotated[str, typer.Argument()],
                  fmt: FormatOpt = None) -> None:
    """Serve mode none with a new id; say when the old policy expires (RFC 8461 s8)."""
    from tlswatch.mtasts.hosting import retire_policy

    settings = _state(ctx).settings
    with _errors():
        policy, expires = retire_policy(settings, domain)
    _print_policy(policy, settings, fmt, note=(
        f"Publish the new id now. Senders may keep the old policy until "
        f"{expires:%Y-%m-%d %H:%M} UTC (its max_age); after that remove the _mta-sts "
        f"record, the mta-sts host and this policy ({settings.policy_dir}/{policy.domain}"
        ".json)."))


@policy_app.command("status")
def policy_status(
    ctx: typer.Context,
    domain: Annotated[str, typer.Argument()],
    nameserver: Annotated[str | None, typer.Option(help="DNS server IP[:PORT].")] = None,
    fmt: FormatOpt = None,
) -> None:
    """Compare what DNS publishes with the policy served here; say what to do."""
    from tlswatch.mtasts.check import Checker, _fields
    from tlswatch.mtasts.hosting import status

    settings = _state(ctx).settings
    checker = Checker(nameserver=nameserver, timeout=settings.dns_timeout)
    with _errors():
        ids = [_fields(r).get("id", "") for r in checker.txt(f"_mta-sts.{domain}")
               if r.startswith("v=STSv1")]
        rows = status(settings, domain, published_ids=ids, mx_hosts=checker.mx(domain))
    typer.echo(render_rows(rows, _format(fmt), title=f"Policy status of {domain}"), nl=False)
    raise typer.Exit(1 if any(r["severity"] == "error" for r in rows) else 0)


@policy_app.command("advise")
def policy_advise(ctx: typer.Context, domain: Annotated[str, typer.Argument()],
                  days: Annotated[int, typer.Option(help="Days of reports to read.")] = 14,
                  fmt: FormatOpt = None) -> None:
    """From the stored reports: move from testing to enforce, or what blocks it."""
    from tlswatch.mtasts.hosting import advise

    settings = _state(ctx).settings
    with _errors(), _read_store(settings) as store:
        result = advise(store, settings, domain, days=days)
    if _format(fmt) is Format.json:
        typer.echo(to_json(result))
        return
    typer.echo(f"{result['domain']} ({result['since']} .. {result['until']}, reporters: "
               f"{', '.join(result['reporters']) or 'none'}): {result['advice']}.")
    if result["blockers"]:
        typer.echo(render_rows(result["blockers"], Format.table, title="Blockers"), nl=False)


@app.command("config")
def config_command(ctx: typer.Context, fmt: FormatOpt = None) -> None:
    """Show every setting: its value now, its default and what it does."""
    settings = _state(ctx).settings
    rows = [{"setting": name, "value": getattr(settings, name), "default": default,
             "help": text} for name, default, text in describe()]
    typer.echo(render_rows(rows, _format(fmt), title="Settings"), nl=False)


def main() -> None:
    app()
