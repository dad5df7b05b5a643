"""The daily MTA-STS/TLS-RPT check of every domain this deployment serves, kept as history,
with alerts when something new goes wrong.

``run_checks`` is one of the tasks the 'serve' worker runs every 30 s: it checks each
domain it hosts a policy for (``policy_dir``), receives reports for (the ``domains``
setting, reports of the last 30 days) and has not checked within
``check_interval_hours``.  Each run is stored with what it saw, beside the findings of
``tlswatch check`` and two it adds from the history: a stale ``_mta-sts`` id, and a
TLS-RPT record that does not list this deployment first.  Alerts are raised for the
conditions a run has and the domain's previous run had not, so each is raised once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from tlswatch.analytics.alerts import CHECK_KINDS, Alert, plain
from tlswatch.config import Settings
from tlswatch.dnsname import BadDomain, parse_domain
from tlswatch.mtasts.check import Certificate, Checker, CheckResult, Facts, Finding
from tlswatch.mtasts.hosting import HostedPolicy, PolicyStore
from tlswatch.store import Store, exists
from tlswatch.store import checks as history

log = logging.getLogger(__name__)
REPORT_DAYS = 30  # a domain "receives reports" when it had reports in this many days
PER_ROUND = 10  # domains checked per round of the worker, so that deliveries go on between
# A whole check gets at most this many check_timeouts: each read of a tarpit (an MX that sends
# its greeting a line at a time) or of many MX hosts is within check_timeout, the sum is not.
CHECK_STEPS = 6
# Findings this module adds; their conditions have alerts of their own, not "new error".
OWN = {"mta_sts_id_stale": "check_sts_id_stale", "tlsrpt_rua_not_first": "check_tlsrpt_rua",
       "tlsrpt_record_missing": "check_tlsrpt_rua"}


@dataclass
class Outcome:
    """One domain's stored run and the alerts it recorded (new ones only)."""

    domain: str
    result: str
    findings: list[Finding]
    alerts: list[Alert] = field(default_factory=list)


def checker(settings: Settings, **overrides: Any) -> Checker:
    """A Checker set up from the ``check_*`` settings; ``overrides`` (not None) win."""
    options: dict[str, Any] = {
        "nameserver": settings.check_nameserver or None,
        "ca_bundle": settings.check_ca_bundle or None,
        "https_port": settings.check_https_port, "smtp_port": settings.check_smtp_port,
        "timeout": settings.check_timeout}
    options.update({k: v for k, v in overrides.items() if v is not None})
    return Checker(**options)


def monitored(settings: Settings, store: Store | None, today: date) -> list[str]:
    """The domains to check: hosted, configured, and those reports came for lately.

    Report domains count only when ``domains`` is set (the loader then keeps no one
    else's): with it empty, any sender could name the hosts a check connects to."""
    names = set(PolicyStore(Path(settings.policy_dir)).domains()) | set(settings.domains)
    if store is not None and settings.domains:
        names |= set(history.report_domains(store, today - timedelta(days=REPORT_DAYS)))
    out = set()
    for name in names:
        try:
            out.add(parse_domain(name))
        except BadDomain:  # a *.pattern, or a name from a report that is no host name
            continue
    return sorted(out)


def due(settings: Settings, now: datetime) -> list[str]:
    """The domains whose last check is ``check_interval_hours`` old or more (or that were
    never checked), in name order."""
    if settings.check_interval_hours <= 0:
        return []
    naive = now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now
    if not exists(settings.db):
        return monitored(settings, None, naive.date())
    with Store.open(settings.db, read_only=True, lock_timeout=settings.lock_timeout) as store:
        domains = monitored(settings, store, naive.date())
        last = history.last_checked(store)
    limit = naive - timedelta(hours=settings.check_interval_hours)
    return [d for d in domains if d not in last or last[d] <= limit]


def run_checks(settings: Settings, now: datetime) -> list[Outcome]:
    """The scheduled task: check every due domain, store the runs, raise the alerts."""
    out = []
    for domain in due(settings, now)[:PER_ROUND]:
        try:
            out.append(check_domain(settings, domain, record=True))
        except Exception:  # one domain's trouble must not stop the others' checks
            log.exception("check of %r failed; it is tried again next round", domain)
            continue
        log.info("checked %s: %s, %d new alert(s)", domain, out[-1].result,
                 len(out[-1].alerts))
    return out


