"""The catalogue of failure-reason-code values real TLS-RPT senders put in reports.

Data only; the matching lives in ``reasons``.  Each entry says who sends the code, what it
means in plain words, what fixes it, whose side the fault is on, and where that meaning comes
from.  A rule is an exact code (compared case-insensitively) or, for free texts, a regular
expression searched case-insensitively.  Regular expressions here use no ``*`` or ``+``
quantifier (only ``?`` and bounded ``{m,n}``), so a match costs at most input length times
pattern length: no catastrophic backtracking.  Order matters: the first match wins, so a
specific rule comes before a general one.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

Side = Literal["receiving domain", "sender", "middlebox"]
RECEIVER: Side = "receiving domain"
SENDER: Side = "sender"
MIDDLEBOX: Side = "middlebox"

# Where the meanings come from.
RFC8461_MX = "RFC 8461 section 4.1 (MX host matching), https://www.rfc-editor.org/rfc/rfc8461"
RFC8461_FETCH = "RFC 8461 section 3.3 (policy retrieval), https://www.rfc-editor.org/rfc/rfc8461"
MS_SAMPLE = ("code seen in a Microsoft report published on r/email (2025-12, "
             "https://www.reddit.com/r/email/comments/1pnf2vk/)")
POSTFIX = "Postfix source, src/tls/"
OPENSSL_TEXT = ("text of OpenSSL's X509_verify_cert_error_string(), spaces turned to '_' by "
                "Postfix (src/tls/tls_verify.c); https://docs.openssl.org/master/man3/"
                "X509_STORE_CTX_get_error/")
OPENSSL_NAME = "OpenSSL X509_STORE_CTX_get_error(3), https://docs.openssl.org/master/man3/" \
               "X509_STORE_CTX_get_error/"
GO_X509 = "Go standard library error text, crypto/x509 (verify.go), https://pkg.go.dev/crypto/x509"
GO_TLS = "Go standard library error text, crypto/tls, https://pkg.go.dev/crypto/tls"
GO_NET = "Go standard library error text, net (DNSError), https://pkg.go.dev/net#DNSError"
MOX = "mox source (mjl-/mox: tlsrpt/report.go, mtasts/mtasts.go, smtpclient, queue)"
STALWART = "Stalwart source (stalwartlabs/mail-server: crates/smtp/src/outbound/delivery.rs)"

# Fixes shared by several entries.
FIX_MX_LIST = ("add the MX host name (or a '*.' pattern for its parent) to the policy's mx "
               "lines, then publish a new id in the _mta-sts TXT record")
FIX_CHAIN = ("serve the full certificate chain (leaf and intermediates, e.g. fullchain.pem) "
             "from a publicly trusted CA")
FIX_RENEW = "renew the certificate on that host and check that renewal runs automatically"
FIX_NAME = ("install a certificate whose subjectAltName lists the MX host name the sender "
            "connected to")
FIX_TLSA = ("publish TLSA records that match the certificate now served (e.g. '3 1 1' or "
            "'2 1 1'), and publish the next key's record before each certificate rollover")
FIX_POLICY_HOST = ("make https://mta-sts.<domain>/.well-known/mta-sts.txt answer HTTP 200 "
                   "with the policy as text/plain, no redirects")
FIX_WEB_CERT = ("install a valid, publicly trusted certificate for mta-sts.<domain> on the "
                "policy web server")
FIX_VERSION = "enable TLS 1.2 and TLS 1.3 on the MX"
FIX_PROBE = ("test STARTTLS on that MX from outside (port 25) and look for a firewall or "
             "SMTP proxy that rewrites or answers in place of the MX")
FIX_DNSSEC = ("fix the zone's DNSSEC: re-sign expired signatures and check that the DS "
              "record at the parent matches the zone's keys")
FIX_STARTTLS = ("enable STARTTLS on the MX; if it is enabled, look for a firewall that "
                "strips it from the EHLO reply")
FIX_KEY_USAGE = ("reissue the certificate for TLS server use (extended key usage "
                 "serverAuth)")

MTA_STS_GET = r'\Aget "https://mta-sts\.[^"\s]{1,253}": '  # Go's url.Error for the policy fetch
MTA_STS_URL = MTA_STS_GET + r"(?:tls: failed to verify certificate: )?"
FALLBACK = r"(?:\+fallback-to-cached-policy)?\Z"


class Entry(NamedTuple):
    rule: str
    regex: bool
    sender: str
    cause: str
    fix: str
    side: Side
    source: str
    examples: tuple[str, ...]


def code(rule: str, sender: str, cause: str, fix: str, side: Side, source: str) -> Entry:
    """An exact code; its own text is its example."""
    return Entry(rule, False, sender, cause, fix, side, source, (rule,))


def text(rule: str, sender: str, cause: str, fix: str, side: Side, source: str,
         *examples: str) -> Entry:
    """A regular expression for a free text, with real-looking examples it must match."""
    return Entry(rule, True, sender, cause, fix, side, source, examples)


ENTRIES: tuple[Entry, ...] = (
    # Microsoft (Exchange Online): upper-case codes.
    code("MX_HOSTS_MISMATCH", "Microsoft",
         "the MX host Microsoft used is not matched by any mx line of the domain's MTA-STS "
         "policy", FIX_MX_LIST, RECEIVER, f"{MS_SAMPLE}; meaning: {RFC8461_MX}"),
    code("VALIDATION_FAILURE", "Microsoft",
         "Microsoft could not validate the MX's TLS set-up and gave no finer cause (the "
         "result-type says the same)",
         "test that MX's certificate: name, chain, expiry, and its TLSA records if DANE is used",
         RECEIVER, f"{MS_SAMPLE}; meaning: RFC 8460 section 4.3 (validation-failure)"),

    # Postfix 3.10+ with libtlsrpt: OpenSSL texts with '_' for spaces, and its own strings.
    text(r"\Aself[-_]signed_certificate\Z", "Postfix",
         "the MX presented a self-signed certificate", FIX_CHAIN + "; or, with DANE, publish a "
         "'3 1 1' TLSA record for it", RECEIVER, OPENSSL_TEXT,
         "self-signed_certificate", "self_signed_certificate"),
    text(r"\Aself[-_]signed_certificate_in_certificate_chain\Z", "Postfix",
         "the MX's chain ends in a root certificate the sender does not trust (a private CA)",
         FIX_CHAIN, RECEIVER, OPENSSL_TEXT,
         "self-signed_certificate_in_certificate_chain"),
    code("unable_to_get_local_issuer_certificate", "Postfix",
         "the sender could not find the certificate that issued the MX's certificate: "
         "usually an intermediate is missing from the chain the MX serves", FIX_CHAIN,
         RECEIVER, OPENSSL_TEXT),
    text(r"\Acertificate_is_not_yet_valid(?:_or_the_system_clock_is_incorrect)?\Z", "Postfix",
         "the MX's certificate is not valid yet (its notBefore date is in the future)",
         "check the certificate's dates and the issuing host's clock; if both are right, the "
         "sender's clock is wrong", RECEIVER, OPENSSL_TEXT, "certificate_is_not_yet_valid"),
    code("format_error_in_certificate's_notBefore_field", "Postfix",
         "the MX's certificate carries a malformed validity date", "reissue the certificate",
         RECEIVER, OPENSSL_TEXT),
    text(r"\Auns(?:uitable|upported)_certificate_purpose\Z", "Postfix",
         "the MX's certificate is not allowed for TLS server use", FIX_KEY_USAGE, RECEIVER,
         OPENSSL_TEXT, "unsuitable_certificate_purpose", "unsupported_certificate_purpose"),
    code("certificate_chain_too_long", "Postfix",
         "the MX's certificate chain is longer than the sender's verification depth allows",
         "serve only the leaf and the intermediates up to one public root (drop extra "
         "cross-signed certificates)", RECEIVER, OPENSSL_TEXT),
    code("all-TLSA-records-unusable", "Postfix",
         "the MX has DANE TLSA records but none can be used (unsupported usage, selector or "
         "matching type, or malformed data); Postfix fell back to unauthenticated TLS",
         FIX_TLSA, RECEIVER, f"{POSTFIX}tls_client.c"),
    code("all-fingerprints-unusable", "Postfix",
         "the sender's own configuration pins certificate fingerprints for this destination "
         "and none of them can be used", "the sender's administrator must correct the "
         "fingerprints in its TLS policy table", SENDER, f"{POSTFIX}tls_client.c"),
    code("all-trust-anchors-unusable", "Postfix",
         "the sender's own configuration names trust-anchor files for this destination and "
         "none of them can be used", "the sender's administrator must correct its trust "
         "anchor files", SENDER, f"{POSTFIX}tls_client.c"),
    code("tls-handshake-failure", "Postfix",
         "the TLS handshake with the MX failed before a certificate could be checked (no "
         "common protocol version or cipher, or the connection was dropped mid-handshake)",
         "check the MX's TLS versions and ciphers and its log for the sender's address; "
         "look for a firewall that cuts TLS sessions", RECEIVER,
         f"{POSTFIX}tls_client.c, tlsproxy/tlsproxy.c"),

    # OpenSSL verification error names (the form RFC 8460's own example uses).
    code("X509_V_ERR_CERT_HAS_EXPIRED", "OpenSSL-based senders",
         "the MX's certificate has expired", FIX_RENEW, RECEIVER, OPENSSL_NAME),
    code("X509_V_ERR_CERT_NOT_YET_VALID", "OpenSSL-based senders",
         "the MX's certificate is not valid yet (notBefore in the future)",
         "check the certificate's dates and the issuing host's clock", RECEIVER, OPENSSL_NAME),
    code("X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT", "OpenSSL-based senders",
         "the MX presented a self-signed certificate", FIX_CHAIN, RECEIVER, OPENSSL_NAME),
    code("X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN", "OpenSSL-based senders",
         "the MX's chain ends in a root certificate the sender does not trust", FIX_CHAIN,
         RECEIVER, OPENSSL_NAME),
    text(r"\AX509_V_ERR_UNABLE_TO_(?:GET_ISSUER_CERT(?:_LOCALLY)?|VERIFY_LEAF_SIGNATURE)\Z",
         "OpenSSL-based senders",
         "the sender could not find the certificate that issued the MX's certificate: "
         "usually a missing intermediate", FIX_CHAIN, RECEIVER, OPENSSL_NAME,
         "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT",
         "X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE"),
    code("X509_V_ERR_CERT_UNTRUSTED", "OpenSSL-based senders",
         "the MX's chain was built but its root is not trusted for this use (nor matched by a "
         "TLSA record)", FIX_CHAIN, RECEIVER, OPENSSL_NAME),
    code("X509_V_ERR_HOSTNAME_MISMATCH", "OpenSSL-based senders",
         "the MX's certificate does not name the MX host", FIX_NAME, RECEIVER, OPENSSL_NAME),
    code("X509_V_ERR_CERT_REVOKED", "OpenSSL-based senders",
         "the MX's certificate has been revoked by its CA",
         "replace it with a newly issued certificate", RECEIVER, OPENSSL_NAME),
    code("X509_V_ERR_INVALID_PURPOSE", "OpenSSL-based senders",
         "the MX's certificate is not allowed for TLS server use", FIX_KEY_USAGE, RECEIVER,
         OPENSSL_NAME),
    code("X509_V_ERR_CERT_CHAIN_TOO_LONG", "OpenSSL-based senders",
         "the MX's chain is longer than the sender's verification depth allows",
         "serve only the leaf and the intermediates up to one public root", RECEIVER,
         OPENSSL_NAME),
    code("X509_V_ERR_PATH_LENGTH_EXCEEDED", "OpenSSL-based senders",
         "a CA certificate in the MX's chain allows fewer intermediates below it than the "
         "chain has (basicConstraints pathlen)", "serve the chain the CA documents for the "
         "certificate", RECEIVER, OPENSSL_NAME),
    code("X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED", "RFC 8460 example",
         "the chain uses proxy certificates beyond their allowed length; this is the value "
         "in RFC 8460's own example report and is not expected from a real MX",
         "serve an ordinary server certificate chain (no proxy certificates)", RECEIVER,
         f"{OPENSSL_NAME}; RFC 8460 section 4.3 example"),
    code("X509_V_ERR_DANE_NO_MATCH", "OpenSSL-based senders",
         "none of the MX's DANE TLSA records matches the certificate chain it served",
         FIX_TLSA, RECEIVER, OPENSSL_NAME),
    text(r"\AX509_V_ERR_(?:EE_KEY_TOO_SMALL|CA_KEY_TOO_SMALL|CA_MD_TOO_WEAK)\Z",
         "OpenSSL-based senders",
         "the MX's certificate or its CA uses a key or signature digest the sender "
         "considers too weak", "reissue with an RSA key of 2048 bits or more (or ECDSA) "
         "signed with SHA-256 or better", RECEIVER, OPENSSL_NAME,
         "X509_V_ERR_EE_KEY_TOO_SMALL", "X509_V_ERR_CA_MD_TOO_WEAK"),

    # Mail.ru and other Go senders: MTA-STS policy fetches, then Go error texts.
    text(r"\Abad https response code: \d{3}\Z", "Mail.ru",
         "fetching the MTA-STS policy got an HTTP status other than 200 (404: no policy "
         "file at that path; 5xx: the web server failed)", FIX_POLICY_HOST, RECEIVER,
         f"code seen in a Mail.ru report (parsedmarc's samples); meaning: {RFC8461_FETCH}",
         "bad https response code: 404", "bad https response code: 500"),
    text(MTA_STS_URL + r"x509: certificate has expired or is not yet valid", "Go senders",
         "the certificate of the MTA-STS policy web server (mta-sts.<domain>) has expired",
         FIX_WEB_CERT, RECEIVER, f"{GO_X509}; {RFC8461_FETCH}",
         'Get "https://mta-sts.example.net/.well-known/mta-sts.txt": tls: failed to verify '
         "certificate: x509: certificate has expired or is not yet valid: current time "
         "2026-11-25T10:00:00Z is after 2026-11-20T23:59:59Z"),
    text(MTA_STS_URL + r"x509: certificate (?:is valid for |is not valid for any names"
         r"|relies on legacy Common Name)", "Go senders",
         "the certificate of the MTA-STS policy web server does not name mta-sts.<domain>",
         FIX_WEB_CERT, RECEIVER, f"{GO_X509}; {RFC8461_FETCH}",
         'Get "https://mta-sts.example.com/.well-known/mta-sts.txt": tls: failed to verify '
         "certificate: x509: certificate is valid for www.example.com, not mta-sts.example.com"),
    text(MTA_STS_URL + r"x509: certificate signed by unknown authority", "Go senders",
         "the certificate of the MTA-STS policy web server does not chain to a trusted root "
         "(self-signed, private CA or a missing intermediate)", FIX_WEB_CERT, RECEIVER,
         f"{GO_X509}; {RFC8461_FETCH}",
         'Get "https://mta-sts.example.com/.well-known/mta-sts.txt": x509: certificate signed '
         "by unknown authority"),
    text(MTA_STS_GET + r"dial tcp: lookup [^\s]{1,253}(?: on [^\s]{1,100})?: no such host",
         "Go senders",
         "the MTA-STS policy host mta-sts.<domain> does not exist in DNS, though the domain "
         "publishes an _mta-sts TXT record",
         "publish an address for mta-sts.<domain>, or retire MTA-STS properly (serve mode: "
         "none first)", RECEIVER, f"{GO_NET}; {RFC8461_FETCH}",
         'Get "https://mta-sts.example.com/.well-known/mta-sts.txt": dial tcp: lookup '
         "mta-sts.example.com on 127.0.0.53:53: no such host"),
    text(r"x509: certificate signed by unknown authority", "Go senders such as Mail.ru",
         "the MX's certificate does not chain to a root the sender trusts (self-signed, "
         "private CA or a missing intermediate)", FIX_CHAIN, RECEIVER, GO_X509,
         "x509: certificate signed by unknown authority",
         "tls: failed to verify certificate: x509: certificate signed by unknown authority"),
    text(r"x509: certificate has expired or is not yet valid", "Go senders such as Mail.ru",
         "the MX's certificate has expired (or is not valid yet: the text says which date)",
         FIX_RENEW, RECEIVER, GO_X509,
         "x509: certificate has expired or is not yet valid: current time "
         "2026-11-25T10:00:00Z is after 2026-11-20T23:59:59Z"),
    text(r"x509: certificate relies on legacy Common Name field", "Go senders such as Mail.ru",
         "the MX's certificate names the host only in its Common Name, with no "
         "subjectAltName; Go no longer accepts that", FIX_NAME, RECEIVER, GO_X509,
         "x509: certificate relies on legacy Common Name field, use SANs instead"),
    text(r"x509: certificate is (?:valid for |not valid for any names)",
         "Go senders such as Mail.ru",
         "the MX's certificate does not name the MX host the sender connected to (the text "
         "lists the names it does carry)", FIX_NAME, RECEIVER, GO_X509,
         "x509: certificate is valid for mail.example.org, not mx1.example.com",
         "x509: certificate is not valid for any names, but wanted to match mx1.example.com"),
    text(r"x509: certificate specifies an incompatible key usage", "Go senders such as Mail.ru",
         "the MX's certificate is not allowed for TLS server use", FIX_KEY_USAGE, RECEIVER,
         GO_X509, "x509: certificate specifies an incompatible key usage"),
    text(r"tls: first record does not look like a TLS handshake", "Go senders such as Mail.ru",
         "after STARTTLS the sender received plain text instead of a TLS reply: typically "
         "an SMTP proxy or firewall answering for the MX", FIX_PROBE, MIDDLEBOX, GO_TLS,
         "tls: first record does not look like a TLS handshake"),
    text(r"(?:remote error: tls: protocol version not supported|tls: server selected "
         r"unsupported protocol version)", "Go senders such as Mail.ru",
         "the MX offers only TLS versions the sender no longer accepts (TLS 1.0 or 1.1)",
         FIX_VERSION, RECEIVER, GO_TLS,
         "remote error: tls: protocol version not supported",
         "tls: server selected unsupported protocol version 301"),
    text(r"remote error: tls: handshake failure", "Go senders such as Mail.ru",
         "the MX ended the TLS handshake with a handshake_failure alert: usually no cipher "
         "suite or version in common", "enable current cipher suites and TLS 1.2/1.3 on the "
         "MX", RECEIVER, GO_TLS, "remote error: tls: handshake failure"),

    # mox (Go): its own hyphenated codes.
    text(r"\Ano-policy-served" + FALLBACK, "mox",
         "the domain publishes an _mta-sts TXT record but no policy is served (the policy "
         "host does not exist or answers 404)", FIX_POLICY_HOST, RECEIVER, MOX,
         "no-policy-served", "no-policy-served+fallback-to-cached-policy"),
    text(r"\Acannot-fetch-policy" + FALLBACK, "mox",
         "the MTA-STS policy could not be fetched (connection, TLS or HTTP error on the "
         "policy host)", FIX_POLICY_HOST, RECEIVER, MOX, "cannot-fetch-policy"),
    text(r"\Apolicy-syntax-error" + FALLBACK, "mox",
         "the MTA-STS policy file does not parse",
         "correct the policy file (version: STSv1, mode, mx, max_age lines) and publish a "
         "new id in the _mta-sts TXT record", RECEIVER, MOX, "policy-syntax-error"),
    text(r"\Arecord-syntax-error" + FALLBACK, "mox",
         "the _mta-sts TXT record does not parse", "publish 'v=STSv1; id=<1-32 letters or "
         "digits>' at _mta-sts.<domain>", RECEIVER, MOX, "record-syntax-error"),
    text(r"\Amultiple-mta-sts-records" + FALLBACK, "mox",
         "more than one v=STSv1 TXT record is published, which counts as no policy",
         "keep exactly one v=STSv1 record at _mta-sts.<domain>", RECEIVER,
         f"{MOX}; RFC 8461 section 3.1", "multiple-mta-sts-records"),
    code("back-off-after-recent-fetch-error", "mox",
         "the sender skipped fetching the MTA-STS policy because a recent fetch failed; the "
         "earlier failure is the cause", FIX_POLICY_HOST, RECEIVER, MOX),
    code("mtasts-policy-mx-mismatch", "mox",
         "the MX host is not matched by any mx line of the MTA-STS policy", FIX_MX_LIST,
         RECEIVER, f"{MOX}; meaning: {RFC8461_MX}"),
    code("dane-no-match", "mox",
         "none of the MX's DANE TLSA records matches the certificate it served", FIX_TLSA,
         RECEIVER, MOX),
    code("all-unusable-records+ignored", "mox",
         "the MX has TLSA records but none is usable, so the sender ignored DANE", FIX_TLSA,
         RECEIVER, MOX),
    text(r"\Asmtp-starttls-reply-code-\d{3}\Z", "mox",
         "the MX advertised STARTTLS but refused the STARTTLS command with the SMTP code "
         "shown", "check the MX's TLS configuration (certificate and key files readable, "
         "TLS enabled on that listener)", RECEIVER, MOX, "smtp-starttls-reply-code-454"),
    text(r"\Atls-remote-alert-\d{1,3}(?:-[a-z0-9-]{1,60})?\Z", "mox",
         "the MX ended the TLS handshake with the TLS alert named in the code (40 "
         "handshake-failure: usually no common cipher or version; 70 "
         "protocol-version-not-supported: the MX offers only old TLS versions)",
         "enable current cipher suites and TLS 1.2/1.3 on the MX", RECEIVER,
         f"{MOX}; alert names: {GO_TLS} (alert.go)", "tls-remote-alert-40-handshake-failure",
         "tls-remote-alert-70-protocol-version-not-supported"),
    code("tls-record-header-error", "mox",
         "after STARTTLS the sender received something that is not TLS: typically an SMTP "
         "proxy or firewall answering for the MX", FIX_PROBE, MIDDLEBOX, f"{MOX}; {GO_TLS}"),
    text(r"\Adns-extended-error-\d{1,5}-[a-z0-9-]{1,60}\Z", "mox",
         "a DNSSEC validation failure on the domain's DNS records (the code carries the "
         "RFC 8914 Extended DNS Error, e.g. 6 DNSSEC Bogus, 7 Signature Expired)",
         FIX_DNSSEC, RECEIVER, f"{MOX}; RFC 8914", "dns-extended-error-6-DNSSEC-Bogus",
         "dns-extended-error-7-Signature-Expired"),
    code("no-system-roots", "mox",
         "the sending server has no CA root certificates to verify anything with",
         "nothing to do on the receiving side; the sender's administrator must install CA "
         "roots", SENDER, MOX),

    # Stalwart (Rust): sentences.
    text(r"\AMX not authorized by policy\.?\Z", "Stalwart",
         "the MX host is not matched by any mx line of the MTA-STS policy", FIX_MX_LIST,
         RECEIVER, f"{STALWART}; meaning: {RFC8461_MX}", "MX not authorized by policy."),
    text(r"\AInvalid TLSA record\.?\Z", "Stalwart",
         "the MX has TLSA records but none the sender can use", FIX_TLSA, RECEIVER, STALWART,
         "Invalid TLSA record."),
    text(r"\ANo matching certificates found\.?\Z", "Stalwart",
         "none of the MX's DANE TLSA records matches the certificate it served", FIX_TLSA,
         RECEIVER, STALWART, "No matching certificates found."),
    text(r"\ANo TLSA (?:DNSSEC records found|records found for MX)\.?\Z", "Stalwart",
         "the sender is configured to require DANE for this domain, and found no "
         "DNSSEC-validated TLSA record for the MX",
         "publish DNSSEC-signed TLSA records for every MX, or ask the sender to stop "
         "requiring DANE", SENDER, f"{STALWART}; RFC 8460 section 4.3 (dane-required)",
         "No TLSA DNSSEC records found.", "No TLSA records found for MX."),
    text(r"\AMTA-STS is required and no policy was found\.?\Z", "Stalwart",
         "the sender is configured to require MTA-STS for this domain, which publishes no "
         "policy", "publish an MTA-STS policy, or ask the sender to stop requiring it",
         SENDER, STALWART, "MTA-STS is required and no policy was found."),
    text(r"\ASTARTTLS was not advertised by host\Z", "Stalwart",
         "the MX did not offer STARTTLS in its EHLO reply", FIX_STARTTLS, RECEIVER, STALWART,
         "STARTTLS was not advertised by host"),
)
