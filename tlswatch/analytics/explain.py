"""What each TLS-RPT result type means, in plain words, and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Explanation:
    title: str
    meaning: str
    fix: str


# RFC 8460 section 4.3 result types, plus the IANA registry's entries.
EXPLANATIONS: dict[str, Explanation] = {
    "starttls-not-supported": Explanation(
        "STARTTLS not offered",
        "the receiving MX did not offer STARTTLS, so mail could only be sent in clear text",
        "enable STARTTLS on that MX and check that a firewall or middlebox does not strip it",
    ),
    "certificate-host-mismatch": Explanation(
        "certificate name mismatch",
        "the MX presented a certificate whose names do not include the MX host name",
        "install a certificate that lists that MX host name (subjectAltName)",
    ),
    "certificate-expired": Explanation(
        "certificate expired",
        "the MX presented an expired certificate",
        "renew that certificate and check its auto-renewal",
    ),
    "certificate-not-trusted": Explanation(
        "certificate not trusted",
        "the MX certificate does not chain to a trusted root (self-signed, private CA, "
        "or a missing intermediate)",
        "serve the full chain from a public CA, intermediates included",
    ),
    "validation-failure": Explanation(
        "validation failure",
        "the sender could not validate the MX's TLS set-up for a reason it did not classify",
        "check the failure reason code the sender gave and test the MX with an SMTP TLS checker",
    ),
    "tlsa-invalid": Explanation(
        "TLSA record invalid",
        "the DANE TLSA record did not match the MX certificate or could not be used",
        "update the TLSA record to match the current certificate or key, publishing the new "
        "record before rolling the certificate",
    ),
    "dnssec-invalid": Explanation(
        "DNSSEC invalid",
        "the DNSSEC chain for the MX or its TLSA record did not validate",
        "fix the DNSSEC signatures or DS records (check for expired RRSIGs or a broken rollover)",
    ),
    "dane-required": Explanation(
        "DANE required",
        "the sender requires DANE for this domain but found no usable TLSA record",
        "publish DNSSEC-signed TLSA records for every MX",
    ),
    "sts-policy-fetch-error": Explanation(
        "MTA-STS policy fetch error",
        "the sender could not fetch the MTA-STS policy from "
        "https://mta-sts.<domain>/.well-known/mta-sts.txt",
        "make the policy host answer HTTP 200 with text/plain over HTTPS (no redirects) and "
        "keep it reachable; this hurts every sender at once",
    ),
    "sts-policy-invalid": Explanation(
        "MTA-STS policy invalid",
        "the MTA-STS policy file could not be parsed or breaks RFC 8461",
        "correct the policy file (version: STSv1, mode, mx, max_age) and publish a new "
        "_mta-sts id",
    ),
    "sts-webpki-invalid": Explanation(
        "MTA-STS host certificate invalid",
        "the HTTPS certificate of the mta-sts.<domain> policy host is not valid",
        "install a publicly trusted certificate for mta-sts.<domain> that is not expired",
    ),
}


def explain(result_type: str, *, domain: str | None = None) -> Explanation:
    """The explanation of a result type (a sensible one for types outside the registry),
    with ``<domain>`` filled in when the policy domain is known."""
    known = EXPLANATIONS.get(result_type)
    if known is not None:
        if domain is None:
            return known
        return Explanation(*(t.replace("<domain>", domain)
                             for t in (known.title, known.meaning, known.fix)))
    return Explanation(
        result_type,
        f"the sender reported '{result_type}', a result type outside the RFC 8460 registry",
        "read the sender's failure reason code and additional information for details",
    )
