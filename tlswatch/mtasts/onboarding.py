"""Where a hosted domain stands in its onboarding: the records published, the certificate,
the first policy fetch, the first report, and which big senders report.

The DNS steps come from live lookups (``tlswatch domain status``, through the checker's
resolver) or, on the dashboard, from the latest stored check (no lookups while a page
is drawn).
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import dns.exception
import dns.resolver

from tlswatch.analytics.senders import BIG_SENDERS, sender_of_organization
from tlswatch.config import Settings
from tlswatch.mtasts.check import Checker, _fields
from tlswatch.mtasts.hosting import HostedPolicy, PolicyStore, policy_domain
from tlswatch.store import Store


@dataclass
class Records:
    """What DNS publishes for the domain, and where that was seen."""

    seen: str  # "DNS now", or "the check of 2026-11-27 10:00"
    host_target: str | None = None  # the CNAME of mta-sts.DOMAIN
    host_addresses: list[str] = field(default_factory=list)
    here_addresses: list[str] = field(default_factory=list)  # public_host's
    host_policy: str | None = None  # the policy a stored check fetched
    sts_ids: list[str] = field(default_factory=list)
    rua: list[str] = field(default_factory=list)


@dataclass
class Step:
    step: str
    done: bool | None  # None: not for this deployment (no certificates by ACME here)
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def public_host(settings: Settings) -> str:
    """The name this deployment's records point at (as 'policy init' prints them)."""
    return (settings.public_host or settings.smtp_hostname or socket.getfqdn()).rstrip(".")


def live_records(checker: Checker, settings: Settings, domain: str) -> Records:
    host = f"mta-sts.{domain}"
    try:
        target = checker.resolver.resolve(host, "CNAME")[0].to_text().rstrip(".").lower()
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        target = None
    sts = [_fields(r).get("id", "") for r in checker.txt(f"_mta-sts.{domain}")
           if r.startswith("v=STSv1")]
    tlsrpt = [r for r in checker.txt(f"_smtp._tls.{domain}") if r.startswith("v=TLSRPTv1")]
    rua = [u.strip() for u in _fields(tlsrpt[0]).get("rua", "").split(",") if u.strip()] \
        if len(tlsrpt) == 1 else []
    return Records("DNS now", target, [] if target else checker.addresses(host),
                   [] if target else _addresses(checker, public_host(settings)), None, sts, rua)


def _addresses(checker: Checker, name: str) -> list[str]:
    """This deployment's own addresses; a server that will not answer for its name (an
    authoritative server of the customer's zones only) leaves them unknown."""
    try:
        return checker.addresses(name)
    except dns.exception.DNSException:
        return []


def stored_records(store: Store, domain: str) -> Records | None:
    """The records the latest stored check of the domain saw, or None (never checked)."""
    rows = store.rows("SELECT checked_at, sts_id, policy, rua FROM check_runs WHERE domain = ? "
                      "ORDER BY checked_at DESC, run_pk DESC LIMIT 1", [domain])
    if not rows:
        return None
    r = rows[0]
    return Records(f"the check of {r['checked_at']:%Y-%m-%d %H:%M}", host_policy=r["policy"],
                   sts_ids=[r["sts_id"]] if r["sts_id"] else [], rua=list(r["rua"] or []))


def _host_step(records: Records, here: str, domain: str, hosted: HostedPolicy | None
               ) -> Step:
    name = f"mta-sts.{domain}"
    if records.host_target is not None:
        ok = records.host_target == here.lower()
        return Step(f"{name} points here", ok, f"CNAME {records.host_target}" +
                    ("" if ok else f"; publish {name} CNAME {here}."))
    if records.host_addresses:
        ok = bool(set(records.host_addresses) & set(records.here_addresses))
        return Step(f"{name} points here", ok, f"A/AAAA {', '.join(records.host_addresses)}"
                    + ("" if ok else f", not {here}'s; publish {name} CNAME {here}."))
    if records.seen != "DNS now":
        ok = hosted is not None and records.host_policy == hosted.text
        return Step(f"{name} points here", ok, "the policy served here was fetched there"
                    if ok else f"the policy served here was not fetched from {name}")
    return Step(f"{name} points here", False, f"no CNAME or address for {name}; publish "
                f"{name} CNAME {here}.")


