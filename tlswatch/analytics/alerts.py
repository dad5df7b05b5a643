"""Alerts: the conditions a domain owner wants to hear about, found in the stored reports.

Each alert is identified by (policy domain, kind, day) and is recorded (and sent) once.
Strings from reports enter a message through ``_plain``: a control, format or line
character is shown as an escape, so a sender cannot add lines to a mail or a chat post.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from tlswatch.analytics.explain import explain
from tlswatch.analytics.queries import Filters
from tlswatch.analytics.summary import percent
from tlswatch.analytics.summary import short_org as _short_org
from tlswatch.store import Store
from tlswatch.tenants.scope import EVERYTHING, Scope

STS_PROBLEMS = ("sts-policy-fetch-error", "sts-webpki-invalid", "sts-policy-invalid")
# Raised by the daily MTA-STS/TLS-RPT check (tlswatch.mtasts.monitor), each once per
# condition: a new error, a certificate close to expiry, a stale _mta-sts id, a TLS-RPT
# record that is missing or does not list this deployment first.
CHECK_KINDS = ("check_new_error", "check_cert_expiring", "check_sts_id_stale",
               "check_tlsrpt_rua")
# Raised by the daily MX watcher (tlswatch.mtasts.mxwatch): a live MX that the hosted
# policy does not cover.
WATCH_KINDS = ("policy_mx_not_covered",)
KINDS = ("new_result_type", "low_success_rate", "failure_spike", "reporter_silent",
         "sts_policy_problem", "conflicting_duplicate")  # what evaluate() finds in reports
MORE = "more_alerts"  # one a day, counting the alerts beyond max_alerts_per_day
# Which alerts a day's cap keeps first: what breaks mail for every sender before the rest.
PRIORITY = ("sts_policy_problem", "policy_mx_not_covered", "check_cert_expiring",
            "acme_renewal_failing", "dns_update_failing",
            "check_sts_id_stale",
            "low_success_rate", "check_new_error", "failure_spike", "new_result_type",
            "check_tlsrpt_rua", "conflicting_duplicate", "reporter_silent")


@dataclass(frozen=True)
class AlertRules:
    success_threshold: float = 0.99
    spike_factor: float = 3.0
    spike_days: int = 14
    spike_minimum: int = 10  # failed sessions below this never count as a spike
    silent_days: int = 3
    daily_days: int = 7  # a reporter "reports daily" when it sent on this many days...
    daily_min: int = 6  # ...at least this many times, before it went quiet


@dataclass
class Alert:
    policy_domain: str
    kind: str
    day: date
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, date]:
        return (self.policy_domain, self.kind, self.day)


def priority(alert: Alert) -> int:
    return PRIORITY.index(alert.kind) if alert.kind in PRIORITY else len(PRIORITY)


def evaluate(store: Store, days: list[date], rules: AlertRules = AlertRules(),
             *, today: date | None = None) -> list[Alert]:
    """Every alert condition met on ``days`` (and silences as of ``today`` or the last day)."""
    if not days:
        return []
    first, last = min(days), max(days)
    history = _daily(store, first - timedelta(days=rules.spike_days), last)  # read once
    found = (_new_result_types(store, first, last) + _low_rates(history, first, last, rules)
             + _spikes(history, first, last, rules) + _sts_problems(store, first, last)
             + _silences(store, today or last, rules) + _conflicts(store, today or last))
    merged: dict[tuple[str, str, date], Alert] = {}
    for alert in found:  # one alert per (domain, kind, day): two new types make one alert
        if alert.key in merged:
            kept = merged[alert.key]
            kept.message += "\n" + alert.message
            kept.details.setdefault("more", []).append(alert.details)
        else:
            merged[alert.key] = alert
    return sorted(merged.values(), key=lambda a: (a.day, a.policy_domain, KINDS.index(a.kind)))


def _conflicts(store: Store, today: date) -> list[Alert]:
    """Reports quarantined as conflicting duplicates (a forgery, or a sender that re-sent a
    changed report under the same id) in the week up to ``today``, by the day they came,
    once a day for all domains."""
    rows = store.rows("""
        SELECT CAST(received_at AS DATE) AS day, count(*) AS n, min(source) AS example
        FROM quarantine WHERE reason LIKE 'conflicting duplicate%'
          AND CAST(received_at AS DATE) BETWEEN ? AND ?
        GROUP BY CAST(received_at AS DATE) ORDER BY day
    """, [today - timedelta(days=6), today])
    return [Alert("*", "conflicting_duplicate", r["day"],
                  f"{r['n']:,} report{'s were' if r['n'] != 1 else ' was'} quarantined on "
                  f"{r['day']} as conflicting duplicates: the same organisation and report-id "
                  f"as a stored report, with different content (e.g. {_plain(r['example'])}). "
                  "The first one is kept unless the newcomer is DKIM-signed by its reporter; "
                  "the other's bytes and reason are in the quarantine.",
                  {"quarantined": int(r["n"])}) for r in rows]


def _new_result_types(store: Store, first: date, last: date) -> list[Alert]:
    rows = store.rows("""
        WITH firsts AS (
            SELECT domain_id, result_type_id, min(day) AS first_day
            FROM rollup_results WHERE seen GROUP BY domain_id, result_type_id
        ),
        hits AS (
            SELECT f.domain_id, f.result_type_id, f.first_day, r.organization_name_id,
                   r.receiving_mx_hostname_id, r.failed_sessions
            FROM firsts f JOIN rollup_results r ON r.domain_id = f.domain_id
                 AND r.result_type_id = f.result_type_id AND r.day = f.first_day AND r.seen
            WHERE f.first_day BETWEEN ? AND ?
        )
        SELECT d.value AS policy_domain, t.value AS result_type, h.first_day,
               sum(h.failed_sessions)::DECIMAL(38,0) AS failed,
               array_agg(DISTINCT o.value ORDER BY o.value) AS orgs,
               array_agg(DISTINCT m.value ORDER BY m.value) FILTER (WHERE m.value IS NOT NULL)
                   AS hosts
        FROM hits h JOIN names d ON d.name_id = h.domain_id
             JOIN names t ON t.name_id = h.result_type_id
             JOIN names o ON o.name_id = h.organization_name_id
             LEFT JOIN names m ON m.name_id = h.receiving_mx_hostname_id
        GROUP BY d.value, t.value, h.first_day ORDER BY h.first_day, d.value, t.value
    """, [first, last])
    out = []
    for r in rows:
        hosts = f" on {', '.join(_plain(h) for h in r['hosts'][:3])}" if r["hosts"] else ""
        domain = _plain(r["policy_domain"])
        out.append(Alert(r["policy_domain"], "new_result_type", r["first_day"],
                         f"{domain}: first report of {_plain(r['result_type'])}: "
                         f"{', '.join(_plain(short_org(o)) for o in r['orgs'])} saw "
                         f"{r['failed']:,} "
                         f"session(s) fail{hosts}. "
                         f"{_sentence(explain(r['result_type'], domain=domain).fix)}",
                         {"result_type": r["result_type"], "failed_sessions": r["failed"]}))
    return out


def _daily(store: Store, first: date, last: date) -> list[dict[str, Any]]:
    return store.rows("""
        SELECT day, policy_domain, sum(successful_sessions)::DECIMAL(38,0) AS ok,
               sum(failed_sessions)::DECIMAL(38,0) AS failed
        FROM rollup_days WHERE day BETWEEN ? AND ? GROUP BY day, policy_domain
        ORDER BY day, policy_domain
    """, [first, last])


def _low_rates(history: list[dict[str, Any]], first: date, last: date,
               rules: AlertRules) -> list[Alert]:
    out = []
    for r in history:
        if not first <= r["day"] <= last:
            continue
        total = r["ok"] + r["failed"]
        if total and r["ok"] / total < rules.success_threshold:
            rate, domain = r["ok"] / total, _plain(r["policy_domain"])
            out.append(Alert(r["policy_domain"], "low_success_rate", r["day"],
                             f"{domain}: only {percent(rate, failures=r['failed'])} "
                             f"of {total:,} sessions succeeded on {r['day']} (threshold "
                             f"{percent(rules.success_threshold)}); see tlswatch failures "
                             f"--domain {domain} --since {r['day']}.",
                             {"success_rate": round(rate, 6), "sessions": total}))
    return out


def _spikes(history: list[dict[str, Any]], first: date, last: date,
            rules: AlertRules) -> list[Alert]:
    """``history``: the daily figures from ``spike_days`` before ``first`` to ``last``."""
    by_domain: dict[str, dict[int, int]] = {}  # domain -> day (as an ordinal) -> failed
    for r in history:
        by_domain.setdefault(r["policy_domain"], {})[r["day"].toordinal()] = r["failed"]
    out = []
    for domain, figures in sorted(by_domain.items()):
        for ordinal, count in sorted(figures.items()):
            day = date.fromordinal(ordinal)
            if first <= day <= last and count >= rules.spike_minimum:
                out += _spike(domain, day, count, [
                    figures[d] for d in range(ordinal - rules.spike_days, ordinal)
                    if d in figures], rules)
    return out


def _spike(domain: str, day: date, count: int, before: list[int],
           rules: AlertRules) -> list[Alert]:
    """The spike alert of ``domain`` on ``day`` if ``count`` (its failed sessions) is over
    the factor times the average of ``before`` (those of its report days before)."""
    # The average of the days before with reports: a day without any report is not a day
    # without failures, and a domain's first day has no history to spike against.
    if not before:
        return []
    trailing, n = sum(before) / len(before), len(before)
    if count <= rules.spike_factor * trailing:
        return []
    return [Alert(domain, "failure_spike", day,
                  f"{_plain(domain)}: {count:,} failed sessions on {day}, over "
                  f"{rules.spike_factor:g}x the daily average of {trailing:,.1f} "
                  f"of the {n} report day{'s' if n != 1 else ''} in the "
                  f"{rules.spike_days} days before.",
                  {"failed_sessions": count, "trailing_average": round(trailing, 2)})]


def _sts_problems(store: Store, first: date, last: date) -> list[Alert]:
    rows = store.rows(f"""
        SELECT d.value AS policy_domain, g.day,
               array_agg(DISTINCT t.value ORDER BY t.value) AS types,
               sum(g.failed_sessions)::DECIMAL(38,0) AS failed,
               array_agg(DISTINCT o.value ORDER BY o.value) AS orgs
        FROM rollup_results g JOIN names d ON d.name_id = g.domain_id
             JOIN names t ON t.name_id = g.result_type_id
             JOIN names o ON o.name_id = g.organization_name_id
        WHERE g.seen AND g.day BETWEEN ? AND ?
              AND t.value IN ({", ".join("?" for _ in STS_PROBLEMS)})
        GROUP BY d.value, g.day ORDER BY g.day, d.value
    """, [first, last, *STS_PROBLEMS])
    return [Alert(r["policy_domain"], "sts_policy_problem", r["day"],
                  f"{_plain(r['policy_domain'])}: senders could not use the MTA-STS policy on "
                  f"{r['day']} ({', '.join(_plain(t) for t in r['types'])}; "
                  f"{r['failed']:,} sessions, seen by "
                  f"{', '.join(short_org(o) for o in r['orgs'])}). The policy host "
                  f"mta-sts.{_plain(r['policy_domain'])} is broken for every sender at once: "
                  f"{explain(r['types'][0], domain=_plain(r['policy_domain'])).fix}.",
                  {"result_types": r["types"], "failed_sessions": r["failed"]}) for r in rows]


def _silences(store: Store, today: date, rules: AlertRules) -> list[Alert]:
    # A reporter "reported daily" when it sent on daily_min of the daily_days days up to its
    # last report; silences that began more than 60 days ago are history, not news.
    # The daily_min-th newest report day of each pair tells whether daily_min days fell in
    # the daily_days days up to the last one (one rollup row per day, domain, organisation).
    # Days older than daily_days before the 60 cannot change that for a pair whose last day
    # is within the 60, so they are not read.
    recent = today - timedelta(days=60)
    rows = store.rows("""
        SELECT policy_domain, organization_name, max(day) AS last,
               min(day) FILTER (WHERE n = ?) AS kth
        FROM (SELECT policy_domain, organization_name, day,
                     row_number() OVER (PARTITION BY policy_domain, organization_name
                                        ORDER BY day DESC) AS n
              FROM rollup_days WHERE day BETWEEN ? AND ?) AS d
        GROUP BY policy_domain, organization_name HAVING max(day) >= ?
        ORDER BY policy_domain, organization_name
    """, [max(1, rules.daily_min), recent - timedelta(days=max(1, rules.daily_days)), today,
          recent])
    for r in rows:
        r["days"] = rules.daily_min if r["kth"] is not None and (
            (r["last"] - r["kth"]).days < rules.daily_days) else 0
    out = []
    for r in rows:
        quiet = (today - r["last"]).days
        if quiet >= rules.silent_days and r["days"] >= rules.daily_min:
            out.append(Alert(r["policy_domain"], "reporter_silent",
                             r["last"] + timedelta(days=1),
                             f"{_plain(r['policy_domain'])}: "
                             f"{_plain(short_org(r['organization_name']))} "
                             f"sent reports daily but none since {r['last']} ({quiet} days): "
                             "check that the _smtp._tls record and the rua address or "
                             "endpoint still work.",
                             {"organization_name": r["organization_name"],
                              "last_day": r["last"].isoformat()}))
    return out


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _plain(value: object, limit: int = 120) -> str:
    """A string from a report, one line and at most ``limit`` characters, escapes shown."""
    text = str(value)
    if not text.isprintable():  # printable: no character of categories C and Z but space
        text = "".join(f"\\u{ord(c):04x}" if unicodedata.category(c)[0] in "CZ" and c != " "
                       else c for c in text)
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def plain(value: object, limit: int = 120) -> str:
    """A string from outside (a report, a DNS record) for an alert: one line, escapes shown."""
    return _plain(value, limit)


@functools.lru_cache(maxsize=4096)  # the same few reporters in thousands of alerts a week
def short_org(name: str) -> str:
    return _plain(_short_org(name))


def history(store: Store, filters: Filters) -> list[dict[str, Any]]:
    """The recorded alerts, newest day first, with the state of their delivery: delivered,
    pending (queued or waiting to be tried again), failed (given up) or not sent (no mail
    or webhook configured when it was raised)."""
    where, params = filters.where(failure_rows=False)
    return store.rows(f"""
        SELECT day, policy_domain, kind, message, created_at,
               CASE WHEN o.n IS NULL THEN CASE WHEN delivered_at IS NOT NULL THEN 'delivered'
                                               WHEN delivery_error IS NOT NULL THEN 'failed'
                                               ELSE 'not sent' END
                    WHEN o.failed > 0 THEN 'failed' WHEN o.pending > 0 THEN 'pending'
                    ELSE 'delivered' END AS delivery,
               delivered_at, delivery_error
        FROM alerts LEFT JOIN (
            SELECT batch, count(*) AS n, count(*) FILTER (WHERE status = 'failed') AS failed,
                   count(*) FILTER (WHERE status = 'pending') AS pending
            FROM outbox GROUP BY batch) o ON o.batch = alerts.outbox_batch
        {where} ORDER BY day DESC, policy_domain, kind
    """, params)


def last_report_day(store: Store, scope: Scope = EVERYTHING) -> date | None:
    if scope.everything:
        day: date | None = store.rows("SELECT max(day) AS d FROM reports")[0]["d"]
        return day
    where, params = Filters(scope=scope).where(failure_rows=False)
    scoped: date | None = store.rows(f"SELECT max(day) AS d FROM rollup_days{where}",
                                     params)[0]["d"]
    return scoped


def outbox(store: Store) -> list[dict[str, Any]]:
    """Every queued, sent and failed delivery (alerts and daily summaries), newest first."""
    return store.rows("""
        SELECT outbox_pk AS id, kind, channel, recipient, subject, status, attempts,
               created_at, next_try_at, delivered_at, last_error
        FROM outbox ORDER BY outbox_pk DESC
    """)
