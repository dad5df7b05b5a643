"""Hosted MTA-STS policies: one file per domain in ``policy_dir``, served by ``serve`` at
``https://mta-sts.<domain>/.well-known/mta-sts.txt``, with the DNS records to publish and
advice from the stored reports on when to move from testing to enforce.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from tlswatch.analytics.queries import seen
from tlswatch.config import Settings
from tlswatch.dnsname import BadDomain, parse_domain
from tlswatch.errors import NotFoundError, TlsWatchError
from tlswatch.mtasts.policy import MAX_AGE_LIMIT, covered_by, parse_policy, policy_id, render_policy
from tlswatch.store import Store, now_utc

BLOCKING_PREFIXES = ("sts-", "certificate-", "starttls-")


@dataclass
class HostedPolicy:
    domain: str
    mode: str
    mx: list[str]
    max_age: int
    updated_at: str = ""
    retired: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    revision: int = 0  # changes made by apply_change; part of the id (see policy_id)

    @property
    def text(self) -> str:
        return render_policy(self.mode, self.mx if self.mode != "none" else [], self.max_age)

    @property
    def id(self) -> str:
        return policy_id(self.text, self.revision)


class PolicyStore:
    """One ``<domain>.json`` per hosted domain.  A name becomes a path only after it has
    passed ``policy_domain``, so no name can reach outside the folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._listing: tuple[int, frozenset[str]] = (-1, frozenset())

    def path(self, domain: str) -> Path:
        return self.folder / f"{policy_domain(domain)}.json"

    def domains(self) -> frozenset[str]:
        """The hosted domains, from the folder's listing (re-read when the folder changes)."""
        try:
            stamp = self.folder.stat().st_mtime_ns
        except OSError:
            return frozenset()
        if stamp != self._listing[0]:
            names = frozenset(entry.name.removesuffix(".json") for entry in os.scandir(self.folder)
                              if entry.name.endswith(".json") and entry.is_file())
            self._listing = (stamp, frozenset(n for n in names if _is_canonical(n)))
        return self._listing[1]

    def get(self, domain: str) -> HostedPolicy:
        try:
            return HostedPolicy(**json.loads(self.path(domain).read_text()))
        except FileNotFoundError:
            raise NotFoundError(f"no hosted policy for {domain}; create one with "
                                f"'tlswatch policy init {domain} --mx HOST'") from None

    def find(self, domain: str) -> HostedPolicy | None:
        try:
            return self.get(domain)
        except NotFoundError:
            return None

    def hosted(self, name: str) -> HostedPolicy | None:
        """The policy of a domain named by a stranger (a Host header): names that are not
        listed in the folder are refused before any path is built from them."""
        if name not in self.domains():
            return None
        return self.find(name)

    def save(self, policy: HostedPolicy) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        policy.updated_at = datetime.now(UTC).isoformat(timespec="seconds")
        target = self.path(policy.domain)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(policy), indent=1))
        os.replace(tmp, target)


def policy_domain(text: str) -> str:
    """A policy's domain in canonical form, or an error naming it: the name becomes a file
    name in ``policy_dir`` and part of the MTA-STS host, so it must be a DNS host name."""
    try:
        return parse_domain(text)
    except BadDomain as exc:
        raise TlsWatchError(f"policy domain: {exc}") from None


def _is_canonical(name: str) -> bool:
    try:
        return parse_domain(name) == name
    except BadDomain:
        return False


@dataclass(frozen=True)
class PolicyChange:
    """One change of a hosted policy, as recorded in ``policy_changes``."""

    domain: str
    action: str
    actor: str
    reason: str
    old: HostedPolicy | None
    new: HostedPolicy
    at: datetime
    forced: bool = False


MAX_REASON = 500  # characters of a change's reason (the dashboard's form takes as many)


def apply_change(settings: Settings, store: Store, domain: str, new_policy: HostedPolicy,
                 actor: str, reason: str, *, action: str, forced: bool = False
                 ) -> PolicyChange:
    """The one way a hosted policy changes (init, rotate, enforce, fallback, retire,
    apply-staged): the new policy is written to ``policy_dir``, served from then on, and
    the change is recorded in ``policy_changes`` in the same transaction (a file that
    cannot be written records nothing).  Its revision is the old one's plus one, so its
    id was never served before, even when the content was (RFC 8461 section 3.1: senders
    refetch only when the id differs from the one they cached)."""
    domain = policy_domain(domain)
    if len(reason) > MAX_REASON:
        raise TlsWatchError(f"reason: at most {MAX_REASON} characters, got {len(reason):,}")
    problems = parse_policy(new_policy.text).errors
    if problems:
        raise TlsWatchError(f"{domain}: " + "; ".join(p.message for p in problems))
    policies = PolicyStore(Path(settings.policy_dir))
    old = policies.find(domain)
    new_policy.domain = domain
    if old is not None:
        new_policy.revision = old.revision + 1
        new_policy.history = [*old.history, {"id": old.id, "mode": old.mode,
                                             "max_age": old.max_age, "until": _now()}]
    change = PolicyChange(domain, action, actor, reason, old, new_policy,
                          now_utc().replace(microsecond=0), forced)
    with store.transaction():
        record_change(store, change)
        try:
            policies.save(new_policy)
        except OSError as exc:  # the change is not recorded either
            raise TlsWatchError(f"{policies.path(domain)}: cannot write the policy: "
                                f"{exc.strerror or exc}") from None
    # The new policy is served from here on: its id is published once the store is closed.
    pending = _changed.get()
    if pending is not None:
        pending.append(new_policy)
    else:
        _publish(settings, new_policy)
    return change


