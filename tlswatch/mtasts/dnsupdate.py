"""The policy id without DNS edits by the customer: each hosted policy's
``v=STSv1; id=...;`` TXT is published by this deployment itself.

The customer delegates once: ``_mta-sts.DOMAIN CNAME DOMAIN.<dns_update_zone>.``, a zone on
the operator's authoritative server.  Every change of a hosted policy then replaces the TXT
at ``DOMAIN.<zone>`` by a DNS UPDATE (RFC 2136), signed with a TSIG key (RFC 8945): the old
record is deleted and the new one added in one message, which the server applies
atomically (RFC 2136 section 3.4), so no resolver ever sees two ids or none.

Order matters (RFC 8461 sections 5.1 and 8.1): a sender that sees a new id fetches the policy at
once and caches what it gets for max_age.  So the id is published only after the new policy
is on disk for good (fsync of the file and its folder) and, when 'serve' answers at the
``http`` address, after 'serve' answers the new policy.  A failed update loses nothing:
it is recorded (table ``dns_updates``) and 'serve' tries again with back-off, and also
publishes any hosted policy whose id differs from the one it last published.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns.exception
import dns.name
import dns.query
import dns.rcode
import dns.tsig
import dns.update
import httpx

from tlswatch.config import Settings
from tlswatch.durable import fsync_path
from tlswatch.errors import ConfigError, StoreError, TlsWatchError
from tlswatch.mtasts.hosting import HostedPolicy, PolicyStore, policy_domain
from tlswatch.store import Store, dnsupdates, exists, now_utc

log = logging.getLogger(__name__)
PER_ROUND = 100  # ids published per round of the worker, so deliveries go on between


class DnsUpdateError(TlsWatchError):
    """An id could not be published now (server refused or unreachable, the new policy not
    served yet): recorded and tried again."""

    terminal = False


@dataclass(frozen=True)
class Delegation:
    """The zone this deployment updates, and how (from the ``dns_update_*`` settings)."""

    zone: dns.name.Name
    host: str
    port: int
    key_name: dns.name.Name
    secret_env: str
    algorithm: dns.name.Name
    ttl: int
    timeout: float

    @property
    def server(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def target(self, domain: str) -> str:
        """Where the domain's TXT lives: ``DOMAIN.<zone>.``"""
        try:
            return dns.name.from_text(domain, origin=self.zone).to_text()
        except dns.name.NameTooLong:
            raise TlsWatchError(f"{domain}: {domain}.{self.zone} is longer than a DNS name "
                                "may be (255 bytes): choose a shorter dns_update_zone") from None

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        secret = os.environ.get(self.secret_env, "")
        if not secret:
            raise DnsUpdateError(f"setting dns_update_tsig_secret_env: the environment "
                                 f"variable {self.secret_env} (the TSIG key's secret) is "
                                 "not set in this process")
        try:
            key = dns.tsig.Key(self.key_name, secret, self.algorithm)
        except ValueError as exc:  # binascii.Error: not base64
            raise DnsUpdateError(f"the secret in {self.secret_env} is not base64 ({exc})"
                                 ) from None
        return {self.key_name: key}


def delegation(settings: Settings) -> Delegation | None:
    """The delegation set up by the settings (checked when they were loaded), None when
    ``dns_update_zone`` is empty."""
    if not settings.dns_update_zone:
        return None
    host, _, port = settings.dns_update_server.rpartition(":")
    return Delegation(dns.name.from_text(settings.dns_update_zone.lower()), host.strip("[]"),
                      int(port), dns.name.from_text(settings.dns_update_tsig_name),
                      settings.dns_update_tsig_secret_env,
                      dns.name.from_text(settings.dns_update_tsig_algorithm.lower()),
                      settings.dns_update_ttl, settings.dns_timeout)


def delegation_records(settings: Settings, domain: str) -> list[dict[str, str]]:
    """The record the customer publishes once instead of the ``_mta-sts`` TXT (none when
    no delegation is set up)."""
    found = delegation(settings)
    if found is None:
        return []
    domain = policy_domain(domain)
    return [{"name": f"_mta-sts.{domain}", "type": "CNAME", "value": found.target(domain)}]


