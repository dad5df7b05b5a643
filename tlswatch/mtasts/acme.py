"""Certificates by ACME for the hosted policy hosts: the job 'serve' runs (once per
cluster) every 30 s or so.

For every hosted ``mta-sts.<domain>`` that resolves to this deployment (``acme_addresses``,
else the addresses of ``public_host``) and has no certificate, or one that expires within
``acme_renew_days``, one ACME order (HTTP-01) is made, when its ``next_attempt`` has come.
A failure is recorded with the next attempt ``acme_retry_min`` seconds later, doubling
with each further failure up to ``acme_retry_max``, so a broken name is never tried in a
tight loop.  A certificate that expires within ``acme_alert_days`` while its renewal fails
raises an alert (kind ``acme_renewal_failing``, once a day).

The store is written in short transactions only (a challenge, then the result): nothing is
held while the ACME server validates, and any node may be the one it asks (the challenge
answers are in the store).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import dns.exception
import dns.resolver

from tlswatch.analytics.alerts import Alert
from tlswatch.config import Settings
from tlswatch.mtasts.acme_order import AcmeClient, AcmeFailure, new_account_key
from tlswatch.mtasts.acme_records import (
    CertificateRecord,
    account_key,
    certificates,
    drop_challenges,
    save_account,
    save_certificate,
    save_challenge,
    save_failure,
)
from tlswatch.mtasts.hosting import PolicyStore
from tlswatch.mtasts.monitor import checker
from tlswatch.store import Store

log = logging.getLogger(__name__)

KIND = "acme_renewal_failing"
PREFIX = "mta-sts."
# This worker's memory of the names found not resolving here: when to look them up again,
# and which were logged (a restart looks them all up again, which is cheap).
_looked_up: dict[str, datetime] = {}
_said: set[str] = set()


@dataclass(frozen=True)
class Attempt:
    """One order made: for ``name``, failed with ``error`` or (None) issued."""

    name: str
    error: str | None = None


@dataclass
class Round:
    """What one run of the job did, by host name."""

    issued: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    elsewhere: list[str] = field(default_factory=list)  # not resolving to this deployment
    alerts: list[Alert] = field(default_factory=list)


def naive(now: datetime) -> datetime:
    """``now`` as naive UTC, the form the store keeps."""
    return now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now


def renew_certificates(settings: Settings, now: datetime) -> list[Attempt]:
    """Obtain or renew every due certificate; record failures with back-off; alert.
    Return the orders made (none when nothing was due)."""
    if not settings.acme_directory:
        return []
    done = _round(settings, now)
    return sorted([Attempt(n) for n in done.issued] +
                  [Attempt(n, e) for n, e in done.failed.items()], key=lambda a: a.name)


def _round(settings: Settings, now: datetime) -> Round:
    done = Round()
    if not settings.tls_cert and "tls_cert" not in _said:
        _said.add("tls_cert")
        log.warning("ACME: certificates are served by SNI on the TLS listener only: set "
                    "tls_cert and tls_key (the certificate for every other name)")
    now = naive(now).replace(microsecond=0)
    records = certificates(settings)
    names = [PREFIX + d for d in sorted(PolicyStore(Path(settings.policy_dir)).domains())]
    due = [n for n in names if _due(records.get(n), settings, now)
           and _looked_up.get(n, now) <= now]
    if due:
        ours = _deployment(settings)
        done.elsewhere = [n for n in due if not _resolves_to(settings, n, ours)]
        for name in done.elsewhere:  # looked up again after acme_retry_min, not every round
            _looked_up[name] = now + timedelta(seconds=settings.acme_retry_min)
        if set(done.elsewhere) - _said:
            log.info("ACME: no certificate asked for %s: not resolving to this deployment "
                     "(%s)", ", ".join(done.elsewhere), ", ".join(sorted(ours)) or "none known")
        _said.update(done.elsewhere)
        wanted = [n for n in due if n not in done.elsewhere]
        if wanted:
            _order_all(settings, wanted, records, now, done)
            records = certificates(settings)
    # Raised when an attempt fails (at least daily while failing: acme_retry_max), so a
    # quiet round writes nothing.
    done.alerts = _alerts(settings, {n: r for n, r in records.items() if n in done.failed}, now)
    if done.alerts:
        from tlswatch.jobs import record  # jobs imports this module's caller

        with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
            record(store, settings, done.alerts)
    return done


def _due(record: CertificateRecord | None, settings: Settings, now: datetime) -> bool:
    if record is None:
        return True
    if record.next_attempt is not None and record.next_attempt > now:
        return False
    return record.cert_pem is None or record.not_after is None or \
        record.not_after - now <= timedelta(days=settings.acme_renew_days)


def _order_all(settings: Settings, names: list[str], records: dict[str, CertificateRecord],
               now: datetime, done: Round) -> None:
    try:
        acme = _client(settings, now)
    except AcmeFailure as exc:
        for name in names:
            _failed(settings, name, records.get(name), str(exc), now, done)
        return
    for name in names:
        try:
            issued = acme.order(name, partial(_publish, settings, name=name, now=now))
        except AcmeFailure as exc:
            _failed(settings, name, records.get(name), str(exc), now, done)
            continue
        with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store, \
                store.transaction():
            save_certificate(store, name, issued.cert_pem, issued.key_pem, issued.not_after,
                             now)
            drop_challenges(store, name)
        log.info("ACME: certificate for %s issued, valid until %s", name, issued.not_after)
        done.issued.append(name)


def _client(settings: Settings, now: datetime) -> AcmeClient:
    """A session with the ACME server, under the account whose key the store keeps (made
    and kept on first use)."""
    with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
        key = account_key(store, settings.acme_directory)
        if key is None:
            key = new_account_key()
            save_account(store, settings.acme_directory, key, None, now)
    acme = AcmeClient(settings.acme_directory, key, email=settings.acme_email,
                      ca_bundle=settings.acme_ca_bundle)
    with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
        save_account(store, settings.acme_directory, key, acme.account_uri, now)
    return acme


def _publish(settings: Settings, token: str, answer: str, *, name: str, now: datetime
             ) -> None:
    with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
        save_challenge(store, token, answer, name, now)


def _failed(settings: Settings, name: str, record: CertificateRecord | None, error: str,
            now: datetime, done: Round) -> None:
    error = " ".join(error.split())  # one line in logs, alerts and mails
    attempts = (record.attempts if record is not None else 0) + 1
    wait = min(settings.acme_retry_max, settings.acme_retry_min * 2 ** (attempts - 1))
    then = now + timedelta(seconds=wait)
    with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store, \
            store.transaction():
        save_failure(store, name, error, then, attempts)
        drop_challenges(store, name)
    log.warning("ACME: %s (attempt %d; next attempt at %s UTC)", error, attempts,
                then.isoformat(sep=" ", timespec="seconds"))
    done.failed[name] = error


def _deployment(settings: Settings) -> set[str]:
    """This deployment's addresses: ``acme_addresses``, else those of ``public_host``."""
    if settings.acme_addresses:
        return set(settings.acme_addresses)
    if not settings.public_host:
        log.warning("ACME: set acme_addresses (or public_host) to say which addresses are "
                    "this deployment's; no certificate is asked meanwhile")
        return set()
    return _addresses(settings, settings.public_host)


