"""`check` and `policy init|status|advise|retire` (MTA-STS)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tlswatch.analytics.render import Format, md_text, render_rows, to_json
from tlswatch.cli.base import (
    FormatOpt,
    RowFormat,
    _errors,
    _format,
    _read_store,
    _state,
    app,
    echo,
    in_range,
)
from tlswatch.config import Settings
from tlswatch.dnsname import BadDomain, is_domain, parse_domain

# Names that never resolve on the public Internet (RFC 6761, RFC 6762, RFC 8375, common
# private suffixes): records naming them send nobody anywhere.
PRIVATE_SUFFIXES = ("localhost", "local", "localdomain", "internal", "lan", "home.arpa",
                    "test", "invalid")


@app.command("check")
def check_command(
    ctx: typer.Context,
    domain: Annotated[str, typer.Argument(metavar="DOMAIN", help="The mail domain to check.")],
    nameserver: Annotated[str | None, typer.Option(help="DNS server IP[:PORT] to ask "
                                                        "(default: check_nameserver, else "
                                                        "the system's).")] = None,
    ca_bundle: Annotated[Path | None, typer.Option(help="CA certificates to trust (PEM; "
                                                        "default: check_ca_bundle).")] = None,
    https_port: Annotated[int | None, typer.Option(help="Port of the policy host (default: "
                                                        "check_https_port, 443).",
                                                   callback=in_range(1, 65535))] = None,
    smtp_port: Annotated[int | None, typer.Option(help="Port of the MX hosts (default: "
                                                       "check_smtp_port, 25).",
                                                  callback=in_range(1, 65535))] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds for each lookup or "
                                                       "connection, 0.001 to 3600 (default: "
                                                       "check_timeout).",
                                                  callback=in_range(0.001, 3600))] = None,
    record: Annotated[bool, typer.Option("--record", help="Store the run in the check "
                                         "history and raise its alerts, as 'serve' does "
                                         "daily.")] = False,
    fmt: FormatOpt = None,
) -> None:
    """Check a domain's MTA-STS and TLS-RPT set-up.

    MTA-STS (RFC 8461) and TLS-RPT (RFC 8460): records, policy, MX coverage, and each MX's
    STARTTLS and certificate. Exit 1 when there are errors.
    """
    from tlswatch.mtasts.monitor import check_domain

    with _errors():
        outcome = check_domain(_state(ctx).settings, domain, record=record,
                               nameserver=nameserver,
                               ca_bundle=str(ca_bundle) if ca_bundle else None,
                               https_port=https_port, smtp_port=smtp_port, timeout=timeout)
    findings = outcome.findings
    chosen = _format(fmt)
    if chosen is Format.json:
        echo(to_json({"domain": outcome.domain, "findings": [f.as_dict() for f in findings]}))
    else:
        echo(render_rows([f.as_dict() for f in findings], chosen,
                         title=f"MTA-STS and TLS-RPT check of {domain}"), nl=False)
    if record:
        echo(f"recorded the check of {outcome.domain}: {outcome.result}, "
             f"{len(outcome.alerts)} new alert(s)", err=True)
    raise typer.Exit(1 if any(f.severity == "error" for f in findings) else 0)


def _policy_domain(value: str) -> str:
    """A usage error (exit 2) for a name that is not a DNS host name: it becomes a file name
    in policy_dir and part of the policy's host name."""
    try:
        return parse_domain(value)
    except BadDomain as exc:
        typer.echo(f"tlswatch: policy DOMAIN argument: {exc}", err=True)
        raise typer.Exit(2) from None


DomainArg = Annotated[str, typer.Argument(metavar="DOMAIN", help="The mail domain (a DNS name).",
                                          callback=_policy_domain)]

