"""``policy status`` where ``_mta-sts`` is delegated to this deployment: follow the
customer's CNAME to the TXT this deployment publishes, compare its id with the one served,
and say when senders see a change."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import dns.resolver

from tlswatch.config import Settings
from tlswatch.errors import TlsWatchError
from tlswatch.mtasts.check import _fields
from tlswatch.mtasts.dnsupdate import Delegation, publication
from tlswatch.mtasts.hosting import HostedPolicy, PolicyStore, status


def delegated_status(settings: Settings, found: Delegation, domain: str, resolver: Any,
                     mx_hosts: list[str]) -> list[dict[str, str]]:
    """``policy status`` where the id is published here: follow ``_mta-sts.DOMAIN`` (the
    customer's CNAME, asked of ``resolver``) to the zone's TXT (asked of the authoritative
    server), compare its id with the served one, and say when senders see a change."""
    policy = PolicyStore(Path(settings.policy_dir)).get(domain)
    target, name = found.target(policy.domain), f"_mta-sts.{policy.domain}"
    delegate = f"{name} CNAME {target}"
    cname = [c.lower() for c in _lookup(resolver, name, "CNAME")]  # DNS names ignore case
    if cname == [target]:
        texts, ttl = _authoritative_txt(found, target)
        rows = [_row("info", "delegated", f"{name} is a CNAME to {target}, whose TXT this "
                     f"deployment updates at {found.server}", "")]
    else:
        texts, ttl = _lookup(resolver, name, "TXT"), None
        rows = [_row("error" if cname else "warning", "not_delegated",
                     f"{name} is a CNAME to {cname[0]}, not to {target}" if cname else
                     f"{name} is not delegated: each new id must be published there by hand",
                     f"publish {delegate} (in place of any TXT there)")]
    ids = [_fields(t).get("id", "") for t in texts if t.startswith("v=STSv1")]
    for row in status(settings, policy.domain, published_ids=ids, mx_hosts=mx_hosts):
        if row["code"] in ("not_published", "stale_id") and cname == [target]:
            row["fix"] = _pending(settings, policy)
        elif row["code"] in ("not_published", "stale_id"):
            row["fix"] = f"publish {delegate}"
        rows.append(row)
    if ids == [policy.id]:
        rows.append(_row("info", "senders_see", _when(settings, found, policy, ttl), ""))
    return rows


def _when(settings: Settings, found: Delegation, policy: HostedPolicy, ttl: int | None
          ) -> str:
    """When senders see the current id and so the policy (RFC 8461 section 5.1)."""
    ttl = found.ttl if ttl is None else ttl
    row = publication(settings, policy.domain)
    since, until = "", ""
    if row and row["status"] == "published" and row["policy_id"] == policy.id:
        since = f"published {row['attempted_at']:%Y-%m-%d %H:%M:%S} UTC; "
        until = f", until {row['attempted_at'] + timedelta(seconds=ttl):%H:%M:%S} UTC"
    return (f"{since}resolvers may answer the previous id for up to {ttl} s (the TXT's "
            f"TTL{until}); a sender that sees id {policy.id} fetches the policy again at "
            f"once; one that sees no new id keeps its cached policy up to its max_age "
            f"({policy.max_age} s)")


def _pending(settings: Settings, policy: HostedPolicy) -> str:
    row = publication(settings, policy.domain)
    if row is None or row["policy_id"] != policy.id:
        return (f"'serve' publishes id {policy.id} at its next round (every 30 s; nothing "
                "recorded yet)")
    if row["status"] == "failed":
        return (f"try {row['attempts']} failed at {row['attempted_at']:%Y-%m-%d %H:%M:%S} "
                f"UTC: {row['error']}; 'serve' tries again after "
                f"{row['next_attempt']:%Y-%m-%d %H:%M:%S} UTC")
    return "published; wait for the resolvers' cached TXT to expire (its TTL)"


def _lookup(resolver: Any, name: str, kind: str) -> list[str]:
    """Values of ``kind`` at ``name`` (TXT: each record's strings joined), no chasing."""
    try:
        answer = resolver.resolve(name, kind)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise TlsWatchError(f"{name} {kind}: DNS lookup failed: {exc}") from None
    rrset = answer.rrset if kind == "CNAME" else answer
    if kind == "TXT":
        return [b"".join(r.strings).decode("utf-8", "replace") for r in rrset]
    return [r.to_text() for r in rrset]


def _authoritative_txt(found: Delegation, target: str) -> tuple[list[str], int | None]:
    """The TXT at ``target`` and its TTL, from the zone's own server (what resolvers get
    once their cached copy expires)."""
    query = dns.message.make_query(target, dns.rdatatype.TXT)
    try:
        address = socket.getaddrinfo(found.host, found.port, type=socket.SOCK_STREAM)[0][4][0]
        reply = dns.query.tcp(query, str(address), port=found.port, timeout=found.timeout)
    except (dns.exception.DNSException, OSError) as exc:
        raise TlsWatchError(f"{target} TXT at {found.server}: {exc}") from None
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            return [b"".join(r.strings).decode("utf-8", "replace") for r in rrset], rrset.ttl
    return [], None


def _row(severity: str, code: str, message: str, fix: str) -> dict[str, str]:
    return {"severity": severity, "code": code, "message": message, "fix": fix}
