"""`prune`, `backup`, `restore`, `db status`, `db upgrade`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from tlswatch.analytics.render import Format, render_rows, to_json
from tlswatch.cli.base import FormatOpt, _errors, _format, _state, app, echo

db_app = typer.Typer(help="The database: its schema migrations, size and contents.",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")

PRUNED = {"failure_details": "failure detail rows", "report_raw": "raw reports",
          "quarantine": "quarantined inputs (database)", "spool_done": "spool/done files",
          "spool_failed": "spool/failed inputs"}


@app.command()
def prune(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be removed; "
                                          "change nothing.")] = False,
    fmt: FormatOpt = None,
) -> None:
    """Remove data past its retention; shrink the file.

    Retention: detail_keep_days, raw_keep_days, quarantine_keep_days, check_keep_days,
    spool_keep_days, failed_keep_days. Session totals are kept forever. 'serve' does
    this once a day.
    """
    from tlswatch.upkeep import run_prune

    settings = _state(ctx).settings
    with _errors():
        run = run_prune(settings, today=datetime.now(UTC).date(), dry_run=dry_run)
    chosen = _format(fmt)
    if chosen is Format.json:
        echo(to_json(run.as_dict()))
        return
    rows = [{"what": PRUNED.get(k, k), ("would remove" if dry_run else "removed"): n,
             "kept from": run.kept_from.get(k, "")} for k, n in run.removed.items()]
    echo(render_rows(rows, chosen, title="Dry run: nothing removed" if dry_run else "Pruned"),
         nl=False)
    if chosen is Format.table and dry_run:
        echo(f"database {settings.db}: {run.size_before:,} bytes")
    elif chosen is Format.table:
        after = "compacted to" if run.compacted else "now"
        echo(f"database {settings.db}: {run.size_before:,} bytes, {after} "
             f"{run.size_after:,} bytes")


@app.command()
def backup(
    ctx: typer.Context,
    dest: Annotated[Path, typer.Argument(help="New folder for the backup.")],
    fmt: FormatOpt = None,
) -> None:
    """Back up the database, policies and state files to DEST.

    The copy is consistent also while 'serve' runs; a manifest lists the version, the
    migrations, the counts and each file's sha256.
    """
    from tlswatch.backup import backup as make

    settings = _state(ctx).settings
    with _errors():
        done = make(settings, dest)
    _print_done(done.as_dict(), _format(fmt), f"Backup written to {dest}")


@app.command()
def restore(
    ctx: typer.Context,
    src: Annotated[Path, typer.Argument(help="A folder written by 'tlswatch backup'.")],
    force: Annotated[bool, typer.Option("--force", help="Replace a database that holds "
                                        "reports.")] = False,
    fmt: FormatOpt = None,
) -> None:
    """Restore a backup written by 'tlswatch backup'.

    SRC is checked against its manifest, then put back where the settings say: database,
    policy_dir, the state files. Stop 'serve' first.
    """
    from tlswatch.backup import restore as put_back

    settings = _state(ctx).settings
    with _errors():
        done = put_back(settings, src, force=force)
    _print_done(done.as_dict(), _format(fmt), f"Restored {src} into {settings.db}")


def _print_done(data: dict[str, Any], fmt: Format, head: str) -> None:
    if fmt is Format.json:
        echo(to_json(data))
        return
    rows = [{"file": f["path"], "bytes": f["size"], "sha256": f["sha256"]}
            for f in data["files"]]
    if fmt is Format.table:
        echo(f"{head} (tlswatch {data['tlswatch_version']}, migrations "
             f"{', '.join(data['migrations'])})")
        echo("rows: " + ", ".join(f"{k} {v:,}" for k, v in data["counts"].items()))
    echo(render_rows(rows, fmt, title="Files"), nl=False)
    for note in data["notes"]:
        echo(f"note: {note}", err=True)


@db_app.command("status")
def db_status(ctx: typer.Context, fmt: FormatOpt = None) -> None:
    """Show the database's migrations, size and contents.

    The file and its size, migrations applied (and when) and pending, row counts, the oldest
    and newest report day, and what retention pruned.
    """
    from tlswatch.store.maintenance import status

    settings = _state(ctx).settings
    with _errors():
        data = status(settings.db, lock_timeout=settings.lock_timeout)
    chosen = _format(fmt)
    if chosen is Format.json:
        echo(to_json(data))
        return
    rows = [{"field": "path", "value": data["path"]},
            {"field": "size", "value": f"{data['size_bytes']:,} bytes"},
            *({"field": f"migration {m['name']}",
               "value": f"applied {m['applied_at']:%Y-%m-%d %H:%M:%S} UTC"}
              for m in data["migrations"]),
            {"field": "pending migrations",
             "value": ", ".join(data["pending_migrations"]) or "none"},
            *({"field": f"rows in {k}", "value": f"{v:,}"} for k, v in data["counts"].items()),
            {"field": "report days", "value": f"{data['oldest_report_day'] or '-'} .. "
                                              f"{data['newest_report_day'] or '-'}"},
            {"field": "last prune", "value": f"{data['last_prune']:%Y-%m-%d %H:%M:%S} UTC"
                                              if data["last_prune"] else "never"},
            *({"field": f"pruned {k}", "value": f"before {v}"}
              for k, v in data["pruned_before"].items())]
    echo(render_rows(rows, chosen, title="Database"), nl=False)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply the pending schema migrations now and list them.

    Every writing command applies them anyway; this is for databases that are read
    elsewhere read-only.
    """
    from tlswatch.store.maintenance import upgrade

    settings = _state(ctx).settings
    with _errors():
        applied = upgrade(settings.db, lock_timeout=settings.lock_timeout)
    for name in applied:
        echo(f"applied {name}")
    if not applied:
        echo(f"{settings.db}: up to date, no migration pending")