def check_domain(settings: Settings, domain: str, *, record: bool, **overrides: Any
                 ) -> Outcome:
    """Check one domain (the network part outside any lock); with ``record``, store the
    run and its alerts in one transaction.  ``overrides``: Checker options."""
    result = _bounded_run(checker(settings, **overrides), domain)
    hosted = PolicyStore(Path(settings.policy_dir)).find(result.domain) \
        if _hostable(result.domain) else None
    if not record:  # without the history, only a hosted policy tells a stale id
        findings = _our_rua(settings, result) + _stale_id(None, result, hosted) \
            + _rua_first(settings, result)
        return Outcome(result.domain, _result(findings), findings)
    from tlswatch.jobs import record as record_alerts

    with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
        previous = history.latest_run(store, result.domain)
        findings = _our_rua(settings, result) + _stale_id(store, result, hosted) \
            + _rua_first(settings, result)
        now = _conditions(findings, result.facts.certificates, result.checked_at,
                          settings.check_cert_days)
        before = {} if previous is None else _conditions(
            [Finding(**f) for f in previous["findings"]],
            [Certificate(**c) for c in previous["certificates"] or []],
            previous["checked_at"].replace(tzinfo=UTC), settings.check_cert_days)
        alerts = _alerts(result.domain, {k: v for k, v in now.items() if k not in before},
                         result.checked_at)
        run = _run_row(result, findings, hosted, [a.kind for a in alerts])
        recorded = record_alerts(store, settings, alerts, also=lambda: history.insert_run(
            store, run, [f.as_dict() for f in findings]))
    return Outcome(result.domain, run["result"], findings, recorded.alerts)


def _bounded_run(check: Checker, domain: str) -> CheckResult:
    """``check.run(domain)``, given up after CHECK_STEPS x its timeout; the caller goes
    on while the thread still waiting on a slow server is left behind (a daemon)."""
    limit = CHECK_STEPS * check.timeout
    done: list[CheckResult | BaseException] = []

    def run() -> None:
        try:
            done.append(check.run(domain))
        except BaseException as exc:  # handed to the caller
            done.append(exc)

    started = datetime.now(UTC)
    thread = threading.Thread(target=run, name=f"check {domain}", daemon=True)
    thread.start()
    thread.join(limit)
    if not done:
        name = domain.lower().rstrip(".")
        return CheckResult(name, started, [Finding(
            "error", "check_unfinished", f"the check of {name} did not finish within "
            f"{limit:g} s ({CHECK_STEPS} x check_timeout): a server answered too slowly "
            "(or there are too many MX hosts); given up", subject=name)], Facts())
    if isinstance(done[0], BaseException):
        raise done[0]
    return done[0]


def _hostable(domain: str) -> bool:
    try:
        return parse_domain(domain) == domain
    except BadDomain:
        return False


def _result(findings: Iterable[Finding]) -> str:
    severities = {f.severity for f in findings}
    return "errors" if "error" in severities else "warnings" if "warning" in severities \
        else "ok"


def _run_row(result: CheckResult, findings: list[Finding], hosted: HostedPolicy | None,
             alerts: list[str]) -> dict[str, Any]:
    facts: Facts = result.facts
    return {"domain": result.domain, "checked_at": result.checked_at.replace(tzinfo=None),
            "result": _result(findings),
            "errors": sum(f.severity == "error" for f in findings),
            "warnings": sum(f.severity == "warning" for f in findings),
            "sts_id": facts.sts_id, "policy": facts.policy,
            "policy_sha256": facts.policy_sha256,
            "hosted_id": hosted.id if hosted is not None else None,
            "rua": facts.rua, "mx": facts.mx, "alerts": alerts,
            "certificates": [{"host": c.host, "role": c.role,
                              "not_after": c.not_after.replace(tzinfo=None),
                              "sha256": c.sha256} for c in facts.certificates]}


def _stale_id(store: Store | None, result: CheckResult, hosted: HostedPolicy | None
              ) -> list[Finding]:
    """RFC 8461 section 3.1: the id changes whenever the policy does, or senders keep
    their cached copy until its max_age runs out."""
    d, published = result.domain, result.facts.sts_id
    if published is None:
        return []
    if hosted is not None and published != hosted.id:
        earlier = any(h.get("id") == published for h in hosted.history)
        why = (f"the hosted policy changed (its id is now {hosted.id}) but _mta-sts.{d} "
               f"still publishes id={published}, the id of an earlier policy" if earlier else
               f"_mta-sts.{d} publishes id={published}, not the hosted policy's id "
               f"{hosted.id}")
        return [Finding("error", "mta_sts_id_stale", f"{why}: senders that cached the old "
                        "policy keep it until its max_age runs out",
                        f"publish _mta-sts.{d} TXT \"v=STSv1; id={hosted.id};\"")]
    served = result.facts.policy_sha256
    seen = history.policies_under_id(store, d, published) if store is not None else []
    others = [p["first_seen"] for p in seen if p["policy_sha256"] != served]
    if served is None or not others:
        return []
    return [Finding("error", "mta_sts_id_stale", f"the policy served at https://mta-sts.{d}/"
                    f".well-known/mta-sts.txt is not the one served under the same id on "
                    f"{max(others):%Y-%m-%d %H:%M} UTC: _mta-sts.{d} still publishes "
                    f"id={published}, so senders that cached the old policy keep it until "
                    "its max_age runs out",
                    f"publish a new id in _mta-sts.{d} (for example "
                    f"{result.checked_at:%Y%m%dT%H%M%S}) each time the policy changes")]


