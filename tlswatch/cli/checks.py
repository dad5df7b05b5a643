"""`checks`: the history of the daily MTA-STS/TLS-RPT checks."""

from __future__ import annotations

from typing import Annotated

import typer

from tlswatch.analytics.render import Format, render_rows, to_json
from tlswatch.cli.base import (
    FormatOpt,
    _day,
    _errors,
    _format,
    _read_store,
    _state,
    app,
    day_option,
    echo,
)


@app.command("checks")
def checks_command(
    ctx: typer.Context,
    domain: Annotated[str | None, typer.Argument(help="Only this domain.")] = None,
    since: Annotated[str | None, typer.Option(help="First day (UTC) of runs shown.",
                                                   callback=day_option)] = None,
    fmt: FormatOpt = None,
) -> None:
    """Show the history of the MTA-STS and TLS-RPT checks.

    'serve' checks each domain once a day; 'check DOMAIN --record' stores a check now. The
    latest run of each domain comes first, with what changed since the run before.
    """
    from tlswatch.analytics.checks import COLUMNS, check_history

    settings = _state(ctx).settings
    with _errors(), _read_store(settings) as store:
        runs = check_history(store, domain=domain, since=_day(since, "'--since'"))
    chosen = _format(fmt)
    if chosen is Format.json:
        echo(to_json({"runs": runs}))
    elif not runs:
        echo(f"No checks recorded{f' for {domain}' if domain else ''}"
             f"{f' since {since}' if since else ''}: 'serve' runs them daily, "
             "'tlswatch check DOMAIN --record' runs one now.")
    else:
        shown = [{**r, "alerts": ", ".join(r["alerts"])} for r in runs]
        echo(render_rows(shown, chosen, columns=COLUMNS,
                         title="MTA-STS and TLS-RPT checks"), nl=False)
