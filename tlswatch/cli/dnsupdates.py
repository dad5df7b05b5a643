"""`policy publish DOMAIN`: publish a hosted policy's id by DNS update now."""

from __future__ import annotations

import typer

from tlswatch.analytics.render import Format, to_json
from tlswatch.cli.base import FormatOpt, _errors, _format, _state, echo
from tlswatch.cli.mtasts import DomainArg, policy_app


@policy_app.command("publish")
def policy_publish(ctx: typer.Context, domain: DomainArg, fmt: FormatOpt = None) -> None:
    """Publish the served policy's id in the delegated zone now.

    For when the key or the server was put right: 'serve' would try again only after its
    back-off. Exit 1 when the update fails (it is recorded and tried again).
    """
    from tlswatch.mtasts.dnsupdate import publish_domain

    with _errors():
        outcome = publish_domain(_state(ctx).settings, domain)
    if _format(fmt) is Format.json:
        echo(to_json(outcome.as_dict()))
    elif outcome.error is None:
        echo(outcome.describe())
    if outcome.error:
        echo(f"tlswatch: error: {outcome.describe()}", err=True)
        raise typer.Exit(1)
