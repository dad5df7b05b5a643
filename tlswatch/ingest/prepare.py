"""Per input, pure CPU work: read, decode, check DKIM, validate, flatten into row tuples.

Runs in the loader's process or in worker processes, so everything it returns is plain
data that pickles cheaply.  The counting rule of DESIGN.md is decided here, per report.
"""

from __future__ import annotations

import collections
import gzip
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from tlswatch.config import Settings
from tlswatch.errors import ReportError
from tlswatch.ingest.decode import DEFAULT_LIMITS, Document, Limits, decode
from tlswatch.ingest.dkim import DkimResult, DnsFunc
from tlswatch.ingest.dkim import verify as verify_dkim
from tlswatch.ingest.sources import FileRef, Input, Item, expand
from tlswatch.ingest.validate import ValidReport, validate


class Prepared(NamedTuple):
    """One validated report as plain row tuples, keys not yet assigned (cheap to pickle)."""

    key: tuple[str, str]
    source: str
    report_row: tuple[Any, ...]
    raw_gzip: bytes
    policies: list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]


class Quarantined(NamedTuple):
    """An input (or one report of it) that cannot be loaded, with its bytes and why.

    ``transient`` ones (a DKIM key that could not be looked up while DKIM is required) are
    not quarantined: they are tried again later.
    """

    source: str
    reason: str
    data: bytes
    transient: bool = False


@dataclass(frozen=True)
class Options:
    """What ``prepare`` checks besides the report itself (built from the settings)."""

    limits: Limits = DEFAULT_LIMITS
    domains: frozenset[str] = frozenset()  # empty: every domain is ours
    dkim: str = "record"  # record | require
    dns_timeout: float = 5.0
    dnsfunc: DnsFunc | None = None  # tests answer key lookups here (workers=1 then)


DEFAULT_OPTIONS = Options()


def options_from(settings: Settings) -> Options:
    """The checks that the settings ask for."""
    return Options(
        limits=Limits(max_input_bytes=settings.max_input_bytes,
                      max_inflated_bytes=settings.max_inflated_bytes,
                      max_json_depth=settings.max_json_depth),
        domains=frozenset(d.lower().rstrip(".") for d in settings.domains),
        dkim=settings.dkim, dns_timeout=settings.dns_timeout)
Outcome = tuple[list[Prepared], list[Quarantined]]


def check(item: Input, options: Options = DEFAULT_OPTIONS) -> tuple[list[str], list[str]]:
    """What a receiver needs before it acknowledges: the report-ids that will load and the
    reasons anything will not.  The same checks as ``prepare``, without flattening."""
    try:
        documents = decode(item.data, source=item.source, filename=item.filename,
                           limits=options.limits)
    except ReportError as exc:
        return [], [exc.detail]
    ids, reasons = [], []
    for doc in documents:
        try:
            valid = validate(doc)
            _check_domains(valid, options.domains)
            ids.append(valid.report.report_id)
        except ReportError as exc:
            reasons.append(exc.detail)
    return ids, reasons


def prepare(item: Item, options: Options = DEFAULT_OPTIONS) -> Outcome:
    """Read, decode, validate and flatten one input; runs in worker processes."""
    if isinstance(item, FileRef):
        good: list[Prepared] = []
        bad: list[Quarantined] = []
        for part in expand(item, max_bytes=options.limits.max_input_bytes):
            more_good, more_bad = prepare(part, options)
            good += more_good
            bad += more_bad
        return good, bad
    if isinstance(item, ReportError):
        return [], [Quarantined(item.source, item.detail, b"")]
    try:
        documents = decode(item.data, source=item.source, filename=item.filename,
                           limits=options.limits)
    except ReportError as exc:
        return [], [Quarantined(exc.source, exc.detail, item.data)]
    signature = _dkim(item, documents, options)
    if signature is not None and signature.result != "pass" and options.dkim == "require":
        reason = f"DKIM {signature.result}: {signature.detail}"
        transient = signature.result == "temperror"
        return [], [Quarantined(item.source, reason, item.data, transient)]
    good = []
    bad = []
    for doc in documents:
        try:
            valid = validate(doc)
            _check_domains(valid, options.domains)
            good.append(_flatten(valid, item.via, signature))
        except ReportError as exc:
            bad.append(Quarantined(exc.source, exc.detail, item.data))
    return good, bad


