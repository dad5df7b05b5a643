"""A report seen again: an ordinary duplicate, or a conflicting one that must not hide the first.

A report is identified by (organization-name, report-id).  The same content again (by mail
and by HTTPS, or a retry) is an ordinary duplicate, stored once.  Different content under a
known key is a *conflicting duplicate*: anyone can send a report naming Google and an
existing report-id, so the first one stays and the newcomer is quarantined, unless the
newcomer is vouched for and the stored one is not: a DKIM pass (RFC 8460 section 3) by a
domain that the report's own contact-info belongs to (a pass by any domain would let a
forger sign with their own and claim to be Google); then the newcomer is stored and the
displaced one is quarantined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

CONFLICT = "conflicting duplicate"


class Candidate(NamedTuple):
    """What de-duplication needs of one report about to be loaded."""

    key: tuple[str, str]  # organization-name, report-id
    source: str
    digest: str
    dkim_result: str | None
    dkim_domain: str | None
    contact_info: str | None
    position: int  # its row in the batch


@dataclass(frozen=True, slots=True)
class Stored:
    """What the store knows of a report already loaded."""

    report_pk: int
    digest: str | None  # None: loaded before digests were kept; taken as the same content
    dkim_result: str | None
    source: str | None
    dkim_domain: str | None = None
    contact_info: str | None = None


@dataclass
class Plan:
    """What to do with one batch of prepared reports."""

    fresh: list[Candidate] = field(default_factory=list)
    duplicates: list[Candidate] = field(default_factory=list)
    refused: list[tuple[Candidate, str]] = field(default_factory=list)  # conflicting, why
    displaced: dict[int, str] = field(default_factory=dict)  # stored report_pk -> reason


def plan(reports: Sequence[Candidate], stored: dict[tuple[str, str], Stored]) -> Plan:
    """Sort a batch into fresh reports, duplicates and conflicts (see the module text)."""
    out = Plan()
    first: dict[tuple[str, str], Stored | Candidate] = dict(stored)
    for report in reports:
        incumbent = first.get(report.key)
        if incumbent is None:
            first[report.key] = report
            out.fresh.append(report)
        elif incumbent.digest in (None, report.digest):
            out.duplicates.append(report)
        elif _signed(report) and not _signed(incumbent):
            first[report.key] = report
            out.fresh.append(report)
            reason = (f"{CONFLICT}: displaced by a DKIM-signed report with the same "
                      f"organization-name and report-id ({report.source})")
            if isinstance(incumbent, Stored):
                out.displaced[incumbent.report_pk] = reason
            else:
                out.fresh.remove(incumbent)
                out.refused.append((incumbent, reason))
        else:
            out.refused.append((report, (
                f"{CONFLICT}: {report.key[0]!r} report-id {report.key[1]!r} is already "
                f"stored with different content (from {_source(incumbent)}); the first one "
                "is kept")))
    return out


def _signed(report: Stored | Candidate) -> bool:
    """A DKIM pass by the domain of the report's contact-info (or a parent of it)."""
    if report.dkim_result != "pass" or not report.dkim_domain or not report.contact_info:
        return False
    contact = report.contact_info.rpartition("@")[2].strip().lower().rstrip(".")
    signer = report.dkim_domain.lower().rstrip(".")
    return contact == signer or contact.endswith("." + signer)


def _source(report: Stored | Candidate) -> str:
    return (report.source or f"stored report {report.report_pk}") \
        if isinstance(report, Stored) else report.source