def _addresses(settings: Settings, name: str) -> set[str]:
    resolver = checker(settings).resolver
    found: set[str] = set()
    for kind in ("A", "AAAA"):
        try:
            found.update(r.to_text() for r in resolver.resolve(name, kind))
        except dns.exception.DNSException:
            continue
    return found


def _resolves_to(settings: Settings, name: str, ours: set[str]) -> bool:
    return bool(ours) and bool(_addresses(settings, name) & ours)


def _alerts(settings: Settings, records: dict[str, CertificateRecord], now: datetime
            ) -> list[Alert]:
    """A certificate in service that expires within ``acme_alert_days`` and whose renewal
    failed last time."""
    out = []
    for name, r in sorted(records.items()):
        if r.cert_pem is None or r.not_after is None or r.last_error is None:
            continue
        left = r.not_after - now
        if left > timedelta(days=settings.acme_alert_days):
            continue
        when = r.not_after.isoformat(sep=" ", timespec="minutes")
        expiry = f"expires {when} UTC" if left.total_seconds() > 0 else f"expired {when} UTC"
        out.append(Alert(
            name.removeprefix(PREFIX), KIND, now.date(),
            f"The certificate of {name} {expiry} and its renewal by ACME keeps failing "
            f"({r.attempts} attempt(s); next at "
            f"{r.next_attempt.isoformat(sep=' ', timespec='minutes') if r.next_attempt else '?'}"
            f" UTC): {r.last_error}",
            {"name": name, "not_after": r.not_after.isoformat(), "attempts": r.attempts,
             "last_error": r.last_error}))
    return out


def status(settings: Settings, now: datetime) -> list[dict[str, object]]:
    """One row per hosted mta-sts name and per stored certificate: its certificate's
    dates and the state of its renewal (``acme status``)."""
    now = naive(now)
    records = certificates(settings)
    hosted = {PREFIX + d for d in PolicyStore(Path(settings.policy_dir)).domains()}
    rows: list[dict[str, object]] = []
    for name in sorted(hosted | set(records)):
        r = records.get(name)
        if r is None:
            state = "not asked yet"
        elif r.last_error is not None:
            state = "failing"
        elif r.not_after is not None and r.not_after <= now:
            state = "expired"
        elif r.not_after is not None and \
                r.not_after - now <= timedelta(days=settings.acme_renew_days):
            state = "due for renewal"
        else:
            state = "valid"
        rows.append({"name": name, "hosted": name in hosted, "state": state,
                     "not_after": r.not_after if r else None,
                     "issued_at": r.issued_at if r else None,
                     "attempts": r.attempts if r else 0,
                     "next_attempt": r.next_attempt if r else None,
                     "last_error": r.last_error if r else None})
    return rows
