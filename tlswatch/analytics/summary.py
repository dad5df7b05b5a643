"""Per-domain summaries: figures, the change from the previous period, plain-language text."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, timedelta
from typing import Any

from tlswatch.analytics.explain import explain
from tlswatch.analytics.queries import (
    Filters,
    day_bounds,
    failed_by_policy,
    failure_groups,
    session_totals,
)
from tlswatch.analytics.reasons import explain_reason
from tlswatch.analytics.render import line_text
from tlswatch.store import Store

TOP_N = 5


@dataclass
class Period:
    since: date | None
    until: date | None
    reports: int
    successful_sessions: int
    failed_sessions: int
    success_rate: float | None


@dataclass
class DomainSummary:
    policy_domain: str
    reports: int
    organizations: list[str]
    successful_sessions: int
    failed_sessions: int
    success_rate: float | None
    failures_by_result_type: dict[str, int]
    failure_sources: list[dict[str, Any]] = field(default_factory=list)
    sending_ips: list[dict[str, Any]] = field(default_factory=list)
    previous: Period | None = None
    change_failed_sessions: int | None = None
    change_success_rate: float | None = None
    # What the failures meant for delivery, as the policy in force says (RFC 8461 s5,
    # RFC 7672): delivered_anyway, deferred_or_bounced, unknown (no mode in the policy).
    delivery_impact: dict[str, int] = field(default_factory=dict)

    @property
    def failure_records(self) -> int:
        """The failure details' sum, which some senders (Mail.ru) let exceed the total."""
        return sum(self.failures_by_result_type.values())

    @property
    def total_sessions(self) -> int:
        return self.successful_sessions + self.failed_sessions


@dataclass
class Summary:
    since: date | None
    until: date | None
    domains: list[DomainSummary]

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _plain_data(self)
        data["since"] = _iso(self.since)
        data["until"] = _iso(self.until)
        for domain in data["domains"]:
            prev = domain["previous"]
            if prev is not None:
                prev["since"], prev["until"] = _iso(prev["since"]), _iso(prev["until"])
        return data


_LEAVES = (str, int, float, bool, type(None), date)