policy_app = typer.Typer(help="Host MTA-STS policies and decide when to enforce them.",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy")


def record_warnings(settings: Settings, host: str) -> list[str]:
    """What is wrong with the host name the printed records point at."""
    out = []
    host = host.rstrip(".")
    if not settings.public_host and not settings.smtp_hostname:
        out.append(f"public_host and smtp_hostname are unset, so these records name this "
                   f"machine ({host}): set public_host to the name senders reach this "
                   "deployment by and run the command again, or edit the records before "
                   "publishing them")
    name = host.lower()
    if "." not in name or not is_domain(name) or name.endswith(
            tuple(f".{s}" for s in PRIVATE_SUFFIXES)) or name in PRIVATE_SUFFIXES:
        out.append(f"{host} is not a public DNS name: senders cannot reach the policy or "
                   "the report address there; do not publish these records as they are")
    return out


def _print_policy(policy: Any, settings: Settings, fmt: RowFormat | None, note: str = ""
                  ) -> None:
    """The policy and its records; with a delegated ``_mta-sts``, whether the new id was
    published (exit 1 when it was not: the change is kept and the update tried again)."""
    from tlswatch.mtasts.dnsupdate import published_now
    from tlswatch.mtasts.hosting import records

    dns = records(settings, policy)
    warnings = record_warnings(settings, next(r["value"] for r in dns
                                              if r["name"] == f"mta-sts.{policy.domain}"))
    for warning in warnings:
        echo(f"tlswatch: warning: {warning}", err=True)
    update = published_now(settings, policy)  # None: no delegation, the id is set by hand
    if update is not None and update.error:
        echo(f"tlswatch: error: {update.describe()}", err=True)
    chosen = _format(fmt)
    if chosen is Format.json:
        echo(to_json({"policy": policy.text, "id": policy.id, "records": dns,
                      "warnings": warnings, **({"note": note} if note else {}),
                      **({"dns_update": update.as_dict()} if update else {})}))
    elif chosen is Format.csv:
        echo(render_rows(dns, chosen), nl=False)
    else:
        done = update.describe() if update is not None and not update.error else ""
        _print_text(policy, dns, chosen, [t for t in (done, note) if t],
                    delegated=update is not None)
    if update is not None and update.error:
        raise typer.Exit(1)


def _print_text(policy: Any, dns: list[dict[str, str]], chosen: Format, notes: list[str],
                *, delegated: bool) -> None:
    url = f"https://mta-sts.{policy.domain}/.well-known/mta-sts.txt"
    text = policy.text.replace("\r\n", "\n")
    order = ("Publish these DNS records once (this deployment publishes each new id itself):"
             if delegated else
             "Publish these DNS records (change the policy file first, then the TXT id):")
    if chosen is Format.markdown:
        echo(f"Policy served at {md_text(url)} (id {policy.id}):\n\n```\n{text}```\n\n"
             f"{order}\n")
        echo(render_rows(dns, chosen), nl=False)
        for line in notes:
            echo("\n" + md_text(line))
        return
    echo(f"Policy served at {url} (id {policy.id}):\n")
    echo(text)
    echo(order)
    for r in dns:  # zone-file syntax: a TXT value is quoted, a host name is not
        value = f'"{r["value"]}"' if r["type"] == "TXT" else r["value"]
        echo(f'  {r["name"]}.  IN {r["type"]}  {value}')
    for line in notes:
        echo("\n" + line)


@policy_app.command("init")
def policy_init(
    ctx: typer.Context,
    domain: DomainArg,
    mx: Annotated[list[str], typer.Option("--mx", help="MX host or *.pattern (repeat).")],
    mode: Annotated[str, typer.Option(help="testing, enforce or none.")] = "testing",
    max_age: Annotated[int, typer.Option(help="Seconds senders cache the policy.")] = 86400,
    reason: Annotated[str, typer.Option(help="Why: kept in 'policy history'.")] = "",
    force: Annotated[bool, typer.Option(
        "--force", help="Write --mode enforce without 'policy enforce's check.")] = False,
    fmt: FormatOpt = None,
) -> None:
    """Write the hosted policy; print the DNS records to publish.

    An existing policy of the domain is replaced; the id changes when the content does.
    """
    from tlswatch.mtasts.hosting import init_policy

    settings = _state(ctx).settings
    with _errors():
        policy = init_policy(settings, domain, mx=mx, mode=mode, max_age=max_age,
                             reason=reason, force=force)
    _print_policy(policy, settings, fmt)


@policy_app.command("retire")
def policy_retire(ctx: typer.Context, domain: DomainArg,
                  reason: Annotated[str, typer.Option(help="Why: kept in 'policy history'.")]
                  = "", fmt: FormatOpt = None) -> None:
    """Serve mode none; say when the old policy expires.

    The policy gets a new id; the records can go once the old max_age has passed
    (RFC 8461 section 8).
    """
    from tlswatch.mtasts.changes import retire
    from tlswatch.mtasts.hosting import os_actor

    settings = _state(ctx).settings
    with _errors():
        outcome = retire(settings, domain, actor=os_actor(), reason=reason)
    _print_policy(outcome.change.new, settings, fmt, note=outcome.note)


@policy_app.command("status")
def policy_status(
    ctx: typer.Context,
    domain: DomainArg,
    nameserver: Annotated[str | None, typer.Option(help="DNS server IP[:PORT].")] = None,
    fmt: FormatOpt = None,
) -> None:
    """Compare DNS with the policy served here; say what to do."""
    from tlswatch.mtasts.check import Checker, _fields
    from tlswatch.mtasts.delegated import delegated_status
    from tlswatch.mtasts.dnsupdate import delegation
    from tlswatch.mtasts.hosting import status

    settings = _state(ctx).settings
    checker = Checker(nameserver=nameserver, timeout=settings.dns_timeout)
    with _errors():
        found = delegation(settings)
        if found is not None:  # the id is published here: follow the CNAME to it
            rows = delegated_status(settings, found, domain, checker.resolver,
                                    checker.mx(domain))
        else:
            ids = [_fields(r).get("id", "") for r in checker.txt(f"_mta-sts.{domain}")
                   if r.startswith("v=STSv1")]
            rows = status(settings, domain, published_ids=ids, mx_hosts=checker.mx(domain))
    echo(render_rows(rows, _format(fmt), title=f"Policy status of {domain}"), nl=False)
    raise typer.Exit(1 if any(r["severity"] == "error" for r in rows) else 0)


BLOCKER_COLUMNS = ("result_type", "receiving_mx_hostname", "receiving_ip", "reporters",
                   "failed_sessions")


@policy_app.command("advise")
def policy_advise(ctx: typer.Context, domain: DomainArg,
                  days: Annotated[int, typer.Option(help="Days of reports to read (1 to 3,660).",
                                                    callback=in_range(1, 3660))] = 14,
                  fmt: FormatOpt = None) -> None:
    """Advise whether to move from testing to enforce.

    From the stored reports: enforce, or the failures that block it.
    """
    from tlswatch.mtasts.hosting import advise

    settings = _state(ctx).settings
    with _errors(), _read_store(settings) as store:
        result = advise(store, settings, domain, days=days)
    chosen = _format(fmt)
    if chosen is Format.json:
        echo(to_json(result))
        return
    if chosen is Format.csv:  # the blockers; none (the header alone): nothing blocks enforce
        echo(render_rows(result["blockers"], chosen, columns=BLOCKER_COLUMNS), nl=False)
        return
    line = (f"{result['domain']} ({result['since']} .. {result['until']}, reporters: "
            f"{', '.join(result['reporters']) or 'none'}): {result['advice']}.")
    echo(md_text(line) if chosen is Format.markdown else line)
    if result["blockers"]:
        echo(("\n" if chosen is Format.markdown else "")
             + render_rows(result["blockers"], chosen, title="Blockers"), nl=False)
