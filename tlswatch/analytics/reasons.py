"""Explain a TLS-RPT failure-reason-code from a curated catalogue of codes real senders use.

RFC 8460 section 4.3 leaves ``failure-reason-code`` free text, so each sender writes its own
(Microsoft's upper-case codes, Postfix's OpenSSL texts, Go error texts, ...).  A code the
catalogue does not know gets no explanation: it stays data, shown as sent, never
interpreted.  Matching is bounded: only the first ``MAX_REASON_CHARS`` characters are looked
at, and the catalogue's regular expressions have no unbounded quantifier.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tlswatch.analytics.reason_entries import ENTRIES, Entry, Side

__all__ = ["CATALOGUE", "MAX_REASON_CHARS", "ReasonInfo", "Side", "catalogue_markdown",
           "explain_reason"]

# Real Go texts listing many certificate names stay well below this.
MAX_REASON_CHARS = 2048


@dataclass(frozen=True, slots=True)
class ReasonInfo:
    """What a failure-reason-code means, from one catalogue entry."""

    rule: str  # the exact code, or the regular expression when ``regex``
    regex: bool
    sender: str  # who is known to send it
    cause: str
    fix: str
    side: Side  # whose side the fault is on
    source: str  # where the meaning comes from
    examples: tuple[str, ...]


def _info(entry: Entry) -> ReasonInfo:
    return ReasonInfo(entry.rule, entry.regex, entry.sender, entry.cause, entry.fix,
                      entry.side, entry.source, entry.examples)


CATALOGUE: tuple[ReasonInfo, ...] = tuple(_info(e) for e in ENTRIES)
_EXACT: dict[str, ReasonInfo] = {}
for _entry in CATALOGUE:
    if not _entry.regex:
        _EXACT.setdefault(_entry.rule.casefold(), _entry)
_PATTERNS: tuple[tuple[re.Pattern[str], ReasonInfo], ...] = tuple(
    (re.compile(e.rule, re.IGNORECASE), e) for e in CATALOGUE if e.regex)


def explain_reason(code: str | None) -> ReasonInfo | None:
    """The catalogue entry for a failure-reason-code, or None when it is unknown or absent.

    Exact codes compare case-insensitively; free texts are searched with the entry's
    regular expression.  The first matching entry wins."""
    if not isinstance(code, str):
        return None
    text = code[:MAX_REASON_CHARS].strip()
    if not text:
        return None
    exact = _EXACT.get(text.casefold())
    if exact is not None:
        return exact
    for pattern, info in _PATTERNS:
        if pattern.search(text):
            return info
    return None


def _cell(value: str, *, code: bool = False) -> str:
    # GitHub tables: a cell ends at '|', even inside a code span, unless escaped; outside
    # code spans a '*' (as in "'*.' pattern") would start emphasis.
    value = value.replace("|", "\\|").replace("\n", " ")
    return value if code else value.replace("*", "\\*")


def catalogue_markdown() -> str:
    """The user-facing page listing every catalogue entry with its source."""
    lines = [
        "# Failure reason codes",
        "",
        "RFC 8460 lets a sender add a free-text `failure-reason-code` to each failure. "
        "tlswatch explains the codes below, which real senders are known to use. A code not "
        "listed here is shown exactly as sent, without explanation.",
        "",
        "*Rule* is the exact code (compared without regard to case) or, marked *regex*, a "
        "regular expression searched in the text (also without regard to case); only the "
        f"first {MAX_REASON_CHARS:,} characters of a code are looked at, and the first "
        "matching rule wins. *Side* says whose side the fault is on: the receiving domain "
        "(yours), the sender, or a middlebox between them.",
        "",
        "This page is generated from `tlswatch/analytics/reason_entries.py` by "
        "`python tools/reason_codes_page.py`; a test checks that it is up to date.",
        "",
        "| Rule | Sent by | Cause | Fix | Side | Source |",
        "|---|---|---|---|---|---|",
    ]
    for e in CATALOGUE:
        rule = f"`{_cell(e.rule, code=True)}`" + (" (regex)" if e.regex else "")
        lines.append(f"| {rule} | {_cell(e.sender)} | {_cell(e.cause)} | {_cell(e.fix)} "
                     f"| {e.side} | {_cell(e.source)} |")
    return "\n".join(lines) + "\n"
