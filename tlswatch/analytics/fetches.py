"""The recorded fetches of a hosted policy, and what they say beside the ``sts-*`` failures
senders reported: only the policy's host sees both sides.

A sender that reports ``sts-policy-fetch-error`` on a day when this host served it no
fetch never reached this host: the fault is in front (DNS, a CDN, a firewall).  One that
fetched and still reports failures saw something else: another id than DNS names, or a
failure after the answer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from tlswatch.analytics.queries import seen
from tlswatch.analytics.senders import SenderMap, sender_of_organization
from tlswatch.store import Store
from tlswatch.store.maintenance import pruned_before

COLUMNS = ["fetched_at", "client_ip", "sender", "policy_id", "status", "node"]


def _span(since: date, until: date) -> list[Any]:
    return [datetime.combine(since, time()), datetime.combine(until + timedelta(days=1), time())]


def fetch_rows(store: Store, senders: SenderMap, domain: str, *, since: date, until: date,
               limit: int = 1000) -> list[dict[str, Any]]:
    """The domain's fetches from ``since`` to ``until`` (UTC days), newest first, each with
    the big sender its address belongs to (None: not a known one)."""
    rows = store.rows("""
        SELECT fetched_at, client_ip, policy_id, status, node FROM policy_fetches
        WHERE domain = ? AND fetched_at >= ? AND fetched_at < ?
        ORDER BY fetched_at DESC, client_ip, status, policy_id, node LIMIT ?
    """, [domain, *_span(since, until), limit])
    named = senders.classify({r["client_ip"] for r in rows})
    return [{"fetched_at": r["fetched_at"].isoformat(sep=" ", timespec="seconds"),
             "client_ip": r["client_ip"], "sender": named.get(r["client_ip"]),
             "policy_id": r["policy_id"], "status": r["status"], "node": r["node"]}
            for r in rows]


@dataclass
class Served:
    """What this host answered one sender's addresses on one day."""

    fetches: int = 0
    addresses: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    ids: set[str] = field(default_factory=set)

    def statuses_text(self) -> str:
        return ", ".join(f"{s} x{n}" for s, n in sorted(self.statuses.items()))


def _served(store: Store, senders: SenderMap, domain: str, since: date, until: date
            ) -> dict[tuple[date, str], Served]:
    rows = store.rows("""
        SELECT CAST(fetched_at AS DATE) AS day, client_ip, status, policy_id,
               count(*) AS fetches
        FROM policy_fetches WHERE domain = ? AND fetched_at >= ? AND fetched_at < ?
        GROUP BY CAST(fetched_at AS DATE), client_ip, status, policy_id
        ORDER BY day, client_ip, status, policy_id
    """, [domain, *_span(since, until)])
    named = senders.classify({r["client_ip"] for r in rows})
    out: dict[tuple[date, str], Served] = {}
    for r in rows:
        served = out.setdefault((r["day"], named.get(r["client_ip"]) or "other"), Served())
        served.fetches += int(r["fetches"])
        served.addresses.add(r["client_ip"])
        served.statuses[r["status"]] += int(r["fetches"])
        if r["policy_id"]:
            served.ids.add(r["policy_id"])
    return out


def _sts_failures(store: Store, domain: str, since: date, until: date) -> list[dict[str, Any]]:
    return store.rows(f"""
        SELECT day, organization_name, result_type,
               sum(failed_session_count)::DECIMAL(38,0) AS failed_sessions
        FROM failure_details
        WHERE policy_domain = ? AND day BETWEEN ? AND ? AND result_type LIKE 'sts-%'
              AND {seen()}
        GROUP BY day, organization_name, result_type
        ORDER BY day, organization_name, result_type
    """, [domain, since, until])


def _dns_id(store: Store, domain: str) -> tuple[str | None, datetime | None]:
    """The _mta-sts id the latest stored check saw, and when."""
    rows = store.rows("SELECT sts_id, checked_at FROM check_runs WHERE domain = ? "
                      "ORDER BY checked_at DESC, run_pk DESC LIMIT 1", [domain])
    return (rows[0]["sts_id"], rows[0]["checked_at"]) if rows else (None, None)


def _sentence(failure: dict[str, Any], sender: str | None, served: Served | None,
              dns: tuple[str | None, datetime | None]) -> str:
    day = f"{failure['day']:%m-%d}"
    said = (f"{sender or failure['organization_name']} reported "
            f"{failure['failed_sessions']:,} {failure['result_type']} on {day}")
    if sender is None:
        return (f"{said}; its addresses are not known here, so its fetches cannot be told "
                "apart (add them to the setting sender_ranges)")
    if served is None:
        return (f"{said}; this host served no fetch to {sender}'s addresses that day: look "
                "at DNS, a CDN or a firewall in front")
    if not served.ids:
        return (f"{said}; this host answered {served.statuses_text()} to {sender}'s "
                "addresses that day and served no policy: is the policy hosted here under "
                "this domain?")
    ids = ", ".join(sorted(served.ids))
    said += (f", yet this host served {served.fetches:,} fetch(es) ({served.statuses_text()}) "
             f"to {sender}'s addresses that day (id {ids})")
    dns_id, checked = dns
    if dns_id is not None and dns_id not in served.ids:
        return (f"{said} while DNS says id={dns_id} (checked {checked:%m-%d %H:%M}): publish "
                "the id served, or the senders keep an older policy")
    if failure["result_type"] == "sts-policy-invalid":
        return f"{said}: check the policy served ('tlswatch policy status')"
    return (f"{said}: the failing fetches came from other addresses, at another time, or "
            "failed after the answer (a timeout, a proxy in front)")


def fetch_section(store: Store, senders: SenderMap, domain: str, *, since: date,
                  until: date) -> dict[str, Any]:
    """The domain page's "Policy fetches": sentences on each sender's sts-* failures beside
    the fetches served to it, fetches by day and sender, and what retention pruned."""
    served = _served(store, senders, domain, since, until)
    dns = _dns_id(store, domain)
    findings = [_sentence(f, sender_of_organization(f["organization_name"]),
                          served.get((f["day"], sender_of_organization(
                              f["organization_name"]) or "")), dns)
                for f in _sts_failures(store, domain, since, until)]
    by_day = [{"day": day.isoformat(), "sender": sender, "fetches": s.fetches,
               "addresses": len(s.addresses), "statuses": s.statuses_text(),
               "policy_ids": sorted(s.ids)}
              for (day, sender), s in sorted(served.items(), key=lambda kv: (kv[0][0],
                                                                              kv[0][1]))]
    pruned = pruned_before(store).get("policy_fetches")
    note = ""
    if pruned is not None and since < pruned["before_day"]:
        note = (f"fetches before {pruned['before_day']} were pruned after "
                f"{pruned['keep_days']} days (setting policy_fetch_keep_days)")
    return {"findings": findings, "by_day": by_day, "note": note}
