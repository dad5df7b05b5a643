"""The SMTP sessions the tests report through sys4 tlsrpt-reporter, and what must be stored.

Each session is one libtlsrpt datagram (what Postfix 3.10+ sends to tlsrpt-collectd): the
domain delivered to, its ``_smtp._tls`` record text (``rua`` is read from it, so no DNS is
needed) and the policies the session used.  Policy types are libtlsrpt's numbers: 1 tlsa,
2 sts, 9 no-policy-found; result codes are its numbers (201 starttls-not-supported ...).
A no-policy-found session carries no ``policy-domain`` (Postfix passes NULL) unless the
layout says ``""``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TLSA, STS, NO_POLICY = 1, 2, 9
NULL = None  # no policy-domain key at all, as libtlsrpt writes a NULL policy domain

RESULT_CODES = {"starttls-not-supported": 201, "certificate-host-mismatch": 202,
                "certificate-not-trusted": 203, "certificate-expired": 204,
                "validation-failure": 205, "sts-policy-fetch-error": 301,
                "sts-policy-invalid": 302, "sts-webpki-invalid": 303, "tlsa-invalid": 304,
                "dnssec-invalid": 305, "dane-required": 306}


def sts_policy(domain: str) -> dict[str, Any]:
    mx = f"mx1.{domain}"
    return {"policy-type": STS, "policy-domain": domain,
            "policy-string": ["version: STSv1", "mode: enforce", f"mx: {mx}", "max_age: 604800"],
            "mx-host": [mx]}


TLSA_RECORD = "3 1 1 0C72AC70B745AC19998811B131D662C9AC69DBDBE7CB23E5B514B56664C5D3D6"


def tlsa_policy(domain: str) -> dict[str, Any]:
    return {"policy-type": TLSA, "policy-domain": domain, "policy-string": [TLSA_RECORD]}


def no_policy(domain: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"policy-type": NO_POLICY}
    if domain is not None:
        entry["policy-domain"] = domain
    return entry


def failure(result_type: str, domain: str, reason: str) -> dict[str, Any]:
    """One failure detail in libtlsrpt's short keys."""
    return {"c": RESULT_CODES[result_type], "s": "192.0.2.25", "n": f"mx1.{domain}",
            "h": f"mx1.{domain}", "r": "198.51.100.7", "f": reason}


def used(policy: dict[str, Any], *failures: dict[str, Any]) -> dict[str, Any]:
    """A policy as one session used it: its failures, and the session's final result."""
    return {**policy, "failure-details": list(failures), "t": len(failures),
            "f": 1 if failures else 0}


@dataclass
class Layout:
    """One policy domain's sessions; ``route``: 'mail', 'https' or 'https/domain' (URL form)."""

    domain: str
    route: str
    sessions: list[tuple[int, list[dict[str, Any]]]]  # (how many, the policies each used)
    successful: int
    failed: int
    failures_by_result_type: dict[str, int] = field(default_factory=dict)

    def record(self, https_base: str) -> str:
        if self.route == "mail":
            return "v=TLSRPTv1; rua=mailto:tlsrpt@reports.example"
        url = f"{https_base}/v1/reports"
        return f"v=TLSRPTv1; rua={url}/{self.domain}" if self.route == "https/domain" else \
            f"v=TLSRPTv1; rua={url}"

    def datagrams(self, https_base: str) -> list[dict[str, Any]]:
        pr = self.record(https_base)
        return [{"d": self.domain, "pr": pr, "dpv": "1", "policies": policies}
                for count, policies in self.sessions for _ in range(count)]


def mixed(domain: str, route: str) -> Layout:
    """Postfix: each session under the one policy it used; 10 + 20 + 5 = 35 sessions."""
    return Layout(domain, route, [
        (10, [used(no_policy(NULL))]),
        (20, [used(sts_policy(domain))]),
        (3, [used(tlsa_policy(domain))]),
        (1, [used(tlsa_policy(domain), failure("tlsa-invalid", domain, "TLSA_MISMATCH"))]),
        (1, [used(tlsa_policy(domain), failure("validation-failure", domain,
                                               "X509_V_ERR_CERT_UNTRUSTED"))]),
    ], successful=33, failed=2,
        failures_by_result_type={"tlsa-invalid": 1, "validation-failure": 1})


def midday(domain: str, route: str) -> Layout:
    """A domain that published MTA-STS during the day: 5 sessions before, 10 after."""
    mismatch = failure("certificate-host-mismatch", domain,
                       "X509_V_ERR_HOSTNAME_MISMATCH")
    return Layout(domain, route, [
        (5, [used(no_policy(NULL))]),
        (8, [used(sts_policy(domain))]),
        (2, [used(sts_policy(domain), mismatch)]),
    ], successful=13, failed=2, failures_by_result_type={"certificate-host-mismatch": 2})


def both(domain: str, route: str) -> Layout:
    """libtlsrpt's "both policies": each session lists sts and tlsa (the same 6 sessions).

    sts counts 5 ok / 1 failed and tlsa 4 ok / 2 failed: equal totals, so 6 sessions, the
    larger failed count (2), and the failure details of tlsa.
    """
    sts, tlsa = sts_policy(domain), tlsa_policy(domain)
    return Layout(domain, route, [
        (4, [used(sts), used(tlsa)]),
        (1, [used(sts, failure("certificate-expired", domain, "X509_V_ERR_CERT_HAS_EXPIRED")),
             used(tlsa, failure("validation-failure", domain, "X509_V_ERR_CERT_HAS_EXPIRED"))]),
        (1, [used(sts), used(tlsa, failure("dnssec-invalid", domain, "DNSSEC_BOGUS"))]),
    ], successful=4, failed=2, failures_by_result_type={"validation-failure": 1,
                                                        "dnssec-invalid": 1})


def no_domain(domain: str, route: str) -> Layout:
    """Only no-policy-found sessions: with no policy-domain at all, and with ""."""
    return Layout(domain, route, [
        (6, [used(no_policy(NULL))]),
        (1, [used(no_policy(NULL), failure("starttls-not-supported", domain,
                                           "STARTTLS_NOT_OFFERED"))]),
        (3, [used(no_policy(""))]),
    ], successful=9, failed=1, failures_by_result_type={"starttls-not-supported": 1})


LAYOUTS = [
    mixed("mixed-mail.example", "mail"),
    midday("midday-mail.example", "mail"),
    both("both-mail.example", "mail"),
    no_domain("nodomain-mail.example", "mail"),
    mixed("mixed-post.example", "https"),
    no_domain("nodomain-post.example", "https"),
    midday("midday-url.example", "https/domain"),
    both("both-url.example", "https/domain"),
    no_domain("nodomain-url.example", "https/domain"),
]
BY_DOMAIN = {layout.domain: layout for layout in LAYOUTS}