def _record_steps(records: Records, settings: Settings, domain: str,
                  hosted: HostedPolicy | None) -> list[Step]:
    here = public_host(settings)
    steps = [_host_step(records, here, domain, hosted)]
    if len(records.sts_ids) != 1:
        detail = "no v=STSv1 record" if not records.sts_ids else \
            f"{len(records.sts_ids)} v=STSv1 records: senders then use none"
        steps.append(Step(f"_mta-sts.{domain} TXT", False, detail))
    elif hosted is not None and records.sts_ids[0] != hosted.id:
        steps.append(Step(f"_mta-sts.{domain} TXT", False, f"publishes id={records.sts_ids[0]};"
                          f" the policy served here has id={hosted.id}"))
    else:
        steps.append(Step(f"_mta-sts.{domain} TXT", True, f"id={records.sts_ids[0]}"))
    first = records.rua[0] if records.rua else ""
    ours = first.startswith(f"https://{here}/") or any(
        first == f"mailto:{a}" for a in settings.report_addresses) or (
        first.startswith("mailto:") and first.rpartition("@")[2] == here)
    steps.append(Step(f"_smtp._tls.{domain} TXT names this deployment first", ours,
                      f"rua={','.join(records.rua)}" if records.rua else "no v=TLSRPTv1 record"))
    return [Step(s.step, s.done, f"{s.detail} ({records.seen})") for s in steps]


def _certificate_step(store: Store, settings: Settings, domain: str) -> Step:
    name = f"mta-sts.{domain}"
    if not settings.acme_directory or not store.has_table("acme_certificates"):
        return Step("certificate issued", None, "no ACME here: the operator's certificate "
                    "(tls_cert)")
    rows = store.rows("SELECT issued_at, not_after, last_error FROM acme_certificates "
                      "WHERE name = ? AND cert_pem IS NOT NULL", [name])
    if rows:
        return Step("certificate issued", True, f"{rows[0]['issued_at']:%Y-%m-%d}, valid "
                    f"until {rows[0]['not_after']:%Y-%m-%d}")
    error = store.rows("SELECT last_error FROM acme_certificates WHERE name = ?", [name])
    return Step("certificate issued", False, f"not yet: {error[0]['last_error']}"
                if error and error[0]["last_error"] else "not yet")


def _first(store: Store, step: str, none_yet: str, sql: str, domain: str) -> Step:
    """A step done once ``sql`` (``first_at``, ``n`` for the domain) counts something."""
    row = store.rows(sql, [domain])[0]
    return Step(step, bool(row["n"]), f"{_when(row['first_at'])}, {row['n']:,} since"
                if row["n"] else none_yet)


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value is not None else ""


def onboarding(store: Store, settings: Settings, domain: str, records: Records | None
               ) -> dict[str, Any]:
    """The domain's onboarding steps and its big senders (reported since when, or not)."""
    domain = policy_domain(domain)
    hosted = PolicyStore(Path(settings.policy_dir)).find(domain)
    steps = _record_steps(records, settings, domain, hosted) if records is not None else [
        Step("DNS records", False, f"not checked yet: run 'tlswatch domain status {domain}'")]
    steps.append(_certificate_step(store, settings, domain))
    steps.append(_first(store, "first policy fetch", "no sender has fetched the policy here yet",
                        "SELECT min(fetched_at) AS first_at, count(*) AS n FROM policy_fetches "
                        "WHERE domain = ? AND status = 200", domain))
    steps.append(_first(store, "first report received", "no report yet",
                        "SELECT min(received_at) AS first_at, count(*) AS n FROM reports "
                        "WHERE report_pk IN (SELECT report_pk FROM policies "
                        "WHERE policy_domain = ?)", domain))
    # The session rollups hold a row per day, domain and reporter of every stored report
    # (retention never prunes them): the days of a domain's reporters, without its reports.
    reporters = store.rows("SELECT organization_name, min(day) AS first_day, max(day) AS "
                           "last_day FROM rollup_days WHERE policy_domain = ? "
                           "GROUP BY organization_name ORDER BY organization_name", [domain])
    senders: dict[str, dict[str, Any]] = {}
    for r in reporters:
        name = sender_of_organization(r["organization_name"])
        if name is not None:
            got = senders.setdefault(name, {"first_day": r["first_day"],
                                            "last_day": r["last_day"]})
            got["first_day"] = min(got["first_day"], r["first_day"])
            got["last_day"] = max(got["last_day"], r["last_day"])
    return {"domain": domain, "hosted": hosted is not None,
            "steps": [s.as_dict() for s in steps],
            "senders": [{"sender": s.name, "reported": s.name in senders,
                         **senders.get(s.name, {"first_day": None, "last_day": None})}
                        for s in BIG_SENDERS]}


def domain_status(settings: Settings, domain: str, *, nameserver: str | None = None
                  ) -> dict[str, Any]:
    """``tlswatch domain status``: the onboarding steps, the records looked up now."""
    domain = policy_domain(domain)
    checker = Checker(nameserver=nameserver or settings.check_nameserver or None,
                      timeout=settings.dns_timeout)
    try:
        records: Records | None = live_records(checker, settings, domain)
    except dns.exception.DNSException as exc:
        records = None
        failed = f"DNS lookups failed: {exc}"
    with Store.open(settings.db, read_only=True, lock_timeout=settings.lock_timeout) as store:
        result = onboarding(store, settings, domain, records)
    if records is None:
        result["steps"][0] = Step("DNS records", False, failed).as_dict()
    return result
