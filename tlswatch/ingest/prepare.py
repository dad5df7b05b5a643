"""Per input, pure CPU work: read, decode, check DKIM, validate, flatten into row tuples.

Runs in the loader's process or in worker processes, so everything it returns is plain
data that pickles cheaply.  The counting rule (``counting``) is decided here, per report.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from tlswatch.config import Settings
from tlswatch.errors import ReportError
from tlswatch.ingest import counting
from tlswatch.ingest.decode import DEFAULT_LIMITS, Document, Limits, decode
from tlswatch.ingest.dkim import DkimResult, DnsFunc
from tlswatch.ingest.dkim import verify as verify_dkim
from tlswatch.ingest.rows import DetailRow, PolicyRow, ReportRow
from tlswatch.ingest.sources import FileRef, Input, Item, expand
from tlswatch.ingest.validate import UNATTRIBUTED, ValidReport, validate


class Prepared(NamedTuple):
    """One validated report as plain row tuples, keys not yet assigned (cheap to pickle)."""

    key: tuple[str, str]
    source: str
    report: ReportRow
    raw_gzip: bytes
    policies: list[tuple[PolicyRow, list[DetailRow]]]


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
    refused_hint: str = "setting 'domains'"  # why a stranger's domain is refused


DEFAULT_OPTIONS = Options()


def options_from(settings: Settings) -> Options:
    """The checks that the settings ask for."""
    return Options(
        limits=Limits(max_input_bytes=settings.max_input_bytes,
                      max_inflated_bytes=settings.max_inflated_bytes,
                      max_json_depth=settings.max_json_depth,
                      max_policies=settings.max_policies,
                      max_failure_details=settings.max_failure_details,
                      max_mime_depth=settings.max_mime_depth),
        domains=frozenset(d.lower().rstrip(".") for d in settings.domains),
        dkim=settings.dkim, dns_timeout=settings.dns_timeout)
Outcome = tuple[list[Prepared], list[Quarantined]]


def check(item: Input, options: Options = DEFAULT_OPTIONS) -> tuple[list[str], list[str]]:
    """What a receiver needs before it acknowledges: the report-ids that will load and the
    reasons anything will not.  The same checks as ``prepare``, without flattening."""
    try:
        documents = decode(item.data, source=item.source, filename=item.filename,
                           url_domain=item.domain, limits=options.limits)
    except ReportError as exc:
        return [], [exc.detail]
    except Exception as exc:  # never a 500 for a hostile body: a refusal naming what broke
        return [], [_unforeseen(exc)]
    ids, reasons = [], []
    for doc in documents:
        try:
            valid = validate(doc)
            _check_domains(valid, options.domains, options.refused_hint)
            ids.append(valid.report["report-id"])
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
        return _prepare_input(item, options)
    except Exception as exc:  # a hostile input found a path we did not foresee: refuse it alone
        return [], [Quarantined(item.source, _unforeseen(exc), item.data)]


def _unforeseen(exc: Exception) -> str:
    return f"unreadable input ({type(exc).__name__}: {str(exc)[:200]})"


def _prepare_input(item: Input, options: Options) -> Outcome:
    try:
        documents = decode(item.data, source=item.source, filename=item.filename,
                           url_domain=item.domain, limits=options.limits)
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
            _check_domains(valid, options.domains, options.refused_hint)
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


def is_ours(domain: str, domains: frozenset[str]) -> bool:
    """Whether the setting ``domains`` covers ``domain``: listed as it is, or under a
    ``*.parent`` entry, which covers every subdomain of parent (at any depth), not parent."""
    if domain in domains:
        return True
    labels = domain.split(".")
    return any(f"*.{'.'.join(labels[i:])}" in domains for i in range(1, len(labels)))


def _check_domains(valid: ValidReport, domains: frozenset[str],
                   hint: str = "setting 'domains'") -> None:
    if not domains:
        return
    # Entries no source attributes are kept (a refusal would lose them), not a stranger's.
    strangers = sorted(d for d in {p.policy_domain for p in valid.policies} - {UNATTRIBUTED}
                       if not is_ours(d, domains))
    if strangers:
        raise ReportError(valid.source, f"not one of our domains: {', '.join(strangers)} "
                          f"({hint})")


def _flatten(vr: ValidReport, via: str, signature: DkimResult | None) -> Prepared:
    r, c = vr.report, vr.container
    day = vr.start.date()
    org = r["organization-name"]
    entries = r["policies"]
    decision = counting.ALONE if len(entries) == 1 else counting.decide([
        counting.Entry(facts.policy_domain, entry["policy"]["policy-type"],
                       entry["summary"]["total-successful-session-count"],
                       entry["summary"]["total-failure-session-count"])
        for entry, facts in zip(entries, vr.policies, strict=True)])
    policies = []
    for index, (entry, facts) in enumerate(zip(entries, vr.policies, strict=True)):
        ptype, domain = entry["policy"]["policy-type"], facts.policy_domain
        counted = decision.counted[index]
        details = [DetailRow(
            report_pk=0, policy_pk=0, detail_index=d_index, day=day,
            organization_name=org, policy_type=ptype, policy_domain=domain,
            result_type=d["result-type"], sending_mta_ip=d.get("sending-mta-ip"),
            receiving_mx_hostname=d.get("receiving-mx-hostname"),
            receiving_mx_helo=d.get("receiving-mx-helo"), receiving_ip=d.get("receiving-ip"),
            failed_session_count=d["failed-session-count"],
            additional_information=d.get("additional-information")
            or d.get("additional-info-uri"),
            failure_reason_code=d.get("failure-reason-code"), counted=counted)
            for d_index, d in enumerate(entry.get("failure-details") or ())]
        summary = entry["summary"]
        policies.append((PolicyRow(
            policy_pk=0, report_pk=0, policy_index=index, day=day,
            organization_name=org, policy_type=ptype, policy_domain=domain,
            policy_string=facts.policy_string, mx_host=facts.mx_host,
            successful_sessions=summary["total-successful-session-count"],
            failed_sessions=summary["total-failure-session-count"],
            counted=counted, counting=decision.counting[index]), details))
    row = ReportRow(
        report_pk=0, organization_name=org, report_id=r["report-id"],
        contact_info=r.get("contact-info"), start_datetime=vr.start, end_datetime=vr.end,
        day=day, source=vr.source, filename=c.filename, message_id=c.message_id,
        header_report_domain=c.report_domain, header_submitter=c.submitter,
        subject_report_id=c.subject_report_id, warnings=vr.warnings, received_via=via,
        dkim_result=signature.result if signature else None,
        dkim_domain=signature.domain if signature else None, received_at=_EPOCH,
        content_sha256=vr.digest)
    raw = vr.raw_gzip if vr.raw_gzip is not None else gzip.compress(vr.raw_json, 6)
    return Prepared((org, r["report-id"]), vr.source, row, raw, policies)


_EPOCH = datetime(1970, 1, 1)  # replaced by the time of the write
