"""`serve` and `fetch imap`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tlswatch.analytics.render import Format, to_json
from tlswatch.cli.base import (
    FormatOpt,
    _errors,
    _format,
    _only,
    _state,
    app,
    echo,
    in_range,
)
from tlswatch.config import Settings, load_settings


@app.command()
def serve(
    ctx: typer.Context,
    smtp: Annotated[str | None, typer.Option(help="SMTP/LMTP HOST:PORT ('' for none).")] = None,
    http: Annotated[str | None, typer.Option(help="HTTP(S) HOST:PORT ('' for none).")] = None,
    spool: Annotated[Path | None, typer.Option(help="Spool folder.")] = None,
    lmtp: Annotated[bool | None, typer.Option("--lmtp/--no-lmtp", help="Speak LMTP.")] = None,
) -> None:
    """Receive reports by SMTP/LMTP and HTTPS, and load them.

    Received reports are spooled durably, then loaded continuously. It logs one line per
    input received, stored or refused (INFO); -v adds the SMTP conversation.
    """
    import asyncio
    import logging

    if logging.getLogger().getEffectiveLevel() > logging.INFO:  # no -v: a daemon's journal
        logging.getLogger().setLevel(logging.INFO)
        logging.getLogger("mail.log").setLevel(logging.WARNING)

    from tlswatch.service import Listening, Service

    changes = {k: v for k, v in {"smtp": smtp, "http": http, "spool": spool,
                                 "lmtp": lmtp}.items() if v is not None}
    settings = _state(ctx).settings.replace(**changes)
    given = ctx.find_root().params  # SIGHUP reads the same file (and environment) again

    def reread() -> Settings:
        return load_settings(given.get("config"), db=given.get("db")).replace(**changes)

    def ready(at: Listening) -> None:
        parts = [f"smtp={at.smtp}" if at.smtp else "", f"http={at.http}" if at.http else "",
                 f"acme={at.acme}" if at.acme else ""]
        echo(f"tlswatch serving {' '.join(p for p in parts if p)} "
             f"spool={settings.spool} db={settings.db}")
        sys.stdout.flush()

    with _errors():
        try:
            asyncio.run(Service(settings, reread).run(on_ready=ready))
        except OSError as exc:  # a port in use, an address not on this host, no permission
            echo(f"tlswatch: cannot listen (smtp={settings.smtp or '-'} "
                 f"http={settings.http or '-'}"
                 + (f" acme_http={settings.acme_http}" if settings.acme_http else "")
                 + f"): {exc.strerror or exc}", err=True)
            raise typer.Exit(1) from None
    echo("tlswatch stopped")



fetch_app = typer.Typer(help="Fetch reports from a mailbox.", no_args_is_help=True)
app.add_typer(fetch_app, name="fetch")


@fetch_app.command("imap")
def fetch_imap(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="IMAP server (IMAPS).")],
    user: Annotated[str, typer.Option(help="Login name.")],
    password_env: Annotated[str, typer.Option(help="Environment variable holding the "
                                                   "password.")],
    port: Annotated[int, typer.Option(help="IMAPS port.", callback=in_range(1, 65535))] = 993,
    folder: Annotated[str, typer.Option(help="Folder to read.")] = "INBOX",
    archive_folder: Annotated[str, typer.Option(help="Where processed reports go.")] =
        "Processed",
    ca_bundle: Annotated[Path | None, typer.Option(help="CA certificates to trust "
                                                         "(PEM).")] = None,
    load_now: Annotated[bool, typer.Option("--load/--no-load", help="Load what was fetched "
                                           "now (off when 'serve' loads the spool).")] = True,
    fmt: FormatOpt = None,
) -> None:
    """Spool new report mail from an IMAP folder, then load it.

    Each report message is archived to --archive-folder once spooled.
    """

    import os

    from tlswatch.ingest.draining import drain
    from tlswatch.ingest.imap import Mailbox, fetch
    from tlswatch.ingest.loader import IngestResult
    from tlswatch.ingest.prepare import options_from
    from tlswatch.ingest.spool import Spool

    settings = _state(ctx).settings
    chosen = _only(_format(fmt), Format.table, Format.json, command="fetch imap")
    password = os.environ.get(password_env)
    if password is None:
        raise typer.BadParameter(f"environment variable {password_env} is not set",
                                 param_hint="--password-env")
    with _errors():
        spool = Spool(settings.spool)
        got = fetch(Mailbox(host=host, user=user, password=password, port=port, folder=folder,
                            archive_folder=archive_folder,
                            ca_bundle=str(ca_bundle) if ca_bundle else None), spool)
        loaded = IngestResult()
        while load_now:
            batch = drain(spool, settings.db, options=options_from(settings),
                          limit=settings.batch_size, max_bytes=settings.max_batch_bytes,
                          lock_timeout=settings.lock_timeout)
            if batch is None or not (batch.accepted + batch.duplicates + batch.rejected):
                break
            loaded.accepted += batch.accepted
            loaded.duplicates += batch.duplicates
            loaded.rejected += batch.rejected
            loaded.rejections += batch.rejections
    out = {"messages": got.seen, "spooled": len(got.spooled), "left_alone": got.left_alone,
           **loaded.as_dict()}
    if chosen is Format.json:
        echo(to_json(out))
    else:
        echo(f"{got.seen} new messages: {len(got.spooled)} reports spooled and archived "
             f"to {archive_folder}, {got.left_alone} other messages left alone; "
             f"loaded {loaded.accepted}, duplicates {loaded.duplicates}, "
             f"rejected {loaded.rejected}")
        for rejection in loaded.rejections:
            echo(f"rejected {rejection.source}: {rejection.reason}", err=True)
    raise typer.Exit(1 if loaded.rejected else 0)
