"""`quarantine` (list refused inputs), `quarantine show`, `retry`, `delete`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tlswatch.analytics.render import Format, render_rows, to_json
from tlswatch.cli.base import (
    FormatOpt,
    _dates,
    _errors,
    _format,
    _only,
    _state,
    app,
    day_option,
    echo,
    in_range,
)

if TYPE_CHECKING:
    from tlswatch.quarantine import Filters, Refusal

quarantine_app = typer.Typer(
    help="List, show, retry or delete refused inputs.\n\nRefused inputs are kept in "
         "spool/failed and in the database's quarantine; both are listed as one.",
    invoke_without_command=True)
app.add_typer(quarantine_app, name="quarantine")

SinceOpt = Annotated[str | None, typer.Option(help="Refused on or after this day (UTC).",
                                              callback=day_option)]
UntilOpt = Annotated[str | None, typer.Option(help="Refused on or before this day (UTC).",
                                              callback=day_option)]
ReasonOpt = Annotated[str | None, typer.Option(help="Only reasons containing this text.")]
COLUMNS = ["id", "received_at", "via", "source", "size", "reason"]
NOTHING = "no refused inputs"


def _filters(since: str | None, until: str | None, reason: str | None,
             older_than: float | None = None) -> Filters:
    from tlswatch.quarantine import Filters

    return Filters(*_dates(since, until), reason=reason,
                   older_than_days=older_than)


@quarantine_app.callback()
def listing(ctx: typer.Context, since: SinceOpt = None, until: UntilOpt = None,
            reason: ReasonOpt = None, fmt: FormatOpt = None) -> None:
    """List refused inputs: when, how, from whom, size, why; oldest first."""
    from tlswatch.quarantine import list_refused

    if ctx.invoked_subcommand is not None:
        return
    settings = _state(ctx).settings
    filters = _filters(since, until, reason)
    with _errors():
        entries = list_refused(settings, filters)
    chosen = _format(fmt)
    echo(render_listing(entries, chosen), nl=False)
    if not entries and chosen in (Format.json, Format.csv):
        echo(NOTHING, err=True)


def render_listing(entries: list[Refusal], fmt: Format) -> str:
    if fmt is Format.json:
        return to_json([e.as_dict() for e in entries]) + "\n"
    if not entries:
        if fmt is Format.csv:
            return ",".join(COLUMNS) + "\n"
        return NOTHING + "\n"
    rows: list[dict[str, Any]] = []
    for e in entries:
        row = e.as_dict()
        if fmt is Format.table:
            row["id"] = " ".join([e.id, *(q for q in e.quarantine_ids if q != e.id)])
            row["size"] = f"{e.size:,}"
            if len(row["reason"]) > 200:
                row["reason"] = row["reason"][:197] + "..."
        rows.append(row)
    return render_rows(rows, fmt, columns=COLUMNS if fmt is Format.table else None,
                       title="Refused inputs")


@quarantine_app.command("show")
def show_cmd(
    ctx: typer.Context,
    ident: Annotated[str, typer.Argument(metavar="ID", help="An id from the listing.")],
    raw: Annotated[bool, typer.Option("--raw", help=(
        "Write the exact bytes (to --out, or to standard output when it is not a "
        "terminal).")) ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="File for --raw.")] = None,
    fmt: Annotated[Format | None, typer.Option(
        "--format", "-f", help="text or json (text on a terminal).")] = None,
) -> None:
    """Print one refused input.

    Its details and its content, escaped for the terminal; gzip is inflated.
    """
    from tlswatch.quarantine import details, show

    settings = _state(ctx).settings
    if raw or out is not None:
        with _errors():
            _entry, data = show(settings, ident)
        _write_raw(data, out)
        return
    with _errors():
        entry = details(settings, ident)
    chosen = fmt or (Format.text if sys.stdout.isatty() else Format.json)
    if chosen is Format.json:
        echo(to_json(entry))
        return
    for key in ("id", "received_at", "via", "source", "size", "reason", "quarantine_ids"):
        if key != "quarantine_ids" or entry[key] not in ([], [entry["id"]]):
            value = entry[key]
            echo(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
    for key, value in entry["meta"].items():
        if key not in ("via", "size", "received_at") and value is not None:
            echo(f"meta.{key}: {value}")
    echo("")
    echo(entry["content"])


def _write_raw(data: bytes, out: Path | None) -> None:
    if out is not None:
        try:
            out.write_bytes(data)
        except OSError as exc:
            echo(f"tlswatch: {out}: cannot write: {exc.strerror or exc}", err=True)
            raise typer.Exit(1) from None
        echo(f"wrote {len(data):,} bytes to {out}", err=True)
        return
    if sys.stdout.isatty():
        echo("tlswatch: --raw writes bytes that may drive a terminal; redirect standard "
             "output or use --out FILE", err=True)
        raise typer.Exit(2)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@quarantine_app.command("retry")
def retry_cmd(
    ctx: typer.Context,
    idents: Annotated[list[str] | None, typer.Argument(metavar="ID...",
                                                        help="Ids from the listing.")] = None,
    every: Annotated[bool, typer.Option("--all", help=(
        "Every refused input the filters match."))] = False,
    since: SinceOpt = None, until: UntilOpt = None, reason: ReasonOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Load refused inputs again with today's checks.

    Inputs stored this time leave the quarantine; the others stay, with the new reason.
    """
    from tlswatch.quarantine import retry

    settings = _state(ctx).settings
    _need_choice(idents, every)
    with _errors():
        done = retry(settings, idents or (),
                     filters=_filters(since, until, reason) if every else None)
    chosen = _only(_format(fmt), Format.table, Format.json, command="quarantine retry")
    if chosen is Format.json:
        echo(to_json([d.as_dict() for d in done]))
    elif not done:
        echo(NOTHING)
    for d in done if chosen is not Format.json else ():
        echo(f"{d.id}: {d.outcome}: {d.detail}")
    raise typer.Exit(0 if all(d.outcome == "stored" for d in done) else 1)


@quarantine_app.command("delete")
def delete_cmd(
    ctx: typer.Context,
    idents: Annotated[list[str] | None, typer.Argument(metavar="ID...",
                                                        help="Ids from the listing.")] = None,
    older_than: Annotated[float | None, typer.Option(
        "--older-than", metavar="DAYS", help="Every refused input older than DAYS days (0 to "
        "36,500).", callback=in_range(0, 36500))]
    = None,
) -> None:
    """Remove refused inputs (their spool files and database rows)."""
    from tlswatch.quarantine import delete

    settings = _state(ctx).settings
    _need_choice(idents, older_than is not None)
    with _errors():
        gone = delete(settings, idents or (),
                      filters=None if older_than is None else _filters(None, None, None,
                                                                       older_than))
    echo(f"deleted {len(gone)} refused input{'s' if len(gone) != 1 else ''}"
         + (f": {', '.join(gone)}" if gone else ""))


def _need_choice(idents: list[str] | None, every: bool) -> None:
    if bool(idents) == every:
        raise typer.BadParameter("name the entries (ID...) or choose them by filter, "
                                 "not both and not neither")