def _our_rua(settings: Settings, result: CheckResult) -> list[Finding]:
    """The check's findings, a missing TLS-RPT record's fix naming this deployment's rua."""
    if not (settings.public_host or settings.smtp_hostname or
            any(not a.startswith("*@") for a in settings.report_addresses)):
        return result.findings
    record = f"v=TLSRPTv1; rua={_suggested(settings, result.domain)}"
    return [replace(f, fix=f"publish _smtp._tls.{result.domain} TXT \"{record}\"")
            if f.code == "tlsrpt_record_missing" else f for f in result.findings]


def _ours(settings: Settings, uri: str) -> bool | None:
    """Whether a rua URI reaches this deployment (None: nothing configured to tell)."""
    hosts = {h.lower() for h in (settings.public_host, settings.smtp_hostname) if h}
    addresses = [a.lower() for a in settings.report_addresses]
    if not hosts and not addresses:
        return None
    uri = uri.lower()
    if uri.startswith("mailto:"):
        address = uri[len("mailto:"):].split("!")[0]  # RFC 8460 allows a size limit: !10m
        at = address.rpartition("@")[2]
        return address in addresses or f"*@{at}" in addresses or at in hosts
    host = uri.removeprefix("https://").split("/")[0].split(":")[0]
    return host in hosts


def _rua_first(settings: Settings, result: CheckResult) -> list[Finding]:
    """Microsoft sends its reports to the first rua URI only: this deployment must be it."""
    rua, d = result.facts.rua, result.domain
    if not rua:
        return []
    first = _ours(settings, rua[0])
    if first is None:
        return [Finding("info", "tlsrpt_rua_unknown", "cannot tell whether _smtp._tls."
                        f"{d} lists this deployment first", "set public_host or "
                        "report_addresses so that the check knows this deployment's rua")]
    if first:
        return []
    mine = [u for u in rua if _ours(settings, u)]
    wanted = mine + [u for u in rua if u not in mine] if mine else \
        [_suggested(settings, d), *rua]
    where = "lists this deployment later" if mine else "does not list this deployment"
    return [Finding("warning", "tlsrpt_rua_not_first", f"_smtp._tls.{d} lists {rua[0]} "
                    f"first and {where}: Microsoft sends TLS reports only to the first rua "
                    "URI, so its reports never arrive here",
                    f"publish _smtp._tls.{d} TXT \"v=TLSRPTv1; rua={','.join(wanted)}\"")]


def _suggested(settings: Settings, domain: str) -> str:
    exact = [a for a in settings.report_addresses if not a.startswith("*@")]
    if exact:
        return f"mailto:{exact[0]}"
    return f"https://{settings.public_host or settings.smtp_hostname}/v1/reports/{domain}"


def _conditions(findings: list[Finding], certificates: list[Certificate], at: datetime,
                days: int) -> dict[tuple[str, str], str]:
    """The alert conditions of one run: (alert kind, what it is about) -> the text."""
    out: dict[tuple[str, str], str] = {}
    for f in findings:
        text = f"{f.message}." + (f" Fix: {f.fix}." if f.fix else "")
        if f.code in OWN:
            out[(OWN[f.code], f.code)] = text
        elif f.severity == "error":
            out.setdefault(("check_new_error", f.code), text)
    for c in certificates:
        left = c.not_after.replace(tzinfo=UTC) - at
        if timedelta(0) <= left <= timedelta(days=days):
            what = "MX" if c.role == "mx" else "policy host"
            harm = ("senders that enforce MTA-STS or DANE stop delivering to it" if c.role ==
                    "mx" else "every sender fails to fetch the MTA-STS policy")
            out[("check_cert_expiring", c.host)] = (
                f"the certificate of {what} {c.host} expires on {c.not_after:%Y-%m-%d %H:%M} "
                f"UTC (in {left.days} days): once it has, {harm}. Renew it now and check "
                "that its automatic renewal works.")
    return out


def _alerts(domain: str, new: dict[tuple[str, str], str], at: datetime) -> list[Alert]:
    """One alert per kind, listing its new conditions."""
    titles = {"check_new_error": "new error(s) in the daily MTA-STS/TLS-RPT check",
              "check_cert_expiring": "certificate expiring soon",
              "check_sts_id_stale": "stale _mta-sts id",
              "check_tlsrpt_rua": "TLS reports do not reach this deployment first"}
    by_kind: dict[str, list[tuple[str, str]]] = {}
    for (kind, about), text in sorted(new.items(), key=lambda kv: (CHECK_KINDS.index(
            kv[0][0]), kv[0][1])):
        by_kind.setdefault(kind, []).append((about, text))
    return [Alert(domain, kind, at.date(),
                  f"{domain}: {titles[kind]}: " + " ".join(plain(t, 2000) for _, t in items),
                  {"conditions": [a for a, _ in items]})
            for kind, items in by_kind.items()]

