"""`db rebuild-rollups`."""

from __future__ import annotations

import typer

from tlswatch.cli.base import _errors, _state, echo
from tlswatch.cli.upkeep import db_app


@db_app.command("rebuild-rollups")
def rebuild_rollups(ctx: typer.Context) -> None:
    """Recompute the daily rollups from the stored reports.

    Summaries, the dashboard, alerts and daily files read the rollups, which every load
    keeps up to date; this is for a database whose rollups are in doubt. Failure figures
    of days whose failure details were pruned cannot be recomputed and are kept as they are.
    """
    from tlswatch.store.rollups import rebuild_file

    settings = _state(ctx).settings
    with _errors():
        done = rebuild_file(settings.db, lock_timeout=settings.lock_timeout)
    rows = done["rows"]
    echo(f"rollups rebuilt: {rows['rollup_days']} day rows, {rows['rollup_policies']} "
         f"policy rows, {rows['rollup_failures']} failure rows, {rows['rollup_results']} "
         "result rows")
    if done["kept_before"] is not None:
        echo(f"failure details before {done['kept_before']} were pruned: their "
             f"{done['kept_failure_rows']} failure rows were kept, not recomputed")