def record_change(store: Store, change: PolicyChange) -> None:
    """One row of ``policy_changes`` (also the MX watcher's staged policies)."""
    old, new = change.old, change.new
    store.execute("""
        INSERT INTO policy_changes (change_pk, changed_at, domain, action, actor, reason,
            forced, old_id, old_mode, old_mx, old_max_age, new_id, new_mode, new_mx,
            new_max_age, revision)
        VALUES (nextval('policy_changes_seq'), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    """, [change.at, change.domain, change.action, change.actor, change.reason, change.forced,
          old.id if old else None, old.mode if old else None, old.mx if old else None,
          old.max_age if old else None, new.id, new.mode, new.mx, new.max_age, new.revision])


def os_actor() -> str:
    """Who runs a command: the operating-system user, as the change history names them."""
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container)
        return f"os:uid {os.getuid()}"


# The policies changed inside one ``writing`` block, published once its store is closed.
_changed: ContextVar[list[HostedPolicy] | None] = ContextVar("_changed", default=None)


@contextmanager
def writing(settings: Settings) -> Iterator[Store]:
    """The store for a policy change.  When the block ends well, the store is closed and the
    new id of each policy changed in it is published (by DNS update, where ``_mta-sts`` is
    delegated to this deployment): the policy is served first, then its id is announced."""
    changed: list[HostedPolicy] = []
    token = _changed.set(changed)
    try:
        with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
            yield store
    finally:
        _changed.reset(token)
    for policy in changed:
        _publish(settings, policy)


def _publish(settings: Settings, policy: HostedPolicy) -> None:
    from tlswatch.mtasts.dnsupdate import publish_change  # never raises: failures are recorded

    publish_change(settings, policy)


def init_policy(settings: Settings, domain: str, *, mx: list[str], mode: str, max_age: int,
                actor: str = "", reason: str = "", force: bool = False) -> HostedPolicy:
    """Write the domain's policy; the same content as the one served changes nothing.  A
    policy reaches enforce through ``policy enforce`` (checked against the reports), or
    here only with ``force`` (recorded as forced)."""
    domain = policy_domain(domain)
    if mode not in ("testing", "enforce", "none"):
        raise TlsWatchError(f"mode must be testing, enforce or none, got {mode!r}")
    if not 0 <= max_age <= MAX_AGE_LIMIT:
        raise TlsWatchError(f"max-age must be 0..{MAX_AGE_LIMIT} seconds, got {max_age}")
    policy = HostedPolicy(domain, mode, [m.lower().rstrip(".") for m in mx], max_age)
    old = PolicyStore(Path(settings.policy_dir)).find(domain)
    if old is not None and old.text == policy.text and old.retired is None:
        return old
    newly_enforced = mode == "enforce" and (old is None or old.mode != "enforce")
    if newly_enforced and not force:
        raise TlsWatchError(
            f"policy init {domain} --mode enforce: refused: a policy moves to enforce with "
            f"'tlswatch policy enforce {domain}', which checks the stored reports first "
            "(start in testing); add --force to write it anyway (recorded as forced)")
    why = reason or "policy init"
    if newly_enforced:
        why += " (forced to enforce without the advice)"
    with writing(settings) as store:
        return apply_change(settings, store, domain, policy, actor or os_actor(), why,
                            action="init", forced=newly_enforced).new


def retire_policy(settings: Settings, domain: str, *, actor: str = "", reason: str = ""
                  ) -> tuple[PolicyChange, datetime]:
    """Serve mode none with a new id (RFC 8461 section 8); say when the old one expires."""
    old = PolicyStore(Path(settings.policy_dir)).get(domain)
    if old.retired is not None and old.mode == "none":
        raise TlsWatchError(
            f"policy retire {old.domain}: retired already; the records can go after "
            f"{old.retired.get('records_can_go_after', '?')} (retiring again would restart "
            "that wait)")
    retired = HostedPolicy(old.domain, "none", old.mx, old.max_age)
    expires = datetime.now(UTC) + timedelta(seconds=old.max_age)
    retired.retired = {"old_id": old.id, "old_max_age": old.max_age,
                       "records_can_go_after": expires.isoformat(timespec="seconds")}
    with writing(settings) as store:
        change = apply_change(settings, store, domain, retired, actor or os_actor(),
                              reason or "policy retire", action="retire")
    return change, expires