def _dkim(item: Input, documents: list[Document], options: Options) -> DkimResult | None:
    if not documents or not documents[0].container.message:
        return None  # a bare report: nothing signed it
    container = documents[0].container
    return verify_dkim(item.data, reporting_domain=container.submitter or container.sender_domain,
                       dnsfunc=options.dnsfunc, timeout=options.dns_timeout)


def _check_domains(valid: ValidReport, domains: frozenset[str]) -> None:
    if not domains:
        return
    strangers = sorted({p.policy_domain for p in valid.policies} - domains)
    if strangers:
        raise ReportError(valid.source, f"not one of our domains: {', '.join(strangers)} "
                          "(setting 'domains')")


def prepare_chunk(items: list[Item], options: Options) -> list[Outcome]:
    return [prepare(item, options) for item in items]


def _largest(sums: dict[tuple[Any, ...], int]) -> dict[tuple[Any, ...], str]:
    """For each group key (all but the last part), the policy type with the largest sum."""
    best: dict[tuple[Any, ...], tuple[int, str]] = {}
    for (*group, ptype), total in sums.items():
        key = tuple(group)
        if key not in best or total > best[key][0]:  # ties: the type listed first
            best[key] = (total, ptype)
    return {key: ptype for key, (_, ptype) in best.items()}


def _always(*_: str) -> bool:
    return True


def _counting_rule(vr: ValidReport) -> tuple[Callable[..., bool], Callable[..., bool],
                                             Callable[..., bool]]:
    """DESIGN.md's rule for one report: sum within a policy type, count the largest type.

    Returns predicates saying whether a (domain, type) policy row counts for successful and
    for failed sessions, and whether a (domain, result type, type) failure row counts.
    """
    policies = vr.report.policies
    if len(policies) == 1:
        return _always, _always, _always
    ok: dict[tuple[Any, ...], int] = collections.defaultdict(int)
    failed: dict[tuple[Any, ...], int] = collections.defaultdict(int)
    by_result: dict[tuple[Any, ...], int] = collections.defaultdict(int)
    for entry, facts in zip(policies, vr.policies, strict=True):
        ptype, domain = entry.policy.policy_type, facts.policy_domain
        ok[domain, ptype] += entry.summary.total_successful_session_count
        failed[domain, ptype] += entry.summary.total_failure_session_count
        for d in entry.failure_details or ():
            by_result[domain, d.result_type, ptype] += d.failed_session_count
    best_ok, best_failed, best_result = _largest(ok), _largest(failed), _largest(by_result)
    return (lambda domain, ptype: best_ok[(domain,)] == ptype,
            lambda domain, ptype: best_failed[(domain,)] == ptype,
            lambda domain, rtype, ptype: best_result[domain, rtype] == ptype)


def _flatten(vr: ValidReport, via: str, signature: DkimResult | None) -> Prepared:
    r, c = vr.report, vr.container
    day = vr.start.date()
    counts_ok, counts_failed, counts_result = _counting_rule(vr)
    policies = []
    for entry, facts in zip(r.policies, vr.policies, strict=True):
        ptype, domain = entry.policy.policy_type, facts.policy_domain
        common = (day, r.organization_name, ptype, domain)
        summary = entry.summary
        details = [(*common, d.result_type, d.sending_mta_ip, d.receiving_mx_hostname,
                    d.receiving_mx_helo, d.receiving_ip, d.failed_session_count,
                    d.additional_information or d.additional_info_uri, d.failure_reason_code,
                    counts_result(domain, d.result_type, ptype))
                   for d in entry.failure_details or ()]
        policies.append(((*common, facts.policy_string, facts.mx_host,
                          summary.total_successful_session_count,
                          summary.total_failure_session_count,
                          counts_ok(domain, ptype), counts_failed(domain, ptype)), details))
    row = (r.organization_name, r.report_id, r.contact_info, vr.start, vr.end, day, vr.source,
           c.filename, c.message_id, c.report_domain, c.submitter, c.subject_report_id,
           vr.warnings, via, signature.result if signature else None,
           signature.domain if signature else None)
    raw = vr.raw_gzip if vr.raw_gzip is not None else gzip.compress(vr.raw_json, 6)
    return Prepared((r.organization_name, r.report_id), vr.source, row, raw, policies)