@dataclass(frozen=True)
class Publication:
    """Where publishing one id stands: published, or failed and when it is tried again."""

    domain: str
    policy_id: str
    target: str
    server: str
    ttl: int
    error: str | None
    checked: str = ""
    attempts: int = 0
    next_attempt: datetime | None = None
    recorded: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "id": self.policy_id, "name": self.target,
                "server": self.server, "ttl": self.ttl,
                "status": "failed" if self.error else "published", "error": self.error,
                "attempts": self.attempts,
                "next_attempt": self.next_attempt, "recorded": self.recorded}

    def describe(self) -> str:
        if self.error is None:
            return (f"Published \"v=STSv1; id={self.policy_id};\" at {self.target} (TTL "
                    f"{self.ttl} s) by DNS update to {self.server}, once the new policy was "
                    "in place.")
        when = (f"try {self.attempts} failed; 'serve' tries again after "
                f"{self.next_attempt:%Y-%m-%d %H:%M:%S} UTC" if self.recorded and
                self.next_attempt else "'serve' publishes it at its next round")
        return (f"The new policy is in place, but its id {self.policy_id} is NOT published "
                f"at {self.target}: {self.error}. Nothing is lost: {when}; 'tlswatch policy "
                f"status {self.domain}' shows where it stands.")


def publish_change(settings: Settings, policy: HostedPolicy) -> Publication | None:
    """Publish the id of a policy just written (the hook of hosting's one writer); None
    when no delegation is set up.  Never raises for a failed update: it is recorded."""
    found = delegation(settings)
    if found is None:
        return None
    return publish(settings, found, [policy])[0]


def publish(settings: Settings, found: Delegation, policies: list[HostedPolicy]
            ) -> list[Publication]:
    """For each policy (one per domain): make it durable, check it is served, replace the
    TXT; then record every outcome in one write."""
    tries = [_try(settings, found, policy) for policy in policies]
    try:
        with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
            rows = dnsupdates.record(store, [t for t, _ in tries], now=now_utc(),
                                     retry_after=settings.dns_update_retry)
    except StoreError as exc:  # the worker finds the ids unpublished and publishes them
        log.warning("the outcome of %d DNS update(s) was not recorded: %s", len(tries), exc)
        rows = {}
    out = []
    for (done, checked), policy in zip(tries, policies, strict=True):
        row = rows.get(policy.domain)
        out.append(Publication(policy.domain, policy.id, found.target(policy.domain),
                               found.server, found.ttl, done.error, checked,
                               row["attempts"] if row else 0,
                               row["next_attempt"] if row else None, recorded=row is not None))
    return out


def _try(settings: Settings, found: Delegation, policy: HostedPolicy
         ) -> tuple[dnsupdates.Try, str]:
    """One try, and how the new policy was found in place (RFC 8461 section 8.1: the
    policy first, then the id)."""
    policies = PolicyStore(Path(settings.policy_dir))
    checked = ""
    try:
        target = found.target(policy.domain)
        fsync_path(policies.path(policy.domain))
        fsync_path(policies.folder)
        checked = served(settings, policy)
        now = policies.find(policy.domain)
        if now is None or now.id != policy.id:  # another change won the race: its id next
            raise DnsUpdateError(f"the policy changed again (id {now.id if now else 'none'}) "
                                 "before this id was published")
        send_update(found, policy.domain, policy.id)
    except (TlsWatchError, OSError) as exc:
        log.info("%s: id %s not published: %s", policy.domain, policy.id, exc)
        return dnsupdates.Try(policy.domain, policy.id, str(exc)), checked
    log.info("%s: published id %s at %s, after %s", policy.domain, policy.id, target, checked)
    return dnsupdates.Try(policy.domain, policy.id, None), checked


