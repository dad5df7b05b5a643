"""The failure-reason-code catalogue: every entry explains its own examples, real codes are
explained, unknown or hostile text gets nothing, and matching stays bounded."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

# The regular-expression parser (Python 3.11+), to inspect the catalogue's patterns.
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import pytest

from tests.conftest import REFERENCE, ROOT, VALID
from tlswatch.analytics.reasons import (
    CATALOGUE,
    MAX_REASON_CHARS,
    ReasonInfo,
    catalogue_markdown,
    explain_reason,
)

SIDES = {"receiving domain", "sender", "middlebox"}

# Codes real senders put in published reports, as sent.
REAL_CODES = {
    "MX_HOSTS_MISMATCH": "Microsoft",  # Microsoft report published on r/email, 2025-12
    "VALIDATION_FAILURE": "Microsoft",  # the same report
    "bad https response code: 404": "Mail.ru",  # parsedmarc's Mail.ru sample
    "bad https response code: 500": "Mail.ru",  # the same sample
    "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED": "RFC 8460 example",  # RFC 8460's own report
}


def test_every_entry_is_complete_and_explains_its_own_examples() -> None:
    assert 25 <= len(CATALOGUE) <= 60
    for entry in CATALOGUE:
        assert entry.cause and entry.fix and entry.source and entry.sender, entry.rule
        assert entry.side in SIDES, entry.rule
        assert entry.examples, entry.rule
        for example in entry.examples:
            assert len(example) <= MAX_REASON_CHARS
            assert explain_reason(example) is entry, (entry.rule, example)


def test_exact_codes_are_unique_and_regexes_compile() -> None:
    exact = [e.rule.casefold() for e in CATALOGUE if not e.regex]
    assert len(exact) == len(set(exact))
    for entry in CATALOGUE:
        if entry.regex:
            re.compile(entry.rule)


def _unbounded(tree: Any) -> bool:
    """Whether a parsed pattern holds a repeat without an upper bound (``*``, ``+``, ``{n,}``),
    at any depth."""
    if isinstance(tree, (list, tuple, sre_parse.SubPattern)):
        items = list(tree)
        if len(items) == 2 and str(items[0]).endswith("REPEAT"):  # (op, (low, high, sub))
            _low, high, sub = items[1]
            return high == sre_parse.MAXREPEAT or _unbounded(sub)
        return any(_unbounded(item) for item in items)
    return False


def test_no_pattern_can_backtrack_without_bound() -> None:
    assert not _unbounded(sre_parse.parse("a{1,5}(?:b|c)?"))
    assert _unbounded(sre_parse.parse("(?:a|(?:bc)+)?"))  # the check sees nested repeats
    assert _unbounded(sre_parse.parse("x(?:y{2,})?"))
    for entry in CATALOGUE:
        if entry.regex:
            assert not _unbounded(sre_parse.parse(entry.rule)), entry.rule


@pytest.mark.parametrize("code", sorted(REAL_CODES))
def test_real_codes_from_published_reports_are_explained(code: str) -> None:
    info = explain_reason(code)
    assert info is not None and info.sender == REAL_CODES[code]


@pytest.mark.parametrize(("code", "side", "words"), [
    ("mx_hosts_mismatch", "receiving domain", "mx line"),
    ("  X509_V_ERR_CERT_HAS_EXPIRED\n", "receiving domain", "expired"),
    ("self_signed_certificate", "receiving domain", "self-signed"),  # OpenSSL 1.1 wording
    ("all-fingerprints-unusable", "sender", "fingerprints"),
    ("no-system-roots", "sender", "root"),
    ("tls: failed to verify certificate: x509: certificate signed by unknown authority "
     '(possibly because of "crypto/rsa: verification error" while trying to verify candidate '
     'authority certificate "R3")', "receiving domain", "chain to a root"),
    ("tls: first record does not look like a TLS handshake", "middlebox", "proxy"),
    ('Get "https://mta-sts.example.org/.well-known/mta-sts.txt": x509: certificate has expired '
     "or is not yet valid: current time 2026-11-25T10:00:00Z is after 2026-11-20T23:59:59Z",
     "receiving domain", "MTA-STS policy web server"),
    ("x509: certificate has expired or is not yet valid: current time 2026-11-25T10:00:00Z",
     "receiving domain", "MX's certificate has expired"),
    ("no-policy-served+fallback-to-cached-policy", "receiving domain", "no policy is served"),
])
def test_codes_are_matched_as_senders_write_them(code: str, side: str, words: str) -> None:
    info = explain_reason(code)
    assert info is not None and info.side == side and words in info.cause, info


def _codes_in(value: Any) -> set[str]:
    """Every failure-reason-code string in a report, however deeply nested."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "failure-reason-code" and isinstance(item, str):
                found.add(item)
            found |= _codes_in(item)
    elif isinstance(value, list):
        for item in value:
            found |= _codes_in(item)
    return found


