"""`acme status`: the certificates 'serve' obtains by ACME for the hosted mta-sts names."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from tlswatch.analytics.render import render_rows
from tlswatch.cli.base import FormatOpt, _errors, _format, _state, app, echo

acme_app = typer.Typer(help="Certificates by ACME for the hosted mta-sts.DOMAIN names.",
                       no_args_is_help=True)
app.add_typer(acme_app, name="acme")


@acme_app.command("status")
def acme_status(ctx: typer.Context, fmt: FormatOpt = None) -> None:
    """Show each hosted name's certificate and renewal.

    One row per hosted mta-sts name: its certificate's dates, and its renewal (attempts,
    next attempt, last error)."""
    from tlswatch.mtasts.acme import status

    with _errors():
        rows = status(_state(ctx).settings, datetime.now(UTC))
    echo(render_rows(rows, _format(fmt), title="Certificates by ACME"), nl=False)
