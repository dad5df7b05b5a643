"""The daily MX watcher: compares each hosted policy's ``mx`` patterns with the domain's
live MX records; an MX no pattern covers gets an updated policy staged (never served
until an admin applies it: ``policy apply-staged`` or the domain page's button) and an
alert.  A sender enforcing the policy would not deliver to that MX (RFC 8461 section 4.1).

One of the tasks the 'serve' worker runs every 30 s; it runs once a day (recorded in
``cluster_days`` as task ``mx watch``), on one node of a cluster, when the daily checks
run (``check_interval_hours`` above 0), asking ``check_nameserver`` like them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dns.exception

from tlswatch.analytics.alerts import Alert, plain
from tlswatch.cluster import write_days
from tlswatch.config import Settings
from tlswatch.mtasts.changes import is_staged, stage
from tlswatch.mtasts.hosting import HostedPolicy, PolicyStore, writing
from tlswatch.mtasts.monitor import checker
from tlswatch.mtasts.policy import covered_by, parse_policy
from tlswatch.store import Store, exists

log = logging.getLogger(__name__)
TASK = "mx watch"
ALERT = "policy_mx_not_covered"
WATCHER = "mx watcher"
KEEP_RECORDS_DAYS = 30


@dataclass(frozen=True)
class Uncovered:
    policy: HostedPolicy
    hosts: list[str]  # the live MX hosts no pattern of the policy covers

    def staged(self) -> HostedPolicy:
        p = self.policy
        return HostedPolicy(p.domain, p.mode, [*p.mx, *self.hosts], p.max_age)


def _done(settings: Settings, today: date) -> bool:
    with Store.open(settings.db, read_only=True, pending_ok=True,
                    lock_timeout=settings.lock_timeout) as store:
        return store.has_table("cluster_days") and bool(store.value(
            "SELECT count(*) FROM cluster_days WHERE task = ? AND day = ?", [TASK, today]))


def uncovered(settings: Settings) -> list[Uncovered]:
    """The hosted policies (not retired) with live MX hosts their patterns do not cover."""
    policies = PolicyStore(Path(settings.policy_dir))
    look = checker(settings)
    out = []
    for domain in sorted(policies.domains()):
        policy = policies.find(domain)
        if policy is None or policy.mode == "none":
            continue
        try:
            live = look.mx(domain)
        except dns.exception.DNSException as exc:  # tried again tomorrow
            log.warning("mx watch: MX lookup of %s failed: %s", domain, exc)
            continue
        hosts = [h.lower() for h in live if not covered_by(h, policy.mx)]
        if hosts:
            out.append(Uncovered(policy, hosts))
    return out


def _alert(found: Uncovered, today: date, staged: bool) -> Alert:
    p = found.policy
    hosts = ", ".join(plain(h) for h in found.hosts)
    then = (f"an updated policy is staged: apply it with 'tlswatch policy apply-staged "
            f"{p.domain}' or the domain page's button" if staged else
            f"update it with 'tlswatch policy init {p.domain} --mx ...'")
    return Alert(p.domain, ALERT, today,
                 f"MX {hosts} of {p.domain} is not covered by the hosted policy "
                 f"(mx: {', '.join(p.mx)}, mode {p.mode}): a sender enforcing it does not "
                 f"deliver there; {then}",
                 {"uncovered": found.hosts, "policy_mx": p.mx, "policy_id": p.id})


def run_mx_watch(settings: Settings, now: datetime) -> list[Alert]:
    """The scheduled task: once a day, stage a policy and alert for every uncovered MX."""
    today = now.astimezone(UTC).date() if now.tzinfo else now.date()
    if settings.check_interval_hours <= 0:  # DNS is looked up when the daily checks run
        return []
    if not PolicyStore(Path(settings.policy_dir)).domains() or not exists(settings.db) \
            or _done(settings, today):  # nothing hosted: nothing to do, nothing recorded
        return []
    found = uncovered(settings)
    alerts: list[Alert] = []
    if found:
        from tlswatch.jobs import record  # jobs imports this module's task

        with writing(settings) as store:
            # Alerted once, when staged; a policy that cannot be staged is alerted daily.
            fresh = [f for f in found if not is_staged(store, f.staged())]
            stageable = [f for f in fresh if not parse_policy(f.staged().text).errors]

            def stage_all() -> None:
                for f in stageable:
                    stage(store, f.policy, f.staged(), actor=WATCHER, reason=(
                        f"MX {', '.join(f.hosts)} not covered by the served policy"))
            if fresh:
                alerts = record(store, settings, [_alert(f, today, f in stageable)
                                                  for f in fresh], also=stage_all).alerts
    write_days(settings, TASK, {today: {"uncovered": {f.policy.domain: f.hosts
                                                      for f in found}}},
               forget_before=today - timedelta(days=KEEP_RECORDS_DAYS))
    log.info("mx watch: %d hosted domain(s) with an uncovered MX, %d new alert(s)",
             len(found), len(alerts))
    return alerts