def served(settings: Settings, policy: HostedPolicy) -> str:
    """How the new policy was found in place: 'serve' (at the ``http`` address) answers it,
    or no 'serve' answers there and the file on disk is what it will answer.  Raises
    DnsUpdateError when 'serve' answers anything else."""
    host, _, port = settings.http.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    if not port.isdigit() or int(port) == 0:
        return "the policy file was written to disk (setting http names no port to ask)"
    name = f"mta-sts.{policy.domain}"
    url = f"{'https' if settings.tls_cert else 'http'}://{host}:{port}/.well-known/mta-sts.txt"
    # Only the content is compared with the file just written: this is our own server,
    # asked to show what it serves, not trusted for anything, so its certificate is not.
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    try:
        with httpx.Client(verify=tls, timeout=settings.dns_timeout) as client:
            reply = client.get(url, headers={"Host": name}, extensions={"sni_hostname": name})
    except httpx.ConnectError:
        return (f"the policy file was written to disk ('serve' does not answer at "
                f"{host}:{port}; it answers the file once it runs)")
    except httpx.HTTPError as exc:
        raise DnsUpdateError(f"'serve' at {url} did not answer for {name}: {exc}") from None
    # The served policy's id is its ETag (the content alone does not give it: a change
    # that brings back an earlier text gets a new id).
    got = reply.headers.get("etag", "").strip('"') or None if reply.status_code == 200 else None
    if got != policy.id or reply.text.replace("\r\n", "\n") != policy.text.replace("\r\n", "\n"):
        what = f"id {got}" if got else f"HTTP {reply.status_code}"
        raise DnsUpdateError(
            f"'serve' at {host}:{port} answers {what} for {name}, not the new policy (id "
            f"{policy.id}); the id is published only once the new policy is served (do "
            "'serve' and this command read the same policy_dir?)")
    return f"'serve' at {host}:{port} answered the new policy"


def send_update(found: Delegation, domain: str, new_id: str) -> None:
    """Replace every TXT at DOMAIN.<zone> by the one with ``new_id``, in one signed UPDATE
    (a delete of the RRset and an add: RFC 2136 section 2.5)."""
    target = found.target(domain)
    update = dns.update.UpdateMessage(found.zone, keyring=found.keyring(),
                                      keyname=found.key_name, keyalgorithm=found.algorithm)
    update.replace(dns.name.from_text(target), found.ttl, "TXT", f'"v=STSv1; id={new_id};"')
    where = f"DNS update of {target} TXT at {found.server}"
    key, zone = found.key_name.to_text(True), found.zone.to_text(True)
    try:
        address = socket.getaddrinfo(found.host, found.port, type=socket.SOCK_STREAM)[0][4][0]
        response = dns.query.tcp(update, str(address), port=found.port,
                                 timeout=found.timeout)
    except dns.tsig.PeerBadKey:
        raise DnsUpdateError(f"{where}: the server does not know the TSIG key "
                             f"{key} (BADKEY)") from None
    except dns.tsig.PeerBadSignature:
        raise DnsUpdateError(f"{where}: the server refused the TSIG signature (BADSIG): the "
                             f"secret in {found.secret_env} is not the one of key "
                             f"{key}") from None
    except dns.tsig.PeerBadTime:
        raise DnsUpdateError(f"{where}: the server refused the signature's time (BADTIME): "
                             "set this machine's clock") from None
    except (dns.exception.DNSException, OSError) as exc:
        raise DnsUpdateError(f"{where}: {exc or type(exc).__name__}") from None
    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        hint = {dns.rcode.REFUSED: f": does the server let key {key} update TXT "
                                   f"records in {zone}?",
                dns.rcode.NOTAUTH: f": the server is not authoritative for {zone}",
                dns.rcode.NOTZONE: f": {target} is not in zone {zone}"}.get(rcode, "")
        raise DnsUpdateError(f"{where}: refused ({dns.rcode.to_text(rcode)}){hint}")


