"""The app, its global options and the helpers every command uses.

Exit codes: 0 success, 1 something was rejected or failed (the rest still
done), 2 usage error.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from tlswatch import __version__, lazypandas
from tlswatch.analytics.render import Format, SafeFormatter, md_text, render_rows, safe_text
from tlswatch.config import Settings, load_settings
from tlswatch.errors import TlsWatchError

if TYPE_CHECKING:  # the store and its engines load when a command opens one, not at start-up
    from tlswatch.analytics.queries import Filters
    from tlswatch.store import Store

app = typer.Typer(help="Receive, store and explain SMTP TLS reports (RFC 8460).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
report_app = typer.Typer(help="One stored report.", no_args_is_help=True)
app.add_typer(report_app, name="report")
err = Console(stderr=True)


@dataclass
class State:
    settings: Settings


def _state(ctx: typer.Context) -> State:
    state = ctx.obj
    assert isinstance(state, State)
    return state


def echo(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    """Print ``text`` with every character a terminal would act on, or that reorders or
    hides text, shown escaped (``safe_text``).  Every command prints through here: report
    contents are untrusted.  Styled output, if ever wanted, is made from escaped values."""
    typer.echo(safe_text(text), err=err, nl=nl)


def _version(value: bool) -> None:
    if value:
        echo(f"tlswatch {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    db: Annotated[str | None, typer.Option(
        "--db", envvar="TLSWATCH_DB",
        help="DuckDB database file, or a postgresql:// URL.")] = None,
    config: Annotated[Path | None, typer.Option("--config", envvar="TLSWATCH_CONFIG",
                                                 help="TOML settings file.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    lazypandas.enable()  # pyarrow is not to load pandas in this process unless needed
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
    with _errors():
        ctx.obj = State(load_settings(config, db=db))


@contextmanager
def _errors() -> Iterator[None]:
    """Turn tlswatch's named errors into a one-line message and exit code 1."""
    try:
        yield
    except TlsWatchError as exc:
        echo(f"tlswatch: {exc}", err=True)
        raise typer.Exit(1) from None
    except _database_errors() as exc:  # a database this version cannot read, ...
        echo(f"tlswatch: database error: {exc}", err=True)
        raise typer.Exit(1) from None


def _database_errors() -> tuple[type[Exception], ...]:
    """The error classes of the database engines loaded so far (an engine never loaded
    raised nothing)."""
    return tuple(module.Error for name in ("duckdb", "psycopg")
                 if (module := sys.modules.get(name)) is not None)


class RowFormat(StrEnum):
    """The formats of a listing (``summary`` adds ``text``)."""

    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


def _format(fmt: Format | RowFormat | None) -> Format:
    if fmt is not None:
        return Format(fmt.value)
    return Format.table if sys.stdout.isatty() else Format.json


def _only(fmt: Format, *allowed: Format, command: str) -> Format:
    """``fmt``, or a usage error (exit 2) naming the formats ``command`` can print: nobody
    gets a format they did not ask for without being told."""
    if fmt not in allowed:
        names = ", ".join(f.value for f in allowed[:-1]) + f" or {allowed[-1].value}"
        raise typer.BadParameter(f"'{command}' prints {names}, not {fmt.value}",
                                 param_hint="'--format' / '-f'")
    return fmt


def nothing_matched(what: str, filters: Filters) -> str:
    """The sentence an empty listing prints, with the filters that were used, e.g.
    ``No reports from 2026-11-01 to 2026-11-27 for example.com.``"""
    words = [f"No {what}"]
    if filters.since and filters.until:
        words.append(f"from {filters.since} to {filters.until}")
    elif filters.since or filters.until:
        words.append(f"since {filters.since}" if filters.since else f"until {filters.until}")
    for label, values in (("for", filters.domains), ("by", filters.organizations),
                          ("of type", filters.result_types), ("on MX", filters.mx_hosts),
                          ("from sending IP", filters.sending_ips)):
        if values:
            words.append(f"{label} {', '.join(values)}")
    return " ".join(words) + "."


