"""Safe changes of a hosted MTA-STS policy: rotate the id, move testing -> enforce (only when
``policy advise`` advises it, or forced and recorded so), fall back enforce -> testing,
retire, apply a policy the MX watcher staged; and the history of every change.

Each change goes through ``hosting.apply_change``: the policy is written and served, the
change recorded with who made it, when, from what to what and why.  A change gets a new
id (RFC 8461 section 3.1: senders fetch the policy again only when the ``_mta-sts`` id
differs from their cached policy's); a sender that does not look again keeps its cached
policy until its ``max_age`` runs out (section 3.3), so each change says when.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tlswatch.config import Settings
from tlswatch.errors import NotFoundError, TlsWatchError
from tlswatch.mtasts.hosting import (
    HostedPolicy,
    PolicyChange,
    PolicyStore,
    advise,
    apply_change,
    policy_domain,
    record_change,
    retire_policy,
    writing,
)
from tlswatch.store import Store, now_utc

# What the dashboard offers (and `act` runs); `policy init` is the CLI's alone.
ACTIONS = ("rotate", "enforce", "fallback", "retire", "apply-staged")
STAGE = "stage"  # the action of a staged policy's row: recorded, not served


@dataclass(frozen=True)
class Outcome:
    change: PolicyChange
    note: str  # what to publish, and when senders see the change


def _until(old: HostedPolicy | None, at: datetime) -> str:
    """The last moment a sender may still use the old policy without looking again."""
    if old is None:
        return ""
    return f"{at + timedelta(seconds=old.max_age):%Y-%m-%d %H:%M} UTC"


def _publish_note(settings: Settings, policy: HostedPolicy) -> str:
    """What the operator does about the new id: nothing where this deployment publishes it."""
    from tlswatch.mtasts.dnsupdate import delegation

    if delegation(settings) is not None:
        return "This deployment publishes the new id itself (DNS update)."
    return (f"Publish _mta-sts.{policy.domain} TXT \"v=STSv1; id={policy.id};\" now (the "
            "policy with this id is served already).")


def _seen(settings: Settings, change: PolicyChange) -> str:
    old, new = change.old, change.new
    note = (f"{_publish_note(settings, new)} Senders that look up _mta-sts see the new id "
            f"once the old TXT record's TTL has passed, and fetch the policy again.")
    if old is not None and old.mode != new.mode:
        note += (f" A sender that cached the {old.mode} policy (id {old.id}) and does not "
                 f"look again keeps it until its max_age ({old.max_age} s) runs out: at the "
                 f"latest {_until(old, change.at)}.")
    return note


def _current(settings: Settings, domain: str) -> HostedPolicy:
    return PolicyStore(Path(settings.policy_dir)).get(domain)


def _copy(policy: HostedPolicy, **changes: Any) -> HostedPolicy:
    fields = {"domain": policy.domain, "mode": policy.mode, "mx": list(policy.mx),
              "max_age": policy.max_age, **changes}
    return HostedPolicy(**fields)


def rotate(settings: Settings, domain: str, *, actor: str, reason: str = "") -> Outcome:
    """The same policy under a new id: senders fetch it again."""
    old = _current(settings, domain)
    with writing(settings) as store:
        change = apply_change(settings, store, domain, _copy(old, retired=old.retired),
                              actor, reason or "policy rotate", action="rotate")
    return Outcome(change, _seen(settings, change))


def enforce(settings: Settings, domain: str, *, actor: str, reason: str = "",
            force: bool = False, days: int = 14) -> Outcome:
    """testing -> enforce, refused unless ``advise`` advises it (``force``: recorded)."""
    old = _current(settings, domain)
    if old.mode != "testing":
        raise TlsWatchError(f"policy enforce {old.domain}: the policy is in mode {old.mode}, "
                            "not testing; only a testing policy moves to enforce")
    with writing(settings) as store:
        advice = advise(store, settings, old.domain, days=days)
        if not advice["enforce"] and not force:
            raise TlsWatchError(
                f"policy enforce {old.domain}: refused: policy advise says: "
                f"{advice['advice']}; see 'tlswatch policy advise {old.domain}', or add "
                "--force to enforce anyway (recorded as forced)")
        why = reason or "policy enforce"
        if not advice["enforce"]:
            why += f" (forced against the advice: {advice['advice']})"
        change = apply_change(settings, store, domain, _copy(old, mode="enforce"), actor, why,
                              action="enforce", forced=not advice["enforce"])
    return Outcome(change, _seen(settings, change))


def fallback(settings: Settings, domain: str, *, actor: str, reason: str = "") -> Outcome:
    """enforce -> testing in an emergency, under a new id (never an id served before)."""
    old = _current(settings, domain)
    if old.mode != "enforce":
        raise TlsWatchError(f"policy fallback {old.domain}: the policy is in mode "
                            f"{old.mode}, not enforce: there is nothing to fall back from")
    with writing(settings) as store:
        change = apply_change(settings, store, domain, _copy(old, mode="testing"), actor,
                              reason or "policy fallback", action="fallback")
    return Outcome(change, _seen(settings, change) + " Before enforcing again, a shorter "
                   "max_age "
                   "(policy init --max-age) shortens the next fallback's wait.")


def retire(settings: Settings, domain: str, *, actor: str, reason: str = "") -> Outcome:
    change, expires = retire_policy(settings, domain, actor=actor, reason=reason)
    policy = change.new
    return Outcome(change, (
        f"{_publish_note(settings, policy)} Senders may "
        f"keep the old policy until {expires:%Y-%m-%d %H:%M} UTC (its max_age); after that "
        f"remove the _mta-sts record, the mta-sts host and this policy "
        f"({settings.policy_dir}/{policy.domain}.json)."))


# -- the MX watcher's staged policies ----------------------------------------------------------
def staged(store: Store, domain: str) -> dict[str, Any] | None:
    """The policy staged for the domain since its last change (None when there is none)."""
    rows = store.rows("""
        SELECT change_pk, changed_at, actor, reason, new_id, new_mode, new_mx, new_max_age
        FROM policy_changes
        WHERE domain = ? AND action = ? AND change_pk > (
            SELECT coalesce(max(change_pk), 0) FROM policy_changes
            WHERE domain = ? AND action <> ?)
        ORDER BY change_pk DESC LIMIT 1
    """, [domain, STAGE, domain, STAGE])
    return rows[0] if rows else None


def is_staged(store: Store, policy: HostedPolicy) -> bool:
    """Whether this policy (its mode and mx) is the one staged since the last change."""
    pending = staged(store, policy.domain)
    return pending is not None and pending["new_mx"] == policy.mx and \
        pending["new_mode"] == policy.mode


def stage(store: Store, policy: HostedPolicy, staged_policy: HostedPolicy, *, actor: str,
          reason: str) -> bool:
    """Record ``staged_policy`` for the admin to apply; False when it is staged already."""
    if is_staged(store, staged_policy):
        return False
    staged_policy.revision = policy.revision + 1
    record_change(store, PolicyChange(policy.domain, STAGE, actor, reason, policy,
                                      staged_policy, now_utc()))
    return True


def apply_staged(settings: Settings, domain: str, *, actor: str, reason: str = "") -> Outcome:
    """Serve the policy the MX watcher staged (it keeps the mode of the policy it was made
    from: the watcher never changes a mode)."""
    old = _current(settings, domain)
    with writing(settings) as store:
        pending = staged(store, old.domain)
        if pending is None:
            raise NotFoundError(f"policy apply-staged {old.domain}: no staged policy since "
                                "the last change (the MX watcher stages one when an MX is "
                                "not covered)")
        new = _copy(old, mode=pending["new_mode"], mx=list(pending["new_mx"]),
                    max_age=pending["new_max_age"])
        change = apply_change(settings, store, domain, new, actor,
                              reason or f"apply the staged policy: {pending['reason']}",
                              action="apply-staged")
    return Outcome(change, _seen(settings, change))


def act(settings: Settings, domain: str, action: str, *, actor: str, reason: str = "",
        force: bool = False) -> Outcome:
    """One of ``ACTIONS`` (the dashboard's buttons)."""
    domain = policy_domain(domain)
    if action == "enforce":
        return enforce(settings, domain, actor=actor, reason=reason, force=force)
    runs = {"rotate": rotate, "fallback": fallback, "retire": retire,
            "apply-staged": apply_staged}
    if action not in runs:
        raise TlsWatchError(f"policy action {action!r}: must be one of {', '.join(ACTIONS)}")
    return runs[action](settings, domain, actor=actor, reason=reason)


def history(store: Store, domain: str) -> list[dict[str, Any]]:
    """Every change of the domain's policy (and every staged one), oldest first."""
    if not store.has_table("policy_changes"):
        return []
    return store.rows("""
        SELECT changed_at, action, actor, old_id, old_mode, old_max_age, new_id, new_mode,
               new_max_age, new_mx, forced, reason
        FROM policy_changes WHERE domain = ? ORDER BY change_pk
    """, [policy_domain(domain)])
