"""DKIM verification of report mail (RFC 8460 section 3), with dkimpy.

Reports by mail must carry a valid DKIM signature by the reporting domain; forwarding
breaks signatures, so the result is recorded per report and the operator chooses whether
to require it (setting ``dkim``).  dkimpy's ``tlsrpt`` mode ignores ``l=`` and honours the
``s=tlsrpt`` service type of the key record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

DnsFunc = Callable[..., bytes | None]


class DnsTempError(Exception):
    """The key could not be looked up now (timeout, no answer from the servers)."""


@dataclass(frozen=True, slots=True)
class DkimResult:
    result: str  # pass | fail | none | temperror
    domain: str | None = None
    detail: str = ""


def dns_txt(name: bytes, timeout: float = 5.0) -> bytes | None:
    """dkimpy's DNS hook, with dnspython: None for no record, DnsTempError for no answer."""
    import dns.exception
    import dns.resolver

    try:
        answer = dns.resolver.resolve(name.decode("ascii").rstrip("."), "TXT", lifetime=timeout)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise DnsTempError(f"no answer for {name.decode('ascii', 'replace')}: {exc}") from exc
    return b"".join(b"".join(record.strings) for record in answer)


def verify(message: bytes, *, reporting_domain: str | None, dnsfunc: DnsFunc | None = None,
           timeout: float = 5.0) -> DkimResult:
    """Verify the first DKIM signature; ``pass`` needs it made by the reporting domain."""
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].lower()
    if b"dkim-signature:" not in head:
        return DkimResult("none", detail="no DKIM-Signature header")
    import dkim  # here, not at the top: dkimpy takes ~0.12 s to import; only mail needs it

    checker = dkim.DKIM(message, timeout=timeout, tlsrpt=True, logger=log)
    try:
        ok = checker.verify(dnsfunc=dnsfunc or dns_txt)
    except DnsTempError as exc:
        return DkimResult("temperror", _domain(checker), str(exc))
    except Exception as exc:  # dkimpy raises DKIMException, or plain errors on odd input
        return DkimResult("fail", _domain(checker), _describe(exc))
    domain = _domain(checker)
    if not ok:
        return DkimResult("fail", domain, "signature does not verify")
    if reporting_domain and domain and not _aligned(domain, reporting_domain):
        return DkimResult("fail", domain, f"signed by {domain}, not by the reporting domain "
                                          f"{reporting_domain}")
    return DkimResult("pass", domain)


def _describe(exc: Exception) -> str:
    text = str(exc)
    if text in ("", "None"):  # e.g. a key record refused for its service type (s=)
        return f"{type(exc).__name__}: the key record could not be used"
    return text


def _domain(checker: Any) -> str | None:
    value = getattr(checker, "domain", None)
    return value.decode("ascii", "replace").lower() if isinstance(value, bytes) else None


def _aligned(signer: str, reporter: str) -> bool:
    signer, reporter = signer.lower().rstrip("."), reporter.lower().rstrip(".")
    return (signer == reporter or reporter.endswith("." + signer)
            or signer.endswith("." + reporter))