def listing(rows: Sequence[dict[str, Any]], fmt: Format, *, columns: Sequence[str],
            title: str, nothing: str) -> str:
    """Rows in ``fmt``; with no rows: table, text and Markdown say ``nothing``, CSV is the
    header alone, JSON ``[]``."""
    if rows or fmt is Format.json:
        return render_rows(rows, fmt, title=title)
    if fmt is Format.csv:
        return render_rows([], fmt, columns=columns)
    return (md_text(nothing) if fmt is Format.markdown else nothing) + "\n"


MAX_ROWS = 1_000_000  # the most rows a listing's --limit asks for
# The days a date option takes: none before the Unix epoch (no report is that old), and
# the last one a day short of the last date Python can hold, so the day after it exists.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9999, 12, 30)


def _day(value: str | None, option: str | None = None) -> date | None:
    """``value`` as a date from FIRST_DAY to LAST_DAY, or a usage error (exit 2) naming
    ``option`` and the value."""
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date like 2026-11-27",
                                 param_hint=option) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise typer.BadParameter(f"{value!r} is out of range: a day from {FIRST_DAY} to "
                                 f"{LAST_DAY}", param_hint=option)
    return day


def day_option(param: typer.CallbackParam, value: str | None) -> str | None:
    """Check a date option as it is parsed, so its error names it (``_day`` converts)."""
    _day(value, f"'{param.opts[0]}'")
    return value


def in_range(low: float, high: float) -> Callable[[typer.CallbackParam, Any], Any]:
    """A callback for a numeric option: a value outside ``low``..``high`` is a usage error
    (exit 2) naming the option, the value and the range, before any query sees it."""
    def check(param: typer.CallbackParam, value: Any) -> Any:
        if value is not None and not low <= value <= high:
            raise typer.BadParameter(f"{value!r} is out of range: {low:,} to {high:,}",
                                     param_hint=f"'{param.opts[0]}'")
        return value
    return check


def _dates(since: str | None, until: str | None) -> tuple[date | None, date | None]:
    """``--since`` and ``--until`` as dates; since after until is a usage error."""
    first, last = _day(since, "'--since'"), _day(until, "'--until'")
    if first is not None and last is not None and first > last:
        raise typer.BadParameter(f"--since {first} is after --until {last}; swap them",
                                 param_hint="'--since' / '--until'")
    return first, last


FormatOpt = Annotated[RowFormat | None, typer.Option(
    "--format", "-f", help="table, json, csv or markdown (table on a terminal, else json).")]
SinceOpt = Annotated[str | None, typer.Option(help="First report day (UTC), inclusive.",
                                              callback=day_option)]
UntilOpt = Annotated[str | None, typer.Option(help="Last report day (UTC), inclusive.",
                                              callback=day_option)]
DomainOpt = Annotated[list[str] | None, typer.Option("--domain", "-d", help="Policy domain.")]
OrgOpt = Annotated[list[str] | None, typer.Option("--org", help="Reporting organisation.")]


def plain_help(typer_app: typer.Typer) -> None:
    """Help as written, for ``typer_app`` and every group under it: click's formatter joins
    a paragraph's lines before wrapping them and shows a flag as a flag.  (Typer's rich
    panels keep a docstring's line breaks in command lists and show flags as ``<bool>``.)"""
    typer_app.rich_markup_mode = None
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            plain_help(group.typer_instance)


def _read_store(settings: Settings) -> Store:
    from tlswatch.store import Store

    return Store.open(settings.db, read_only=True, lock_timeout=settings.lock_timeout)


TenantScopeOpt = Annotated[str | None, typer.Option(
    "--tenant", help="Only the domains this tenant owns (provider mode).")]


def tenant_filters(store: Store, filters: Filters, tenant: str | None) -> Filters:
    """``filters`` kept to ``tenant``'s domains (None: every domain)."""
    from tlswatch.tenants.registry import scope_for

    return filters if tenant is None else replace(filters, scope=scope_for(store, tenant))
