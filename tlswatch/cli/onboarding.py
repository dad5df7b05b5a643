"""`domain status`: how the onboarding of a hosted domain goes."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tlswatch.analytics.render import Format, md_text, render_rows, to_json
from tlswatch.cli.base import FormatOpt, _errors, _format, _state, app, echo
from tlswatch.cli.mtasts import DomainArg

DONE = {True: "yes", False: "no", None: "n/a"}


def domain_group() -> typer.Typer:
    """The ``domain`` command group: the one already registered, else a new one (the
    group's other commands live in their own module)."""
    for group in app.registered_groups:
        if group.name == "domain" and group.typer_instance is not None:
            return group.typer_instance
    created = typer.Typer(help="Domains, the tenants that own them, and their onboarding.",
                          no_args_is_help=True)
    app.add_typer(created, name="domain")
    return created


@domain_group().command("status")
def domain_status_command(
    ctx: typer.Context,
    domain: DomainArg,
    nameserver: Annotated[str | None, typer.Option(help="DNS server IP[:PORT] to ask "
                                                        "(default: check_nameserver, else "
                                                        "the system's).")] = None,
    fmt: FormatOpt = None,
) -> None:
    """Show the onboarding steps of a hosted domain.

    The records seen in DNS now (mta-sts CNAME, _mta-sts and _smtp._tls TXT), the
    certificate, the first policy fetch, the first report, and which big senders report.
    Exit 1 while a step is not done (n/a: not for this deployment).
    """
    from tlswatch.mtasts.onboarding import domain_status

    with _errors():
        result = domain_status(_state(ctx).settings, domain, nameserver=nameserver)
    chosen = _format(fmt)
    if chosen is Format.json:
        echo(to_json(result))
    else:
        steps = [{**s, "done": DONE[s["done"]]} for s in result["steps"]]
        echo(render_rows(steps, chosen, title=f"Onboarding of {domain}"), nl=False)
        line = _senders_line(result["senders"])
        echo(("\n" + md_text(line)) if chosen is Format.markdown else
             line if chosen is not Format.csv else "", nl=chosen is not Format.csv)
    raise typer.Exit(1 if any(s["done"] is False for s in result["steps"]) else 0)


def _senders_line(senders: list[dict[str, Any]]) -> str:
    said = [f"{s['sender']} (since {s['first_day']})" for s in senders if s["reported"]]
    missing = [s["sender"] for s in senders if not s["reported"]]
    return (f"Big senders reporting: {', '.join(said) or 'none yet'}"
            + (f"; not yet: {', '.join(missing)}." if missing else "."))
