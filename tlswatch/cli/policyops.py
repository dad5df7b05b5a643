"""`policy rotate|enforce|fallback|apply-staged|history`: safe changes of a hosted policy,
each recorded with who made it (the operating-system user), when and why."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from tlswatch.analytics.render import Format, render_rows, to_json
from tlswatch.cli.base import FormatOpt, _errors, _format, _read_store, _state, echo
from tlswatch.cli.mtasts import DomainArg, _print_policy, policy_app
from tlswatch.config import Settings
from tlswatch.errors import NotFoundError

if TYPE_CHECKING:
    from tlswatch.mtasts.changes import Outcome

ReasonOpt = Annotated[str, typer.Option(help="Why: kept in 'policy history'.")]
HISTORY_COLUMNS = ("changed_at", "action", "actor", "from", "to", "mx", "reason")


def _change(ctx: typer.Context, domain: str, action: str, reason: str, fmt: FormatOpt,
            force: bool = False) -> None:
    from tlswatch.mtasts.changes import act
    from tlswatch.mtasts.hosting import os_actor

    settings: Settings = _state(ctx).settings
    with _errors():
        outcome = act(settings, domain, action, actor=os_actor(), reason=reason, force=force)
    _print_policy(outcome.change.new, settings, fmt, note=_said(outcome))


def _said(outcome: Outcome) -> str:
    c = outcome.change
    old = f"id {c.old.id} ({c.old.mode})" if c.old else "nothing"
    return (f"{c.action} by {c.actor}{' (forced)' if c.forced else ''}: {old} -> "
            f"id {c.new.id} ({c.new.mode}).\n{outcome.note}")


@policy_app.command("rotate")
def policy_rotate(ctx: typer.Context, domain: DomainArg, reason: ReasonOpt = "",
                  fmt: FormatOpt = None) -> None:
    """Serve the same policy under a new id.

    Every sender that looks up _mta-sts fetches it again.
    """
    _change(ctx, domain, "rotate", reason, fmt)


@policy_app.command("enforce")
def policy_enforce(
    ctx: typer.Context, domain: DomainArg, reason: ReasonOpt = "",
    force: Annotated[bool, typer.Option("--force", help="Enforce although 'policy advise' "
                                        "does not advise it (recorded as forced).")] = False,
    fmt: FormatOpt = None,
) -> None:
    """Move the policy from testing to enforce.

    Refused unless 'policy advise' advises it (--force: recorded as forced).
    """
    _change(ctx, domain, "enforce", reason, fmt, force)


@policy_app.command("fallback")
def policy_fallback(ctx: typer.Context, domain: DomainArg, reason: ReasonOpt = "",
                    fmt: FormatOpt = None) -> None:
    """Go back from enforce to testing, under a new id.

    Says until when senders that do not look again keep the enforce policy (its max_age).
    """
    _change(ctx, domain, "fallback", reason, fmt)


@policy_app.command("apply-staged")
def policy_apply_staged(ctx: typer.Context, domain: DomainArg, reason: ReasonOpt = "",
                        fmt: FormatOpt = None) -> None:
    """Serve the policy the MX watcher staged.

    The daily MX watcher stages one when a live MX is not covered by the policy.
    """
    _change(ctx, domain, "apply-staged", reason, fmt)


@policy_app.command("history")
def policy_history(ctx: typer.Context, domain: DomainArg, fmt: FormatOpt = None) -> None:
    """Every change of the hosted policy.

    When, who, from what to what, and why.
    """
    from tlswatch.mtasts.changes import history

    settings = _state(ctx).settings
    with _errors(), _read_store(settings) as store:
        rows = history(store, domain)
        if not rows:
            raise NotFoundError(f"policy history {domain}: no hosted policy of this domain "
                                "has ever been written here ('tlswatch policy init')")
    chosen = _format(fmt)
    if chosen is Format.json:
        echo(to_json({"domain": domain, "changes": rows}))
        return
    table = [{"changed_at": f"{r['changed_at']:%Y-%m-%d %H:%M:%S}",
              "action": r["action"] + (" (forced)" if r["forced"] else ""),
              "actor": r["actor"],
              "from": f"{r['old_id']} {r['old_mode']}" if r["old_id"] else "",
              "to": f"{r['new_id']} {r['new_mode']}", "mx": ", ".join(r["new_mx"]),
              "reason": r["reason"]} for r in rows]
    echo(render_rows(table, chosen, columns=HISTORY_COLUMNS,
                     title=f"Changes of the hosted policy of {domain}"), nl=False)
