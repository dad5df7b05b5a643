"""`db copy` (a whole store to another engine) and `export lake` (Parquet by day)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tlswatch.analytics.render import Format, render_rows, to_json
from tlswatch.cli.base import FormatOpt, _errors, _format, _read_store, _state, echo
from tlswatch.cli.reading import export_app
from tlswatch.cli.upkeep import db_app


@db_app.command("copy")
def copy(
    ctx: typer.Context,
    src: Annotated[str, typer.Argument(help="The store to copy: a DuckDB file or a "
                                       "postgresql:// URL.")],
    dst: Annotated[str, typer.Argument(help="An empty store to copy into (a new DuckDB "
                                       "file or an empty PostgreSQL database).")],
) -> None:
    """Copy a whole store into an empty one, on either engine.

    Every table is copied with its keys, raw reports included, in one transaction on DST,
    then read back and checked (row counts and a checksum per table). Stop 'serve' first:
    a DuckDB file being written cannot be read by another process.
    """
    from tlswatch.dburl import location
    from tlswatch.store.copy import copy_between

    settings = _state(ctx).settings
    with _errors():
        done = copy_between(src, dst, lock_timeout=settings.lock_timeout,
                            progress=lambda t: echo(f"{t.table:<24} {t.rows:>12,} rows  "
                                                    "verified"))
        echo(f"copied {len(done)} tables, {sum(t.rows for t in done):,} rows, from "
             f"{location(src)} to {location(dst)}")


@export_app.command("lake")
def lake(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="The lake's folder (created if "
                                      "missing).")],
    fmt: FormatOpt = None,
) -> None:
    """Write the tables as Parquet, partitioned by day (Hive layout).

    Later runs write only new days, and rewrite a day whose rows changed since (a late
    report). DuckDB, pyarrow, pandas and Spark read each table folder as one dataset.
    """
    from tlswatch.lake import export_lake

    settings = _state(ctx).settings
    with _errors(), _read_store(settings) as store:
        run = export_lake(store, out)
    chosen = _format(fmt)
    if chosen is Format.json:
        echo(to_json(run.as_dict()))
        return
    rows = [{"table": t.table, "days written": t.days_written,
             "days unchanged": t.days_unchanged, "rows written": t.rows_written}
            for t in run.tables]
    echo(render_rows(rows, chosen, title=f"Lake {out}"), nl=False)
