"""``tlswatch check DOMAIN``: the domain's MTA-STS and TLS-RPT set-up, checked by the RFCs.

DNS goes through dnspython (a chosen name server for tests and private networks), the policy
through httpx (HTTP 200 only, redirects refused, text/plain, at most 64 KiB, a certificate
valid for mta-sts.DOMAIN), each MX through a real SMTP STARTTLS handshake.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import socket
import ssl
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import dns.exception
import dns.resolver
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tlswatch.mtasts.policy import ID_PATTERN, Policy, covered_by, parse_policy
from tlswatch.resolver import resolver_for

POLICY_LIMIT = 64 * 1024
_FIXES = {
    "mta_sts_record_missing": "publish _mta-sts.{d} TXT \"v=STSv1; id=<policy id>\"",
    "mta_sts_record_multiple": "keep exactly one v=STSv1 TXT record at _mta-sts.{d}",
    "mta_sts_id_invalid": "use an id of 1 to 32 letters and digits, changed with each policy",
    "tlsrpt_record_missing": "publish _smtp._tls.{d} TXT \"v=TLSRPTv1; rua=mailto:...\" to "
                             "receive reports",
    "tlsrpt_record_multiple": "keep exactly one v=TLSRPTv1 TXT record at _smtp._tls.{d}",
    "tlsrpt_rua_invalid": "list mailto: or https: URIs in rua=, separated by commas",
    "mx_missing": "publish MX records for {d}",
    "policy_unreachable": "serve https://mta-sts.{d}/.well-known/mta-sts.txt",
    "policy_redirect": "answer the policy URL directly with 200; senders do not follow "
                       "redirects (RFC 8461 section 3.3)",
    "policy_http_status": "answer the policy URL with HTTP 200",
    "policy_content_type": "serve the policy as text/plain",
    "policy_too_large": "keep the policy under 64 KiB",
    "policy_tls_invalid": "install a publicly trusted certificate for mta-sts.{d}",
    "mx_not_covered": "add an mx: line covering it (a '*.' pattern covers exactly one label)",
    "starttls_missing": "enable STARTTLS on the MX",
    "mx_unreachable": "make the MX answer on port 25",
    "mx_cert_untrusted": "serve a certificate chain from a public CA, intermediates included",
    "mx_cert_name_mismatch": "install a certificate that names the MX host",
    "mx_cert_expired": "renew the certificate and check its auto-renewal",
    "mx_cert_expiring": "renew the certificate before it expires",
    "policy_cert_expiring": "renew the certificate of mta-sts.{d} before it expires",
    "mx_tls_old": "enable TLS 1.2 or newer",
}


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | info
    code: str
    message: str
    fix: str = ""
    subject: str = ""  # the host it is about (an MX, mta-sts.DOMAIN), empty for the domain

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Certificate:
    """A certificate a check was served: by an MX (role ``mx``) or by the policy host
    (role ``mta-sts``)."""

    host: str
    role: str
    not_after: datetime
    sha256: str

    @classmethod
    def of(cls, host: str, role: str, cert: x509.Certificate) -> Certificate:
        return cls(host, role, cert.not_valid_after_utc,
                   cert.fingerprint(hashes.SHA256()).hex())


@dataclass
class Facts:
    """What a check saw, kept so that runs can be compared: the published ``_mta-sts`` id,
    the policy served, the TLS-RPT ``rua`` URIs in order, the MX hosts, the certificates."""

    sts_id: str | None = None
    policy: str | None = None
    rua: list[str] = field(default_factory=list)
    mx: list[str] = field(default_factory=list)
    certificates: list[Certificate] = field(default_factory=list)

    @property
    def policy_sha256(self) -> str | None:
        return None if self.policy is None else hashlib.sha256(self.policy.encode()).hexdigest()


@dataclass
class CheckResult:
    domain: str
    checked_at: datetime
    findings: list[Finding]
    facts: Facts


class Checker:
    def __init__(self, *, nameserver: str | None = None, ca_bundle: str | None = None,
                 https_port: int = 443, smtp_port: int = 25, timeout: float = 10.0) -> None:
        self.resolver = resolver_for(nameserver, lifetime=timeout)
        self.ca_bundle = ca_bundle
        self.https_port = https_port
        self.smtp_port = smtp_port
        self.timeout = timeout
        self.findings: list[Finding] = []
        self.facts = Facts()

    def add(self, severity: str, code: str, message: str, domain: str, subject: str = ""
            ) -> None:
        self.findings.append(Finding(severity, code, message,
                                     _FIXES.get(code, "").format(d=domain), subject))

    # -- DNS -----------------------------------------------------------------------------------
    def txt(self, name: str, hops: int = 0) -> list[str]:
        """TXT records, each record's strings joined (RFC 8461 section 3.1).  A CNAME is
        followed even when the server asked does not follow it itself (an authoritative
        server of the name's zone but not the target's: a delegated ``_mta-sts``)."""
        try:
            answer = self.resolver.resolve(name, "TXT")
        except dns.resolver.NXDOMAIN:
            return []
        except dns.resolver.NoAnswer:
            if hops >= 8:
                return []
            try:
                target = self.resolver.resolve(name, "CNAME")[0].to_text()
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                return []
            return self.txt(target, hops + 1)
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    def addresses(self, name: str) -> list[str]:
        found = []
        for kind in ("A", "AAAA"):
            try:
                found += [r.to_text() for r in self.resolver.resolve(name, kind)]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
        return found

    def mx(self, domain: str) -> list[str]:
        try:
            answer = self.resolver.resolve(domain, "MX")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        return [r.exchange.to_text().rstrip(".") for r in sorted(answer,
                                                                  key=lambda r: r.preference)]

    # -- the whole check --------------------------------------------------------------------------
    def check(self, domain: str) -> list[Finding]:
        return self.run(domain).findings

    def run(self, domain: str) -> CheckResult:
        """The findings and the facts seen (records, policy, certificates) of one check."""
        domain = domain.lower().rstrip(".")
        started = datetime.now(UTC)
        self.findings, self.facts = [], Facts()
        try:
            sts_id = self._sts_record(domain)
            self.facts.sts_id = sts_id
            self._tlsrpt_record(domain)
            hosts = self.mx(domain)
            self.facts.mx = hosts
            if not hosts:
                self.add("error", "mx_missing", f"{domain} has no MX records", domain)
            policy = self._policy(domain) if sts_id is not None else None
            if policy is not None and policy.mode in ("enforce", "testing"):
                for host in hosts:
                    if not covered_by(host, policy.mx):
                        self.add("error", "mx_not_covered", f"MX {host} is not covered by the "
                                 f"policy's mx patterns ({', '.join(policy.mx)})", domain,
                                 host)
            strict = policy is not None and policy.mode == "enforce"
            for host in hosts:
                self._mx_tls(domain, host, strict)
        except dns.exception.DNSException as exc:
            self.add("error", "dns_failed", f"DNS lookup failed: {exc}", domain)
        return CheckResult(domain, started, self.findings, self.facts)

    def _sts_record(self, domain: str) -> str | None:
        records = [r for r in self.txt(f"_mta-sts.{domain}") if r.startswith("v=STSv1")]
        if not records:
            self.add("error", "mta_sts_record_missing", f"no v=STSv1 TXT record at "
                     f"_mta-sts.{domain}", domain)
            return None
        if len(records) > 1:
            self.add("error", "mta_sts_record_multiple", f"{len(records)} v=STSv1 records at "
                     f"_mta-sts.{domain}: senders then use no policy (RFC 8461 s3.1)", domain)
            return None
        fields = _fields(records[0])
        sts_id = fields.get("id", "")
        if not records[0].startswith("v=STSv1;") or not ID_PATTERN.match(sts_id):
            self.add("error", "mta_sts_id_invalid", f"_mta-sts.{domain}: id must be 1-32 "
                     f"letters or digits, got {sts_id!r}", domain)
            return None
        self.add("info", "mta_sts_record", f"_mta-sts.{domain}: {records[0]}", domain)
        return sts_id

    def _tlsrpt_record(self, domain: str) -> None:
        records = [r for r in self.txt(f"_smtp._tls.{domain}") if r.startswith("v=TLSRPTv1")]
        if not records:
            self.add("warning", "tlsrpt_record_missing", f"no v=TLSRPTv1 TXT record at "
                     f"_smtp._tls.{domain}: nobody sends you TLS reports", domain)
            return
        if len(records) > 1:
            self.add("error", "tlsrpt_record_multiple", f"{len(records)} v=TLSRPTv1 records "
                     f"at _smtp._tls.{domain}: senders then use none (RFC 8460 s3)", domain)
            return
        rua = _fields(records[0]).get("rua", "")
        uris = [u.strip() for u in rua.split(",") if u.strip()]
        bad = [u for u in uris if not re.match(r"^(mailto:[^@\s]+@[^@\s]+|https://\S+)$", u)]
        self.facts.rua = uris
        if not uris or bad:
            self.add("error", "tlsrpt_rua_invalid", f"_smtp._tls.{domain}: rua must list "
                     f"mailto: or https: URIs, got {rua!r}", domain)
        else:
            self.add("info", "tlsrpt_record", f"_smtp._tls.{domain}: reports go to "
                     f"{', '.join(uris)}", domain)

    def _policy(self, domain: str) -> Policy | None:
        host = f"mta-sts.{domain}"
        addresses = self.addresses(host)
        if not addresses:
            self.add("error", "policy_unreachable", f"{host} does not resolve", domain)
            return None
        ip = addresses[0]
        url = f"https://{'[' + ip + ']' if ':' in ip else ip}:{self.https_port}" \
              "/.well-known/mta-sts.txt"
        verify: Any = ssl.create_default_context(cafile=self.ca_bundle)
        try:
            with httpx.Client(verify=verify, timeout=self.timeout,
                              follow_redirects=False) as client, \
                    client.stream("GET", url, headers={"Host": host},
                                  extensions={"sni_hostname": host}) as reply:
                self._served_certificate(domain, host, reply)
                body = b""
                for chunk in reply.iter_bytes():
                    body += chunk
                    if len(body) > POLICY_LIMIT:
                        self.add("error", "policy_too_large", f"the policy is over "
                                 f"{POLICY_LIMIT:,} bytes", domain)
                        return None
        except httpx.ConnectError as exc:
            code = "policy_tls_invalid" if "CERTIFICATE" in str(exc).upper() else \
                "policy_unreachable"
            self.add("error", code, f"https://{host}/.well-known/mta-sts.txt: {exc}", domain)
            return None
        except httpx.TimeoutException:
            self.add("error", "policy_unreachable", f"https://{host}/: no answer within "
                     f"{self.timeout:g}s", domain)
            return None
        if 300 <= reply.status_code < 400:
            self.add("error", "policy_redirect", f"the policy URL redirects "
                     f"({reply.status_code} to {reply.headers.get('location', '?')})", domain)
            return None
        if reply.status_code != 200:
            self.add("error", "policy_http_status", f"the policy URL answered "
                     f"{reply.status_code}", domain)
            return None
        ctype = reply.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "text/plain":
            self.add("error", "policy_content_type", f"the policy is served as {ctype!r}, "
                     "not text/plain", domain)
        self.facts.policy = body.decode("utf-8", "replace")
        policy = parse_policy(self.facts.policy)
        for problem in policy.problems:
            self.add(problem.severity, problem.code, f"policy: {problem.message}", domain)
        if not policy.errors:
            self.add("info", "policy", f"policy mode {policy.mode}, max_age {policy.max_age}, "
                     f"mx {', '.join(policy.mx)}", domain)
        return policy

    def _served_certificate(self, domain: str, host: str, reply: httpx.Response) -> None:
        """Keep the policy host's certificate (verified by now) and warn when it expires
        soon: an expired one makes every sender fail to fetch the policy."""
        stream: Any = reply.extensions.get("network_stream")
        tls = stream.get_extra_info("ssl_object") if stream is not None else None
        der = tls.getpeercert(True) if tls is not None else None
        if der:
            cert = x509.load_der_x509_certificate(der)
            self.facts.certificates.append(Certificate.of(host, "mta-sts", cert))
            self._expiring(domain, host, cert, "policy_cert_expiring", host)

    def _expiring(self, domain: str, host: str, cert: x509.Certificate, code: str,
                  label: str) -> None:
        days = (cert.not_valid_after_utc - datetime.now(UTC)).days
        if days >= 0:
            for limit in (7, 14, 30):
                if days <= limit:
                    self.add("warning", code, f"{label}: the certificate expires in {days} "
                             f"days (within {limit})", domain, host)
                    break

    def _mx_tls(self, domain: str, host: str, strict: bool) -> None:
        addresses = self.addresses(host)
        if not addresses:
            self.add("error", "mx_unreachable", f"MX {host} does not resolve", domain, host)
            return
        try:
            offered, version, cert, problem = _starttls(addresses[0], self.smtp_port, host,
                                                        self.ca_bundle, self.timeout)
        except (OSError, smtplib.SMTPException) as exc:
            self.add("error", "mx_unreachable", f"MX {host} port {self.smtp_port}: {exc}",
                     domain, host)
            return
        if not offered:
            self.add("error" if strict else "warning", "starttls_missing",
                     f"MX {host} does not offer STARTTLS", domain, host)
            return
        if problem:
            self.add("error", problem[0], f"MX {host}: {problem[1]}", domain, host)
        if cert is not None:
            self.facts.certificates.append(Certificate.of(host, "mx", cert))
            self._expiring(domain, host, cert, "mx_cert_expiring", f"MX {host}")
        if version in ("TLSv1", "TLSv1.1", "SSLv3"):
            self.add("warning", "mx_tls_old", f"MX {host} negotiated {version}", domain, host)
        elif not problem:
            self.add("info", "mx_tls", f"MX {host}: STARTTLS with {version}, certificate "
                     "valid", domain, host)


class _SMTP(smtplib.SMTP):
    """smtplib, connecting to a resolved address while naming the MX host (SNI, checks):
    smtplib takes the name for STARTTLS from the host given to the constructor."""

    def __init__(self, address: str, **kwargs: Any) -> None:
        self._address = address
        super().__init__(**kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._address, port), timeout)


def _starttls(address: str, port: int, host: str, ca_bundle: str | None, timeout: float
              ) -> tuple[bool, str | None, x509.Certificate | None, tuple[str, str] | None]:
    """(STARTTLS offered, TLS version, certificate, (code, problem) or None)."""
    verified = ssl.create_default_context(cafile=ca_bundle)
    with _SMTP(address, host=host, port=port, timeout=timeout) as smtp:
        smtp.ehlo("tlswatch-check.invalid")
        if not smtp.has_extn("starttls"):
            return False, None, None, None
        try:
            smtp.starttls(context=verified)
            sock: Any = smtp.sock
            cert = x509.load_der_x509_certificate(sock.getpeercert(binary_form=True))
            return True, sock.version(), cert, None
        except ssl.SSLCertVerificationError as exc:
            failure = exc
    # Verification failed: look at the certificate without verifying to say why.
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    with _SMTP(address, host=host, port=port, timeout=timeout) as smtp:
        smtp.ehlo("tlswatch-check.invalid")
        smtp.starttls(context=unverified)
        sock = smtp.sock
        cert = x509.load_der_x509_certificate(sock.getpeercert(binary_form=True))
        version = sock.version()
    if cert.not_valid_after_utc < datetime.now(UTC):
        return True, version, cert, ("mx_cert_expired", f"the certificate expired on "
                                     f"{cert.not_valid_after_utc:%Y-%m-%d}")
    if failure.verify_code == 62 or "hostname" in str(failure.verify_message).lower():
        return True, version, cert, ("mx_cert_name_mismatch", f"the certificate does not "
                                     f"name {host} ({failure.verify_message})")
    return True, version, cert, ("mx_cert_untrusted", f"the certificate is not trusted "
                                 f"({failure.verify_message})")


def _fields(record: str) -> dict[str, str]:
    out = {}
    for part in record.split(";"):
        key, _, value = part.strip().partition("=")
        if key and key.strip() not in out:
            out[key.strip()] = value.strip()
    return out
