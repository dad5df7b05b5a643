"""DKIM (RFC 8460 section 3): pass / fail / none recorded; 'require' quarantines."""

from __future__ import annotations

import base64
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import Cli, report_mail
from tlswatch.ingest.dkim import DnsTempError, verify
from tlswatch.ingest.loader import load
from tlswatch.ingest.prepare import Options
from tlswatch.ingest.sources import Input
from tlswatch.ingest.spool import Spool
from tlswatch.store import Store

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
PUBLIC = base64.b64encode(KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def dns(records: dict[str, bytes]):  # type: ignore[no-untyped-def]
    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name.decode().rstrip("."))
    return lookup


KEYS = dns({"sel._domainkey.reporter.example": b"v=DKIM1; k=rsa; s=tlsrpt; p=" + PUBLIC,
            "other._domainkey.reporter.example": b"v=DKIM1; k=rsa; s=chat; p=" + PUBLIC,
            "sel._domainkey.other.example": b"v=DKIM1; k=rsa; p=" + PUBLIC})


def signed(rid: str, *, domain: bytes = b"reporter.example", selector: bytes = b"sel") -> bytes:
    message = report_mail(rid).replace(b"\n", b"\r\n")
    signature = dkim.sign(message, selector, domain, PRIVATE,
                          include_headers=[b"from", b"subject", b"tls-report-domain"])
    return signature + message


def test_valid_signature_by_the_reporting_domain_passes() -> None:
    result = verify(signed("a"), reporting_domain="reporter.example", dnsfunc=KEYS)
    assert (result.result, result.domain) == ("pass", "reporter.example")


def test_tampered_message_fails() -> None:
    tampered = signed("a").replace(b"report attached", b"report ATTACHED")
    assert verify(tampered, reporting_domain="reporter.example", dnsfunc=KEYS).result == "fail"


def test_unsigned_message_is_none() -> None:
    assert verify(report_mail("a"), reporting_domain="reporter.example").result == "none"


def test_signature_by_another_domain_fails() -> None:
    result = verify(signed("a", domain=b"other.example"), reporting_domain="reporter.example",
                    dnsfunc=KEYS)
    assert result.result == "fail" and "not by the reporting domain" in result.detail


def test_key_for_another_service_is_refused_for_a_report() -> None:
    # The key record's s= must allow tlsrpt (or email, or *): RFC 8460 s3, RFC 6376 s3.6.1.
    result = verify(signed("a", selector=b"other"), reporting_domain="reporter.example",
                    dnsfunc=KEYS)
    assert result.result == "fail" and result.detail


def test_dns_outage_is_temporary() -> None:
    def down(name: bytes, timeout: float = 5) -> bytes | None:
        raise DnsTempError("no answer")
    assert verify(signed("a"), reporting_domain="reporter.example", dnsfunc=down).result == \
        "temperror"


def load_one(tmp_path: Path, data: bytes, options: Options) -> tuple[object, list[tuple]]:
    with Store.open(tmp_path / "db.duckdb") as store:
        result = load([Input("m.eml", data)], store, options=options)
        rows = store.rows("SELECT report_id, dkim_result, dkim_domain FROM reports")
    return result, [tuple(r.values()) for r in rows]


def test_record_mode_stores_each_result(tmp_path: Path) -> None:
    options = Options(dnsfunc=KEYS)
    with Store.open(tmp_path / "db.duckdb") as store:
        load([Input("a.eml", signed("good")), Input("b.eml", report_mail("unsigned")),
              Input("c.eml", signed("bad").replace(b"report attached", b"changed!"))],
             store, options=options)
        rows = store.rows("SELECT report_id, dkim_result, dkim_domain FROM reports "
                          "ORDER BY report_id")
    assert [tuple(r.values()) for r in rows] == [
        ("bad", "fail", "reporter.example"), ("good", "pass", "reporter.example"),
        ("unsigned", "none", None)]


def test_require_mode_quarantines_unsigned_and_failing_mail(tmp_path: Path) -> None:
    options = Options(dkim="require", dnsfunc=KEYS)
    with Store.open(tmp_path / "db.duckdb") as store:
        result = load([Input("a.eml", signed("good")), Input("b.eml", report_mail("unsigned"))],
                      store, options=options)
        quarantined = store.rows("SELECT source, reason FROM quarantine")
    assert result.accepted == 1 and result.rejected == 1
    assert quarantined == [{"source": "b.eml",
                            "reason": "DKIM none: no DKIM-Signature header"}]


def test_require_mode_retries_when_dns_is_down(tmp_path: Path) -> None:
    def down(name: bytes, timeout: float = 5) -> bytes | None:
        raise DnsTempError("no answer from the name servers")

    spool = Spool(tmp_path / "spool")
    spool.put(signed("later"), {"via": "smtp"})
    from tlswatch.ingest.draining import drain

    result = drain(spool, tmp_path / "db.duckdb", options=Options(dkim="require", dnsfunc=down))
    assert result is not None and result.accepted == 0 and len(result.retry) == 1
    assert spool.depth() == 1 and spool.pending() == []  # deferred, not quarantined
    with Store.open(tmp_path / "db.duckdb") as store:
        assert store.rows("SELECT count(*) AS n FROM quarantine") == [{"n": 0}]


def test_setting_is_checked(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLSWATCH_DKIM", "sometimes")
    result = cli("summary", code=1)
    assert "setting dkim: must be 'record' or 'require'" in result.stderr