def _plain_data(value: Any) -> Any:
    """``dataclasses.asdict`` for a summary, without its deep copy of every string and
    number (a thousand domains' summary spent most of its time there)."""
    if isinstance(value, _LEAVES):
        return value
    if isinstance(value, list):
        return [_plain_data(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_data(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain_data(getattr(value, f.name)) for f in fields(value)}
    return copy.deepcopy(value)  # what asdict makes of any other value


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def rate(ok: int, failed: int) -> float | None:
    total = ok + failed
    return round(ok / total, 6) if total else None


def summarize(store: Store, filters: Filters | None = None, *,
              top_lists: bool = True) -> Summary:
    """Everything ``tlswatch summary`` shows, for the filters' period and the one before it.

    ``top_lists=False`` leaves out each domain's failure sources, sending IPs and delivery
    impact (empty): the figures a list of domains shows, without reading the rollups per
    receiving host and per sending IP, the largest."""
    filters = filters or Filters()
    totals = session_totals(store, filters)
    by_type = _by_domain(failure_groups(store, filters, ("policy_domain", "result_type")))
    sources: dict[str, list[dict[str, Any]]] = {}
    ips: dict[str, list[dict[str, Any]]] = {}
    impact: dict[str, dict[str, int]] = {}
    if top_lists:
        sources = _by_domain(failure_groups(
            store, filters, ("policy_domain", "organization_name", "result_type",
                             "receiving_mx_hostname", "receiving_ip"),
            top_per_domain=TOP_N, example_code=True))
        ips = _by_domain(failure_groups(store, filters, ("policy_domain", "sending_mta_ip"),
                                        top_per_domain=TOP_N + 1))
        impact = _delivery_impact(failed_by_policy(store, filters))
    previous = _previous_period(store, filters)
    domains = []
    for row in totals:
        name = row["policy_domain"]
        ok, failed = int(row["successful_sessions"]), int(row["failed_sessions"])
        summary = DomainSummary(
            policy_domain=name, reports=int(row["reports"]), organizations=row["organizations"],
            successful_sessions=ok, failed_sessions=failed, success_rate=rate(ok, failed),
            failures_by_result_type={r["result_type"]: int(r["failed_sessions"])
                                     for r in by_type.get(name, [])},
            failure_sources=[_strip(r) for r in sources.get(name, [])[:TOP_N]],
            sending_ips=[{"sending_mta_ip": r["sending_mta_ip"],
                          "failed_sessions": int(r["failed_sessions"])}
                         for r in ips.get(name, []) if r["sending_mta_ip"]][:TOP_N],
            delivery_impact=impact.get(name, {}),
        )
        if previous is not None:
            _add_change(summary, previous.get(name), previous["__period__"])
        domains.append(summary)
    return Summary(since=filters.since, until=filters.until, domains=domains)


def policy_mode(policy_string: list[str] | None) -> str | None:
    """The ``mode`` of an MTA-STS policy text (RFC 8461 s3.2; the first one counts)."""
    for line in policy_string or ():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "mode":
            return value.strip().lower()
    return None


def _delivery_impact(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Failed sessions by what happened to the mail, per domain.

    MTA-STS ``testing`` and no policy at all: the sender delivered anyway.  MTA-STS
    ``enforce`` and DANE (``tlsa``, also when it applied to the same sessions as an MTA-STS
    policy in testing): the sender would not deliver over that connection, so the mail was
    deferred and, if it went on failing, bounced.  An MTA-STS entry without its policy text
    (Mail.ru sends none): unknown.
    """
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        ptype, mode = row["policy_type"], policy_mode(row["policy_string"])
        failed, dane = int(row["failed_sessions"]), int(row["dane_failed"])
        if ptype == "tlsa" or (ptype == "sts" and mode == "enforce"):
            kinds = {"deferred_or_bounced": failed}
        elif ptype == "no-policy-found" or mode in ("testing", "none"):
            kinds = {"deferred_or_bounced": dane, "delivered_anyway": failed - dane}
        else:
            kinds = {"deferred_or_bounced": dane, "unknown": failed - dane}
        impact = out.setdefault(row["policy_domain"], {})
        for kind, n in kinds.items():
            if n:
                impact[kind] = impact.get(kind, 0) + n
    return out


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "policy_domain"}
    out["failed_sessions"] = int(out["failed_sessions"])
    return out


def _by_domain(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["policy_domain"], []).append(row)
    return out


def _previous_period(store: Store, filters: Filters) -> dict[str, Any] | None:
    """Totals for the period of the same length just before the asked one."""
    since, until = filters.since, filters.until
    if since is None or until is None:
        first, last = day_bounds(store, filters)
        since, until = since or first, until or last
    if since is None or until is None or (filters.since is None and filters.until is None):
        return None  # the whole history was asked for: nothing comes before it
    length = (until - since).days + 1
    if (since - date.min).days < length:
        return None  # a period that long does not fit before it (nor could reports be there)
    prev = filters.with_dates(since - timedelta(days=length), since - timedelta(days=1))
    out: dict[str, Any] = {r["policy_domain"]: r for r in session_totals(store, prev)}
    out["__period__"] = (prev.since, prev.until)
    return out


def _add_change(summary: DomainSummary, row: dict[str, Any] | None,
                period: tuple[date, date]) -> None:
    ok = int(row["successful_sessions"]) if row else 0
    failed = int(row["failed_sessions"]) if row else 0
    summary.previous = Period(since=period[0], until=period[1],
                              reports=int(row["reports"]) if row else 0,
                              successful_sessions=ok, failed_sessions=failed,
                              success_rate=rate(ok, failed))
    if row:
        summary.change_failed_sessions = summary.failed_sessions - failed
        if summary.success_rate is not None and summary.previous.success_rate is not None:
            summary.change_success_rate = round(
                summary.success_rate - summary.previous.success_rate, 6)


# -- plain language ---------------------------------------------------------------------------
_ORG_SUFFIX = re.compile(r",?\s+(Inc\.?|Corporation|Corp\.?|LLC|Ltd\.?|GmbH|AG|S\.A\.)$", re.I)


def short_org(name: str) -> str:
    return _ORG_SUFFIX.sub("", name).strip() or name


def percent(value: float | None, *, failures: int = 0) -> str:
    if value is None:
        return "n/a"
    pct = value * 100
    text = f"{pct:.1f}"
    if failures and text == "100.0":
        text = f"{pct:.2f}" if f"{pct:.2f}" != "100.00" else ">99.99"
    return text.removesuffix(".0") + "%"


def _where(row: dict[str, Any]) -> str:
    host, ip = row.get("receiving_mx_hostname"), row.get("receiving_ip")
    if host and ip:
        return f" on {host} ({ip})"
    if host or ip:
        return f" on {host or ip}"
    return ""


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def paragraph(d: DomainSummary, *, max_causes: int = 3) -> str:
    """One plain-English paragraph: how many sessions succeeded, what failed where, what it
    meant for delivery, and what to do.

    RFC 8460 counts a session as successful when TLS was negotiated and, under an MTA-STS
    or DANE policy, validated; most failures (certificates, policy fetches) still used TLS.
    """
    total = d.total_sessions
    parts = [f"{d.policy_domain}: {percent(d.success_rate, failures=d.failed_sessions)} of "
             f"{total:,} session{'s' if total != 1 else ''} succeeded (TLS negotiated and, "
             f"where a policy applied, validated; {d.reports:,} "
             f"report{'s' if d.reports != 1 else ''} from "
             f"{', '.join(short_org(o) for o in d.organizations)})."]
    if d.previous is not None and d.previous.success_rate is not None:
        parts.append(f"The period before: {percent(d.previous.success_rate)} of "
                     f"{d.previous.successful_sessions + d.previous.failed_sessions:,}.")
    if not d.failed_sessions:
        parts.append("No failures were reported.")
    parts += _impact_sentences(d.delivery_impact)
    # Some senders' failure details add up to more than their failed total: then speak of
    # failure records, never of more failed sessions than the domain had.
    records = d.failure_records > d.failed_sessions
    unit = "failure record" if records else "session"
    for row in d.failure_sources[:max_causes]:
        e = explain(row["result_type"], domain=d.policy_domain)
        n = int(row["failed_sessions"])
        code = _reason(row.get("failure_reason_code"), d.policy_domain)
        verb = "with" if records else "failing with"
        parts.append(f"{short_org(row['organization_name'])} reported {n:,} {unit}"
                     f"{'s' if n != 1 else ''} {verb} {row['result_type']}{_where(row)}"
                     f"{code}: {e.fix}.")
    if records:
        parts.append(f"(The failure details add up to {d.failure_records:,}, more than the "
                     f"{d.failed_sessions:,} failed session"
                     f"{'s' if d.failed_sessions != 1 else ''} the summaries give.)")
    if len(d.failure_sources) > max_causes:
        parts.append(f"More causes: tlswatch failures --domain {d.policy_domain}.")
    # Report values are untrusted: no line break, control or bidi character reaches a
    # terminal, a page or a chat as itself (our own words have none), so a paragraph is
    # always one line.
    return line_text(" ".join(parts))


def _reason(code: str | None, domain: str) -> str:
    """The reason code a reporter gave, and what it means when the catalogue knows it."""
    if not code:
        return ""
    known = explain_reason(code)
    if known is None:
        return f" (reason given: {_clip(code)!r})"
    cause = known.cause.replace("<domain>", domain)
    return f" (reason given: {_clip(code)!r}: {cause}; {_SIDE[known.side]})"


_SIDE = {"receiving domain": "yours to fix", "sender": "the sender's to fix",
         "middlebox": "a middlebox's doing"}


def _impact_sentences(impact: dict[str, int]) -> list[str]:
    said = []
    if impact.get("delivered_anyway"):
        n = impact["delivered_anyway"]
        said.append(f"{n:,} failed session{'s were' if n != 1 else ' was'} delivered anyway "
                    "(MTA-STS in testing mode, or no policy).")
    if impact.get("deferred_or_bounced"):
        n = impact["deferred_or_bounced"]
        said.append(f"{n:,} failed session{'s were' if n != 1 else ' was'} not delivered over "
                    "that connection (MTA-STS enforce or DANE): deferred, and bounced if it "
                    "went on failing.")
    if impact.get("unknown"):
        n = impact["unknown"]
        said.append(f"For {n:,} failed session{'s' if n != 1 else ''} the report gives no "
                    "MTA-STS mode, so whether the mail was delivered is not known.")
    return said
