"""`policy fetches`: who fetched a hosted policy, and what they were served."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from tlswatch.cli.base import (
    MAX_ROWS,
    FormatOpt,
    _dates,
    _errors,
    _format,
    _read_store,
    _state,
    day_option,
    echo,
    in_range,
    listing,
)
from tlswatch.cli.mtasts import DomainArg, policy_app


@policy_app.command("fetches")
def policy_fetches(
    ctx: typer.Context,
    domain: DomainArg,
    since: Annotated[str | None, typer.Option(help="First day (UTC), inclusive (default: 7 "
                                                   "days ago).",
                                              callback=day_option)] = None,
    until: Annotated[str | None, typer.Option(help="Last day (UTC), inclusive (default: "
                                                   "today).",
                                              callback=day_option)] = None,
    limit: Annotated[int, typer.Option(help="Most fetches listed, newest first (1 to "
                                                 "1,000,000).",
                                                 callback=in_range(1, MAX_ROWS))] = 1000,
    fmt: FormatOpt = None,
) -> None:
    """List the fetches of the domain's hosted policy, newest first.

    Each with the client's address (behind trusted_proxies the forwarded one), the big
    sender it belongs to (sender_ranges, reverse DNS), the policy id served, the HTTP
    status and the node that answered.
    """
    from tlswatch.analytics.fetches import COLUMNS, fetch_rows
    from tlswatch.analytics.senders import SenderMap

    settings = _state(ctx).settings
    first, last = _dates(since, until)
    last = last or datetime.now(UTC).date()
    first = first or last - timedelta(days=6)
    with _errors(), _read_store(settings) as store:
        rows = fetch_rows(store, SenderMap(settings), domain, since=first, until=last,
                          limit=limit)
    echo(listing(rows, _format(fmt), columns=COLUMNS, title=f"Policy fetches of {domain}",
                 nothing=f"No policy fetches of {domain} from {first} to {last}."), nl=False)
