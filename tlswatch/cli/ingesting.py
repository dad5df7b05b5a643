"""`ingest` and `validate`.

``ingest`` exits 75 (EX_TEMPFAIL in sysexits.h) when a failure is transient (the database
locked or not writable now, a DKIM key lookup that got no answer while ``dkim = require``):
the input is not refused and the same input will load later, so a mail system's pipe
delivery defers the message and tries again instead of bouncing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tlswatch.analytics.render import Format, render_rows, to_json
from tlswatch.cli.base import (
    FormatOpt,
    _errors,
    _format,
    _only,
    _state,
    app,
    echo,
    err,
    listing,
)
from tlswatch.config import Settings
from tlswatch.errors import ReportError, TlsWatchError

if TYPE_CHECKING:
    from tlswatch.ingest.decode import Limits
    from tlswatch.ingest.loader import IngestResult
    from tlswatch.ingest.sources import Input, Item
    from tlswatch.store import Store


# -- ingest and validate ----------------------------------------------------------------------
@app.command()
def ingest(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(metavar="PATH",
        help="Files, directories, .eml, mbox, Maildir; '-' reads standard input.")],
    fmt: FormatOpt = None,
) -> None:
    """Decode, validate and load reports.

    A report seen again is counted once; a refused input is quarantined with its reason.
    """
    from tlswatch.ingest.sources import iter_inputs
    from tlswatch.store import Store

    settings = _state(ctx).settings
    # No CSV: the counts and the list of refused inputs are two tables.
    chosen = _only(_format(fmt), Format.table, Format.json, Format.markdown, command="ingest")
    with _errors(), _transient(), Store.open(settings.db,
                                             lock_timeout=settings.lock_timeout) as store:
        items = iter_inputs(paths, max_bytes=settings.max_input_bytes)
        result = _load_with_progress(items, store, settings, paths)
    if chosen is Format.json:
        echo(to_json(result.as_dict()))
    elif chosen is Format.markdown:
        echo(_ingest_markdown(result), nl=False)
    else:
        _print_ingest(result)
    if result.retry:  # not quarantined: the same input loads once the lookup answers
        raise typer.Exit(EX_TEMPFAIL)
    raise typer.Exit(1 if result.rejected or result.conflicts else 0)


EX_TEMPFAIL = 75  # sysexits.h: "temporary failure; the user is invited to retry"


@contextmanager
def _transient() -> Iterator[None]:
    """A transient error (``terminal`` False on its class) or a failed write of the
    operating system exits 75; every other error goes on to ``_errors`` (exit 1)."""
    try:
        yield
    except TlsWatchError as exc:
        if exc.terminal:
            raise
        echo(f"tlswatch: {exc} (temporary: nothing was refused; try again later)", err=True)
        raise typer.Exit(EX_TEMPFAIL) from None
    except OSError as exc:
        echo(f"tlswatch: {exc} (temporary: nothing was refused; try again later)", err=True)
        raise typer.Exit(EX_TEMPFAIL) from None


def _load_with_progress(items: Iterator[Item], store: Store, settings: Settings,
                        paths: list[str]) -> IngestResult:
    from tlswatch.ingest.loader import load
    from tlswatch.ingest.prepare import options_from
    from tlswatch.ingest.sources import count_files

    kwargs: dict[str, Any] = {"options": options_from(settings), "batch_size": settings.batch_size,
                              "max_batch_bytes": settings.max_batch_bytes,
                              "workers": settings.workers}
    if not err.is_terminal or "-" in paths:
        return load(items, store, **kwargs)
    total = count_files(paths)
    if total < 20:
        return load(items, store, **kwargs)
    from rich.progress import Progress

    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("ingesting", total=total)
        return load(items, store, progress=lambda n: bar.advance(task, n), **kwargs)


def _print_ingest(result: IngestResult) -> None:
    conflicts = f", conflicts {result.conflicts:,}" if result.conflicts else ""
    echo(f"accepted {result.accepted:,}, duplicates {result.duplicates:,}, "
         f"rejected {result.rejected:,}{conflicts}")
    for rejection in result.rejections:
        echo(f"rejected {rejection.source}: {rejection.reason}", err=True)
    for conflict in result.conflict_reports:
        echo(f"quarantined {conflict.source}: {conflict.reason}", err=True)


def _ingest_markdown(result: IngestResult) -> str:
    counts = {k: v for k, v in result.as_dict().items() if isinstance(v, int)}
    refused = ([{"source": r.source, "outcome": "rejected", "reason": r.reason}
                for r in result.rejections]
               + [{"source": r.source, "outcome": "quarantined", "reason": r.reason}
                  for r in result.conflict_reports]
               + [{"source": r.source, "outcome": "retry later", "reason": r.reason}
                  for r in result.retry])
    out = render_rows([counts], Format.markdown)
    return out + ("\n" + render_rows(refused, Format.markdown) if refused else "")


VALIDATE_COLUMNS = ("source", "valid", "warnings", "path", "message")


@app.command("validate")
def validate_command(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(
        metavar="PATH", help="Files or directories to check.")],
    fmt: FormatOpt = None,
) -> None:
    """Check reports without loading them.

    Every error is printed with its JSON path; exit 1 when any input is invalid.
    """
    from tlswatch.ingest.prepare import options_from
    from tlswatch.ingest.sources import expand, iter_inputs

    settings = _state(ctx).settings
    chosen = _format(fmt)
    results = [r for item in iter_inputs(paths, max_bytes=settings.max_input_bytes)
               for part in expand(item, max_bytes=settings.max_input_bytes)
               for r in _check(part, options_from(settings).limits)]
    nothing = f"No reports found in {', '.join(paths)}."
    if chosen is Format.json:
        echo(to_json(results))
    elif chosen in (Format.csv, Format.markdown) or not results:
        rows = [{"source": r["source"], "valid": r["valid"], "warnings": len(r["warnings"]),
                 **e} for r in results for e in (r["errors"] or [{"path": "", "message": ""}])]
        echo(listing(rows, chosen, columns=VALIDATE_COLUMNS, title="Validation",
                     nothing=nothing), nl=False)
    else:
        for r in results:
            if r["valid"]:
                n = len(r["warnings"])
                echo(f"{r['source']}: valid ({n} warning{'' if n == 1 else 's'})")
            for e in r["errors"]:
                where = f"{e['path']}: " if e["path"] else ""
                echo(f"{r['source']}: {where}{e['message']}")
    raise typer.Exit(0 if all(r["valid"] for r in results) else 1)


def _check(item: Input | ReportError, limits: Limits) -> list[dict[str, Any]]:
    from tlswatch.ingest.decode import decode
    from tlswatch.ingest.validate import schema_errors, validate

    def bad(exc: ReportError, source: str) -> dict[str, Any]:
        return {"source": source, "valid": False, "warnings": [],
                "errors": [{"path": exc.path, "message": exc.reason}]}

    if isinstance(item, ReportError):
        return [bad(item, item.source)]
    try:
        docs = decode(item.data, source=item.source, filename=item.filename, limits=limits)
    except ReportError as exc:
        return [bad(exc, item.source)]
    out = []
    for doc in docs:
        try:
            valid = validate(doc)
        except ReportError as exc:
            errors = [{"path": p, "message": m} for p, m in schema_errors(doc.data)]
            out.append({"source": doc.source, "valid": False, "warnings": [],
                        "errors": errors or [{"path": exc.path, "message": exc.reason}]})
            continue
        out.append({"source": doc.source, "valid": True, "warnings": valid.warnings,
                    "errors": []})
    return out


# -- reading ----------------------------------------------------------------------------------