def publish_due(settings: Settings, now: datetime) -> list[Publication]:
    """The worker's task: publish each hosted policy whose id was not published yet (a
    failed try once its back-off has passed, a change whose outcome was not recorded, a
    domain hosted before the delegation was set up)."""
    found = delegation(settings)
    if found is None:
        return []
    known: dict[str, dict[str, Any]] = {}
    if exists(settings.db):
        with Store.open(settings.db, read_only=True, pending_ok=True,
                        lock_timeout=settings.lock_timeout) as store:
            known = dnsupdates.rows(store)
    moment = now.astimezone(UTC).replace(tzinfo=None)
    policies = PolicyStore(Path(settings.policy_dir))
    due = []
    for domain in sorted(policies.domains()):
        policy = policies.find(domain)
        row = known.get(domain)
        if policy is None:
            continue
        if row is None or row["policy_id"] != policy.id or (
                row["status"] == "failed" and row["next_attempt"] <= moment):
            due.append(policy)
    done = publish(settings, found, due[:PER_ROUND])
    for failed in (p for p in done if p.error):
        log.warning("%s", failed.describe())
    _alert(settings, [p for p in done if p.error and p.attempts >= 2], now)
    return done


ALERT_KIND = "dns_update_failing"


def _alert(settings: Settings, failing: list[Publication], now: datetime) -> None:
    """An id whose update failed again when 'serve' tried it: senders keep the old policy
    until it is published (one alert a day per domain)."""
    if not failing:
        return
    from tlswatch.analytics.alerts import Alert
    from tlswatch.jobs import record  # jobs imports this module's caller

    alerts = [Alert(p.domain, ALERT_KIND, now.date(), (
        f"The id {p.policy_id} of the policy served for {p.domain} is still not published at "
        f"{p.target} after {p.attempts} tries: {' '.join(str(p.error).split())}. Senders "
        "keep the previous policy until it is; 'tlswatch policy status' shows where it "
        "stands, 'tlswatch policy publish' tries again at once."),
        {"policy_id": p.policy_id, "target": p.target, "attempts": p.attempts,
         "error": p.error}) for p in failing]
    try:
        with Store.open(settings.db, lock_timeout=settings.lock_timeout) as store:
            record(store, settings, alerts)
    except StoreError as exc:
        log.warning("the alert about %d unpublished id(s) was not recorded: %s",
                    len(alerts), exc)


def publish_domain(settings: Settings, domain: str) -> Publication:
    """Publish the id of the policy served for ``domain`` now (``policy publish``: after
    the key or the server was put right, without waiting for the back-off)."""
    found = delegation(settings)
    if found is None:
        raise ConfigError("setting dns_update_zone: not set, so ids are not published by "
                          "DNS update here (see 'policy status')")
    return publish(settings, found, [PolicyStore(Path(settings.policy_dir)).get(domain)])[0]


def published_now(settings: Settings, policy: HostedPolicy) -> Publication | None:
    """Where publishing the id of a policy just written stands, as recorded (None: no
    delegation is set up, the id is published by hand)."""
    found = delegation(settings)
    if found is None:
        return None
    target = found.target(policy.domain)
    try:
        row = publication(settings, policy.domain)
    except StoreError as exc:
        return Publication(policy.domain, policy.id, target, found.server, found.ttl,
                           f"its outcome could not be read ({exc})", recorded=False)
    if row is None or row["policy_id"] != policy.id:
        return Publication(policy.domain, policy.id, target, found.server, found.ttl,
                           "the outcome of its update was not recorded", recorded=False)
    return Publication(policy.domain, policy.id, target, found.server, found.ttl,
                       row["error"], attempts=row["attempts"],
                       next_attempt=row["next_attempt"])


def publication(settings: Settings, domain: str) -> dict[str, Any] | None:
    """The recorded state of a domain's publication (None: nothing recorded)."""
    if not exists(settings.db):
        return None
    with Store.open(settings.db, read_only=True, pending_ok=True,
                    lock_timeout=settings.lock_timeout) as store:
        return dnsupdates.row(store, domain)