def records(settings: Settings, policy: HostedPolicy) -> list[dict[str, str]]:
    """The DNS records that make the hosted policy and TLS reporting work."""
    host = settings.public_host or settings.smtp_hostname or socket.getfqdn()
    rua = [f"mailto:{a}" for a in settings.report_addresses if not a.startswith("*@")][:1]
    d = policy.domain
    # The per-domain URL: Postfix sites send no-policy-found entries without a domain.
    rua.append(f"https://{host}/v1/reports/{d}")
    from tlswatch.mtasts.dnsupdate import delegation_records

    sts = delegation_records(settings, d) or [
        {"name": f"_mta-sts.{d}", "type": "TXT", "value": f"v=STSv1; id={policy.id};"}]
    return [*sts, {"name": f"mta-sts.{d}", "type": "CNAME", "value": f"{host}."},
            {"name": f"_smtp._tls.{d}", "type": "TXT",
             "value": f"v=TLSRPTv1; rua={','.join(rua)}"}]


def status(settings: Settings, domain: str, *, published_ids: list[str], mx_hosts: list[str]
           ) -> list[dict[str, str]]:
    """Compare what DNS publishes with what is served; say what to do."""
    policy = PolicyStore(Path(settings.policy_dir)).get(domain)
    out = []
    if not published_ids:
        out.append({"severity": "error", "code": "not_published",
                    "message": f"no v=STSv1 record at _mta-sts.{policy.domain}",
                    "fix": f"publish _mta-sts.{policy.domain} TXT \"v=STSv1; id={policy.id};\""})
    elif len(published_ids) > 1:
        out.append({"severity": "error", "code": "several_records",
                    "message": f"{len(published_ids)} v=STSv1 records are published",
                    "fix": "keep exactly one"})
    elif published_ids[0] != policy.id:
        out.append({"severity": "error", "code": "stale_id",
                    "message": f"DNS publishes id={published_ids[0]} but the policy served is "
                               f"id={policy.id}: senders keep their cached copy",
                    "fix": f"update _mta-sts.{policy.domain} TXT to \"v=STSv1; "
                           f"id={policy.id};\""})
    if policy.mode != "none":
        for host in mx_hosts:
            if not covered_by(host, policy.mx):
                out.append({"severity": "error", "code": "mx_not_covered",
                            "message": f"MX {host} is not covered by the served policy "
                                       f"({', '.join(policy.mx)})",
                            "fix": f"tlswatch policy init {policy.domain} --mx ... including "
                                   f"{host}, then publish the new id"})
    if not out:
        out.append({"severity": "info", "code": "in_sync",
                    "message": f"DNS and the served policy agree (id={policy.id}, mode "
                               f"{policy.mode})", "fix": ""})
    return out


def advise(store: Any, settings: Settings, domain: str, *, days: int = 14,
           today: date | None = None) -> dict[str, Any]:
    """From the stored reports of the last ``days`` days up to today: is it safe to move
    from testing to enforce?  (Old clean reports say nothing about today's senders.)"""
    domain = policy_domain(domain)
    hosted = PolicyStore(Path(settings.policy_dir)).find(domain)
    end = today or datetime.now(UTC).date()
    start = end - timedelta(days=days - 1)
    orgs = [r["organization_name"] for r in store.rows(
        "SELECT DISTINCT organization_name FROM policies WHERE policy_domain = ? AND "
        "day BETWEEN ? AND ? ORDER BY 1", [domain, start, end])]
    blockers = store.rows(f"""
        SELECT result_type, receiving_mx_hostname, receiving_ip,
               array_agg(DISTINCT organization_name ORDER BY organization_name) AS reporters,
               sum(failed_session_count)::DECIMAL(38,0) AS failed_sessions
        FROM failure_details
        WHERE policy_domain = ? AND day BETWEEN ? AND ? AND {seen()}
              AND (result_type LIKE 'sts-%' OR result_type LIKE 'certificate-%'
                   OR result_type LIKE 'starttls-%')
        GROUP BY result_type, receiving_mx_hostname, receiving_ip
        ORDER BY failed_sessions DESC, result_type, receiving_mx_hostname, receiving_ip
    """, [domain, start, end])
    mode = hosted.mode if hosted else None
    if blockers:
        verdict = "stay in testing: fix the failures below first"
    elif len(orgs) < 2:
        verdict = (f"wait: only {len(orgs)} reporting organisation(s) in the last {days} days; "
                   "enforce once at least two report no failures")
    elif mode == "enforce":
        verdict = "already enforcing, and no blocking failures were reported"
    else:
        verdict = (f"move to enforce: {len(orgs)} reporters saw no MTA-STS, certificate or "
                   f"STARTTLS failures from {start} to {end}")
    return {"domain": domain, "since": start, "until": end, "mode": mode,
            "reporters": orgs, "blockers": blockers, "advice": verdict,
            "enforce": not blockers and len(orgs) >= 2 and mode != "enforce"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