def _json_codes(path: Path) -> set[str]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return _codes_in(json.loads(data.decode("utf-8-sig")))


def test_codes_in_the_corpus_from_real_senders_are_explained() -> None:
    codes = _json_codes(VALID / "mailru" / "example.net-2026-11-25.json")
    assert len(codes) == 2
    for code in codes:
        assert explain_reason(code) is not None, code


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/reference/reports not present")
def test_codes_in_the_shared_reference_reports_are_explained() -> None:
    codes: set[str] = set()
    for path in sorted(REFERENCE.glob("*.json")):
        codes |= _json_codes(path)
    assert codes, "the reference reports hold failure reason codes"
    assert {c for c in codes if explain_reason(c) is None} == set()


@pytest.mark.parametrize("code", [
    None, "", "   ", "\x00", "unknown-code", "MX_HOSTS_MISMATCH_EXTRA", "XMX_HOSTS_MISMATCH",
    "MX_HOSTS_MISMATCH\x00<script>", "\u202eMX_HOSTS_MISMATCH", "<script>alert(1)</script>",
    "'; DROP TABLE failure_details; --", "{{ 7*7 }}", "${jndi:ldap://x}", "(a+)+$",
    "bad https response code: 4040", "bad https response code: 40",
    "smtp-starttls-reply-code-4541", "dns-extended-error-6-" + "a" * 61,
    "tls-remote-alert-40-" + "x" * 61, "X509_V_ERR_", "x509:", "validation-failure",
    "peer offered TLS 1.0 only",  # the team corpus's invented code: unknown on purpose
])
def test_unknown_and_hostile_codes_get_no_explanation(code: str | None) -> None:
    assert explain_reason(code) is None


def test_a_result_is_always_a_catalogue_entry_never_the_input() -> None:
    hostile = "<b>x509: certificate signed by unknown authority</b>"
    info = explain_reason(hostile)
    assert isinstance(info, ReasonInfo) and info in CATALOGUE
    assert all("<b>" not in field for field in (info.cause, info.fix, info.source))


@pytest.mark.parametrize("code", [
    "a" * 2**20,
    "x509: certificate " * (2**20 // 18),
    'Get "https://mta-sts.' * (2**20 // 21),
    "dns-extended-error-1-" + "-" * 2**20,
    "lookup " * (2**20 // 7),
])
def test_a_megabyte_of_near_misses_returns_none(code: str) -> None:
    assert len(code) >= 2**20 - 64
    assert explain_reason(code) is None


def test_only_the_first_characters_are_looked_at() -> None:
    known = "x509: certificate signed by unknown authority"
    assert explain_reason(known + " " * 2**20) is not None
    assert explain_reason("a" * MAX_REASON_CHARS + known) is None


def test_docs_page_lists_every_entry_and_is_up_to_date() -> None:
    page = (ROOT / "docs" / "reason-codes.md").read_text(encoding="utf-8")
    assert page == catalogue_markdown(), "run: python tools/reason_codes_page.py"
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert len(rows) == len(CATALOGUE)
    for entry, row in zip(CATALOGUE, rows, strict=True):
        assert entry.rule.replace("|", "\\|") in row and entry.side in row
        assert entry.source.replace("*", "\\*") in row
