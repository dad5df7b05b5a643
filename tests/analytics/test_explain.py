from __future__ import annotations

from pathlib import Path

from tests.conftest import VALID, Cli, detail, make_report, policy, write_json
from tlswatch.analytics.explain import EXPLANATIONS, explain
from tlswatch.schemas import RFC8460_RESULT_TYPES


def test_every_registered_result_type_has_an_explanation_and_fix() -> None:
    assert set(EXPLANATIONS) == RFC8460_RESULT_TYPES
    for name in RFC8460_RESULT_TYPES:
        e = explain(name, domain="example.com")
        assert e.meaning and e.fix and "<domain>" not in e.fix + e.meaning


def test_unknown_result_type_gets_a_sensible_text() -> None:
    e = explain("tls-version-too-old")
    assert "tls-version-too-old" in e.meaning and "outside the RFC 8460 registry" in e.meaning


def test_text_summary_names_reporter_hosts_ips_and_fix(cli: Cli, tmp_path: Path) -> None:
    doc = make_report(org="Google Inc.", policies=[policy("example.com", 12258, 87, [
        detail("certificate-expired", 87, mx="mx2.example.com", ip="192.0.2.5")])])
    cli.json("ingest", str(write_json(tmp_path / "g.json", doc)))
    text = cli("summary", "--format", "text").stdout
    assert text.startswith("example.com: 99.3% of 12,345 sessions succeeded (TLS negotiated "
                           "and, where a policy applied, validated; 1 report from Google).")
    assert "87 failed sessions were not delivered over that connection (MTA-STS enforce" in text
    assert ("Google reported 87 sessions failing with certificate-expired on mx2.example.com "
            "(192.0.2.5): renew that certificate and check its auto-renewal.") in text
    assert "used TLS" not in text  # most failures did use TLS: the old wording was false


def test_text_summary_over_the_samples_reads_well(cli: Cli) -> None:
    cli.json("ingest", str(VALID))
    text = cli("summary", "--format", "text").stdout
    paragraphs = text.strip().split("\n\n")
    assert [p.split(":")[0] for p in paragraphs] == ["example.com", "example.net", "example.org"]
    # Mail.ru's details add up to more than its failed total: no more failed sessions than
    # the domain had are claimed.
    assert "Mail.ru reported 2 failure records with sts-webpki-invalid" in text
    assert "add up to 11, more than the 9 failed sessions" in text
    assert "375 failed sessions were delivered anyway (MTA-STS in testing mode" in text
    assert "mta-sts.example.net" in text  # the fix names the real policy host


def test_reason_codes_real_senders_use_are_explained_in_text_and_report_show(cli: Cli) -> None:
    cli.json("ingest", str(VALID))
    text = cli("summary", "--format", "text", "--domain", "example.net").stdout
    assert ("(reason given: 'X509_V_ERR_CERT_HAS_EXPIRED': the MX's certificate has expired; "
            "yours to fix)") in text
    assert "the certificate of the MTA-STS policy web server (mta-sts.example.net)" in text
    shown = cli.json("report", "show", "2026-11-24T00:00:00Z_idx1_example.net")
    (detail,) = [d for p in shown["policies"] for d in p["failure_details"]]
    assert detail["reason_explained"]["side"] == "receiving domain"
    unknown = cli.json("report", "show", "every-type-2026-11-25")
    assert [d["reason_explained"] for p in unknown["policies"] for d in p["failure_details"]
            if d["failure_reason_code"] == "peer offered TLS 1.0 only"] == [None]
