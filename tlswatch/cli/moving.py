"""`db copy` (a whole store to another engine) and `export lake` (Parquet by day)."""

from __future__ import annotations

from typing import Annotated

import typer

from tlswatch.cli.base import _errors, _state, echo
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
